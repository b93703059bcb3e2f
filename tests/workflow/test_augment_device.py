"""Augmentation inside the training step: same view for teacher and student, seeded, bare artifacts."""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import Distiller, cli
from kdkeras import config as config_lib
from kdkeras.data import BatchAugmentation, augmentation, with_augmentation
from kdkeras.files import load_model


class InputRecorder(keras.layers.Layer):
    """Identity that keeps the last batch it saw, to compare what two models were shown."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(4, *input_shape[1:]), initializer="zeros", trainable=False)

    def call(self, x):
        self.seen.assign(x)
        return x


def _recording_model(name):
    inputs = keras.Input((6, 6, 1))
    recorder = InputRecorder(name="recorder")
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(recorder(inputs)))
    return keras.Model(inputs, outputs, name=name), recorder


def _batches(seed=0, count=8):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (count, 6, 6, 1)).astype("float32")
    return x, rng.integers(0, 2, count).astype("int32")


@pytest.mark.slow
def test_teacher_and_student_see_the_same_augmented_view():
    teacher, teacher_seen = _recording_model("teacher")
    student, student_seen = _recording_model("student")
    distiller = Distiller(student=student, teacher=teacher, augmentation=augmentation("xray", seed=1))
    distiller.compile(optimizer="adam", alpha=0.5, temperature=2.0)
    x, y = _batches(count=4)
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    shown = teacher_seen.seen.numpy()
    np.testing.assert_array_equal(student_seen.seen.numpy(), shown)
    assert not np.allclose(shown, x)  # augmented
    assert shown.min() >= 0.0 and shown.max() <= 255.0
    distiller.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_array_equal(teacher_seen.seen.numpy(), x)  # evaluation is not augmented


def _fit_augmented(seed):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    fitted = with_augmentation(model, augmentation("xray", seed=seed))
    fitted.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _batches(count=16)
    fitted.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    return model, fitted, x


@pytest.mark.slow
def test_device_augmentation_is_seeded_and_training_only():
    model, fitted, x = _fit_augmented(seed=3)
    again, _, _ = _fit_augmented(seed=3)
    other, _, _ = _fit_augmented(seed=4)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    np.testing.assert_array_equal(fitted.predict(x, verbose=0), model.predict(x, verbose=0))
    layer = BatchAugmentation(rotation=0.1, brightness=(0.5, 1.5), seed=7)
    first = layer(tf.constant(x), training=True).numpy()
    layer_again = BatchAugmentation(rotation=0.1, brightness=(0.5, 1.5), seed=7)
    np.testing.assert_array_equal(layer_again(tf.constant(x), training=True).numpy(), first)
    assert not np.array_equal(layer(tf.constant(x), training=True).numpy(), first)  # next draw


# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "name": "device",
    "seed": 5,
    "data": {"augment": "light", "augment_on": "device"},
    "student": {"epochs": 2},
    "distill": {"epochs": 1},
}


@pytest.mark.slow
def test_device_phase_repeats_and_saves_the_bare_model(tmp_path, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    histories = []
    for run in ("a", "b"):
        args = ["student", "--config", str(config), "--runs-dir", str(tmp_path / run), "--quiet"]
        assert cli.main(args) == 0
        with open(tmp_path / run / "device" / "student_history.csv", newline="") as f:
            histories.append([(row["loss"], row["val_loss"]) for row in csv.DictReader(f)])
    assert histories[0] == histories[1] and len(histories[0]) == 2
    common = ["--config", str(config), "--runs-dir", str(tmp_path / "a"), "--quiet"]
    capsys.readouterr()
    assert cli.main(["teacher", *common]) == 0 and cli.main(["distill", *common]) == 0
    out = capsys.readouterr().out
    for phase in ("teacher", "distilled"):
        assert f"[{phase}] augment_light runs in the training step" in out
    for artifact in ("student", "teacher", "distilled"):
        saved = load_model(os.path.join(tmp_path, "a", "device", f"{artifact}.keras"))
        assert not any(isinstance(layer, BatchAugmentation) for layer in saved._flatten_layers())
    pipeline = tmp_path / "pipeline"
    config = tiny_experiment(tmp_path, **{**TINY, "data": {**TINY["data"], "augment_on": "pipeline"}})
    assert cli.main(["student", "--config", str(config), "--runs-dir", str(pipeline), "--quiet"]) == 0
    with open(pipeline / "device" / "student_history.csv", newline="") as f:
        assert [(row["loss"], row["val_loss"]) for row in csv.DictReader(f)] != histories[0]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"augment": "light", "augment_on": "gpu"}, r"augment_on = 'gpu' is unknown. Allowed: pipeline, device"),
        ({"augment_on": "device"}, r"augment_on = 'device' has no augmentation to run"),
    ],
)
def test_augment_on_is_validated(data, message, tiny_experiment):
    raw = tiny_experiment.raw(**TINY)
    raw["data"] = {**{k: v for k, v in raw["data"].items() if not k.startswith("augment")}, **data}
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_dict(raw, "device.toml")
    raw["data"]["augment"] = "light"
    raw["data"]["augment_on"] = "pipeline"
    assert config_lib.from_dict(raw, "device.toml").data["augment_on"] == "pipeline"
