"""Experiment configs: one TOML file per experiment, validated before any training.

A config has a top level (`name`, `seed`, `description`, `strategy`), a `[data]`
table whose `loader` names a loader of `kdkeras.registry.LOADERS`, whose optional
`augment_on` ("pipeline" or "device") says where `augment` runs, and whose
other keys are that function's arguments, and one table per phase: `[teacher]`,
`[student]` and `[distill]`, plus an optional `[sweep]` grid for `kdkeras sweep`
and an optional `[evaluate]` table (operating point, Grad-CAM layers).
See `experiments/quickstart.toml`; `search_path()` says where a name is looked up.

Configs share instead of repeating: `extends = "quickstart"` (a name or a
path, relative to the file) starts from another config and lays this file's
keys over it, table by table; and `[distill]` takes `[student]`'s training
budget (`INHERITED_BY_DISTILL`: epochs, optimizer, learning rate, schedule,
early stopping, class weights) unless it sets a key itself, so the student
alone and the distilled student train alike by default.
"""

import copy
import dataclasses
import inspect
import math
import os
import tomllib

from kdkeras.files import write_text_atomic
from kdkeras.registry import AUGMENTATIONS, LOADERS, MODELS, OPTIMIZERS

MONITORS = ("val_loss", "val_accuracy", "val_auc")
CLASS_WEIGHTS = ("", "balanced")
STRATEGIES = ("auto", "mirrored", "multiworker", "tpu", "none")
# How the two terms add up: "hinton" is alpha * CE + (1 - alpha) * KD (Hinton et al., keras.io,
# keras.distillation); "additive" is alpha * CE + KD, the objective of seed 002's article.
OBJECTIVES = ("hinton", "additive")
# Above this, float32 softmax(z / T) of teacher and student round to the same numbers: measured
# on logits of scale 3, the loss is off by 2e-5 at T = 1e3, 3% at 1e4 and negative at 1e5.
MAX_TEMPERATURE = 1000.0
# Where `[data] augment` runs: in the tf.data pipeline, or in the training step.
AUGMENT_ON = ("pipeline", "device")
BUNDLED = "@bundled"
# The training budget `[distill]` takes from `[student]` unless it sets it.
INHERITED_BY_DISTILL = (
    "epochs", "optimizer", "learning_rate", "weight_decay", "early_stopping", "reduce_lr", "monitor", "class_weight",
)
# The loaders that read local files, and their [data] keys naming those files.
LOCAL_DATA_KEYS = {"xray_folder": ("root",), "image_folder": ("root",), "ham10000": ("metadata_csv", "image_dirs")}


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
        optimizer: A name in `kdkeras.registry.OPTIMIZERS` (`kdkeras list`).
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
        temperature: Softening temperature, in (0, `MAX_TEMPERATURE`].
        objective: How the terms add up, one of `OBJECTIVES`: "hinton" weighs
            the distillation term by `1 - alpha`, "additive" by 1 (seed 002).
        loss: Distillation loss name, one of
            `kdkeras.registry.DISTILLATION_TERMS` (`kdkeras list`); multi-label
            data need "multilabel_kd".
        loss_options: Extra arguments of the loss, e.g. `{tckd_weight = 1, nckd_weight = 8}`
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
        transfer_set: Unlabeled images the student learns from through the
            teacher only (see `kdkeras.transfer`): "" (none), "train" (the
            train images whose labels `labeled_fraction` withholds), or a
            folder of images or an `.npz` with an `images` array.
    """

    alpha: float = 0.1
    temperature: float = 4.0
    objective: str = "hinton"
    loss: str = "knowledge_distillation"
    loss_options: dict = dataclasses.field(default_factory=dict)
    warmup_epochs: float = 0.0
    features: list = dataclasses.field(default_factory=list)
    teachers: list = dataclasses.field(default_factory=list)
    teacher_weights: list = dataclasses.field(default_factory=list)
    cache_teacher: bool = False
    transfer_set: str = ""


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
class EvaluateConfig:
    """How the trained models are read out: decision threshold and Grad-CAM layers.

    Attributes:
        operating_point: Binary tasks: `{}` keeps the 0.5 threshold;
            `{sensitivity = 0.95}`, `{specificity = 0.9}` or `{youden = true}`
            picks the threshold on the validation split (see
            `kdkeras.operating_point`).
        gradcam_layers: Feature layer of the Grad-CAM maps per model, e.g.
            `{teacher = "stage4_block2_out"}`; a model left out uses its last
            spatial layer.
    """

    operating_point: dict = dataclasses.field(default_factory=dict)
    gradcam_layers: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: data, the three phases and where it came from.

    Attributes:
        name: Run folder name under the runs directory.
        description: One line for the report.
        seed: Global seed (Python, NumPy, TensorFlow, shuffles).
        strategy: `tf.distribute` strategy, one of `STRATEGIES`.
        deterministic: Make every op deterministic
            (`tf.config.experimental.enable_op_determinism`), so that a seeded
            phase repeats bit for bit on the same machine and software.
        labeled_fraction: Fraction of the train split whose labels the
            student and distill phases see (a seeded, stratified choice); the
            teacher trains on every label. See `kdkeras.transfer`.
        data: Loader name under `loader` plus that loader's keyword arguments.
        teacher: The teacher phase.
        student: The student-alone phase (the baseline).
        distill: The distillation phase.
        sweep: The temperature x alpha grid of `kdkeras sweep`.
        evaluate: Operating point and Grad-CAM layers of the read-out.
        published: Rows of published numbers to print beside ours.
        data_source: Where to get the dataset of a loader that reads local
            files (shown when `[data]` points at a missing path).
        path: The file it was read from (not a TOML key).
    """

    name: str = "experiment"
    description: str = ""
    data_source: str = ""
    seed: int = 0
    strategy: str = "auto"
    deterministic: bool = False
    labeled_fraction: float = 1.0
    data: dict = dataclasses.field(default_factory=dict)
    teacher: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    student: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
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
        path: Path of a `.toml` file, or the name of an experiment, looked up
            as `<name>.toml` along `search_path()` (`"quickstart"` reads the
            quickstart shipped with kdkeras unless `./experiments/` has one).

    Returns:
        An `ExperimentConfig`.

    Raises:
        ConfigError: for a missing file, invalid TOML, unknown keys, wrong
            types or out-of-range values; the message names the key.
    """
    path = resolve_path(path)
    config = from_dict(_read_extended(path, ()), source=path)
    config.path = path
    return config


def _read_extended(path, chain):
    """The TOML of `path`, laid over the config it `extends` (recursively)."""
    if path in chain:
        raise ConfigError(f"{path}: `extends` loops: {' -> '.join((*chain, path))}.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} line {line}: byte {data[e.start:e.start + 1]!r} is not UTF-8, which TOML "
            "requires. Save the file as UTF-8."
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: extends = {parent!r} must name an experiment or a .toml path.")
    # A relative path is read beside the file that names it, as an include would be.
    beside = os.path.join(os.path.dirname(path), parent)
    base = _read_extended(resolve_path(beside if os.path.exists(beside) else parent), (*chain, path))
    return _merge(base, raw)


def _merge(base, override):
    """`override` laid over `base`: tables merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_path(path):
    """Maps an experiment name to its file along `search_path()`; checks that the file exists.

    A value ending in `.toml` or holding a path separator is a path and is
    used as given; anything else is a name.
    """
    path = os.fspath(path)
    if path.endswith(".toml") or os.sep in path or (os.altsep and os.altsep in path):
        if not os.path.isfile(path):
            raise ConfigError(f"Experiment config {path!r} not found.{_shipped_hint()}")
        return path
    for folder in search_path():
        candidate = os.path.join(folder, f"{path}.toml")
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(
        f"Experiment config {path!r} not found in {', '.join(search_path())}.{_shipped_hint()}"
    )


def search_path():
    """The folders where an experiment name is looked up, in order.

    1. `./experiments`, relative to the working directory: your own
       experiments, which shadow shipped ones of the same name;
    2. `shipped_experiments_dir()`: the experiments that come with kdkeras.

    Returns:
        List of folder paths (the second only if it exists).
    """
    folders = [os.path.join(os.curdir, "experiments")]
    shipped = shipped_experiments_dir()
    if shipped and os.path.abspath(shipped) != os.path.abspath(folders[0]):
        folders.append(shipped)
    return folders


def shipped_experiments_dir():
    """The experiments that come with kdkeras, or None if there are none.

    An installed kdkeras carries them as package data in
    `kdkeras/experiments/` (setup.cfg maps the repository's `experiments/`
    there); a source checkout, imported in place, reads its `experiments/`.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "experiments")
    if os.path.isdir(installed):
        return installed
    checkout = os.path.dirname(package)
    # Only a folder beside setup.cfg is kdkeras's own: an installed copy sits in
    # site-packages, where an `experiments` folder would belong to someone else.
    if os.path.isfile(os.path.join(checkout, "setup.cfg")) and os.path.isdir(os.path.join(checkout, "experiments")):
        return os.path.join(checkout, "experiments")
    return None


def _shipped_hint():
    shipped = shipped_experiments_dir()
    names = sorted(f[:-5] for f in os.listdir(shipped) if f.endswith(".toml")) if shipped else []
    if not names:
        return " Pass the path of a .toml file."
    return f" Pass a .toml path or one of the shipped experiments: {', '.join(names)}."


def from_dict(raw, source="<config>"):
    """Builds a validated `ExperimentConfig` from parsed TOML data.

    Args:
        raw: Mapping as read from TOML.
        source: Name of the origin, for error messages.

    Returns:
        An `ExperimentConfig`.
    """
    raw = copy.deepcopy(raw)
    if isinstance(raw.get("student"), dict) and isinstance(raw.get("distill", {}), dict):
        # The distilled student trains on the student's budget unless [distill] says otherwise:
        # a fair comparison by default, and no repeated lines.
        inherited = {k: v for k, v in raw["student"].items() if k in INHERITED_BY_DISTILL}
        raw["distill"] = {**inherited, **raw.get("distill", {})}
    sections = {
        "teacher": TrainConfig,
        "student": TrainConfig,
        "distill": DistillConfig,
        "sweep": SweepConfig,
        "evaluate": EvaluateConfig,
    }
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
    if not isinstance(data, dict) or "loader" not in data:
        raise ConfigError(
            f"{source}: [data] needs a `loader` key, one of: {', '.join(LOADERS.names())}."
        )
    loader = data["loader"]
    if loader not in LOADERS:
        raise ConfigError(f"{source}: [data] loader = {loader!r} is unknown. Allowed: {', '.join(LOADERS.names())}.")
    parameters = inspect.signature(LOADERS.lookup(loader)).parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(k for k in data if k not in ("loader", "augment_on") and k not in parameters)
    if unknown and not accepts_kwargs:
        allowed = ", ".join(sorted(k for k, p in parameters.items() if p.kind is not p.VAR_KEYWORD))
        raise ConfigError(
            f"{source}: [data] key(s) {', '.join(map(repr, unknown))} are not arguments of "
            f"the {loader!r} loader ({LOADERS.lookup(loader).__qualname__}). Allowed: loader, augment_on, {allowed}."
        )
    augment_on = data.get("augment_on", "pipeline")
    if augment_on not in AUGMENT_ON:
        raise ConfigError(
            f"{source}: [data] augment_on = {augment_on!r} is unknown. Allowed: {', '.join(AUGMENT_ON)}."
        )
    augment = data.get("augment")
    if augment is not None and augment not in AUGMENTATIONS:
        raise ConfigError(
            f"{source}: [data] augment = {augment!r} is unknown. Allowed: {', '.join(AUGMENTATIONS.names())}."
        )
    if augment_on == "device" and not data.get("augment"):
        raise ConfigError(
            f"{source}: [data] augment_on = 'device' has no augmentation to run: set [data] augment "
            "(e.g. augment = \"xray\"), or remove augment_on."
        )
    for key, value in data.items():
        parameter = parameters.get(key)
        default = None if parameter is None else parameter.default
        if isinstance(default, (bool, int, float, str)):
            # Typed by the loader's default (`batch_size = 64`, `seed = 0`, `augment = None` is not).
            data[key] = _check_type(value, default, f"{source}: [data] {key}")
    _check_data_values(data, source)
    return data


def _check_data_values(data, source):
    from kdkeras.data import DataError, transforms

    if "image_size" in data:
        try:
            transforms.image_size_tuple(data["image_size"])
        except DataError as error:
            raise ConfigError(f"{source}: [data] {error}") from None
    for key in ("limit", "batch_size"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{source}: [data] {key} = {value!r} must be a whole number >= 1.")
    if "seed" in data and data["seed"] < 0:
        raise ConfigError(f"{source}: [data] seed = {data['seed']} must be >= 0.")


def _check_values(config, source):
    def fail(key, message):
        raise ConfigError(f"{source}: {key} {message}")

    if config.seed < 0:
        fail("seed", f"= {config.seed} must be >= 0 (NumPy and TensorFlow take seeds >= 0).")
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
        if not 0 < train.learning_rate < math.inf:
            fail(f"[{phase}] learning_rate", f"= {train.learning_rate} must be > 0 and finite.")
        if not 0 <= train.weight_decay < math.inf:
            fail(f"[{phase}] weight_decay", f"= {train.weight_decay} must be >= 0 and finite.")
        if train.optimizer not in OPTIMIZERS:
            fail(f"[{phase}] optimizer", f"= {train.optimizer!r} is unknown. Allowed: {', '.join(OPTIMIZERS.names())}.")
        if train.monitor not in MONITORS:
            fail(f"[{phase}] monitor", f"= {train.monitor!r} is unknown. Allowed: {', '.join(MONITORS)}.")
        if train.class_weight not in CLASS_WEIGHTS:
            fail(f"[{phase}] class_weight", f"= {train.class_weight!r} is unknown. Allowed: \"\" or \"balanced\".")
        if train.early_stopping < 0 or train.reduce_lr < 0:
            fail(f"[{phase}] early_stopping/reduce_lr", "are patiences in epochs and must be >= 0.")
    if not 0.0 < config.labeled_fraction <= 1.0:
        fail("labeled_fraction", f"= {config.labeled_fraction} must be in (0, 1].")
    if config.distill.transfer_set == "train" and config.labeled_fraction == 1.0:
        fail(
            "[distill] transfer_set",
            "= 'train' distils through the train images whose labels are withheld, but "
            "labeled_fraction = 1 withholds none: set labeled_fraction < 1, or point "
            "transfer_set at a folder or .npz of unlabeled images.",
        )
    if not 0.0 <= config.distill.alpha <= 1.0:
        fail("[distill] alpha", f"= {config.distill.alpha} must be in [0, 1].")
    if not 0 < config.distill.temperature < math.inf:
        fail("[distill] temperature", f"= {config.distill.temperature} must be > 0 and finite.")
    if not config.distill.temperature <= MAX_TEMPERATURE:
        fail("[distill] temperature", f"= {config.distill.temperature:g} {_TEMPERATURE_LIMIT}")
    if config.distill.objective not in OBJECTIVES:
        fail("[distill] objective", f"= {config.distill.objective!r} is unknown. Allowed: {', '.join(OBJECTIVES)}.")
    _check_distill(config.distill, config.data, fail)
    _check_sweep(config.sweep, fail)
    _check_evaluate(config.evaluate, fail)
    _check_models(config, fail)


def _check_distill(distill, data, fail):
    from kdkeras import features as kd_features
    from kdkeras import losses as kd_losses
    from kdkeras.objective import check_teacher_weights
    from kdkeras.registry import DISTILLATION_TERMS

    if distill.loss not in DISTILLATION_TERMS:
        fail("[distill] loss", f"= {distill.loss!r} is unknown. Allowed: {', '.join(DISTILLATION_TERMS.names())}.")
    try:
        kd_losses.get(distill.loss, temperature=distill.temperature, **distill.loss_options)
    except ValueError as error:
        fail("[distill] loss_options", f"= {distill.loss_options!r}: {error}")
    if not 0 <= distill.warmup_epochs < math.inf:
        fail("[distill] warmup_epochs", f"= {distill.warmup_epochs} must be >= 0 and finite.")
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
    if distill.transfer_set and distill.loss == "decoupled_kd":
        fail("[distill] transfer_set", "needs a loss that does not read labels; 'decoupled_kd' does. Use 'knowledge_distillation'.")
    if distill.cache_teacher and distill.features:
        fail("[distill] cache_teacher", "= true caches logits only; it cannot be used with [distill] features.")


_TEMPERATURE_LIMIT = (
    f"is above {MAX_TEMPERATURE:g}: in float32 the softened probabilities of teacher and student "
    "round to the same values and the distillation loss becomes 0 or noise. Hinton et al. use 1 to 20; "
    "seed 003 sweeps up to 100."
)


def _check_sweep(sweep, fail):
    rules = (
        ("temperatures", lambda t: math.isfinite(t) and 0 < t <= MAX_TEMPERATURE, f"in (0, {MAX_TEMPERATURE:g}]"),
        ("alphas", lambda a: 0 <= a <= 1, "in [0, 1]"),
    )
    for axis, valid, rule in rules:
        values = getattr(sweep, axis)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
                fail(f"[sweep] {axis}", f"= {values!r}: each value must be a number {rule}, got {value!r}.")
        if len(set(values)) != len(values):
            fail(f"[sweep] {axis}", f"= {values!r} repeats a value; list each one once.")


def _check_evaluate(evaluate, fail):
    from kdkeras.operating_point import check_operating_point

    try:
        check_operating_point(evaluate.operating_point)
    except ValueError as error:
        fail("[evaluate]", str(error))
    for model, layer in evaluate.gradcam_layers.items():
        if model not in ("teacher", "student", "distilled") or not isinstance(layer, str) or not layer:
            fail(
                "[evaluate] gradcam_layers",
                f"= {evaluate.gradcam_layers!r}: map teacher, student or distilled to a layer name, "
                'e.g. {teacher = "stage4_block2_out"}.',
            )


def check_data_paths(config):
    """Checks that the local files `[data]` names exist, before any model is built.

    Args:
        config: An `ExperimentConfig`.

    Raises:
        ConfigError: naming the config file, the `[data]` key, the missing
            path and where to get the data (`data_source`).
    """
    for key in LOCAL_DATA_KEYS.get(config.data.get("loader"), ()):
        value = config.data.get(key)
        for path in [value] if isinstance(value, str) else value or []:
            if os.path.exists(path):
                continue
            where = "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"
            source = f"Get the data from {config.data_source}, then " if config.data_source else "Then "
            raise ConfigError(
                f"{config.path or '<config>'}: [data] {key} = {path!r} does not exist{where}. {source}"
                f"put it there or point the key at your copy (`--set data.{key}=/path/to/it`)."
            )


def _check_models(config, fail):
    from kdkeras import models

    names = sorted(MODELS.names())
    for phase, name in (
        ("teacher", config.teacher.model),
        ("student", config.student.model),
        ("distill", config.student_model()[0]),
    ):
        if name not in MODELS:
            fail(f"[{phase}] model", f"= {name!r} is unknown. Allowed: {', '.join(names)}.")
    # Options are checked here, not when the model is built after the data has loaded.
    for phase in ("teacher", "student", "distill"):
        train = config.phase(phase)
        if train.model or phase != "distill":
            spec = models.get_spec(train.model)
            unknown = sorted(set(train.options) - set(spec.options))
            if unknown:
                accepted = ", ".join(f"{key} = {value!r}" for key, value in spec.options.items()) or "none"
                fail(
                    f"[{phase}] options",
                    f"= {train.options!r}: {spec.name} does not take {', '.join(map(repr, unknown))}. "
                    f"Its options (defaults): {accepted}.",
                )
