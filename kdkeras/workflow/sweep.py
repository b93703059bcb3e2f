"""Grid sweeps of the distillation temperature and alpha.

A sweep distils the experiment's trained teacher once per (temperature, alpha)
grid point, each point a full `distill` phase (see `kdkeras.workflow.training`) in its
own run folder, and then tabulates and plots the distilled students:

```
runs/<experiment>/
  teacher.keras              read by every grid point, never copied
  {teacher,student}_metrics.json   the reference rows, when those phases ran
  sweep/
    T4_a0.1/                 one distill run: config.toml, distilled.keras,
                             distilled_metrics.json, distilled_history.csv, ...
    sweep.csv                one row per grid point
    sweep.md                 the table, best point marked, references beside it
    sweep.png                test ACC and AUC against the temperature
```

Every grid point starts from the same seed, so points differ only by their
temperature and alpha. A point whose `distilled_metrics.json` exists is skipped
when the sweep runs again, and an unfinished point resumes from its last
epoch: an interrupted sweep continues where it stopped. Retraining the teacher
does not invalidate finished points: delete `sweep/` after `make teacher`.
"""

import csv
import io
import math
import os
import tomllib

import keras
import matplotlib
from matplotlib.figure import Figure

from kdkeras import config as config_lib
from kdkeras import runs as runs_lib
from kdkeras.distillation import losses as kd_losses
from kdkeras.distillation.arguments import DEFAULT_ALPHA
from kdkeras.evaluation import metrics as metrics_lib
from kdkeras.files import write_text_atomic
from kdkeras.reporting.figures import STYLE, save_figure
from kdkeras.reporting.history import value_at_epoch
from kdkeras.workflow import training

SWEEP_DIR = "sweep"
CSV_COLUMNS = (
    "run", "temperature", "alpha", "acc", "auc", "balanced_acc",
    "monitor", "monitor_value", "epochs", "seconds", "n", "best",
)  # fmt: skip
# Config keys that do not change what a grid point trains.
_UNTRAINED_KEYS = ("description", "published")
# A temperature range at least this wide (max / min) is plotted on a log axis.
_LOG_SPAN = 10.0


def grid(config, temperatures=None, alphas=None):
    """The (temperature, alpha) points of a sweep, in ascending order.

    Each axis comes from the argument, else from the config's `[sweep]` table,
    else it stays at the `[distill]` value (one point on that axis).

    Args:
        config: An `ExperimentConfig`.
        temperatures: Temperatures to try (each > 0), or None.
        alphas: Student-loss weights to try (each in [0, 1]), or None.

    Returns:
        A list of `(temperature, alpha)` float pairs, temperature-major.

    Raises:
        ConfigError: an empty axis, a value out of range or repeated, or a
            grid with neither axis given (nothing to sweep).

    Example:

    ```python
    grid(config, temperatures=[2, 6], alphas=[0.1])  # [(2.0, 0.1), (6.0, 0.1)]
    ```
    """
    overrides = {}
    for axis, values in (("temperatures", temperatures), ("alphas", alphas)):
        if values is None:
            continue
        if len(values) == 0:
            raise config_lib.ConfigError(
                f"The sweep's {axis} are empty: give at least one value, e.g. --{axis} "
                f"{'2,4,8' if axis == 'temperatures' else '0.1,0.5'}."
            )
        overrides[f"sweep.{axis}"] = list(values)
    if overrides:
        config = config_lib.apply_overrides(config, overrides)
    if not config.sweep.temperatures and not config.sweep.alphas:
        raise config_lib.ConfigError(
            f"{config.path or config.name}: nothing to sweep. Pass --temperatures 2,4,8 and/or "
            "--alphas 0.1,0.5, or add a [sweep] table with temperatures = [...] and alphas = [...]."
        )
    default = kd_losses.get(config.distill.loss, temperature=config.distill.temperature, **config.distill.loss_options)
    temperatures = sorted(float(t) for t in config.sweep.temperatures or [default.temperature])
    alpha = DEFAULT_ALPHA if config.distill.alpha is None else config.distill.alpha
    alphas = sorted(float(a) for a in config.sweep.alphas or [alpha])
    return [(t, a) for t in temperatures for a in alphas]


def point_name(temperature, alpha):
    """Run folder name of a grid point, e.g. `T4_a0.1` (exact, no rounding)."""
    return f"T{_number(temperature)}_a{_number(alpha)}"


def run_sweep(config, temperatures=None, alphas=None, runs_dir="runs", verbose="auto", log=print, unsafe_load=False):
    """Distils the experiment's teacher at every grid point; writes the table and plot.

    Args:
        config: A validated `ExperimentConfig`; its `[distill]` table sets
            everything but the swept temperature and alpha.
        temperatures: Temperatures to try; see `grid` for the defaults.
        alphas: Student-loss weights to try; see `grid`.
        runs_dir: Parent folder of run folders.
        verbose: Keras progress-bar verbosity for `fit`.
        log: Callable receiving one line per step.
        unsafe_load: Load a teacher file that stores Python code (see
            `kdkeras.files.load_model`); only for files you trust.

    Returns:
        One dict per grid point, in grid order, with the keys of `CSV_COLUMNS`.

    Raises:
        ConfigError: a bad grid (see `grid`), or a finished grid point that
            was trained with another config.
        MissingArtifactError: the experiment has no trained teacher.

    Example:

    ```python
    config = kdkeras.config.load_config("quickstart")
    rows = run_sweep(config, temperatures=[2, 4, 8], alphas=[0.1, 0.5])
    # runs/quickstart/sweep/sweep.md, sweep.csv, sweep.png
    ```
    """
    points = grid(config, temperatures, alphas)
    run = runs_lib.RunFolder.of(config, runs_dir)
    teacher_path = run.model("teacher")
    if not config.distill.teachers and not os.path.exists(teacher_path):
        raise training.MissingArtifactError(
            f"{teacher_path} not found: a sweep distils the experiment's trained teacher. Run "
            f"`make teacher EXP={config.name}` (or `kdkeras teacher --config {config.path or config.name}`) first."
        )
    sweep_dir = os.path.join(run.path, SWEEP_DIR)
    references = _references(run)
    rows = []
    for index, (temperature, alpha) in enumerate(points, 1):
        name = point_name(temperature, alpha)
        point = config_lib.apply_overrides(config, {
            "name": name,
            "distill.temperature": temperature,
            "distill.alpha": alpha,
            "sweep.temperatures": [],
            "sweep.alphas": [],
        })  # fmt: skip
        folder = runs_lib.RunFolder.of(point, sweep_dir)
        prefix = f"[sweep {index}/{len(points)}] T={_number(temperature)} alpha={_number(alpha)}"
        _check_same_config(point, folder)
        metrics_path = folder.metrics("distilled")
        if os.path.exists(metrics_path):
            log(f"{prefix}: finished earlier, skipped ({metrics_path})")
        else:
            log(f"{prefix}: distilling into {folder.path}")
            # Frees the previous point's models and traced functions: a long
            # sweep would otherwise keep every grid point's graphs in memory.
            keras.backend.clear_session()
            training.run_phase(
                point, "distill", sweep_dir, verbose=verbose, log=log, teacher_path=teacher_path,
                unsafe_load=unsafe_load,
            )
        row = _point_row(name, temperature, alpha, folder, point.distill.monitor)
        log(f"{prefix}: test {metrics_lib.summary(row)} ({row['epochs']} epochs, {row['seconds']} s)")
        rows.append(row)
    _mark_best(rows)
    paths = write_sweep_report(sweep_dir, rows, references, title=config.description or config.name)
    log(f"[sweep] wrote {', '.join(paths)}")
    return rows


def write_sweep_report(sweep_dir, rows, references=None, title=""):
    """Writes `sweep.csv`, `sweep.md` and `sweep.png` from the grid rows.

    Args:
        sweep_dir: Destination folder.
        rows: Dicts with the keys of `CSV_COLUMNS`, as returned by `run_sweep`.
        references: `{label: metrics dict}` drawn beside the grid, e.g. the
            teacher's and the student-alone's `*_metrics.json`.
        title: Experiment description for the markdown heading.

    Returns:
        The three paths written.
    """
    references = references or {}
    csv_path = os.path.join(sweep_dir, "sweep.csv")
    md_path = os.path.join(sweep_dir, "sweep.md")
    png_path = os.path.join(sweep_dir, "sweep.png")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "best": int(row["best"])} for row in rows)
    write_text_atomic(csv_path, text.getvalue())
    write_text_atomic(md_path, sweep_markdown(rows, references, title))
    plot_sweep(rows, png_path, references)
    return csv_path, md_path, png_path


def sweep_markdown(rows, references=None, title=""):
    """The sweep table in markdown: one line per grid point, then the references.

    The best point is the one with the best validation value of the phase's
    monitor at its best epoch, not the best test ACC: picking on the test
    split would make the reported test numbers optimistic.

    Args:
        rows: Grid rows as returned by `run_sweep`.
        references: `{label: metrics dict}`, e.g. `{"teacher": {...}}`.
        title: Experiment description for the heading.

    Returns:
        The markdown text.
    """
    references = references or {}
    monitor = rows[0]["monitor"] if rows else "monitor"
    lines = [
        f"# Temperature x alpha sweep: {title}" if title else "# Temperature x alpha sweep",
        "",
        f"| Run | T | alpha | Test ACC | Test AUC | Balanced ACC | {monitor} | Epochs | Seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        run = f"**{row['run']} (best)**" if row["best"] else row["run"]
        lines.append(_table_line(run, _number(row["temperature"]), _number(row["alpha"]), row, row["monitor_value"]))
    for label, metrics in references.items():
        if metrics.get("architecture"):
            label = f"{label} ({metrics['architecture']})"
        lines.append(_table_line(label, "", "", runs_lib.headline(metrics), None))
    best = next((row for row in rows if row["best"]), None)
    lines.append("")
    if best:
        lines.append(
            f"Best: {best['run']}, the {'lowest' if 'loss' in monitor else 'highest'} {monitor} on the "
            "validation split at its best epoch; the test columns are reported, never used to choose."
        )
    sizes = {row["n"] for row in rows} | {m.get("n") for m in references.values()}
    if len(sizes - {None}) > 1:
        lines.append(
            f"Warning: the rows were evaluated on test splits of different sizes ({sorted(sizes - {None})}): "
            "a reference phase ran with another `limit` than the sweep, so its row is not comparable."
        )
    return "\n".join(lines) + "\n"


def plot_sweep(rows, path, references=None):
    """Plots test ACC and AUC against the temperature, one line per alpha.

    The temperature axis is logarithmic when the grid spans a factor of 10 or
    more (seed 003 sweeps T from 3 to 100). Reference models are horizontal
    lines.

    Args:
        rows: Grid rows as returned by `run_sweep`.
        path: Destination `.png`.
        references: `{label: metrics dict}` drawn as horizontal lines.

    Returns:
        `path`.
    """
    references = references or {}
    temperatures = sorted({row["temperature"] for row in rows})
    alphas = sorted({row["alpha"] for row in rows})
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9, 3.8), layout="constrained")
        for ax, key, label in zip(fig.subplots(1, 2), ("acc", "auc"), ("Test ACC", "Test AUC")):
            for color, alpha in enumerate(alphas):
                points = sorted((r["temperature"], r[key]) for r in rows if r["alpha"] == alpha and _finite(r[key]))
                if points:
                    ax.plot(*zip(*points), marker="o", color=f"C{color}", label=f"alpha = {_number(alpha)}")
            for style, (name, metrics) in zip(("--", ":", "-."), references.items()):
                if _finite(metrics.get(key)):
                    ax.axhline(metrics[key], color="0.35", linestyle=style, label=name)
            if temperatures and temperatures[-1] / temperatures[0] >= _LOG_SPAN:
                ax.set_xscale("log")
            ax.set_xticks(temperatures, [_number(t) for t in temperatures])
            ax.minorticks_off()
            ax.set(title=f"{label} of the distilled student", xlabel="Temperature T", ylabel=label)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper")
        save_figure(fig, path)
    return path


def _point_row(name, temperature, alpha, folder, monitor):
    metrics = folder.read_metrics("distilled")
    # The distiller's val_loss includes T^2 * KL, which changes with T and
    # alpha; the student's own loss compares across grid points.
    key = "val_student_loss" if monitor == "val_loss" else monitor
    return {
        "run": name,
        "temperature": temperature,
        "alpha": alpha,
        **runs_lib.headline(metrics),
        "monitor": key,
        "monitor_value": value_at_epoch(folder.history("distilled"), metrics.get("best_epoch"), key),
        "best": False,
    }


def _mark_best(rows):
    scored = [row for row in rows if _finite(row["monitor_value"])]
    if not scored:
        return
    sign = -1 if "loss" in scored[0]["monitor"] else 1
    max(scored, key=lambda row: sign * row["monitor_value"])["best"] = True


def _references(run):
    return {
        label: run.read_metrics(name)
        for label, name in (("teacher", "teacher"), ("student alone", "student"))
        if os.path.exists(run.metrics(name))
    }

def _check_same_config(point, folder):
    saved_path = folder.config
    if not os.path.exists(saved_path):
        return
    with open(saved_path, "rb") as f:
        saved = _flatten(tomllib.load(f))
    current = _flatten(point.to_dict())
    changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if changed:
        raise config_lib.ConfigError(
            f"{folder.path} was trained with another config ({', '.join(changed)} differ): delete that "
            "folder to retrain it, or pass another --runs-dir to keep both."
        )


def _flatten(data, prefix=""):
    flat = {}
    for key, value in data.items():
        if not prefix and key in _UNTRAINED_KEYS:
            continue
        if isinstance(value, dict) and key != "options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table_line(run, temperature, alpha, row, monitor_value):
    cells = [
        run, temperature, alpha,
        _format(row["acc"]), _format(row["auc"]), _format(row["balanced_acc"]), _format(monitor_value),
        "n/a" if row["epochs"] is None else str(row["epochs"]),
        "n/a" if row["seconds"] is None else f"{row['seconds']:.1f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _format(value):
    return f"{value:.3f}" if _finite(value) else "n/a"


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number(value):
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
