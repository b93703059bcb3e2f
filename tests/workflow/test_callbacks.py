"""RunState: atomic per-epoch checkpoints, resume, history and best weights."""

import csv
import os

import keras
import numpy as np
import pytest

from kdkeras.workflow.callbacks import RunState, cosine_schedule, history_to_csv


class KillAfter(keras.callbacks.Callback):
    """Simulates a killed process: raises once `epochs` epochs have ended."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt("killed")


def make_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_killed_fit_resumes_and_matches_an_uninterrupted_run(tmp_path):
    x, y = data()
    state_dir, history = str(tmp_path / "state"), str(tmp_path / "history.csv")

    model = make_model()
    state = RunState(state_dir, history, monitor="val_loss")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, validation_data=(x, y), epochs=5, batch_size=16, shuffle=False,
                  callbacks=[state, KillAfter(3)], verbose=0)
    assert sorted(os.listdir(state_dir)) == ["best.weights.h5", "epoch_0003.json", "epoch_0003.weights.h5"]
    assert [r["epoch"] for r in read_rows(history)] == ["1", "2", "3"]

    resumed = make_model()
    state = RunState(state_dir, history, monitor="val_loss")
    initial_epoch = state.restore(resumed)
    assert initial_epoch == 3
    assert resumed.optimizer.iterations.numpy() == 12
    resumed.fit(x, y, validation_data=(x, y), epochs=5, initial_epoch=initial_epoch, batch_size=16,
                shuffle=False, callbacks=[state], verbose=0)
    assert not os.path.exists(state_dir)

    reference = make_model()
    ref_state = RunState(str(tmp_path / "ref"), str(tmp_path / "ref.csv"), monitor="val_loss")
    reference.fit(x, y, validation_data=(x, y), epochs=5, batch_size=16, shuffle=False,
                  callbacks=[ref_state], verbose=0)
    rows, ref_rows = read_rows(history), read_rows(str(tmp_path / "ref.csv"))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    for row, ref in zip(rows, ref_rows):
        assert float(row["val_loss"]) == pytest.approx(float(ref["val_loss"]), rel=1e-5)
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_incomplete_checkpoint_is_ignored(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "epoch_0004.weights.h5").write_bytes(b"half written")  # no JSON: never completed
    assert RunState(str(state_dir), str(tmp_path / "h.csv")).restore(make_model()) == 0


def test_best_weights_restored_and_early_stopping(tmp_path):
    x, y = data()
    model = make_model()

    class Worsen(keras.callbacks.Callback):
        """Makes validation accuracy fall after epoch 2 by logging a fake value."""

        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = [0.5, 0.9, 0.8, 0.7, 0.6, 0.5][epoch]
            if epoch == 1:
                self.best = [w.copy() for w in self.model.get_weights()]

    worsen = Worsen()
    state = RunState(str(tmp_path / "s"), str(tmp_path / "h.csv"), monitor="val_score", patience=2)
    model.fit(x, y, validation_data=(x, y), epochs=6, batch_size=16, callbacks=[worsen, state], verbose=0)
    assert (state.best, state.best_epoch, state.stopped_epoch) == (0.9, 2, 4)
    for a, b in zip(model.get_weights(), worsen.best):
        np.testing.assert_array_equal(a, b)
    assert len(read_rows(str(tmp_path / "h.csv"))) == 4


def test_unknown_monitor_names_the_logged_keys(tmp_path):
    x, y = data()
    state = RunState(str(tmp_path / "s"), str(tmp_path / "h.csv"), monitor="val_auc")
    with pytest.raises(KeyError, match="monitors 'val_auc'.*logged: accuracy, epoch"):
        make_model().fit(x, y, epochs=1, callbacks=[state], verbose=0)


def test_history_to_csv_puts_epoch_first():
    text = history_to_csv([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "val_loss": 0.3}])
    assert text.splitlines() == ["epoch,loss,val_loss", "1,0.5,", "2,0.25,0.3"]


def test_cosine_schedule_follows_half_a_cosine_and_resumes_on_it(tmp_path):
    x, y = data()
    model = make_model()
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[cosine_schedule(0.01, 4)])
    expected = [0.01 * 0.5 * (1 + np.cos(np.pi * epoch / 4)) for epoch in range(4)]
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    resumed = make_model().fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[cosine_schedule(0.01, 4)])
    np.testing.assert_allclose(resumed.history["learning_rate"], expected[2:], rtol=1e-6)


def test_config_schedule_is_validated_and_inherited():
    from kdkeras.config import ConfigError, apply_overrides, from_dict, load_config

    config = load_config("quickstart").to_dict()
    config["student"].update(schedule="cosine", reduce_lr=0)
    config["distill"] = {k: v for k, v in config["distill"].items() if k not in ("schedule", "reduce_lr")}
    assert from_dict(config).distill.schedule == "cosine"
    with pytest.raises(ConfigError, match=r"\[student\] schedule = 'linear' is unknown. Allowed: constant, cosine"):
        apply_overrides(load_config("quickstart"), {"student.schedule": "linear"})
    with pytest.raises(ConfigError, match=r"\[teacher\] reduce_lr = 2 would fight schedule = 'cosine'"):
        apply_overrides(load_config("quickstart"), {"teacher.schedule": "cosine"})
