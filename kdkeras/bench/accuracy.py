"""Accuracy over seeds: teacher, student alone and distilled student, beside published rows.

For each seed the experiment's three phases run with `kdkeras.workflow.training.run_phase`
in their own runs folder (`<runs_dir>/seed<N>/<experiment>/`), exactly as
`make all SEED=N` would. Test ACC, AUC and balanced accuracy (official test
split) are then summarised as mean and sample standard deviation over the
seeds, beside the experiment's `[[published]]` rows.

A finished phase leaves `bench_<model>.json` (its config and metrics) in its
run folder. Running the benchmark again reuses it while the config entries the
phase depends on are unchanged (`seed`, `strategy`, `[data]` and its own
table; distillation also depends on `[teacher]` and `[student]`): an
interrupted benchmark resumes where it stopped, and a change to `[distill]`
reruns distillation only. `--fresh` retrains everything.

Run: `python -m kdkeras.bench.accuracy --seeds 0 1 2 --out-dir runs/bench`
(about 10 minutes per seed for the quickstart on 2 CPU cores).
"""

import argparse
import json
import math
import os
import sys
import tomllib

from kdkeras import config as config_lib
from kdkeras import runs as runs_lib
from kdkeras import stats
from kdkeras.argtypes import output_folder
from kdkeras.bench import outputs
from kdkeras.bench.environment import describe_environment
from kdkeras.config import ConfigError
from kdkeras.files import write_text_atomic

METRICS = ("acc", "auc", "balanced_acc")
METRIC_TITLES = {"acc": "ACC", "auc": "AUC", "balanced_acc": "Balanced ACC"}
MODELS = ("teacher", "student", "distilled")
MODEL_TITLES = {"teacher": "teacher", "student": "student alone", "distilled": "distilled student"}
# Paired differences over seeds that the benchmark reports: distillation against its baseline and its teacher.
PAIRS = ("distilled-student", "distilled-teacher")


DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def run_accuracy_benchmark(config="quickstart", seeds=DEFAULT_SEEDS, runs_dir="runs/bench", epochs=None,
                           fresh=False, overrides=None, log=print):
    """Runs (or reuses) every phase for every seed and summarises the test metrics.

    Args:
        config: Experiment name or `.toml` path (see `kdkeras.config.load_config`).
        seeds: Global seeds, one full experiment each.
        runs_dir: Parent folder; seed `N` runs in `<runs_dir>/seed<N>`.
        epochs: Maximum epochs of every phase; None keeps the config's.
        fresh: Retrain phases even when a finished run with the same config exists.
        overrides: Dotted-key config overrides applied to every seed, e.g.
            `{"distill.alpha": 0.5}` (see `kdkeras.config.apply_overrides`).
        log: Callable receiving progress lines.

    Returns:
        A JSON-ready dict: `experiment`, `seeds`, `overrides`, `config` (the resolved
        config of the first seed), `models` (architecture and parameters),
        `per_seed` (`{seed: {model: {metric: value}}}`, seeds as strings),
        `summary` (see `aggregate`), `class_recall` (the same for the
        recall of each class), `published`, `test_images` (the sizes
        of the test splits scored), `train_seconds` and `environment`.

    Raises:
        kdkeras.config.ConfigError: for a bad config or override.
        ValueError: for an empty or repeated seed list.
    """
    from kdkeras import config as config_lib
    from kdkeras.workflow import training

    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct integers, at least one; got {seeds}.")
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"`epochs` must be >= 1, got {epochs}.")
    overrides = dict(overrides or {})
    base = config_lib.apply_overrides(config_lib.load_config(config), overrides)
    environment = describe_environment()
    per_seed, recall, models, seconds, test_images, resolved = {}, {}, {}, {}, set(), None
    validation, same_images = {}, {}
    for seed in seeds:
        per_run = {"seed": seed}
        if epochs is not None:
            per_run.update({f"{phase}.epochs": int(epochs) for phase in training.PHASES})
        seeded = config_lib.apply_overrides(base, per_run)
        resolved = resolved or seeded.to_dict()
        seed_runs = outputs.seed_runs_dir(runs_dir, seed)
        per_seed[str(seed)], recall[str(seed)] = {}, {}
        retrained_teacher = False
        for phase in runs_lib.PHASES:
            name = runs_lib.MODEL_NAMES[phase]
            record, ran = run_recorded_phase(
                seeded, phase, seed_runs, fresh=fresh or (phase == "distill" and retrained_teacher), log=log
            )
            retrained_teacher = retrained_teacher or (ran and phase == "teacher")
            per_seed[str(seed)][name] = record["metrics"]
            recall[str(seed)][name] = record["class_recall"]
            models[name] = {"architecture": record["architecture"], "params": record["params"]}
            seconds.setdefault(name, []).append(record["train_seconds"])
            test_images.add(record["test_images"])
            validation.setdefault(name, []).append(next(iter(record.get("validation", {}).values()), None))
        same_images[str(seed)] = _same_images_test(runs_lib.RunFolder.of(seeded, seed_runs))
    environment["load_average_after"] = describe_environment()["load_average"]
    return {
        "experiment": base.name,
        "config_path": base.path,
        "seeds": seeds,
        "overrides": overrides,
        "config": resolved,
        "models": models,
        "per_seed": per_seed,
        "summary": aggregate(per_seed),
        "paired": {pair: paired_differences(per_seed, *pair.split("-")) for pair in PAIRS},
        "same_images": same_images,
        "validation": validation,
        "class_recall": aggregate(recall, _class_names(recall)),
        "published": list(base.published),
        "test_images": sorted(test_images),
        "train_seconds": seconds,
        "environment": environment,
    }


def run_recorded_phase(config, phase, seed_runs, fresh=False, teacher_path=None, log=print):
    """Runs one phase, or reuses its record when the config it depends on is unchanged.

    Args:
        config: The seeded `ExperimentConfig`.
        phase: "teacher", "student" or "distill".
        seed_runs: Parent of the run folder.
        fresh: Retrain even when a matching record exists.
        teacher_path: The teacher `distill` reads (default: the run folder's).
        log: Callable receiving progress lines.

    Returns:
        `(record, ran)`: the phase's record (config, test metrics, class recall,
        architecture, parameters, train seconds, best validation value) and
        whether the phase was trained now.
    """
    from kdkeras.workflow import training

    name = runs_lib.MODEL_NAMES[phase]
    record_path = runs_lib.RunFolder.of(config, seed_runs).bench_record(name)
    record = None if fresh else _read_record(record_path, config, phase)
    if record is not None:
        log(f"[bench] {config.name} seed {config.seed}: {phase} already done ({record_path})")
        return record, False
    log(f"[bench] {config.name} seed {config.seed}: {phase}")
    result = training.run_phase(config, phase, seed_runs, verbose=2, log=log, teacher_path=teacher_path)
    record = {
        "config": config_lib.dump_toml(config),
        "metrics": {key: result[key] for key in METRICS},
        "test_images": result["n"],
        "class_recall": runs_lib.class_recall(result),
        "architecture": result["architecture"],
        "params": result["params"],
        "train_seconds": result["train_seconds"],
        "validation": {result["monitor"]: result["best_monitor_value"]},
        "budget": {key: result[key] for key in ("train_images", "steps_per_epoch", "epochs_run", "best_epoch")},
    }
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return record, True


def aggregate(per_seed, metrics=METRICS):
    """Mean and sample standard deviation of each model's metrics over seeds.

    Args:
        per_seed: `{seed: {model: {metric: value}}}`. A value may be None
            (e.g. an undefined AUC); it is left out of that metric's statistics.
        metrics: Metric names to summarise.

    Returns:
        `{model: {metric: {"mean", "std", "n", "values"}}}`, models in order of
        first appearance. `std` uses n - 1 (the spread of the seeds, not of a
        population) and is None when fewer than 2 values exist; `mean` is
        None when there is no value.

    Example:

    ```python
    aggregate({"0": {"student": {"acc": 0.90}}, "1": {"student": {"acc": 0.80}}}, ["acc"])
    # {"student": {"acc": {"mean": 0.85, "std": 0.0707..., "n": 2, "values": [0.9, 0.8]}}}
    ```
    """
    summary = {}
    for results in per_seed.values():
        for model, values in results.items():
            for metric in metrics:
                value = values.get(metric)
                entry = summary.setdefault(model, {}).setdefault(metric, {"values": []})
                if value is not None:
                    entry["values"].append(float(value))
    for model in summary.values():
        for entry in model.values():
            values = entry["values"]
            entry["n"] = len(values)
            entry["mean"] = math.fsum(values) / len(values) if values else None
            entry["std"] = (
                math.sqrt(math.fsum((v - entry["mean"]) ** 2 for v in values) / (len(values) - 1))
                if len(values) > 1 else None
            )
    return summary


def _class_names(recall):
    names = {}
    for results in recall.values():
        for classes in results.values():
            names.update(dict.fromkeys(classes))
    return list(names)


def format_mean_std(entry, digits=3):
    """`"0.912 ± 0.008"` for an `aggregate` entry; no `±` with one value, `"n/a"` with none."""
    if entry is None or entry.get("mean") is None:
        return "n/a"
    if entry.get("std") is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def paired_differences(per_seed, a, b, metrics=METRICS):
    """Per-seed differences `a - b` with their t-interval over seeds.

    Args:
        per_seed: `{seed: {model: {metric: value}}}`.
        a, b: Model names, e.g. "distilled" and "student".

    Returns:
        `{metric: kdkeras.stats.paired_t_interval(...)}`, or `{}` when a
        model is missing.
    """
    rows = [results for results in per_seed.values() if a in results and b in results]
    if not rows:
        return {}
    return {
        metric: stats.paired_t_interval([r[a][metric] - r[b][metric] for r in rows
                                         if r[a][metric] is not None and r[b][metric] is not None])
        for metric in metrics
    }


PAIRED_FAMILY = ("distilled student minus student alone and minus teacher, paired over seeds, "
                 "x (ACC, AUC, balanced ACC)")


def paired_rows(result):
    """The family of paired differences over seeds, with Holm-adjusted verdicts.

    Returns:
        `{(pair, metric): row}` for every pair of `PAIRS` and metric with a
        difference, rows as `kdkeras.stats.family_rows` makes them
        (unadjusted t-interval, `p_value`, `p_adjusted`, `verdict`).
    """
    keys = [(pair, metric) for pair, differences in result.get("paired", {}).items()
            for metric, interval in differences.items() if interval.get("mean") is not None]
    rows = stats.family_rows([(key, result["paired"][key[0]][key[1]]) for key in keys])
    return dict(zip(keys, rows))


def verdicts(result):
    """Plain-language statements of the benchmark's goals.

    The distilled student against a published row compares the mean over
    seeds with the published number ("met" / "NOT met"). Against the student
    alone and the teacher, the paired differences over seeds form one family
    (`PAIRED_FAMILY`): "better" or "worse" only when the Holm-adjusted p of
    the paired t-test is below 0.05, otherwise "no significant difference".
    The unadjusted 95% t-interval is quoted beside it.

    Returns:
        List of `(statement, status)` pairs.
    """
    summary = result["summary"]
    distilled = summary.get("distilled")
    if distilled is None:
        return []
    checks = []
    for row in result["published"][:1]:
        for metric in ("acc", "auc"):
            if metric in row and distilled[metric]["mean"] is not None:
                mean = distilled[metric]["mean"]
                checks.append((
                    f"distilled student mean {METRIC_TITLES[metric]} {mean:.3f} > {row['model']} "
                    f"({row['source']}) {row[metric]:.3f}",
                    "met" if mean > row[metric] else "NOT met",
                ))
    for (pair, metric), row in paired_rows(result).items():
        checks.append((
            f"distilled student minus {MODEL_TITLES[pair.split('-')[1]]}, {METRIC_TITLES[metric]}: "
            f"{paired_evidence(row, metric)}",
            row["verdict"],
        ))
    return checks


def paired_evidence(row, metric):
    """`"+1.4 points (unadjusted 95% t-interval over 5 seeds -3.0 points to +5.8 points; distilled ahead in
    2 of 5; Holm-adjusted p = 0.87)"`, or the mean alone for one seed."""
    if row["low"] is None:
        return f"{_signed(row['mean'], metric)} (one seed: no interval or test over seeds)"
    test = ("no t-test: the difference is the same on every seed" if row["p_value"] is None
            else f"Holm-adjusted {stats.family.format_p(row['p_adjusted'])}")
    return (f"{_signed(row['mean'], metric)} (unadjusted 95% t-interval over {row['n']} seeds "
            f"{_signed(row['low'], metric)} to {_signed(row['high'], metric)}; distilled ahead in "
            f"{row['n_positive']} of {row['n']}; {test})")


def _signed(value, metric):
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f} points" if metric != "auc" else f"{value:+.4f}"


def _same_images_test(run):
    """McNemar and DeLong of the distilled student against the student alone on one seed's test images."""
    if not all(os.path.exists(run.predictions(name)) for name in ("distilled", "student")):
        return None
    distilled, student = run.read_predictions("distilled"), run.read_predictions("student")
    task = run.read_metrics("student")["task"]
    result = stats.compare_models(
        student["y_true"], distilled["y_score"], student["y_score"], task,
        "the distilled student", "the student alone",
    )
    return {key: result[key] for key in ("acc", "auc", "verdict")}


def to_markdown(result):
    """Summary table, published rows, goal checks and per-seed table, in markdown."""
    summary, models = result["summary"], result["models"]
    n = len(result["seeds"])
    lines = [
        f"| Model | Params | {' | '.join(f'{METRIC_TITLES[m]} (mean ± std, {n} seeds)' for m in METRICS)} |",
        "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for name in MODELS:
        if name in summary:
            lines.append(
                f"| {MODEL_TITLES[name]}: `{models[name]['architecture']}` | {models[name]['params']:,} | "
                + " | ".join(format_mean_std(summary[name][m]) for m in METRICS) + " |"
            )
    for row in result["published"]:
        lines.append(
            f"| published: {row['model']}, {row['source']} | | "
            + " | ".join(f"{row[m]:.3f}" if m in row else "" for m in METRICS) + " |"
        )
    checks = verdicts(result)
    if checks:
        lines += ["", "Goal checks (published rows: mean over seeds; model pairs: paired difference over seeds, "
                  "called better or worse only when its Holm-adjusted p is below 0.05). "
                  f"{stats.family.family_title(PAIRED_FAMILY, paired_rows(result))}. {stats.CONDITIONAL_NOTE}", ""]
        lines += [f"- {status}: {statement}" for statement, status in checks]
    if result.get("class_recall"):
        classes = list(next(iter(result["class_recall"].values())))
        lines += [
            "",
            "Recall of each class at the 0.5 threshold (mean ± std over seeds; for a binary task, the "
            "negative class's recall is the specificity, the positive class's the sensitivity):",
            "",
            "| Model | " + " | ".join(classes) + " |",
            "| --- | " + " | ".join("---:" for _ in classes) + " |",
        ]
        for name in MODELS:
            if name in result["class_recall"]:
                lines.append(
                    f"| {MODEL_TITLES[name]} | "
                    + " | ".join(format_mean_std(result["class_recall"][name].get(c)) for c in classes) + " |"
                )
    lines += ["", "Per seed (ACC / AUC / balanced ACC):", ""]
    present = [name for name in MODELS if name in summary]
    same_images = result.get("same_images", {})
    tested = any(same_images.values())
    lines.append("| Seed | " + " | ".join(MODEL_TITLES[name] for name in present)
                 + (" | distilled - alone, same test images: ACC (McNemar p), AUC (DeLong p) |" if tested else " |"))
    lines.append("| --- | " + " | ".join("---" for _ in present) + (" | --- |" if tested else " |"))
    for seed, results in result["per_seed"].items():
        cells = [" / ".join("n/a" if results[name][m] is None else f"{results[name][m]:.3f}" for m in METRICS)
                 for name in present]
        if tested:
            cells.append(_same_images_cell(same_images.get(seed)))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _same_images_cell(test):
    if not test:
        return "n/a"
    acc, auc = test["acc"], test["auc"]
    text = f"{100 * acc['difference']:+.1f} points (p = {acc['p_value']:.2g})"
    if auc and auc.get("p_value") is not None:
        text += f", {auc['difference']:+.4f} (p = {auc['p_value']:.2g})"
    return text


def save(result, out_dir):
    """Writes `accuracy.json` and `accuracy.md` into `out_dir`; returns the markdown path."""
    return outputs.save_result(result, out_dir, "accuracy", to_markdown(result))


def _read_record(path, config, phase):
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        saved = _with_defaults(record["config"])
    except FileNotFoundError:
        return None
    except (OSError, KeyError, json.JSONDecodeError, tomllib.TOMLDecodeError, ConfigError) as e:
        raise ValueError(f"{path} is unreadable ({e}); delete it to rerun that phase.") from None
    return record if _phase_inputs(saved, phase) == _phase_inputs(config.to_dict(), phase) else None


def _with_defaults(config_text):
    """A saved config with every key present: a key added to kdkeras later, left at its
    default, does not make an older record look different."""
    return config_lib.from_dict(tomllib.loads(config_text)).to_dict()


def _phase_inputs(config, phase):
    """The config entries a phase's result depends on: a change elsewhere reuses it."""
    sections = {"teacher": ("teacher",), "student": ("student",), "distill": ("teacher", "student", "distill")}[phase]
    inputs = {key: config.get(key) for key in ("seed", "strategy", "deterministic", "data", *sections)}
    if phase != "teacher":
        # The labeled subset, and the step budget that a transfer set sets for both arms.
        inputs.update(labeled_fraction=config.get("labeled_fraction"), transfer_set=config["distill"].get("transfer_set"))
    return inputs


def build_parser():
    """The argument parser of `python -m kdkeras.bench.accuracy`."""
    parser = argparse.ArgumentParser(
        prog="python -m kdkeras.bench.accuracy", description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--config", default="quickstart", help="experiment name or .toml path (default quickstart)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help=f"seeds (default {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--epochs", type=int, help="maximum epochs of every phase (default: the config's)")
    parser.add_argument("--runs-dir", default="runs/bench", help="parent of the seed<N> run folders")
    parser.add_argument("--out-dir", type=output_folder, help="write accuracy.json and accuracy.md here (default: --runs-dir)")
    parser.add_argument("--fresh", action="store_true", help="retrain phases that already finished")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help='override a config key for every seed, e.g. --set distill.alpha=0.5 (VALUE read as TOML)',
    )
    return parser


def main(argv=None):
    """Runs the benchmark, prints its tables and writes them."""
    args = build_parser().parse_args(argv)
    from kdkeras.cli import parse_value

    overrides = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            print(f"kdkeras.bench.accuracy: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = parse_value(text.strip())
    try:
        result = run_accuracy_benchmark(
            args.config, args.seeds, args.runs_dir, args.epochs, args.fresh, overrides=overrides
        )
    except (ConfigError, ValueError) as e:
        print(f"kdkeras.bench.accuracy: {e}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    print(f"wrote {save(result, args.out_dir or args.runs_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
