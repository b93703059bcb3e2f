"""Crash-safe training: per-epoch checkpoints, history, best weights, early stopping, NaN stops.

`RunState` checkpoints one process; `WorkerRunState` resumes every worker of a
cluster from the chief's checkpoints.
"""

import csv
import glob
import io
import json
import math
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from kdkeras.config import ConfigError
from kdkeras.files import remove_stale_temp_files, save_weights, write_text_atomic

_CHECKPOINT = re.compile(r"epoch_(\d{4,})\.json$")


class RunState(keras.callbacks.Callback):
    """Saves everything a killed `fit` needs to resume, one atomic file at a time.

    After every epoch it writes, each through a temporary file and a rename:
    the model weights with the optimizer state (`epoch_NNNN.weights.h5`), then a
    small JSON with the epoch, the history so far and the early-stopping state
    (`epoch_NNNN.json`, written last, so its presence marks a complete
    checkpoint), the best weights on `monitor` (`best.weights.h5`) and the
    history CSV. `restore` reloads the newest complete checkpoint before `fit`
    restarts at the next epoch. At the end of training the best weights are put
    back into the model and the checkpoint folder is removed.

    Args:
        state_dir: Folder for this phase's checkpoints.
        history_csv: Path of the history CSV, rewritten whole each epoch.
        monitor: Logged quantity that picks the best epoch, e.g. "val_auc".
        mode: "max" or "min"; None infers it ("loss" in the name means "min").
        patience: Early-stopping patience in epochs; 0 disables stopping.
        weights_of: The model whose weights are "best" (defaults to the
            fitted model; the Distiller passes its student).
        settings: JSON-ready dict of the settings the run trains with,
            recorded in each checkpoint: `restore` refuses a checkpoint whose
            recorded settings differ (`SettingsChangedError`), so a resumed
            run never mixes two configs in one history. None records nothing.

    Example:

    ```python
    state = RunState("runs/x/state/teacher", "runs/x/teacher_history.csv", "val_auc")
    initial_epoch = state.restore(model)
    model.fit(train, validation_data=val, epochs=20, initial_epoch=initial_epoch,
              callbacks=[state])
    ```
    """

    def __init__(self, state_dir, history_csv, monitor="val_loss", mode=None, patience=0, weights_of=None,
                 settings=None):
        super().__init__()
        # Through JSON, as the checkpoint stores them: tuples compare equal to the lists read back.
        self.settings = None if settings is None else json.loads(json.dumps(settings))
        self.state_dir = state_dir
        self.history_csv = history_csv
        self.monitor = monitor
        self.mode = mode or ("min" if "loss" in monitor else "max")
        if self.mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}.")
        self.patience = patience
        self.weights_of = weights_of
        self.history = []
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None

    @property
    def _best_path(self):
        return os.path.join(self.state_dir, "best.weights.h5")

    def restore(self, model):
        """Loads the newest complete checkpoint into `model`, if there is one.

        Args:
            model: The compiled model about to be fitted (built, or buildable
                from its inputs).

        Returns:
            The epoch to pass to `fit(initial_epoch=...)`: 0 for a fresh start.

        Raises:
            SettingsChangedError: the checkpoint was trained with other
                `settings` (or another `monitor`); nothing is loaded.
        """
        if os.path.isdir(self.state_dir):
            remove_stale_temp_files(self.state_dir)
        latest = self._latest_checkpoint()
        if latest is None:
            return 0
        epoch, meta_path = latest
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        self._check_settings(meta, epoch)
        _build_optimizer(model)
        model.load_weights(self._weights_path(epoch))
        self.history = meta["history"]
        self.best = meta["best"]
        self.best_epoch = meta["best_epoch"]
        self.wait = meta["wait"]
        return epoch

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.history.append(row)
        value = row.get(self.monitor)
        if value is None:
            raise KeyError(
                f"RunState monitors {self.monitor!r}, which is not logged (logged: "
                f"{', '.join(sorted(row))}). Pick `monitor` among those, with validation data."
            )
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            save_weights(self._target(), self._best_path)
        else:
            self.wait += 1
        os.makedirs(self.state_dir, exist_ok=True)
        save_weights(self.model, self._weights_path(epoch + 1))
        meta = {
            "epoch": epoch + 1,
            "history": self.history,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "monitor": self.monitor,
            "settings": self.settings,
        }
        write_text_atomic(os.path.join(self.state_dir, f"epoch_{epoch + 1:04d}.json"), json.dumps(meta))
        write_text_atomic(self.history_csv, history_to_csv(self.history))
        self._remove_older_than(epoch + 1)
        if self.patience and self.wait >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_epoch is not None and os.path.exists(self._best_path):
            self._target().load_weights(self._best_path)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        parent = os.path.dirname(self.state_dir)
        if os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)

    def _check_settings(self, meta, epoch):
        if meta.get("settings") is None or self.settings is None:
            # A checkpoint older than the record (or a caller that records nothing): only the monitor is known.
            recorded, current = {"monitor": meta.get("monitor", self.monitor)}, {"monitor": self.monitor}
        else:
            recorded, current = _flatten(meta["settings"]), _flatten(self.settings)
        def shown(values, key):
            return repr(values[key]) if key in values else "(unset)"

        changed = [
            f"{key} {shown(recorded, key)} -> {shown(current, key)}"
            for key in sorted(recorded.keys() | current.keys()) if recorded.get(key, ...) != current.get(key, ...)
        ]
        if changed:
            raise SettingsChangedError(
                f"{self.state_dir} holds the checkpoint of epoch {epoch}, trained with other settings: "
                f"{', '.join(changed)}. Resuming would mix both in one run: run again with the old "
                "settings to resume, or add --fresh (Python: run_phase(..., fresh=True)) to discard "
                "the checkpoint and start at epoch 1."
            )

    def _target(self):
        return self.weights_of or self.model

    def _improved(self, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _weights_path(self, epoch):
        return os.path.join(self.state_dir, f"epoch_{epoch:04d}.weights.h5")

    def _latest_checkpoint(self):
        found = []
        for meta in glob.glob(os.path.join(self.state_dir, "epoch_*.json")):
            match = _CHECKPOINT.search(meta)
            if match and os.path.exists(self._weights_path(int(match.group(1)))):
                found.append((int(match.group(1)), meta))
        return max(found) if found else None

    def _remove_older_than(self, epoch):
        for path in glob.glob(os.path.join(self.state_dir, "epoch_*")):
            match = re.search(r"epoch_(\d+)\.", os.path.basename(path))
            if match and int(match.group(1)) < epoch:
                os.remove(path)


class SettingsChangedError(ConfigError):
    """A checkpoint to resume from was trained with other settings than the run's."""


def _flatten(settings, prefix=""):
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class TrainingDivergedError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message says where and what to try."""


class StopOnNaN(keras.callbacks.Callback):
    """Stops `fit` at the first NaN or infinite loss with a `TrainingDivergedError`.

    Like `keras.callbacks.TerminateOnNaN`, but instead of ending `fit` as if
    it had finished, it raises an error naming the epoch, the batch and the
    loss that diverged, and what to try; code after `fit` (saving the model)
    never runs on broken weights. Every logged loss is checked after each
    training batch, and the validation losses at the end of each epoch. Put it
    before `RunState` in the callback list, so that an epoch whose validation
    loss is NaN is not checkpointed.

    Example:

    ```python
    model.fit(train, validation_data=val, epochs=10, callbacks=[StopOnNaN(), state])
    ```
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        self._check(logs, f"batch {batch + 1}" + (f" of {steps}" if steps else ""))

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "the end of the epoch")

    def _check(self, logs, where):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(value)):
                raise TrainingDivergedError(self._message(key, float(value), where))

    def _message(self, key, value, where):
        epochs = self.params.get("epochs")
        epoch = f"epoch {self._epoch + 1}" + (f" of {epochs}" if epochs else "")
        try:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            lower = f"a lower learning rate (now {lr:g}; try {lr / 10:g})"
        except (AttributeError, TypeError, ValueError):
            lower = "a lower learning rate"
        return (
            f"Training diverged: {key} = {value} at {epoch}, {where}. The weights are no longer "
            f"usable, so training stopped. Try {lower}, and check the inputs for NaN, infinite or "
            "extreme values."
        )


def history_to_csv(rows):
    """Formats history rows (dicts with an "epoch" key) as CSV text.

    Args:
        rows: One dict per epoch.

    Returns:
        CSV text with a header of the union of keys, "epoch" first.
    """
    keys = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buffer.getvalue()


class UnfreezeBase(keras.callbacks.Callback):
    """Unfreezes a frozen base network after `epoch` epochs, and recompiles.

    Transfer learning in two stages (Keras's transfer-learning guide): the
    head trains on the frozen base first, then the whole network trains at a
    lower rate. At the start of epoch `epoch` (0-based; a resumed run past it
    unfreezes at its first epoch) every layer of `base` becomes trainable and
    the fitted model is compiled again with its own loss and metrics and a
    fresh optimizer of the same configuration at `learning_rate_scale` times
    the current rate: the old optimizer holds no slots for the new variables.
    A pretrained base keeps its BatchNorm layers in inference mode
    (`kdkeras.models.applications` calls it with `training=False`).

    Args:
        base: The layer (sub-model) to unfreeze, e.g. `model.get_layer("base")`.
        epoch: The number of epochs the base stays frozen, >= 1.
        learning_rate_scale: Factor on the learning rate from then on.
        log: Callable receiving one line when it unfreezes.
    """

    def __init__(self, base, epoch, learning_rate_scale=0.1, log=print):
        super().__init__()
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"UnfreezeBase: epoch must be a whole number >= 1, got {epoch!r}.")
        self.base = base
        self.epoch = epoch
        self.learning_rate_scale = learning_rate_scale
        self.log = log

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epoch or all(layer.trainable for layer in self.base._flatten_layers()):
            return
        model = self.model
        before = len(model.trainable_variables)
        # Setting `trainable` on a functional model does not reach its layers: set each.
        for layer in self.base._flatten_layers():
            layer.trainable = True
        old = model.optimizer
        inner = getattr(old, "inner_optimizer", old)  # under mixed precision, a LossScaleOptimizer
        rate = float(keras.ops.convert_to_numpy(inner.learning_rate)) * self.learning_rate_scale
        optimizer = inner.__class__.from_config(inner.get_config())
        optimizer.learning_rate = rate
        config = model._compile_config.config
        model.compile(**{**config, "optimizer": optimizer})
        model.optimizer.build(model.trainable_variables)
        # fit reads model.train_function at every step: the new one trains the new variables.
        model.make_train_function(force=True)
        self.log(
            f"epoch {epoch + 1}: unfroze {self.base.name} ({before} -> {len(model.trainable_variables)} "
            f"trainable variables), learning rate {rate:g}"
        )


def _build_optimizer(model):
    if model.optimizer is None or model.optimizer.built:
        return
    model.optimizer.build(model.trainable_variables)


def cosine_schedule(learning_rate, epochs):
    """Half a cosine from `learning_rate` at the first epoch towards 0 after the last.

    Set per epoch from the epoch's index, so a resumed run (`RunState`)
    continues on the same curve. The "long cosine schedule" of Beyer et al.
    (CVPR 2022), who found distillation keeps improving where a constant
    rate would have stopped it.

    Args:
        learning_rate: The rate of epoch 0.
        epochs: The number of epochs the curve spans.

    Returns:
        A `keras.callbacks.LearningRateScheduler`.
    """
    def rate(epoch, _):
        return learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

    return keras.callbacks.LearningRateScheduler(rate)


class WorkerRunState(RunState):
    """A `RunState` that every worker of a cluster resumes from the chief's checkpoints.

    The chief writes the checkpoints to `restore_dir` (atomically, as
    `RunState` does); other workers write theirs to their `write_dir` and read
    the chief's to resume, so after a restart every worker continues from the
    last epoch the chief completed. `restore_dir` must therefore be on storage
    that all workers read (a cluster's shared file system, NFS, a mounted
    bucket): `restore` checks that the workers found the same epoch and stops
    with an error naming the workers if not. In a one-process run it is a
    plain `RunState`.

    Args:
        state_dir: Where this process writes its checkpoints (the chief:
            `restore_dir`).
        history_csv: Where this process writes the history CSV.
        restore_dir: The chief's checkpoint folder, read by every worker.
        strategy: The `tf.distribute.Strategy` of the run.
        **kwargs: `RunState`'s `monitor`, `mode`, `patience`, `weights_of`.
    """

    def __init__(self, state_dir, history_csv, restore_dir, strategy, **kwargs):
        super().__init__(state_dir, history_csv, **kwargs)
        self.restore_dir = restore_dir
        self.strategy = strategy

    def restore(self, model):
        """Loads the chief's newest complete checkpoint; every worker must find the same.

        Returns:
            The epoch to pass to `fit(initial_epoch=...)`.

        Raises:
            ConfigError: the workers found different checkpoints.
        """
        own, self.state_dir = self.state_dir, self.restore_dir
        try:
            epoch = super().restore(model)
        finally:
            self.state_dir = own
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _check_same_epoch(self.strategy, epoch, self.restore_dir)
        return epoch


def _check_same_epoch(strategy, epoch, restore_dir):
    found = np.asarray(strategy.gather(tf.constant([epoch]), axis=0))
    if len(set(found.tolist())) > 1:
        resolver = strategy.cluster_resolver
        seen = ", ".join(f"worker {i}: epoch {e}" for i, e in enumerate(found.tolist()))
        raise ConfigError(
            f"The workers found different checkpoints in {restore_dir} ({seen}; this is "
            f"{resolver.task_type} {resolver.task_id}). Every worker resumes from the chief's "
            "checkpoints, so --runs-dir must be on storage that all machines share (the "
            "cluster's shared file system, NFS, a mounted bucket)."
        )
