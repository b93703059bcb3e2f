"""The three phases of an experiment: teacher, student alone, distillation.

Each phase reads the experiment config, trains with crash-safe checkpoints,
saves its model and evaluates it on the test split. Everything lands in the
run folder `runs/<experiment>/`, whose files `kdkeras.runs` names.
"""

import inspect
import os
import time

import keras
import numpy as np
import tensorflow as tf

from kdkeras import data as data_lib
from kdkeras import distribute
from kdkeras import losses as kd_losses
from kdkeras import metrics as metrics_lib
from kdkeras import models as models_lib
from kdkeras import multiworker
from kdkeras import profiling
from kdkeras import reporting
from kdkeras import runs as runs_lib
from kdkeras import transfer
from kdkeras.callbacks import StopOnNaN, TrainingDivergedError
from kdkeras.config import BUNDLED, ConfigError, dump_toml, load_config, save_config
from kdkeras.distiller import Distiller
from kdkeras.features import FeatureMatch
from kdkeras.files import atomic_path, load_model, remove_stale_temp_files, write_text_atomic
from kdkeras.registry import DISTILLATION_TERMS, LOADERS, OPTIMIZERS
from kdkeras.fit_metrics import fit_metrics
from kdkeras.progress import fit_verbosity
from kdkeras.teacher_cache import with_teacher_logits

PHASES = runs_lib.PHASES
GRID_IMAGES = 16


class MissingArtifactError(FileNotFoundError):
    """A phase needs the output of an earlier phase that has not run."""


def run_dir(config, runs_dir="runs"):
    """The folder of an experiment's outputs: `<runs_dir>/<config.name>`."""
    return runs_lib.RunFolder.of(config, runs_dir).path


def load_data(config, raw_train=False):
    """Loads the experiment's data with its `[data]` table.

    `root = "@bundled"` with the medmnist loader points at the PneumoniaMNIST
    copy shipped inside kdkeras, so the quickstart runs offline.

    Args:
        config: An `ExperimentConfig`.
        raw_train: Return the train split in a fixed order and without
            augmentation (`kdkeras.transfer` builds its pipeline from it).

    Returns:
        `(train, val, test, info)` as returned by the `kdkeras.data` loader.
    """
    kwargs = dict(config.data)
    if raw_train:
        kwargs.update(shuffle=False, augment=None)
    loader = kwargs.pop("loader")
    if kwargs.pop("augment_on", "pipeline") == "device":
        kwargs.pop("augment", None)  # the training step augments (see `device_augmentation`)
    if kwargs.get("root") == BUNDLED:
        kwargs["root"] = os.path.dirname(data_lib.bundled_npz(kwargs.get("flag", "pneumoniamnist")))
    kwargs.setdefault("seed", config.seed)
    return LOADERS.get(loader, **kwargs)


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


def run_phase(config, phase, runs_dir="runs", verbose="auto", log=print, teacher_path=None, unsafe_load=False):
    """Trains, saves and evaluates one phase of an experiment.

    A phase killed mid-way resumes from its last completed epoch when run
    again with the same config (see `kdkeras.callbacks.RunState`).

    The phase runs under the config's `strategy` (see `kdkeras.distribute`):
    models are built, loaded and compiled in its scope, and `[data] batch_size`
    is the global batch, split evenly over the replicas. Under `"multiworker"`
    every worker runs this function; only the chief writes the run folder, and
    a restarted job resumes every worker from the chief's last checkpoint
    (see `kdkeras.multiworker`).

    Args:
        config: A validated `ExperimentConfig`.
        phase: "teacher", "student" or "distill".
        runs_dir: Parent folder of run folders.
        verbose: Keras progress-bar verbosity for `fit`; "auto" draws bars in a
            terminal or notebook and one line per epoch elsewhere
            (`kdkeras.progress.fit_verbosity`).
        log: Callable receiving one line per step of the phase.
        teacher_path: The `.keras` teacher that `distill` reads; defaults to
            the run folder's `teacher.keras`. A sweep points every grid run
            at the experiment's one teacher instead of copying it.
        unsafe_load: Load a teacher file that stores Python code (see
            `kdkeras.files.load_model`); only for files you trust.

    Returns:
        The phase's metrics dict (also saved as `{name}_metrics.json`).

    Raises:
        MissingArtifactError: `distill` without a saved teacher.
        ConfigError: a strategy the machine cannot provide, or a batch size
            that does not split over its replicas.
        ValueError: a model that cannot take the data (size, classes).
        kdkeras.files.UnsafeModelError: a teacher file holding code, without `unsafe_load`.
        kdkeras.callbacks.TrainingDivergedError: a NaN or infinite loss; no
            model is saved and the last complete checkpoint is kept.
    """
    if phase not in PHASES:
        raise ValueError(f"Unknown phase {phase!r}; use one of {', '.join(PHASES)}.")
    verbose = fit_verbosity() if verbose == "auto" else verbose
    run = runs_lib.RunFolder.of(config, runs_dir)
    name = runs_lib.MODEL_NAMES[phase]
    if os.path.isdir(run.path):
        remove_stale_temp_files(run.path)  # left by a killed run
    strategy = distribute.get_strategy(config.strategy)
    # Only the chief writes the run's files; other workers write to a scratch folder.
    written = runs_lib.RunFolder(multiworker.write_dir(run.path, strategy))
    batch_size = global_batch_size(config)
    per_replica = distribute.replica_batch_size(batch_size, strategy)
    teacher_path = teacher_path or run.model("teacher")
    with strategy.scope():
        teacher_paths = (config.distill.teachers or [teacher_path]) if phase == "distill" else []
        teachers = [_load_teacher(path, unsafe_load) for path in teacher_paths]
    if config.deterministic:
        # Process-wide, as TensorFlow offers it: a seeded phase then repeats bit for bit.
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    train_config = config.phase(phase)
    split_labels = phase != "teacher" and transfer.uses_transfer_split(config)
    train, val, test, info = load_data(config, raw_train=split_labels)
    class_weight = _class_weight(train_config, info)
    if split_labels:
        plan = transfer.fit_plan(config, phase, train, info, batch_size, class_weight)
    else:
        plan = transfer.FitPlan(train, None, info.split_sizes["train"], 0, class_weight)
    train, val = (distribute.prepare_dataset(ds, strategy, batch_size) for ds in (plan.train, val))
    input_shape = tuple(train.element_spec[0].shape[1:])
    log(
        f"[{name}] data: {info.name}, {info.task}, {info.num_classes} classes, "
        f"{'x'.join(map(str, input_shape))} px, split sizes {info.split_sizes}"
    )
    log(f"[{name}] {distribute.describe(strategy)}; global batch {batch_size} = {per_replica} per replica")
    log(f"[{name}] {plan.describe()}")
    model_name, options = config.student_model() if phase == "distill" else (train_config.model, train_config.options)
    with strategy.scope():
        model = models_lib.get_model(
            model_name,
            input_shape=input_shape,
            num_classes=info.num_classes,
            weights=train_config.weights or None,
            **options,
        )
        log(f"[{name}] model: {model_name}, {model.count_params():,} parameters")
        if distribute.synchronize_batch_norm(model, strategy):
            log(f"[{name}] BatchNorm statistics are synchronised over the {strategy.num_replicas_in_sync} replicas")
        augment = device_augmentation(config)
        if augment is not None:
            log(f"[{name}] {augment.name} runs in the training step, one view per batch for every model")
        if teachers:
            for teacher, path in zip(teachers, teacher_paths):
                _check_teacher(teacher, input_shape, info, path)
            # Counting the steps can take a pass over the data; only the warm-up needs them.
            steps = plan.steps_per_epoch or _steps_per_epoch(train) if train_config.warmup_epochs else 0
            fitted = build_distiller(model, teachers, train_config, info, steps)
            fitted.augmentation = augment
            log(f"[{name}] {describe_distiller(fitted)}")
        else:
            fitted = data_lib.with_augmentation(model, augment) if augment is not None else model
            fitted.compile(
                optimizer=make_optimizer(train_config),
                loss=supervised_loss(info.task),
                metrics=fit_metrics(info.num_classes, info.task),
            )
    if teachers and train_config.cache_teacher:
        log(f"[{name}] caching the teacher's logits on the train split (one pass)")
        train = distribute.prepare_dataset(
            with_teacher_logits(train, fitted, batch_size=batch_size, seed=config.seed, verbose=verbose != 0),
            strategy,
            batch_size,
        )
    save_config(config, written.config)
    state = multiworker.WorkerRunState(
        written.state(name),
        written.history(name),
        restore_dir=run.state(name),
        strategy=strategy,
        monitor=train_config.monitor,
        patience=train_config.early_stopping,
        weights_of=model,
    )
    with strategy.scope():  # a resumed optimizer builds its variables here
        initial_epoch = state.restore(fitted)
    if initial_epoch:
        log(f"[{name}] resuming after epoch {initial_epoch} of {train_config.epochs}")
    if class_weight:
        log(f"[{name}] class weights {', '.join(f'{info.class_names[k]} {w:.3f}' for k, w in class_weight.items())}")
    # StopOnNaN comes first, so that an epoch ending in NaN is never checkpointed.
    callbacks = [StopOnNaN(), state, keras.callbacks.TensorBoard(written.logs(name))]
    if train_config.reduce_lr:
        callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(
            monitor=train_config.monitor, mode=state.mode, factor=0.5, patience=train_config.reduce_lr, verbose=1))
    started = time.perf_counter()
    try:
        if initial_epoch < train_config.epochs:
            fitted.fit(
                train,
                validation_data=val,
                epochs=train_config.epochs,
                steps_per_epoch=plan.steps_per_epoch,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                shuffle=False,  # the train pipeline shuffles, seeded, each epoch
                class_weight=plan.class_weight,
                verbose=verbose,
            )
    except TrainingDivergedError as e:
        raise TrainingDivergedError(f"[{name}] {e} {_diverged_hint(state, phase)}") from None
    seconds = time.perf_counter() - started
    model_path = written.model(name)
    save_deployable(model, model_path)
    log(f"[{name}] saved {model_path} (best epoch {state.best_epoch}, {state.monitor} = {state.best})")
    result = evaluate(model, test, info, model_path, written.path, name, val=val)
    record = runs_lib.RunRecord(
        phase=phase,
        overrides=config_overrides(config),
        limit=config.data.get("limit"),
        epochs=train_config.epochs,
        epochs_run=len(state.history),
        best_epoch=state.best_epoch,
        stopped_early=len(state.history) < train_config.epochs,
        steps_per_epoch=plan.steps_per_epoch or _steps_per_epoch(train),
        train_images={"labeled": plan.labeled, "unlabeled": plan.unlabeled},
    )
    result.update(
        architecture=model_name,
        train_images=record.train_images,
        steps_per_epoch=record.steps_per_epoch,
        run=record,
        epochs_run=len(state.history),
        best_epoch=state.best_epoch,
        monitor=state.monitor,
        best_monitor_value=None if state.best is None else float(state.best),
        train_seconds=round(seconds, 1),
    )
    written.write_metrics(name, result)
    write_text_atomic(written.phase_config(name), _phase_config_text(config, record))
    multiworker.remove_write_dir(written.path, run.path)
    log(f"[{name}] test: {metrics_lib.summary(result)}")
    return result


def config_overrides(config):
    """The entries of `config` that differ from its experiment file, as dotted keys.

    A config built in Python, or whose file is gone, reports no overrides.
    """
    if not config.path or not os.path.exists(config.path):
        return {}
    return _changed(load_config(config.path).to_dict(), config.to_dict())


def _changed(original, current, prefix=""):
    changed = {}
    for key in current.keys() | original.keys():
        a, b = original.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.update(_changed(a, b, f"{prefix}{key}."))
        elif a != b:
            changed[f"{prefix}{key}"] = b
    return dict(sorted(changed.items()))


def _phase_config_text(config, record):
    header = [
        f"# The config phase {record.phase!r} ran with: kdkeras {record.kdkeras_version}, {record.date} UTC.",
        f"# Overrides of {config.path or 'the config'}: "
        + (", ".join(f"{k} = {v!r}" for k, v in record.overrides.items()) or "none") + ".",
        f"# Ran {record.epochs_run} of at most {record.epochs} epochs"
        + (" (stopped early)" if record.stopped_early else "") + f", kept epoch {record.best_epoch}.",
    ]
    return "\n".join(header) + "\n" + dump_toml(config)


def global_batch_size(config):
    """The batch size of every training step, over all replicas together.

    It is `[data] batch_size`, or the loader's default when the config leaves
    it out (the Keras convention: `fit` splits each batch over the replicas).
    """
    loader = LOADERS.lookup(config.data["loader"])
    return config.data.get("batch_size", inspect.signature(loader).parameters["batch_size"].default)


def build_distiller(student, teachers, distill, info, steps_per_epoch):
    """The compiled `Distiller` of a `[distill]` config.

    For multi-label data the default soft-target loss becomes its per-label
    sigmoid form (`MultiLabelKD`); DKD needs single-label classes.

    Args:
        student: The fresh student model.
        teachers: Loaded teacher models (one or more).
        distill: The `DistillConfig`.
        info: The data's `DatasetInfo` (task and classes).
        steps_per_epoch: Training steps per epoch, for `warmup_epochs`.

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
        distillation_loss_fn=kd_losses.get(loss, temperature=distill.temperature, **distill.loss_options),
        alpha=distill.alpha,
        distillation_weight=1.0 if distill.objective == "additive" else None,
        warmup_steps=round(distill.warmup_epochs * steps_per_epoch),
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


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    return steps if steps > 0 else sum(1 for _ in dataset)


def save_deployable(model, path):
    """Saves `model` without optimizer state, atomically: the artifact to ship.

    A compiled Keras model saves its optimizer variables too (Adam doubles the
    file); an uncompiled clone keeps the file to the weights, so the size on
    disk compares like with like across teacher, student and distilled student.
    """
    clone = type(model).from_config(model.get_config())  # clone_model would copy the compile state
    clone.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        clone.save(tmp)


def evaluate(model, test, info, model_path, out, name, val=None):
    """Evaluates a model on the test split; saves its predictions.

    Args:
        model: A Keras model emitting logits.
        test: The batched test dataset.
        info: The `DatasetInfo` of the data.
        model_path: Saved copy of the model, for its size on disk.
        out: Run folder.
        name: Artifact name ("teacher", "student", "distilled").
        val: The batched validation dataset, whose logits are saved too: the
            report fits calibration and operating points on them, never on test.

    Returns:
        Metrics dict: `kdkeras.metrics.classification_metrics` plus
        `kdkeras.profiling.describe_model`.
    """
    y_true, logits, grid = _logits(model, test, keep_images=GRID_IMAGES)
    y_score = metrics_lib.logits_to_scores(logits, info.task)
    loss = float(supervised_loss(info.task)(y_true, logits))
    result = metrics_lib.classification_metrics(y_true, y_score, info.task, info.class_names, loss=loss)
    result.update(profiling.describe_model(model, model_path))
    validation = _logits(model, val)[:2] if val is not None else None
    runs_lib.RunFolder(out).write_predictions(name, y_true, y_score, images=grid, logits=logits, val=validation)
    return result


def _logits(model, dataset, keep_images=0):
    """`(labels, float64 logits, first images)` of a model over a batched dataset."""
    labels, images, logits = [], [], []
    for x, y, *_ in dataset:
        logits.append(model(x, training=False).numpy())
        labels.append(y.numpy())
        if sum(len(i) for i in images) < keep_images:
            images.append(x.numpy())
    grid = np.concatenate(images)[:keep_images] if images else None
    return np.concatenate(labels), np.concatenate(logits).astype("float64"), grid


def evaluate_file(config, model_path, runs_dir="runs", name=None, unsafe_load=False):
    """Evaluates a saved `.keras` model on the experiment's test split.

    Args:
        config: The experiment config (for the data).
        model_path: A `.keras` file that outputs logits.
        runs_dir: Parent of run folders.
        name: Artifact name for the output files; defaults to the file's stem.
        unsafe_load: Load a model file that stores Python code (see
            `kdkeras.files.load_model`); only for files you trust.

    Returns:
        The metrics dict, also written as `<run>/<name>_metrics.json`.
    """
    if not os.path.exists(model_path):
        raise MissingArtifactError(f"{model_path} not found: pass a saved .keras model.")
    model = load_model(model_path, unsafe_load)
    _, val, test, info = load_data(config)
    run = runs_lib.RunFolder.of(config, runs_dir)
    name = name or os.path.splitext(os.path.basename(model_path))[0]
    result = evaluate(model, test, info, model_path, run.path, name, val=val)
    result["architecture"] = model.name
    run.write_metrics(name, result)
    return result


def write_report(config, runs_dir="runs"):
    """Writes `report.md` and the figures for every phase that has run.

    Returns:
        Path of the report.
    """
    run = runs_lib.RunFolder.of(config, runs_dir)
    present = run.finished()
    if not present:
        raise MissingArtifactError(
            f"No results in {run.path}: run `make teacher student distill` "
            f"(or `kdkeras teacher --config {config.path or config.name}`) first."
        )
    return reporting.write_report(
        run.path, present, config.description or config.name, config.to_dict(), published=config.published or None
    )


def _diverged_hint(state, phase):
    done = len(state.history)
    lower = f"a lower --learning-rate (or [{phase}] learning_rate)"
    if not done:
        return f"No epoch completed and no model was saved; rerun with {lower}."
    return (
        f"No model was saved; the checkpoint of epoch {done} stays in {state.state_dir}. A rerun "
        "resumes from it with the optimizer state saved there, learning rate included: to retry "
        f"with {lower}, delete that folder first."
    )


def _load_teacher(path, unsafe_load=False):
    if not os.path.exists(path):
        raise MissingArtifactError(
            f"{path} not found: distillation needs a trained teacher. Run `make teacher` "
            "(or `kdkeras teacher --config <experiment>`) first."
        )
    return load_model(path, unsafe_load)


def _check_teacher(teacher, input_shape, info, path):
    teacher_shape = tuple(teacher.input_shape[1:])
    if teacher_shape != tuple(input_shape):
        raise ConfigError(
            f"{path} takes inputs of shape {teacher_shape} but the data yields "
            f"{tuple(input_shape)}: retrain the teacher (`make teacher`) with this [data] config."
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
