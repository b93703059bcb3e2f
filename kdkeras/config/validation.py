"""Checks of a parsed config: keys, types and values, each error naming the file, the key and the fix.

Names are checked against the registries of `kdkeras.registry` (loaders,
optimizers, models, augmentations, distillation terms), so a registered piece
is accepted without touching this module. Checks that need library code (a
term's options, an image size, a model's options, teacher weights, an
operating point) run through `kdkeras.registry.CHECKS` and the registries'
metadata: this module imports no library module, so the config stays below
the library it describes (`tests/test_architecture.py`).
"""

import dataclasses
import inspect
import math
import os
import re
import types
import typing

from kdkeras.config import bounds
from kdkeras.config.paths import is_model_path
from kdkeras.config.schema import (
    AUGMENT_ON,
    CLASS_WEIGHTS,
    MAX_TEMPERATURE,
    MONITORS,
    NOT_KEYS,
    OBJECTIVES,
    SCHEDULES,
    STRATEGIES,
    ConfigError,
)
from kdkeras.registry import AUGMENTATIONS, CHECKS, DISTILLATION_TERMS, LOADERS, OPTIMIZERS


def build(cls, values, where, nested=(), locate=None):
    """An instance of dataclass `cls` from a TOML table, its keys and value types checked.

    Keys in `nested` (sub-tables already built) are passed through as given.
    `locate(key)`, if given, names where `key` was set (the file it came
    from), in place of `where`.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table, got {values!r}.")
    locate = locate or (lambda key: where)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in NOT_KEYS}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{locate(unknown[0])}: unknown key(s) {', '.join(map(repr, unknown))}. "
            f"Allowed keys: {', '.join(sorted(fields))}."
        )
    for key, value in values.items():
        if key in nested:
            continue
        if isinstance(fields[key].type, types.UnionType):  # e.g. `float | None`, `int | list`
            values[key] = _check_union(value, typing.get_args(fields[key].type), f"{where}: {key}")
            continue
        default = fields[key].default
        if default is dataclasses.MISSING:
            default = fields[key].default_factory()
        values[key] = check_type(value, default, f"{locate(key)}: {key}")
    return cls(**values)


def _check_union(value, allowed, where):
    """`value` if it has one of the `allowed` types (None, the unset default, comes from Python only)."""
    if value is None and type(None) in allowed:
        return None
    for expected in allowed:
        if expected is not type(None) and not isinstance(value, bool):
            try:
                return check_type(value, expected(), where)
            except ConfigError:
                continue
    names = " or ".join(t.__name__ for t in allowed if t is not type(None))
    raise ConfigError(f"{where} must be of type {names}, got {value!r} ({type(value).__name__}).")


def check_type(value, default, where):
    """`value` if it has the type of `default` (an int is taken for a float)."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"{where} must be of type {expected.__name__}, got {value!r} ({type(value).__name__})."
        )
    return value


def check_data(data, source, origins=None, registries=True):
    """The `[data]` table checked against its loader's signature and the augmentation registry.

    Args:
        data: The `[data]` table.
        source: The config file, for messages.
        origins: `Origins` of the keys; a key set in another file is named with it.
        registries: Also check the loader's arguments and the augmentation
            name, which imports the loaders (and TensorFlow).
    """
    def where(key):
        return origins.where(source, "data", key) if origins else source

    if not isinstance(data, dict) or "loader" not in data:
        raise ConfigError(
            f"{source}: [data] needs a `loader` key, e.g. loader = \"medmnist\" (`kdkeras list` shows all)."
        )
    augment_on = data.get("augment_on", "pipeline")
    if augment_on not in AUGMENT_ON:
        raise ConfigError(
            f"{where('augment_on')}: [data] augment_on = {augment_on!r} is unknown. Allowed: {', '.join(AUGMENT_ON)}."
        )
    if augment_on == "device" and not data.get("augment"):
        raise ConfigError(
            f"{where('augment_on')}: [data] augment_on = 'device' has no augmentation to run: set [data] augment "
            "(e.g. augment = \"xray\"), or remove augment_on."
        )
    for key in ("limit", "batch_size"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{where(key)}: [data] {key} = {value!r} must be a whole number >= 1.")
    if registries:
        _check_loader(data, source, where)
    return data


def _check_loader(data, source, where):
    loader = data["loader"]
    if loader not in LOADERS:
        raise ConfigError(
            f"{where('loader')}: [data] loader = {loader!r} is unknown. Allowed: {', '.join(LOADERS.names())}."
        )
    parameters = inspect.signature(LOADERS.lookup(loader)).parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(k for k in data if k not in ("loader", "augment_on") and k not in parameters)
    if unknown and not accepts_kwargs:
        allowed = ", ".join(sorted(k for k, p in parameters.items() if p.kind is not p.VAR_KEYWORD))
        raise ConfigError(
            f"{where(unknown[0])}: [data] key(s) {', '.join(map(repr, unknown))} are not arguments of "
            f"the {loader!r} loader ({LOADERS.lookup(loader).__qualname__}). Allowed: loader, augment_on, {allowed}."
        )
    augment = data.get("augment")
    if augment is not None and augment not in AUGMENTATIONS:
        raise ConfigError(
            f"{where('augment')}: [data] augment = {augment!r} is unknown. "
            f"Allowed: {', '.join(AUGMENTATIONS.names())}."
        )
    for key, value in data.items():
        parameter = parameters.get(key)
        default = None if parameter is None else parameter.default
        if isinstance(default, (bool, int, float, str)):
            # Typed by the loader's default (`batch_size = 64`, `seed = 0`, `augment = None` is not).
            data[key] = check_type(value, default, f"{where(key)}: [data] {key}")
    _check_data_values(data, where)


def _check_data_values(data, where):
    if "image_size" in data:
        try:
            CHECKS.lookup("image_size")(data["image_size"])
        except ValueError as error:
            raise ConfigError(f"{where('image_size')}: [data] {error}") from None
    if "seed" in data and data["seed"] < 0:
        raise ConfigError(f"{where('seed')}: [data] seed = {data['seed']} must be >= 0.")


def check_values(config, source, origins=None, registries=True):
    """Checks the values of a built `ExperimentConfig`: ranges, and names against the registries.

    Args:
        config: The `ExperimentConfig`.
        source: The config file, for messages.
        origins: `Origins` of the keys; a key set in another file is named with it.
        registries: Also check names against the registries and build the
            loss and feature terms, which imports TensorFlow.

    Returns:
        The distillation term it built from `[distill]` (`loss`, `temperature`,
        `loss_options`), for the distill phase to reuse; None without `registries`.
    """
    def fail(key, message):
        # "[distill] temperature" or "seed": the file to edit is the one that set the key.
        match = re.match(r"(?:\[(\w+)\] )?(\w+)", key)
        where = origins.where(source, match[1], match[2]) if origins and match else source
        raise ConfigError(f"{where}: {key} {message}")

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
        if train.epochs < _min_epochs(phase, train.model):
            fail(
                f"[{phase}] epochs",
                f"= {train.epochs} must be >= 1 (>= 0 for a teacher read from a file: 0 only evaluates it).",
            )
        if not 0 < train.learning_rate < math.inf:
            fail(f"[{phase}] learning_rate", f"= {train.learning_rate} must be > 0 and finite.")
        if not 0 <= train.weight_decay < math.inf:
            fail(f"[{phase}] weight_decay", f"= {train.weight_decay} must be >= 0 and finite.")
        if train.monitor not in MONITORS:
            fail(f"[{phase}] monitor", f"= {train.monitor!r} is unknown. Allowed: {', '.join(MONITORS)}.")
        if train.class_weight not in CLASS_WEIGHTS:
            fail(f"[{phase}] class_weight", f"= {train.class_weight!r} is unknown. Allowed: \"\" or \"balanced\".")
        if train.early_stopping < 0 or train.reduce_lr < 0:
            fail(f"[{phase}] early_stopping/reduce_lr", "are patiences in epochs and must be >= 0.")
        _check_view(train, phase, fail)
        if train.schedule not in SCHEDULES:
            fail(f"[{phase}] schedule", f"= {train.schedule!r} is unknown. Allowed: {', '.join(SCHEDULES)}.")
        if train.schedule == "cosine" and train.reduce_lr:
            fail(f"[{phase}] reduce_lr", f"= {train.reduce_lr} would fight schedule = 'cosine': set reduce_lr = 0.")
    if not 0.0 < config.labeled_fraction <= 1.0:
        fail("labeled_fraction", f"= {config.labeled_fraction} must be in (0, 1].")
    if config.distill.transfer_set == "train" and config.labeled_fraction == 1.0:
        fail(
            "[distill] transfer_set",
            "= 'train' distils through the train images whose labels are withheld, but "
            "labeled_fraction = 1 withholds none: set labeled_fraction < 1, or point "
            "transfer_set at a folder or .npz of unlabeled images.",
        )
    _check_alpha_and_temperature(config.distill, fail)
    if config.distill.objective not in OBJECTIVES:
        fail("[distill] objective", f"= {config.distill.objective!r} is unknown. Allowed: {', '.join(OBJECTIVES)}.")
    _check_distill(config.distill, config.data, fail)
    _check_sweep(config.sweep, fail)
    if registries:
        for phase in ("teacher", "student", "distill"):
            optimizer = config.phase(phase).optimizer
            if optimizer not in OPTIMIZERS:
                fail(f"[{phase}] optimizer", f"= {optimizer!r} is unknown. Allowed: {', '.join(OPTIMIZERS.names())}.")
        term = _check_distill_terms(config.distill, fail)
        _check_evaluate(config.evaluate, fail)
        _check_models(config, fail)
        return term
    return None


def _check_alpha_and_temperature(distill, fail):
    alpha = distill.alpha
    if alpha is not None and not 0.0 <= alpha <= 1.0:  # unset: the Distiller's default
        fail("[distill] alpha", f"= {alpha} must be in [0, 1].")
    temperature = distill.temperature
    if temperature is not None:  # unset: the loss's own default
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            fail("[distill] temperature", f"= {temperature!r} must be a number, e.g. temperature = 4.0.")
        if not 0 < temperature < math.inf:
            fail("[distill] temperature", f"= {temperature} must be > 0 and finite.")
        if not temperature <= MAX_TEMPERATURE:
            fail("[distill] temperature", f"= {temperature:g} {_TEMPERATURE_LIMIT}")
        if bounds.temperature_problem(temperature):
            fail("[distill] temperature", f"= {temperature:g} {bounds.temperature_problem(temperature)}")


def _check_view(train, phase, fail):
    size = train.image_size
    pair = isinstance(size, list)
    sizes = size if pair else [size]
    if (
        (pair and len(sizes) != 2)
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes)
        or (pair and 0 in sizes)
    ):
        fail(f"[{phase}] image_size", f"= {size!r} must be a pixel count like 64 or [height, width], or 0 for the data's.")
    if train.channels not in (0, 1, 3):
        fail(f"[{phase}] channels", f"= {train.channels!r} must be 1 (gray), 3 (RGB) or 0 for the data's.")


def _check_distill(distill, data, fail):
    if not 0 <= distill.warmup_epochs < math.inf:
        fail("[distill] warmup_epochs", f"= {distill.warmup_epochs} must be >= 0 and finite.")
    for i, row in enumerate(distill.features):
        where = f"[distill] features[{i}]"
        if not isinstance(row, dict) or not {"student_layer", "teacher_layer"} <= set(row):
            fail(where, f"= {row!r} must be a table with student_layer, teacher_layer, loss and weight.")
        unknown = sorted(set(row) - {"student_layer", "teacher_layer", "loss", "weight"})
        if unknown:
            fail(where, f"has unknown key(s) {unknown}. Allowed: student_layer, teacher_layer, loss, weight.")
    if any(not isinstance(path, str) or not path.endswith(".keras") for path in distill.teachers):
        fail("[distill] teachers", f"= {distill.teachers!r} must list .keras teacher files.")
    if distill.cache_teacher and data.get("augment"):
        fail(
            "[distill] cache_teacher",
            f"= true needs a train pipeline that shows the teacher the same images every epoch, "
            f"but [data] augment = {data['augment']!r}. Remove `augment` or set cache_teacher = false.",
        )
    if not 0 <= distill.mixup < math.inf:
        fail("[distill] mixup", f"= {distill.mixup} must be >= 0 and finite (0 disables it).")
    if bounds.mixup_problem(distill.mixup):
        fail("[distill] mixup", f"= {distill.mixup:g} {bounds.mixup_problem(distill.mixup)}")
    if distill.mixup and distill.cache_teacher:
        fail("[distill] mixup", "shows the teacher new mixed images every step, so it cannot use cache_teacher = true.")
    if distill.cache_teacher and distill.features:
        fail("[distill] cache_teacher", "= true caches logits only; it cannot be used with [distill] features.")


def _check_distill_terms(distill, fail):
    if distill.loss not in DISTILLATION_TERMS:
        fail("[distill] loss", f"= {distill.loss!r} is unknown. Allowed: {', '.join(DISTILLATION_TERMS.names())}.")
    try:
        # An unset temperature builds the term at its own default, as the phases do.
        given = {} if distill.temperature is None else {"temperature": distill.temperature}
        term = DISTILLATION_TERMS.get(distill.loss, **given, **distill.loss_options)
    except TypeError as error:
        options = distill.loss_options
        fail("[distill] loss_options", f"= {options!r}: Bad options {options} for the {distill.loss!r} loss: {error}.")
    except ValueError as error:
        fail("[distill] loss_options", f"= {distill.loss_options!r}: {error}")
    for i, row in enumerate(distill.features):
        try:
            CHECKS.lookup("feature_match")(**row)
        except ValueError as error:
            fail(f"[distill] features[{i}]", f"= {row!r}: {error}")
    if distill.teacher_weights:
        try:
            CHECKS.lookup("teacher_weights")(distill.teacher_weights, max(len(distill.teachers), 1))
        except ValueError as error:
            fail("[distill] teacher_weights", f"= {distill.teacher_weights!r}: {error}")
    reads_labels = "labels" in getattr(DISTILLATION_TERMS.lookup(distill.loss), "requires", ())
    if distill.transfer_set and reads_labels:
        fail("[distill] transfer_set", f"needs a loss that does not read labels; {distill.loss!r} does. "
             "Use 'knowledge_distillation'.")
    if distill.mixup and reads_labels:
        fail("[distill] mixup", f"mixes two images' labels, but loss = {distill.loss!r} reads one label per image. "
             "Use 'knowledge_distillation' or 'dist'.")
    return term


_TEMPERATURE_LIMIT = (
    f"is above {MAX_TEMPERATURE:g}: in float32 the softened probabilities of teacher and student "
    "round to the same values and the distillation loss becomes 0 or noise. Hinton et al. use 1 to 20; "
    "seed 003 sweeps up to 100."
)


def _check_sweep(sweep, fail):
    rules = (
        ("temperatures", lambda t: bounds.MIN_TEMPERATURE <= t <= MAX_TEMPERATURE,
         f"in [{bounds.MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"),
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
    try:
        CHECKS.lookup("operating_point")(evaluate.operating_point)
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
    loader = config.data.get("loader")
    for key in LOADERS.metadata(loader)["local_paths"] if loader in LOADERS else ():
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


def _min_epochs(phase, model):
    return 0 if phase == "teacher" and is_model_path(model) else 1


def _check_models(config, fail):
    for phase, name in (
        ("teacher", config.teacher.model),
        ("student", config.student.model),
        ("distill", config.student_model()[0]),
    ):
        problem = CHECKS.lookup("model_name")(name)
        if problem is not None:
            fail(f"[{phase}] model", f"= {name!r}: {problem}" if not problem.startswith("is unknown") else
                 f"= {name!r} {problem}")
    # Options are checked here, not when the model is built after the data has loaded.
    for phase in ("teacher", "student", "distill"):
        train = config.phase(phase)
        if is_model_path(train.model):
            continue
        if train.model or phase != "distill":
            spec = CHECKS.lookup("model_spec")(train.model)
            unknown = sorted(set(train.options) - set(spec.options))
            if unknown:
                accepted = ", ".join(f"{key} = {value!r}" for key, value in spec.options.items()) or "none"
                fail(
                    f"[{phase}] options",
                    f"= {train.options!r}: {spec.name} does not take {', '.join(map(repr, unknown))}. "
                    f"Its options (defaults): {accepted}.",
                )
    _check_model_sizes(config, fail)


def _check_model_sizes(config, fail):
    """Each phase's model against the image size it will see, before any data loads."""
    data_size = _configured_image_size(config.data)
    # Distill without its own model trains [student]'s, checked as the student's.
    for phase in ("teacher", "student", "distill") if config.distill.model else ("teacher", "student"):
        train = config.phase(phase)
        own = getattr(train, "image_size", 0)  # a phase's own input size, where the schema has one (0: the data's)
        size, key = (_square(own), f"[{phase}] image_size") if own else (data_size, "[data] image_size")
        problem = None if size is None else CHECKS.lookup("model_size")(train.model, size)
        if problem is None:
            continue  # size None: the files' native size, checked by models.get_model once they are read
        minimum, role, fits = problem
        fail(
            f"[{phase}] model",
            f"= {train.model!r} needs images of at least {minimum}x{minimum} px, but "
            f"{key.split(' ')[0]} gives {size[0]}x{size[1]}: set {key} = {minimum} (or larger)"
            + (f", or pick a {role} that takes {min(size)} px: {', '.join(fits)}." if fits else "."),
        )


def _configured_image_size(data):
    """`(height, width)` of the images `[data]` yields, or None where only the files know it."""
    size = data.get("image_size")
    if size is None:
        # MedMNIST's native size is its `size` argument (28 unless set).
        parameter = inspect.signature(LOADERS.lookup(data["loader"])).parameters.get("size")
        size = data.get("size", None if parameter is None else parameter.default)
    return _square(size)


def _square(size):
    if not isinstance(size, (int, list, tuple)) or isinstance(size, bool):
        return None
    return tuple(size) if isinstance(size, (list, tuple)) else (size, size)
