"""Experiment configs: one TOML file per experiment, validated before any training.

A config has a top level (`name`, `seed`, `description`, `strategy`), a `[data]`
table whose `loader` names a `kdkeras.data.load_*` function, whose optional
`augment_on` ("pipeline" or "device") says where `augment` runs, and whose
other keys are that function's arguments, and one table per phase: `[teacher]`,
`[student]` and `[distill]`, plus an optional `[sweep]` grid for `kdkeras sweep`.
See `experiments/quickstart.toml`.
"""

import copy
import dataclasses
import inspect
import math
import os
import tomllib

from kdkeras.files import write_text_atomic

LOADERS = ("medmnist", "xray_folder", "ham10000", "image_folder", "tfds")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
MONITORS = ("val_loss", "val_accuracy", "val_auc")
CLASS_WEIGHTS = ("", "balanced")
STRATEGIES = ("auto", "mirrored", "multiworker", "tpu", "none")
# Where `[data] augment` runs: in the tf.data pipeline, or in the training step.
AUGMENT_ON = ("pipeline", "device")
BUNDLED = "@bundled"


class ConfigError(ValueError):
    """An experiment config that cannot run; the message names the key and the fix."""


@dataclasses.dataclass
class TrainConfig:
    """How one phase trains: its model, optimizer, schedule and callbacks.

    Attributes:
        model: Name in the `kdkeras.models` registry (`kdkeras models` lists them).
        weights: "" (random init), "imagenet", or a path to a weights file.
        options: Extra keyword arguments of `kdkeras.models.get_model`.
        epochs: Maximum number of epochs.
        optimizer: One of `OPTIMIZERS`.
        learning_rate: Initial learning rate.
        weight_decay: Decoupled weight decay (adamw, sgd); 0 disables it.
        early_stopping: Patience in epochs on `monitor` (best weights are
            restored at the end); 0 disables early stopping.
        reduce_lr: Patience of ReduceLROnPlateau on `monitor`; 0 disables it.
        monitor: Validation quantity for early stopping, LR reduction and
            best-weight restore: one of `MONITORS`.
        class_weight: "" (every example counts the same) or "balanced":
            weight each class by `n / (k * n_class)` of the train split, so
            a rare class weighs as much as a common one in every loss term.
    """

    model: str = ""
    weights: str = ""
    options: dict = dataclasses.field(default_factory=dict)
    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    early_stopping: int = 0
    reduce_lr: int = 0
    monitor: str = "val_auc"
    class_weight: str = ""


@dataclasses.dataclass
class DistillConfig(TrainConfig):
    """The distillation phase: a `TrainConfig` plus the KD hyper-parameters.

    The student architecture comes from `[student]` unless `model` is set here.

    Attributes:
        alpha: Weight of the student's own loss, in [0, 1].
        temperature: Softening temperature, > 0.
        loss: Distillation loss name, one of `kdkeras.losses.NAMES`. For
            multi-label data "knowledge_distillation" means `MultiLabelKD`.
        loss_options: Extra arguments of the loss, e.g. `{alpha = 1, beta = 8}`
            for "decoupled_kd".
        warmup_epochs: Epochs over which the distillation terms ramp up
            linearly from 0 (DKD uses 20); 0 disables the warm-up.
        features: Feature-distillation terms, tables with `student_layer`,
            `teacher_layer`, `loss` ("hint", "attention", "cosine") and `weight`.
        teachers: `.keras` teacher files to distil from together; empty means
            the experiment's own `teacher.keras`.
        teacher_weights: Weights of `teachers`' soft targets; empty means equal.
        cache_teacher: Compute the teacher's logits once and stream them with
            the data; needs a train pipeline without augmentation.
    """

    alpha: float = 0.1
    temperature: float = 4.0
    loss: str = "knowledge_distillation"
    loss_options: dict = dataclasses.field(default_factory=dict)
    warmup_epochs: float = 0.0
    features: list = dataclasses.field(default_factory=list)
    teachers: list = dataclasses.field(default_factory=list)
    teacher_weights: list = dataclasses.field(default_factory=list)
    cache_teacher: bool = False


@dataclasses.dataclass
class SweepConfig:
    """A grid over the distillation temperature and alpha, run by `kdkeras sweep`.

    An empty list leaves that axis at the `[distill]` value.

    Attributes:
        temperatures: Temperatures to try, each > 0.
        alphas: Weights of the student's own loss to try, each in [0, 1].
    """

    temperatures: list = dataclasses.field(default_factory=list)
    alphas: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: data, the three phases and where it came from.

    Attributes:
        name: Run folder name under the runs directory.
        description: One line for the report.
        seed: Global seed (Python, NumPy, TensorFlow, shuffles).
        strategy: `tf.distribute` strategy, one of `STRATEGIES`.
        data: Loader name under `loader` plus that loader's keyword arguments.
        teacher: The teacher phase.
        student: The student-alone phase (the baseline).
        distill: The distillation phase.
        sweep: The temperature x alpha grid of `kdkeras sweep`.
        published: Rows of published numbers to print beside ours.
        path: The file it was read from (not a TOML key).
    """

    name: str = "experiment"
    description: str = ""
    seed: int = 0
    strategy: str = "auto"
    data: dict = dataclasses.field(default_factory=dict)
    teacher: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    student: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    published: list = dataclasses.field(default_factory=list)
    path: str = ""

    def to_dict(self):
        """The config as plain TOML-compatible data (without `path`)."""
        data = dataclasses.asdict(self)
        data.pop("path")
        return data

    def phase(self, name):
        """The `TrainConfig` of phase `name`: "teacher", "student" or "distill"."""
        if name not in ("teacher", "student", "distill"):
            raise ConfigError(f"Unknown phase {name!r}; use teacher, student or distill.")
        return getattr(self, name)

    def student_model(self):
        """(model name, options) of the distilled student."""
        if self.distill.model:
            return self.distill.model, self.distill.options
        return self.student.model, self.student.options


def load_config(path):
    """Reads and validates an experiment config.

    Args:
        path: Path of a `.toml` file, or the name of a shipped experiment
            (`"quickstart"` reads `experiments/quickstart.toml`).

    Returns:
        An `ExperimentConfig`.

    Raises:
        ConfigError: for a missing file, invalid TOML, unknown keys, wrong
            types or out-of-range values; the message names the key.
    """
    path = resolve_path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    config = from_dict(raw, source=path)
    config.path = path
    return config


def resolve_path(path):
    """Maps an experiment name to its file; checks that the file exists."""
    path = os.fspath(path)
    if not path.endswith(".toml") and os.sep not in path:
        candidate = os.path.join(experiments_dir(), f"{path}.toml")
        if os.path.exists(candidate):
            return candidate
    if not os.path.exists(path):
        shipped = sorted(f[:-5] for f in os.listdir(experiments_dir()) if f.endswith(".toml"))
        raise ConfigError(
            f"Experiment config {path!r} not found. Pass a .toml path or one of: {', '.join(shipped)}."
        )
    return path


def experiments_dir():
    """The `experiments/` folder of a source checkout, or of the working directory."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
    return here if os.path.isdir(here) else os.path.join(os.getcwd(), "experiments")


def from_dict(raw, source="<config>"):
    """Builds a validated `ExperimentConfig` from parsed TOML data.

    Args:
        raw: Mapping as read from TOML.
        source: Name of the origin, for error messages.

    Returns:
        An `ExperimentConfig`.
    """
    raw = copy.deepcopy(raw)
    sections = {"teacher": TrainConfig, "student": TrainConfig, "distill": DistillConfig, "sweep": SweepConfig}
    values = {}
    for key, value in raw.items():
        if key in sections:
            values[key] = _build(sections[key], value, f"{source}: [{key}]")
        elif key == "data":
            values[key] = _check_data(value, source)
        else:
            values[key] = value
    config = _build(ExperimentConfig, values, source, nested=set(sections) | {"data"})
    _check_values(config, source)
    return config


def apply_overrides(config, overrides):
    """Returns a copy of `config` with dotted-key overrides applied and validated.

    Args:
        config: An `ExperimentConfig`.
        overrides: Mapping such as `{"distill.temperature": 6.0, "data.batch_size": 32}`.

    Returns:
        A new, validated `ExperimentConfig`.
    """
    raw = config.to_dict()
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"Override {dotted!r}: {part!r} is not a config table.")
            node = node[part]
        node[leaf] = value
    updated = from_dict(raw, source=f"{config.path or '<config>'} (with overrides)")
    updated.path = config.path
    return updated


def dump_toml(config):
    """Serializes a config to TOML text (the resolved config saved with each run)."""
    data = config.to_dict()
    lines = []
    for key, value in data.items():
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and not _is_table_list(value)):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
    for key, value in data.items():
        if isinstance(value, list) and _is_table_list(value):
            for row in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


def save_config(config, path):
    """Writes the resolved config as TOML, atomically."""
    write_text_atomic(path, dump_toml(config))


def _is_table_list(value):
    return bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot write {value!r} ({type(value).__name__}) to TOML.")


def _build(cls, values, where, nested=()):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table, got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}. "
            f"Allowed keys: {', '.join(sorted(fields))}."
        )
    for key, value in values.items():
        if key in nested:
            continue
        default = fields[key].default
        if default is dataclasses.MISSING:
            default = fields[key].default_factory()
        values[key] = _check_type(value, default, f"{where}: {key}")
    return cls(**values)


def _check_type(value, default, where):
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"{where} must be of type {expected.__name__}, got {value!r} ({type(value).__name__})."
        )
    return value


def _check_data(data, source):
    from kdkeras import data as data_lib

    if not isinstance(data, dict) or "loader" not in data:
        raise ConfigError(
            f"{source}: [data] needs a `loader` key, one of: {', '.join(LOADERS)}."
        )
    loader = data["loader"]
    if loader not in LOADERS:
        raise ConfigError(f"{source}: [data] loader = {loader!r} is unknown. Allowed: {', '.join(LOADERS)}.")
    parameters = inspect.signature(getattr(data_lib, f"load_{loader}")).parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(k for k in data if k not in ("loader", "augment_on") and k not in parameters)
    if unknown and not accepts_kwargs:
        allowed = ", ".join(sorted(k for k, p in parameters.items() if p.kind is not p.VAR_KEYWORD))
        raise ConfigError(
            f"{source}: [data] key(s) {', '.join(map(repr, unknown))} are not arguments of "
            f"kdkeras.data.load_{loader}. Allowed: loader, augment_on, {allowed}."
        )
    augment_on = data.get("augment_on", "pipeline")
    if augment_on not in AUGMENT_ON:
        raise ConfigError(
            f"{source}: [data] augment_on = {augment_on!r} is unknown. Allowed: {', '.join(AUGMENT_ON)}."
        )
    if augment_on == "device" and not data.get("augment"):
        raise ConfigError(
            f"{source}: [data] augment_on = 'device' has no augmentation to run: set [data] augment "
            "(e.g. augment = \"xray\"), or remove augment_on."
        )
    return data


def _check_values(config, source):
    def fail(key, message):
        raise ConfigError(f"{source}: {key} {message}")

    if config.strategy not in STRATEGIES:
        fail("strategy", f"= {config.strategy!r} is unknown. Allowed: {', '.join(STRATEGIES)}.")
    if not config.name or any(c in config.name for c in "/\\") or config.name.startswith("."):
        fail("name", f"= {config.name!r} must be a plain folder name (no slashes).")
    for phase in ("teacher", "student", "distill"):
        train = getattr(config, phase)
        if phase != "distill" and not train.model:
            fail(f"[{phase}] model", "is missing. `kdkeras models` lists the available names.")
        if train.epochs < 1:
            fail(f"[{phase}] epochs", f"= {train.epochs} must be >= 1.")
        if not train.learning_rate > 0:
            fail(f"[{phase}] learning_rate", f"= {train.learning_rate} must be > 0.")
        if train.weight_decay < 0:
            fail(f"[{phase}] weight_decay", f"= {train.weight_decay} must be >= 0.")
        if train.optimizer not in OPTIMIZERS:
            fail(f"[{phase}] optimizer", f"= {train.optimizer!r} is unknown. Allowed: {', '.join(OPTIMIZERS)}.")
        if train.monitor not in MONITORS:
            fail(f"[{phase}] monitor", f"= {train.monitor!r} is unknown. Allowed: {', '.join(MONITORS)}.")
        if train.class_weight not in CLASS_WEIGHTS:
            fail(f"[{phase}] class_weight", f"= {train.class_weight!r} is unknown. Allowed: \"\" or \"balanced\".")
        if train.early_stopping < 0 or train.reduce_lr < 0:
            fail(f"[{phase}] early_stopping/reduce_lr", "are patiences in epochs and must be >= 0.")
    if not 0.0 <= config.distill.alpha <= 1.0:
        fail("[distill] alpha", f"= {config.distill.alpha} must be in [0, 1].")
    if not config.distill.temperature > 0:
        fail("[distill] temperature", f"= {config.distill.temperature} must be > 0.")
    _check_distill(config.distill, config.data, fail)
    _check_sweep(config.sweep, fail)
    _check_models(config, fail)


def _check_distill(distill, data, fail):
    from kdkeras import features as kd_features
    from kdkeras import losses as kd_losses
    from kdkeras.distiller import check_teacher_weights

    if distill.loss not in kd_losses.NAMES:
        fail("[distill] loss", f"= {distill.loss!r} is unknown. Allowed: {', '.join(kd_losses.NAMES)}.")
    try:
        kd_losses.get(distill.loss, temperature=distill.temperature, **distill.loss_options)
    except ValueError as error:
        fail("[distill] loss_options", f"= {distill.loss_options!r}: {error}")
    if not distill.warmup_epochs >= 0:
        fail("[distill] warmup_epochs", f"= {distill.warmup_epochs} must be >= 0.")
    for i, row in enumerate(distill.features):
        where = f"[distill] features[{i}]"
        if not isinstance(row, dict) or not {"student_layer", "teacher_layer"} <= set(row):
            fail(where, f"= {row!r} must be a table with student_layer, teacher_layer, loss and weight.")
        unknown = sorted(set(row) - {"student_layer", "teacher_layer", "loss", "weight"})
        if unknown:
            fail(where, f"has unknown key(s) {unknown}. Allowed: student_layer, teacher_layer, loss, weight.")
        try:
            kd_features.FeatureMatch(**row)
        except ValueError as error:
            fail(where, f"= {row!r}: {error}")
    if any(not isinstance(path, str) or not path.endswith(".keras") for path in distill.teachers):
        fail("[distill] teachers", f"= {distill.teachers!r} must list .keras teacher files.")
    if distill.teacher_weights:
        try:
            check_teacher_weights(distill.teacher_weights, max(len(distill.teachers), 1))
        except ValueError as error:
            fail("[distill] teacher_weights", f"= {distill.teacher_weights!r}: {error}")
    if distill.cache_teacher and data.get("augment"):
        fail(
            "[distill] cache_teacher",
            f"= true needs a train pipeline that shows the teacher the same images every epoch, "
            f"but [data] augment = {data['augment']!r}. Remove `augment` or set cache_teacher = false.",
        )
    if distill.cache_teacher and distill.features:
        fail("[distill] cache_teacher", "= true caches logits only; it cannot be used with [distill] features.")


def _check_sweep(sweep, fail):
    rules = (
        ("temperatures", lambda t: math.isfinite(t) and t > 0, "> 0"),
        ("alphas", lambda a: 0 <= a <= 1, "in [0, 1]"),
    )
    for axis, valid, rule in rules:
        values = getattr(sweep, axis)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
                fail(f"[sweep] {axis}", f"= {values!r}: each value must be a number {rule}, got {value!r}.")
        if len(set(values)) != len(values):
            fail(f"[sweep] {axis}", f"= {values!r} repeats a value; list each one once.")


def _check_models(config, fail):
    from kdkeras import models

    names = [spec.name for spec in models.list_models()]
    for phase, name in (
        ("teacher", config.teacher.model),
        ("student", config.student.model),
        ("distill", config.student_model()[0]),
    ):
        if name not in names:
            fail(f"[{phase}] model", f"= {name!r} is unknown. Allowed: {', '.join(names)}.")

