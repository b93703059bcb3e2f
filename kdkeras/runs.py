"""The run folder: every file an experiment writes, named in one place.

`runs/<experiment>/` holds, for each model name (`teacher`, `student`,
`distilled`, or the stem of a model `kdkeras evaluate` scored):

| file | what |
| --- | --- |
| `{name}.keras` | the phase's deployable model (the student alone for `distilled`) |
| `{name}_config.toml` | the effective config of the phase, with what ran (see `RunRecord`) |
| `{name}_history.csv` | one row per epoch, rewritten atomically |
| `{name}_metrics.json` | a `MetricsRecord`: test metrics, parameters, size on disk, CPU latency, `run` record |
| `{name}_predictions.npz` | test labels, probabilities and the first test images |
| `{name}_<figure>.png` | the report's figures of that model |
| `config.toml` | the config of the phase that ran last |
| `bench_{name}.json` | a benchmark's record of the phase (config, metrics, budget) |
| `report.md`, `<figure>.png` | the report and its figures over all models |
| `clinical.json` | the report's calibration, operating points, fidelity and Grad-CAM agreement |
| `latency.json` | the report's CPU latencies of its models, timed together (`{name: {batch: timing}}`) |
| `logs/{name}/`, `state/{name}/` | TensorBoard logs; checkpoints of an unfinished phase |

Only this module spells these names, as Keras keeps its file names in
`saving_lib`: a rename happens here or nowhere. It also reads and writes the
files, so that `training`, `reporting`, `sweep`, `export` and the benchmarks
share one definition of what a metrics file holds (`kdkeras.records`).
"""

import json
import os

import numpy as np

from kdkeras.files import atomic_path, write_text_atomic

# Public here too: `kdkeras.runs.RunRecord`, `MetricsRecord` and `jsonable` name what the run folder holds.
from kdkeras.records import MetricsRecord, RunRecord, jsonable  # noqa: F401

PHASES = ("teacher", "student", "distill")
# The model each phase writes; `distill` saves the distilled student.
MODEL_NAMES = {"teacher": "teacher", "student": "student", "distill": "distilled"}
PHASE_OF = {name: phase for phase, name in MODEL_NAMES.items()}
# The headline test metrics every table shows.
HEADLINE = ("acc", "auc", "balanced_acc")


class RunFolder:
    """The files of one experiment's run folder.

    Args:
        path: The folder, e.g. `runs/quickstart`.

    Example:

    ```python
    run = RunFolder.of(config, "runs")
    metrics = run.read_metrics("distilled")
    run.model("teacher")  # 'runs/quickstart/teacher.keras'
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    @classmethod
    def of(cls, config, runs_dir="runs"):
        """The run folder of an `ExperimentConfig`: `<runs_dir>/<config.name>`."""
        return cls(os.path.join(runs_dir, config.name))

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    def file(self, name, suffix):
        """`<run>/{name}_{suffix}`, e.g. `file("student", "curves.png")`."""
        return os.path.join(self.path, f"{name}_{suffix}")

    def model(self, name):
        """The saved model `<run>/{name}.keras`."""
        return os.path.join(self.path, f"{name}.keras")

    def metrics(self, name):
        return self.file(name, "metrics.json")

    def history(self, name):
        return self.file(name, "history.csv")

    def predictions(self, name):
        return self.file(name, "predictions.npz")

    def phase_config(self, name):
        return self.file(name, "config.toml")

    def bench_record(self, name):
        """`<run>/bench_{name}.json`: a benchmark's record of the phase (see `kdkeras.bench.accuracy`)."""
        return os.path.join(self.path, f"bench_{name}.json")

    def figure(self, kind, name=None):
        """A report figure: `{name}_{kind}.png` of one model, or `{kind}.png` over all."""
        return self.file(name, f"{kind}.png") if name else os.path.join(self.path, f"{kind}.png")

    @property
    def config(self):
        return os.path.join(self.path, "config.toml")

    @property
    def report(self):
        return os.path.join(self.path, "report.md")

    @property
    def clinical(self):
        return os.path.join(self.path, "clinical.json")

    @property
    def latency(self):
        return os.path.join(self.path, "latency.json")

    def logs(self, name):
        return os.path.join(self.path, "logs", name)

    def state(self, name):
        return os.path.join(self.path, "state", name)

    def finished(self):
        """Model names of the phases that have written their metrics, in phase order."""
        return [name for name in MODEL_NAMES.values() if os.path.exists(self.metrics(name))]

    def missing(self, names):
        """The files a report needs for `names` that are not there."""
        return [
            path
            for name in names
            for path in (self.metrics(name), self.history(name), self.predictions(name))
            if not os.path.isfile(path)
        ]

    def read_metrics(self, name):
        """The `MetricsRecord` of a model; raises `ValueError` naming the file if it is not one."""
        return read_metrics(self.metrics(name))

    def write_metrics(self, name, metrics):
        return save_metrics(self.metrics(name), metrics)

    def read_predictions(self, name):
        return load_predictions(self.predictions(name))

    def write_predictions(self, name, y_true, y_score, images=None, logits=None, val=None):
        return save_predictions(self.predictions(name), y_true, y_score, images, logits, val)


def metrics_beside(model_path):
    """`<folder>/<stem>_metrics.json`: the metrics file a phase wrote beside its saved model."""
    folder, name = os.path.split(os.path.splitext(os.fspath(model_path))[0])
    return RunFolder(folder).metrics(name)


def trained_class_names(model_path):
    """The class names a saved model was trained on, from the metrics file beside it.

    A model from elsewhere has none: only its class count can then be checked.

    Returns:
        List of class names, or None.
    """
    try:
        with open(metrics_beside(model_path), encoding="utf-8") as f:
            return class_names(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def class_names(metrics):
    """The class names of a metrics record (or dict), in label order."""
    return [row["name"] for row in metrics["per_class"]]


def class_recall(metrics):
    """`{class name: recall}` of a metrics record (or dict)."""
    return {row["name"]: row["recall"] for row in metrics["per_class"]}


def headline(metrics):
    """The numbers a table row shows: ACC, AUC, balanced ACC, epochs, seconds, test images."""
    return {
        **{key: metrics.get(key) for key in HEADLINE},
        "epochs": metrics.get("epochs_run"),
        "seconds": metrics.get("train_seconds"),
        "n": metrics.get("n"),
    }


def read_report_json(path):
    """A JSON file the report wrote, by model name: `clinical.json` (`{model: {calibration,
    operating_point, fidelity, ...}}`) or `latency.json` (`{model: {batch: timing}}`)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_report_json(path, data):
    """Writes one of the report's JSON files (see `read_report_json`) as indented strict JSON, atomically."""
    write_text_atomic(path, json.dumps(jsonable(data), indent=2) + "\n")
    return path


def run_record(metrics):
    """The `RunRecord` of a metrics record (or dict), or None if it has none."""
    if isinstance(metrics, MetricsRecord):
        return metrics.run
    return RunRecord.from_dict(metrics.get("run"))


def read_metrics(path):
    """Reads a metrics JSON file, as written by this or any earlier version.

    Returns:
        Its `MetricsRecord`, which also reads like a dict (`metrics["acc"]`).

    Raises:
        FileNotFoundError: If it is missing.
        ValueError: If it is not JSON, has no `task` field, or its `run`
            record is incomplete or disagrees with the top-level copies an
            earlier version wrote.
    """
    with open(path, encoding="utf-8") as f:
        try:
            metrics = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-run the evaluation.") from error
    return MetricsRecord.from_json(metrics, source=path)


def save_metrics(path, metrics):
    """Writes a model's metrics as indented strict JSON, atomically.

    A `MetricsRecord` is written as `to_json()` gives it, each field once. A
    dict (the form of earlier versions, still accepted) is written as given;
    `MetricsRecord.from_json(d)` makes it a record. Either way numpy scalars
    and arrays become Python numbers and lists, NaN becomes `null` (strict
    JSON has no NaN), dict keys become strings (e.g. the batch sizes of
    `latency`) and a `RunRecord` a table.

    Args:
        path: Destination `.json`, e.g. `runs/quickstart/student_metrics.json`.
        metrics: A `MetricsRecord`, or a dict such as
            `{**classification_metrics(...), **describe_model(...)}`.

    Returns:
        `path`.
    """
    write_text_atomic(path, json.dumps(jsonable(metrics), indent=2) + "\n")
    return path


def save_predictions(path, y_true, y_score, images=None, logits=None, val=None):
    """Saves a model's test predictions (atomically) for the report.

    Args:
        path: Destination `.npz`, e.g. `runs/quickstart/student_predictions.npz`.
        y_true: Labels, as for `classification_metrics`.
        y_score: Probabilities, one row per sample.
        images: Optional first test images (aligned with the first rows of
            `y_true`) for the prediction grid, pixel values in [0, 255].
        logits: Optional test logits, one row per sample (calibration and
            fidelity need them; probabilities lose the temperature).
        val: Optional `(labels, logits)` of the validation split, on which
            the report fits calibration and operating points.

    Returns:
        `path`.
    """
    arrays = {"y_true": np.asarray(y_true), "y_score": np.asarray(y_score)}
    if logits is not None:
        arrays["logits"] = np.asarray(logits)
    if val is not None:
        arrays["val_true"], arrays["val_logits"] = (np.asarray(a) for a in val)
    if len(arrays["y_true"]) != len(arrays["y_score"]):
        raise ValueError(
            f"`y_true` ({len(arrays['y_true'])} rows) and `y_score` "
            f"({len(arrays['y_score'])} rows) must have one row per test sample."
        )
    if images is not None:
        arrays["images"] = np.asarray(images)
        if len(arrays["images"]) > len(arrays["y_true"]):
            raise ValueError(
                f"`images` has {len(arrays['images'])} rows but there are only "
                f"{len(arrays['y_true'])} labels; pass the first images of the test split."
            )
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_predictions(path):
    """Reads a file written by `save_predictions`.

    Returns:
        dict with `y_true`, `y_score` and, if saved, `images`, `logits`,
        `val_true` and `val_logits`.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If `y_true` or `y_score` is missing.
    """
    with np.load(os.fspath(path)) as data:
        arrays = {key: data[key] for key in data.files}
    for key in ("y_true", "y_score"):
        if key not in arrays:
            raise ValueError(
                f"{path} has no {key!r} array (found: {', '.join(sorted(arrays)) or 'none'}); "
                "write it with `kdkeras.runs.save_predictions`."
            )
    return arrays
