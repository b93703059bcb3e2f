"""What each phase trains: its data and its compiled model.

`load_phase_data` loads a phase's data after the seed; `PHASE_BUILDERS`
maps each phase to the builder of the model `fit` trains: the teacher and
the student alone are compiled supervised models, distill a compiled
`Distiller`. `kdkeras.workflow.training.run_phase` runs them in that order.
"""

import dataclasses

import keras
import tensorflow as tf

from kdkeras import data as data_lib
from kdkeras import models as models_lib
from kdkeras import runs as runs_lib
from kdkeras.config import ConfigError
from kdkeras.data import pipeline, transforms
from kdkeras.distillation import losses as kd_losses
from kdkeras.distillation.distiller import Distiller
from kdkeras.distillation.features import FeatureMatch
from kdkeras.distribute import strategy as distribute
from kdkeras.models import applications
from kdkeras.models import files as model_files
from kdkeras.registry import DISTILLATION_TERMS, LOADERS, OPTIMIZERS
from kdkeras.workflow import transfer
from kdkeras.workflow.callbacks import UnfreezeBase
from kdkeras.workflow.fit_metrics import fit_metrics


def load_data(config, raw_train=False):
    """Loads the experiment's data with its `[data]` table.

    A loader's `resolve` metadata spells out its aliases first (medmnist's
    `root = "@bundled"`: the PneumoniaMNIST copy shipped inside kdkeras).

    Args:
        config: An `ExperimentConfig`.
        raw_train: Return the train split in a fixed order and without
            augmentation (`kdkeras.workflow.transfer` builds its pipeline from it).

    Returns:
        `(train, val, test, info)` as returned by the `kdkeras.data` loader.
    """
    kwargs = dict(config.data)
    if raw_train:
        kwargs.update(shuffle=False, augment=None)
    loader = kwargs.pop("loader")
    if kwargs.pop("augment_on", "pipeline") == "device":
        kwargs.pop("augment", None)  # the training step augments (see `device_augmentation`)
    resolve = LOADERS.metadata(loader)["resolve"]
    if resolve is not None:
        kwargs = resolve(kwargs)
    kwargs.setdefault("seed", config.seed)
    decode = decode_size(config)
    if decode is not None:
        kwargs["image_size"] = decode
    return LOADERS.get(loader, **kwargs)


def decode_size(config):
    """The size the data is decoded at: the largest any model of the experiment reads.

    A model without `image_size` reads the data's own size (`[data] image_size`,
    else the images' native size); when one does and `[data]` sets no size, the
    data is decoded at its native size and the other models resize from it.

    Returns:
        `[height, width]`, or None for the loader's own size.
    """
    phases = [config.phase(p) for p in ("teacher", "student", "distill")]
    sizes = [_pair(train.image_size) for train in phases if train.image_size]
    if not sizes:
        return None
    if config.data.get("image_size"):
        sizes.append(_pair(config.data["image_size"]))
    elif len(sizes) < len(phases):
        return None
    return [max(h for h, _ in sizes), max(w for _, w in sizes)]


def model_input_shape(config, phase, data_shape):
    """`(height, width, channels)` the model of `phase` reads: its `image_size`/`channels`, else the data's.

    Args:
        config: The `ExperimentConfig`.
        phase: "teacher", "student" or "distill" (the distilled student).
        data_shape: `(height, width, channels)` of the decoded batches.
    """
    train = config.phase(phase)
    if train.image_size:
        height, width = _pair(train.image_size)
    elif config.data.get("image_size"):
        height, width = _pair(config.data["image_size"])
    else:
        height, width = data_shape[:2]
    return (height, width, train.channels or data_shape[2])


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def device_augmentation(config):
    """The augmentation layer of `[data] augment_on = "device"`, else None.

    It runs inside the training step, once per batch, before the teacher and
    the student; it is seeded like the pipeline (`[data] seed`, else `seed`).
    """
    if config.data.get("augment_on", "pipeline") != "device":
        return None
    return data_lib.augmentation(config.data["augment"], seed=config.data.get("seed", config.seed))


def make_optimizer(train):
    """Builds the optimizer of a phase from its `TrainConfig` (`kdkeras.registry.OPTIMIZERS`)."""
    return OPTIMIZERS.get(train.optimizer, learning_rate=train.learning_rate, weight_decay=train.weight_decay)


def supervised_loss(task):
    """The from-logits loss matching a dataset task."""
    if task == "multi-label":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@dataclasses.dataclass(frozen=True)
class PhaseData:
    """The data of one phase, loaded after the seed.

    Attributes:
        plan: The train set and its budget (`kdkeras.workflow.transfer.FitPlan`).
        val: The batched validation split.
        test: The batched test split.
        info: The `DatasetInfo`.
        input_shape: Shape of one image, `(H, W, C)`.
        steps_per_epoch: Training steps of one epoch.
    """

    plan: transfer.FitPlan
    val: tf.data.Dataset
    test: tf.data.Dataset
    info: data_lib.DatasetInfo
    input_shape: tuple
    steps_per_epoch: int


def load_phase_data(config, phase, batch):
    """Loads the data of a phase and plans its train set.

    The student and distill phases of a config with a transfer split build
    their train set from the raw train split (`kdkeras.workflow.transfer.fit_plan`).

    Args:
        config: The `ExperimentConfig`.
        phase: "teacher", "student" or "distill".
        batch: The phase's `kdkeras.distribute.Batching`.

    Returns:
        A `PhaseData`.
    """
    train_config = config.phase(phase)
    split_labels = phase != "teacher" and transfer.uses_transfer_split(config)
    train, val, test, info = load_data(config, raw_train=split_labels)
    class_weight = _class_weight(train_config, info)
    if split_labels:
        plan = transfer.fit_plan(config, phase, train, info, batch.size, class_weight)
    else:
        plan = transfer.FitPlan(train, None, info.split_sizes["train"], 0, class_weight)
    steps = plan.steps_per_epoch or batch.steps(plan.labeled + plan.unlabeled)
    return PhaseData(plan, val, test, info, tuple(plan.train.element_spec[0].shape[1:]), steps)


def build_supervised(config, phase, data, teachers, log):
    """The compiled model of the teacher or student phase: the model, with device augmentation if set.

    Args:
        config: The `ExperimentConfig`.
        phase: "teacher" or "student".
        data: The phase's `PhaseData`.
        teachers: Unused (no teacher).
        log: Callable receiving one line.

    Returns:
        `(fitted, model)`: what `fit` trains and the model it saves.
    """
    del teachers
    model = _new_model(config, phase, data, log)
    augment = _device_augmentation(config, log)
    if tuple(model.input_shape[1:]) != tuple(data.input_shape):
        fitted = transforms.with_view(model, data.input_shape, augment)
    else:
        fitted = data_lib.with_augmentation(model, augment) if augment is not None else model
    fitted.compile(
        optimizer=make_optimizer(config.phase(phase)),
        loss=supervised_loss(data.info.task),
        metrics=fit_metrics(data.info.num_classes, data.info.task),
    )
    return fitted, model


def build_distill(config, phase, data, teachers, log):
    """The compiled `Distiller` of the distill phase, from the config's student and the loaded teachers.

    Args:
        config: The `ExperimentConfig`.
        phase: "distill".
        data: The phase's `PhaseData`.
        teachers: `[(teacher model, its path), ...]`.
        log: Callable receiving one line.

    Returns:
        `(distiller, student)`.
    """
    train_config = config.phase(phase)
    model = _new_model(config, phase, data, log)
    augment = _device_augmentation(config, log)
    for teacher, path in teachers:
        _check_teacher(teacher, data.input_shape, data.info, path)
    steps = data.steps_per_epoch if train_config.warmup_epochs else 0
    fitted = build_distiller(model, [t for t, _ in teachers], train_config, data.info, steps, config.distillation_term)
    fitted.augmentation = augment
    log(describe_distiller(fitted))
    return fitted, model


PHASE_BUILDERS = {"teacher": build_supervised, "student": build_supervised, "distill": build_distill}


def phase_model(config, phase):
    """`(architecture, options)` of the model a phase trains: distill trains the student's."""
    if phase == "distill":
        return config.student_model()
    return config.phase(phase).model, config.phase(phase).options


def phase_callbacks(train_config, fitted, log):
    """The callbacks a phase's model options ask for: `unfreeze_after = N` adds `UnfreezeBase`.

    Args:
        train_config: The phase's `TrainConfig`.
        fitted: The compiled model `fit` trains.
        log: Callable receiving one line.

    Returns:
        A list of callbacks (empty for a Distiller: its student trains whole).
    """
    epochs = train_config.options.get("unfreeze_after", 0)
    if not epochs or isinstance(fitted, Distiller):
        return []
    base = next(layer for layer in fitted._flatten_layers() if layer.name == applications.BASE_NAME)
    log(f"{base.name} frozen for {epochs} epoch(s), then the whole network trains")
    return [UnfreezeBase(base, epochs, log=log)]


def _new_model(config, phase, data, log):
    model_name, options = phase_model(config, phase)
    if model_files.is_model_path(model_name):
        model = model_files.load_model_file(model_name)
        _check_model_file(model, config.phase(phase), data, model_name)
        log(f"model: {model_name}, {model.count_params():,} parameters, loaded from the file")
        return model
    input_shape = model_input_shape(config, phase, data.input_shape)
    model = models_lib.get_model(
        model_name,
        input_shape=input_shape,
        num_classes=data.info.num_classes,
        weights=config.phase(phase).weights or None,
        **options,
    )
    view = "" if input_shape == tuple(data.input_shape) else f", reading a {'x'.join(map(str, input_shape))} view"
    log(f"model: {model_name}, {model.count_params():,} parameters{view}")
    strategy = tf.distribute.get_strategy()  # run_phase builds inside its strategy's scope
    if distribute.synchronize_batch_norm(model, strategy):
        log(f"BatchNorm statistics are synchronised over the {strategy.num_replicas_in_sync} replicas")
    return model


def _device_augmentation(config, log):
    augment = device_augmentation(config)
    if augment is not None:
        log(f"{augment.name} runs in the training step, one view per batch for every model")
    return augment


def global_batch_size(config):
    """The batch size of every training step, over all replicas together.

    It is `[data] batch_size`, or the pipeline builder's default when the config
    leaves it out (the Keras convention: `fit` splits each batch over the replicas).
    """
    return pipeline.global_batch_size(config.data)


def build_distiller(student, teachers, distill, info, steps_per_epoch, term=None):
    """The compiled `Distiller` of a `[distill]` config.

    For multi-label data the default soft-target loss becomes its per-label
    sigmoid form (`MultiLabelKD`); DKD needs single-label classes.

    Args:
        student: The fresh student model.
        teachers: Loaded teacher models (one or more).
        distill: The `DistillConfig`.
        info: The data's `DatasetInfo` (task and classes).
        steps_per_epoch: Training steps per epoch, for `warmup_epochs`.
        term: The distillation term validation built from `distill`
            (`ExperimentConfig.distillation_term`); None builds it here.

    Returns:
        A compiled `kdkeras.Distiller`.

    Raises:
        ConfigError: a loss that does not fit the task (a softmax loss on
            multi-label data).
    """
    loss = distill.loss
    if info.task == "multi-label" and DISTILLATION_TERMS.lookup(loss).activation != "sigmoid":
        raise ConfigError(
            f"[distill] loss = {loss!r} softens with one softmax across the classes, but {info.name} "
            "is multi-label. Use loss = 'multilabel_kd' (one sigmoid per label)."
        )
    distiller = Distiller(
        student=student,
        teacher=teachers if len(teachers) > 1 else teachers[0],
        features=[FeatureMatch(**row) for row in distill.features] or None,
        teacher_weights=distill.teacher_weights or None,
    )
    distiller.compile(
        optimizer=make_optimizer(distill),
        metrics=fit_metrics(info.num_classes, info.task),
        student_loss_fn=supervised_loss(info.task),
        distillation_loss_fn=term if term is not None else kd_losses.get(
            loss, temperature=distill.temperature, **distill.loss_options
        ),
        alpha=distill.alpha,
        distillation_weight=1.0 if distill.objective == "additive" else None,
        warmup_steps=round(distill.warmup_epochs * steps_per_epoch),
        mixup=distill.mixup,
    )
    return distiller


def describe_distiller(distiller):
    """One log line: teachers, loss, alpha, temperature, features and warm-up."""
    teachers = ", ".join(f"{t.name} ({t.count_params():,} parameters)" for t in distiller.teachers)
    parts = [
        f"distilling from {teachers}",
        f"loss {distiller.distillation_loss_fn.name}",
        f"alpha={distiller.alpha}",
        f"T={distiller.temperature}",
    ]
    if len(distiller.teachers) > 1:
        parts.append(f"teacher weights {distiller.teacher_weights}")
    parts.extend(repr(match) for match in distiller.features)
    if distiller.warmup_steps:
        parts.append(f"warm-up {distiller.warmup_steps} steps")
    return ", ".join(parts)


def _class_weight(train_config, info):
    if not train_config.class_weight:
        return None
    if info.class_weights is None:
        raise ConfigError(
            f"class_weight = {train_config.class_weight!r} weighs sparse class labels, but "
            f"{info.name} is {info.task}: remove class_weight for this dataset."
        )
    return info.class_weights


def _check_model_file(model, train, data, path):
    """Checks a user's model file against `[teacher]` and the data; it reads its own input size."""
    info = data.info
    shape = tuple(model.input_shape[1:])
    size_differs = train.image_size and _pair(train.image_size) != shape[:2]
    if size_differs or (train.channels and train.channels != shape[2]):
        raise ConfigError(
            f"[teacher] model = {path!r} takes inputs of shape {shape} but [teacher] asks for "
            f"image_size = {train.image_size!r}, channels = {train.channels!r}: set image_size = "
            f"{list(shape[:2])} and channels = {shape[2]}, or leave both out (the file's own input is used)."
        )
    if model.output_shape[-1] != info.num_classes:
        raise ConfigError(
            f"[teacher] model = {path!r} predicts {model.output_shape[-1]} classes but {info.name} has "
            f"{info.num_classes} ({', '.join(info.class_names)}): use a model trained on these classes, "
            "or a keras: or zoo teacher trained here."
        )
    _check_teacher(model, data.input_shape, info, path)


def _check_teacher(teacher, input_shape, info, path):
    # A teacher may read another size than the data's (the Distiller resizes each view), not
    # another kind of image: its channels must be gray or RGB and its input one image.
    teacher_shape = tuple(teacher.input_shape[1:])
    if len(teacher_shape) != len(input_shape) or teacher_shape[-1] not in (1, 3):
        raise ConfigError(
            f"{path} takes inputs of shape {teacher_shape}, not (height, width, 1 or 3) images "
            f"like the data's {tuple(input_shape)}: distil from an image classifier."
        )
    if teacher.output_shape[-1] != info.num_classes:
        raise ConfigError(
            f"{path} predicts {teacher.output_shape[-1]} classes but {info.name} has "
            f"{info.num_classes}: retrain the teacher (`make teacher`) on this dataset."
        )
    trained_on = runs_lib.trained_class_names(path)
    if trained_on is not None and trained_on != list(info.class_names):
        raise ConfigError(
            f"{path} was trained on the classes {trained_on} (see its metrics file) but "
            f"{info.name} has {list(info.class_names)}: its logits would teach the wrong classes. "
            "Retrain the teacher (`make teacher`) on this dataset, or fix [data] class_names."
        )
