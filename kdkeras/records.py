"""The typed records of a run folder's JSON files: what a phase ran, and a model's test metrics.

`MetricsRecord` is `<run>/<model>_metrics.json`, `RunRecord` its `run` table.
Both turn into strict JSON with `jsonable`; `kdkeras.runs` reads and writes
the files.
"""

import collections.abc
import dataclasses
import datetime
import math

import numpy as np

from kdkeras import __version__

# Facts of the run that files written before `MetricsRecord` kept both at the
# top level and in `run`; a record stores them in `run` alone.
RUN_KEYS = ("epochs_run", "best_epoch", "steps_per_epoch", "train_images")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a phase actually ran, stored in its metrics file and shown by the report.

    Attributes:
        phase: "teacher", "student" or "distill".
        overrides: The config entries that differ from the experiment file
            (`{"data.limit": 200, "distill.epochs": 1}`), as given on the
            command line or by a benchmark.
        limit: `[data] limit`, the most examples per split, or None.
        epochs: The phase's maximum epochs.
        epochs_run: Epochs trained (fewer when early stopping ended the phase).
        best_epoch: The epoch whose weights were kept.
        stopped_early: Whether early stopping ended the phase.
        steps_per_epoch: Optimizer steps of each epoch.
        train_images: `{"labeled": n, "unlabeled": m}` images of the train set.
        kdkeras_version: Version of the code that ran.
        date: UTC date and time the phase finished, ISO 8601.
    """

    phase: str
    overrides: dict
    limit: int | None
    epochs: int
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    steps_per_epoch: int
    train_images: dict
    kdkeras_version: str = __version__
    date: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )

    @classmethod
    def from_dict(cls, data):
        """The record of a metrics file's `run` entry, or None for files written before it existed."""
        if not isinstance(data, dict):
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})


@dataclasses.dataclass(eq=False)
class MetricsRecord(collections.abc.Mapping):
    """A model's `<run>/<model>_metrics.json`: its test metrics, size, speed and what ran.

    Every field is written once, `null` where it is unknown (a model that
    `kdkeras evaluate` scored has no `run`, `monitor` or `train_seconds`).
    The record also reads like the dict of earlier versions, so that code
    written for those keeps working: `record["acc"]`, `record.get("loss")`,
    `{**record}`; `record["epochs_run"]`, `best_epoch`, `steps_per_epoch` and
    `train_images` read the `run` record, and `record["run"]` is that record
    as the file stores it (a dict). Item assignment sets a field, a fact of
    `run`, or a key of `extra`.

    Attributes:
        task: `"binary-class"`, `"multi-class"`, `"ordinal-regression"` or
            `"multi-label"`.
        n: Number of test samples.
        n_classes: Number of classes (labels, for multi-label).
        acc: Accuracy, the MedMNIST definition (see `kdkeras.evaluation.metrics`).
        auc: ROC AUC, the MedMNIST definition; None when a class (label) has
            no positive or no negative test sample, where it is undefined.
        balanced_acc: Mean recall over the classes present in the test labels
            (as `sklearn.metrics.balanced_accuracy_score`); for multi-label, the
            mean over labels of (sensitivity + specificity) / 2.
        per_class: One dict per class (label) with `name`, `precision`,
            `recall`, `f1`, `support` (true samples of the class; positives for
            a label) and `auc` (one-vs-rest; None when undefined). Precision,
            recall and F1 are 0.0 where their denominator is 0.
        confusion_matrix: Single-label tasks, `C x C` counts with rows the
            true class and columns the predicted class; multi-label, one 2 x 2
            matrix `[[TN, FP], [FN, TP]]` per label.
        ece: Expected calibration error with 15 equal-width bins on the
            confidence, the probability given to the predicted class:
            `sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|`, bins
            `(k/15, (k+1)/15]` (Guo et al., 2017). For multi-label the N x L
            binary decisions are pooled, the confidence of each being
            `max(p, 1 - p)`.
        cross_entropy: Mean negative log-likelihood of the true class (binary
            cross-entropy averaged over labels for multi-label), with
            probabilities floored at 1e-7. Unlike a distiller's training loss
            it compares across teacher, student and distilled models.
        intervals: Confidence intervals by a stratified bootstrap over the
            samples (`kdkeras.stats.bootstrap_intervals`, seed 0, so the same
            predictions always give the same intervals): metric name ->
            `{"low", "high", "confidence", "resamples"}`, or None where the
            metric is undefined. Metrics: `acc`, `auc`, `balanced_acc`; for
            binary-class `sensitivity` and `specificity` (recall of the last
            and the first class); for multi-class `recall[<class name>]`.
        loss: The model's supervised loss on the test split.
        params: Parameter count (`kdkeras.evaluation.profiling.describe_model`).
        trainable_params: Trainable parameters.
        non_trainable_params: Non-trainable parameters (BatchNorm statistics).
        size_bytes: Size of the saved model on disk.
        latency: CPU latency per batch size (`"1"`, `"32"`): `ms_per_image`,
            `ms_per_batch`, `images_per_s` (`profiling.measure_latency`).
        architecture: The model's name in the zoo (or the saved model's name).
        run: The `RunRecord` of the phase that trained the model, or None.
        monitor: The validation metric that chose the kept epoch, e.g. `val_auc`.
        best_monitor_value: Its value at that epoch.
        train_seconds: Wall time of `fit`.
        extra: Keys this version does not know, kept as read and written
            back (a newer kdkeras's fields, a user's notes, or the top-level
            `epochs_run`, ... of a file written before `run` existed).
    """

    task: str
    n: int | None = None
    n_classes: int | None = None
    acc: float | None = None
    auc: float | None = None
    balanced_acc: float | None = None
    per_class: list | None = None
    confusion_matrix: list | None = None
    ece: float | None = None
    cross_entropy: float | None = None
    intervals: dict | None = None
    loss: float | None = None
    params: int | None = None
    trainable_params: int | None = None
    non_trainable_params: int | None = None
    size_bytes: int | None = None
    latency: dict | None = None
    architecture: str | None = None
    run: RunRecord | None = None
    monitor: str | None = None
    best_monitor_value: float | None = None
    train_seconds: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        clash = sorted(set(self.extra) & set(_FIELDS))
        if clash:
            raise ValueError(f"`extra` holds {', '.join(clash)}, which are fields of a MetricsRecord; set the fields.")

    @classmethod
    def from_json(cls, data, source="The metrics"):
        """The record of a metrics file's content, as written by this or any earlier version.

        The top-level `epochs_run`, `best_epoch`, `steps_per_epoch` and
        `train_images` of earlier files must agree with the `run` record and
        are then read from it; a file without `run` keeps them in `extra`.

        Args:
            data: The parsed JSON (or a record, or the dict of earlier versions,
                whose `run` may be a `RunRecord`).
            source: What `data` came from, for error messages (the file's path).

        Returns:
            A `MetricsRecord`.

        Raises:
            ValueError: `data` is not a dict with a `task` field, or its `run`
                is not a complete run table, or disagrees with the top level.
        """
        if not isinstance(data, collections.abc.Mapping) or "task" not in data:
            raise ValueError(
                f"{source} has no 'task' field; write it with `kdkeras.runs.save_metrics` "
                "from `kdkeras.evaluation.metrics.classification_metrics(...)`."
            )
        if isinstance(data, MetricsRecord):
            return dataclasses.replace(data, extra=dict(data.extra))
        extra = {key: value for key, value in data.items() if key not in _FIELDS}
        run = _run_record(data.get("run"), extra, source)
        return cls(**{key: data[key] for key in _FIELDS if key in data and key != "run"}, run=run, extra=extra)

    def to_json(self):
        """The record as strict JSON types, each field once: what `kdkeras.runs.save_metrics` writes."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["run"] = None if self.run is None else dataclasses.asdict(self.run)
        return jsonable({**data, **dict(self._extra_items())})

    def _extra_items(self):
        # A run record supersedes the top-level copies an earlier file may hold.
        return ((k, v) for k, v in self.extra.items() if self.run is None or k not in RUN_KEYS)

    def __getitem__(self, key):
        if key == "run":
            return None if self.run is None else dataclasses.asdict(self.run)
        if key in _FIELDS:
            return getattr(self, key)
        if key in RUN_KEYS and self.run is not None:
            return getattr(self.run, key)
        return dict(self._extra_items())[key]

    def __iter__(self):
        yield from _FIELDS
        if self.run is not None:
            yield from RUN_KEYS
        yield from (key for key, _ in self._extra_items())

    def __len__(self):
        return sum(1 for _ in self)

    def __setitem__(self, key, value):
        if key == "run":
            self.run = _run_record(value, {}, "The metrics record")
        elif key in _FIELDS:
            setattr(self, key, value)
        elif key in RUN_KEYS and self.run is not None:
            self.run = dataclasses.replace(self.run, **{key: value})
        else:
            self.extra[key] = value

    def update(self, other=(), /, **values):
        """Sets each key as `record[key] = value` does, like `dict.update`."""
        for key, value in dict(other, **values).items():
            self[key] = value


_FIELDS = tuple(f.name for f in dataclasses.fields(MetricsRecord) if f.name != "extra")


def _run_record(value, top_level, source):
    """The `RunRecord` of a `run` entry, with the top-level copies of its facts checked and folded in.

    Pops the copies from `top_level` when there is a run record; leaves them
    there when there is none (a file written before `run` existed).
    """
    if value is None:
        return None
    if isinstance(value, RunRecord):
        value = dataclasses.asdict(value)
    if not isinstance(value, collections.abc.Mapping):
        raise ValueError(f"{source}: `run` is {type(value).__name__}, not a table (a `RunRecord` "
                         "or its dict); re-run the phase to rewrite it.")
    table = dict(value)
    for key in RUN_KEYS:
        if key not in top_level:
            continue
        copy = top_level.pop(key)
        if key in table and jsonable(table[key]) != jsonable(copy):
            raise ValueError(
                f"{source}: {key} is {copy!r} at the top level but {table[key]!r} in `run`; "
                "the file was edited by hand: keep the value under `run` and delete the top-level one."
            )
        table.setdefault(key, copy)
    required = [f.name for f in dataclasses.fields(RunRecord)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in table]
    if missing:
        raise ValueError(f"{source}: `run` has no {', '.join(missing)}; re-run the phase to rewrite it.")
    return RunRecord.from_dict(table)


def jsonable(value):
    """`value` with numpy types, non-finite floats, records and dataclasses made strict JSON."""
    if isinstance(value, MetricsRecord):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
