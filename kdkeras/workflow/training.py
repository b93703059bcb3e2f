"""The three phases of an experiment: teacher, student alone, distillation.

Each phase reads the experiment config, loads its data and builds its
compiled model (`kdkeras.workflow.phases`), trains with crash-safe checkpoints,
saves its model and evaluates it on the test split. Everything lands in the
run folder `runs/<experiment>/`, whose files `kdkeras.runs` names.
"""

import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from kdkeras import reporting
from kdkeras import runs as runs_lib
from kdkeras.config import dump_toml, save_config
from kdkeras.data import transforms
from kdkeras.distillation.teacher_cache import with_teacher_logits
from kdkeras.distribute import multiworker
from kdkeras.distribute import strategy as distribute
from kdkeras.evaluation import metrics as metrics_lib
from kdkeras.evaluation import profiling
from kdkeras.files import atomic_path, load_model, remove_stale_temp_files, write_text_atomic
from kdkeras.reporting import checklist as checklist_lib
from kdkeras.reporting.model_card import RunFacts
from kdkeras.workflow.callbacks import StopOnNaN, TrainingDivergedError, WorkerRunState, cosine_schedule
from kdkeras.workflow.phases import (
    PHASE_BUILDERS,
    global_batch_size,
    load_data,
    load_phase_data,
    phase_callbacks,
    phase_model,
    supervised_loss,
)
from kdkeras.workflow.progress import fit_verbosity

PHASES = runs_lib.PHASES
GRID_IMAGES = 16


class MissingArtifactError(FileNotFoundError):
    """A phase needs the output of an earlier phase that has not run."""


def run_dir(config, runs_dir="runs"):
    """The folder of an experiment's outputs: `<runs_dir>/<config.name>`."""
    return runs_lib.RunFolder.of(config, runs_dir).path


def fit_datasets(train, val, strategy, batch, cache_from=None, seed=None, verbose=True):
    """The train and validation datasets `fit` reads, prepared once for the strategy.

    The teacher's logits are cached from every train example before the
    strategy drops any partial batch, so under a TPU each epoch drops a
    different, reshuffled remainder instead of the same examples forever.

    Args:
        train: The batched train set of the phase's `FitPlan`.
        val: The batched validation split.
        strategy: The phase's `tf.distribute.Strategy`.
        batch: Its `kdkeras.distribute.Batching`.
        cache_from: A compiled `Distiller` (or teacher model) whose logits are
            cached on the train set (`with_teacher_logits`), or None.
        seed: Shuffle seed of the cached train set.
        verbose: Show a progress bar for the one teacher pass.

    Returns:
        `(train, val)`.
    """
    if cache_from is not None:
        train = with_teacher_logits(train, cache_from, batch_size=batch.size, seed=seed, verbose=verbose)
    return tuple(distribute.prepare_dataset(ds, strategy, batch.size) for ds in (train, val))


def run_phase(config, phase, runs_dir="runs", verbose="auto", log=print, teacher_path=None, unsafe_load=False,
              fresh=False):
    """Trains, saves and evaluates one phase of an experiment.

    Data, then the phase's compiled model (`kdkeras.workflow.phases.PHASE_BUILDERS`),
    then `fit` with a `RunState` (a killed phase resumes from its last
    completed epoch), then save and evaluate. Models are loaded, built and
    compiled in the scope of the config's `strategy` (`kdkeras.distribute`),
    and `[data] batch_size` is the global batch (`distribute.batching`). Under
    `"multiworker"` every worker runs this; only the chief writes the run
    folder (see `kdkeras.distribute.multiworker`).

    Args:
        config: A validated `ExperimentConfig`.
        phase: "teacher", "student" or "distill".
        runs_dir: Parent folder of run folders.
        verbose: Keras progress-bar verbosity for `fit`; "auto" draws bars in a
            terminal or notebook and one line per epoch elsewhere
            (`kdkeras.workflow.progress.fit_verbosity`).
        log: Callable receiving one line per step of the phase.
        teacher_path: The `.keras` teacher that `distill` reads; defaults to
            the run folder's `teacher.keras`. A sweep points every grid run
            at the experiment's one teacher instead of copying it.
        unsafe_load: Load a teacher file that stores Python code (see
            `kdkeras.files.load_model`); only for files you trust.
        fresh: Discard the phase's checkpoint, if any, and start at epoch 1
            (the CLI's `--fresh`); else a killed phase resumes.

    Returns:
        The phase's `kdkeras.runs.MetricsRecord` (also saved as `{name}_metrics.json`).

    Raises:
        MissingArtifactError: `distill` without a saved teacher.
        ConfigError: a strategy the machine cannot provide, or a batch size
            that does not split over its replicas.
        ValueError: a model that cannot take the data (size, classes).
        kdkeras.files.UnsafeModelError: a teacher file holding code, without `unsafe_load`.
        kdkeras.workflow.callbacks.SettingsChangedError: a checkpoint of other settings, without `fresh`.
        kdkeras.workflow.callbacks.TrainingDivergedError: a NaN or infinite loss; no
            model is saved and the last complete checkpoint is kept.
    """
    if phase not in PHASES:
        raise ValueError(f"Unknown phase {phase!r}; use one of {', '.join(PHASES)}.")
    verbose = fit_verbosity() if verbose == "auto" else verbose
    run = runs_lib.RunFolder.of(config, runs_dir)
    name = runs_lib.MODEL_NAMES[phase]
    say = lambda line: log(f"[{name}] {line}")  # noqa: E731
    _clear_leftovers(run, name, fresh, say)
    strategy = distribute.get_strategy(config.strategy)
    # Only the chief writes the run's files; other workers write to a scratch folder.
    written = runs_lib.RunFolder(multiworker.write_dir(run.path, strategy))
    batch = distribute.batching(global_batch_size(config), strategy)
    train_config = config.phase(phase)
    with strategy.scope():
        # Loading a teacher builds its layers, drawing initial weights: it comes before the
        # seed, so that the data and the student draw the same numbers with or without teachers.
        teachers = _load_teachers(config, phase, teacher_path or run.model("teacher"), unsafe_load)
        _seed(config)
        data = load_phase_data(config, phase, batch)
        _log_data(say, data, strategy, batch)
        fitted, model = PHASE_BUILDERS[phase](config, phase, data, teachers, say)
        save_config(config, written.config)
        state = _run_state(config, phase, run, written, strategy, model)
        initial_epoch = state.restore(fitted)  # a resumed optimizer builds its variables in the scope
    cache_from = fitted if teachers and train_config.cache_teacher else None
    if cache_from is not None:
        say("caching the teacher's logits on the train split (one pass)")
    train, val = fit_datasets(data.plan.train, data.val, strategy, batch, cache_from, config.seed, verbose != 0)
    try:
        seconds = _fit(fitted, train, val, data, state, train_config, initial_epoch, written.logs(name), say, verbose)
    except TrainingDivergedError as e:
        raise TrainingDivergedError(f"[{name}] {e} {_diverged_hint(state, phase)}") from None
    model_path = written.model(name)
    save_deployable(model, model_path)
    say(f"saved {model_path} (best epoch {state.best_epoch}, {state.monitor} = {state.best})")
    result = evaluate(model, data.test, data.info, model_path, written.path, name, val=data.val)
    result = _record(config, phase, result, state, data, seconds, written, name)
    multiworker.remove_write_dir(written.path, run.path)
    say(f"test: {metrics_lib.summary(result)}")
    return result


def _clear_leftovers(run, name, fresh, say):
    if os.path.isdir(run.path):
        remove_stale_temp_files(run.path)  # left by a killed run
    if fresh and os.path.isdir(run.state(name)):
        say(f"--fresh: discarding the checkpoint in {run.state(name)}")
        shutil.rmtree(run.state(name), ignore_errors=True)


def _run_state(config, phase, run, written, strategy, model):
    name, train_config = runs_lib.MODEL_NAMES[phase], config.phase(phase)
    return WorkerRunState(
        written.state(name), written.history(name), restore_dir=run.state(name), strategy=strategy,
        monitor=train_config.monitor, patience=train_config.early_stopping, weights_of=model,
        settings=resume_settings(config, phase),
    )


def resume_settings(config, phase):
    """The settings a phase's checkpoint records; a resumed run must match them all.

    Everything that shapes the trained weights or the history: the data, the
    phase's table (its model, optimizer, monitor, ...), the model it trains,
    the seed and the labeled fraction. Left out: `epochs`, so that a finished
    or killed run can be extended, and the tables of the other phases.

    Args:
        config: The `ExperimentConfig`.
        phase: "teacher", "student" or "distill".

    Returns:
        A JSON-ready dict.
    """
    table = {k: v for k, v in config.to_dict()[phase].items() if k != "epochs"}
    architecture, options = phase_model(config, phase)
    return {
        "data": config.data, phase: table, "model": {"architecture": architecture, "options": options},
        "seed": config.seed, "deterministic": config.deterministic,
        # The teacher trains on every label whatever the fraction.
        "labeled_fraction": None if phase == "teacher" else config.labeled_fraction,
    }


def _seed(config):
    if config.deterministic:
        # Process-wide, as TensorFlow offers it: a seeded phase then repeats bit for bit.
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)


def _log_data(say, data, strategy, batch):
    info = data.info
    say(
        f"data: {info.name}, {info.task}, {info.num_classes} classes, "
        f"{'x'.join(map(str, data.input_shape))} px, split sizes {info.split_sizes}"
    )
    say(f"{distribute.describe(strategy)}; global batch {batch.size} = {batch.per_replica} per replica")
    say(data.plan.describe())


def _fit(fitted, train, val, data, state, train_config, initial_epoch, logs_dir, say, verbose):
    """Fits from `initial_epoch` with checkpoints and early stopping; returns the seconds it took."""
    if initial_epoch:
        say(f"resuming after epoch {initial_epoch} of {train_config.epochs}")
    class_weight = data.plan.class_weight
    if class_weight:
        names = data.info.class_names
        say(f"class weights {', '.join(f'{names[k]} {w:.3f}' for k, w in class_weight.items())}")
    # StopOnNaN comes first, so that an epoch ending in NaN is never checkpointed.
    callbacks = [StopOnNaN(), state, keras.callbacks.TensorBoard(logs_dir)]
    callbacks[1:1] = phase_callbacks(train_config, fitted, say)
    if train_config.schedule == "cosine":
        callbacks.insert(1, cosine_schedule(train_config.learning_rate, train_config.epochs))
    if train_config.reduce_lr:
        callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(
            monitor=train_config.monitor, mode=state.mode, factor=0.5, patience=train_config.reduce_lr, verbose=1))
    started = time.perf_counter()
    if initial_epoch < train_config.epochs:
        fitted.fit(
            train,
            validation_data=val,
            epochs=train_config.epochs,
            steps_per_epoch=data.plan.steps_per_epoch,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,  # the train pipeline shuffles, seeded, each epoch
            class_weight=class_weight,
            verbose=verbose,
        )
    return time.perf_counter() - started


def _record(config, phase, result, state, data, seconds, written, name):
    """Completes the metrics with the run's record, writes them with the phase's config, returns them."""
    train_config = config.phase(phase)
    plan = data.plan
    record = runs_lib.RunRecord(
        phase=phase,
        overrides=config_overrides(config),
        limit=config.data.get("limit"),
        epochs=train_config.epochs,
        epochs_run=len(state.history),
        best_epoch=state.best_epoch,
        stopped_early=len(state.history) < train_config.epochs,
        steps_per_epoch=data.steps_per_epoch,
        train_images={"labeled": plan.labeled, "unlabeled": plan.unlabeled},
    )
    result = dataclasses.replace(
        result,
        architecture=phase_model(config, phase)[0],
        run=record,
        monitor=state.monitor,
        best_monitor_value=None if state.best is None else float(state.best),
        train_seconds=round(seconds, 1),
    )
    written.write_metrics(name, result)
    write_text_atomic(written.phase_config(name), _phase_config_text(config, record))
    return result


def config_overrides(config):
    """The dotted-key overrides `config` was resolved with (flags, `--set`, `apply_overrides`), sorted."""
    return dict(sorted(config.overrides.items()))


def _phase_config_text(config, record):
    header = [
        f"# The config phase {record.phase!r} ran with: kdkeras {record.kdkeras_version}, {record.date} UTC.",
        f"# Overrides of {config.path or 'the config'}: "
        + (", ".join(f"{k} = {v!r}" for k, v in record.overrides.items()) or "none") + ".",
        f"# Ran {record.epochs_run} of at most {record.epochs} epochs"
        + (" (stopped early)" if record.stopped_early else "") + f", kept epoch {record.best_epoch}.",
    ]
    return "\n".join(header) + "\n" + dump_toml(config)


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
        A `kdkeras.runs.MetricsRecord` of `kdkeras.evaluation.metrics.classification_metrics`
        and `kdkeras.evaluation.profiling.describe_model`.
    """
    y_true, logits, grid = _logits(model, test, keep_images=GRID_IMAGES)
    y_score = metrics_lib.logits_to_scores(logits, info.task)
    loss = float(supervised_loss(info.task)(y_true, logits))
    result = runs_lib.MetricsRecord.from_json({
        **metrics_lib.classification_metrics(y_true, y_score, info.task, info.class_names, loss=loss),
        **profiling.describe_model(model, model_path),
    })
    validation = _logits(model, val)[:2] if val is not None else None
    runs_lib.RunFolder(out).write_predictions(name, y_true, y_score, images=grid, logits=logits, val=validation)
    return result


def _logits(model, dataset, keep_images=0):
    """`(labels, float64 logits, first images)` of a model over a batched dataset."""
    labels, images, logits = [], [], []
    for x, y, *_ in dataset:
        logits.append(model(transforms.for_model(x, model), training=False).numpy())
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
        The `kdkeras.runs.MetricsRecord`, also written as `<run>/<name>_metrics.json`.
    """
    if not os.path.exists(model_path):
        raise MissingArtifactError(f"{model_path} not found: pass a saved .keras model.")
    model = load_model(model_path, unsafe_load)
    _, val, test, info = load_data(config)
    run = runs_lib.RunFolder.of(config, runs_dir)
    name = name or os.path.splitext(os.path.basename(model_path))[0]
    result = evaluate(model, test, info, model_path, run.path, name, val=val)
    result.architecture = model.name
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
    # The whole test split, for the Grad-CAM agreement of the clinical read-out.
    _, _, test, _ = load_data(config)
    return reporting.write_report(
        run.path, present, config.description or config.name, config.to_dict(),
        published=config.published or None, test_data=test,
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


def _load_teachers(config, phase, teacher_path, unsafe_load):
    """`[(teacher, path), ...]` of the distill phase (the config's teachers, else `teacher_path`); else []."""
    if phase != "distill":
        return []
    paths = config.distill.teachers or [teacher_path]
    return [(_load_teacher(path, unsafe_load), path) for path in paths]


def _load_teacher(path, unsafe_load=False):
    if not os.path.exists(path):
        raise MissingArtifactError(
            f"{path} not found: distillation needs a trained teacher. Run `make teacher` "
            "(or `kdkeras teacher --config <experiment>`) first."
        )
    return load_model(path, unsafe_load)


def write_checklist(config, runs_dir="runs", model_path=None):
    """Fills both checklists for an experiment's model; writes `checklist.md` and `checklist.json` in its run folder.

    Args:
        config: An `ExperimentConfig`.
        runs_dir: Parent folder of run folders.
        model_path: The `.keras` model; defaults to `<runs_dir>/<experiment>/distilled.keras`.

    Returns:
        Path of `checklist.md`.

    Raises:
        kdkeras.workflow.MissingArtifactError: the model's metrics file does not exist.
    """
    run = runs_lib.RunFolder.of(config, runs_dir)
    model_path = os.fspath(model_path or run.model("distilled"))
    metrics_path = os.path.splitext(model_path)[0] + "_metrics.json"
    if not os.path.isfile(metrics_path):  # checked before the data loads
        raise MissingArtifactError(
            f"{metrics_path} not found: the checklist reads the model's test metrics. Run `kdkeras distill "
            f"--config {config.path or config.name}` (or the phase that writes the model) first."
        )
    facts = RunFacts.read(model_path, load_data(config)[3])
    result = checklist_lib.checklist(facts)
    folder = os.path.dirname(model_path) or "."
    write_text_atomic(os.path.join(folder, "checklist.json"), json.dumps(runs_lib.jsonable(result), indent=2) + "\n")
    path = os.path.join(folder, "checklist.md")
    write_text_atomic(path, checklist_lib.checklist_markdown(result))
    return path
