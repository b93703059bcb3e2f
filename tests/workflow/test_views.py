"""Each model reads its own view of one decoded batch: size and channels per model.

The reference is float64 NumPy: an antialiased bilinear resize written from its
definition (a triangle filter as wide as the shrink factor, half-pixel centres,
weights normalised), independent of TensorFlow's kernels.
"""

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import config as config_lib
from kdkeras.config import ConfigError
from kdkeras.data import transforms
from kdkeras.workflow import phases


def resize64(images, size):
    """Antialiased bilinear resize of `(N, H, W, C)` in float64, one axis after the other."""

    def matrix(length, out):
        scale = out / length
        support = max(1.0 / scale, 1.0)
        centers = (np.arange(out) + 0.5) / scale
        sources = np.arange(length) + 0.5
        weights = np.maximum(1.0 - np.abs(sources[None, :] - centers[:, None]) / support, 0.0)
        return weights / weights.sum(axis=1, keepdims=True)

    rows, cols = matrix(images.shape[1], size[0]), matrix(images.shape[2], size[1])
    return np.einsum("oh,nhwc,pw->nopc", rows, images.astype("float64"), cols)


def linear_teacher(shape, seed=0):
    """Logits that are a fixed linear function of the pixels: what it saw can be read back exactly."""
    inputs = keras.Input(shape)
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = np.random.default_rng(seed).normal(size=(int(np.prod(shape)), 2))
    dense.set_weights([weights.astype("float32")])
    return model, weights


def small(shape, classes=2):
    inputs = keras.Input(shape)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


@pytest.fixture
def batch():
    return np.random.default_rng(1).uniform(0, 255, (6, 28, 28, 1)).astype("float32")


def test_the_teacher_sees_exactly_its_resized_view(batch):
    teacher, weights = linear_teacher((16, 16, 1))
    distiller = kdkeras.Distiller(student=small((28, 28, 1)), teacher=teacher)
    distiller.compile(optimizer="adam")
    expected = resize64(batch, (16, 16)).reshape(len(batch), -1) @ weights
    np.testing.assert_allclose(distiller.teacher_logits(batch).numpy(), expected, rtol=1e-4, atol=1e-3)


def test_a_gray_batch_reaches_an_rgb_model_repeated(batch):
    teacher, weights = linear_teacher((28, 28, 3))
    distiller = kdkeras.Distiller(student=small((28, 28, 1)), teacher=teacher)
    distiller.compile(optimizer="adam")
    expected = np.repeat(batch.astype("float64"), 3, axis=-1).reshape(len(batch), -1) @ weights
    np.testing.assert_allclose(distiller.teacher_logits(batch).numpy(), expected, rtol=1e-5, atol=1e-3)


def test_the_student_trains_predicts_and_reloads_at_its_own_size(batch, tmp_path, capsys):
    student = small((16, 16, 1))
    distiller = kdkeras.Distiller(student=student, teacher=small((28, 28, 1)))
    assert "read different inputs" in capsys.readouterr().out
    distiller.compile(optimizer="adam")
    labels = np.array([0, 1, 0, 1, 1, 0])
    distiller.fit(batch, labels, epochs=1, batch_size=3, verbose=0)
    np.testing.assert_allclose(
        distiller.predict(batch, verbose=0), student(transforms.resize(batch, 16)).numpy(), rtol=1e-5, atol=1e-5
    )
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.student.input_shape == (None, 16, 16, 1)
    np.testing.assert_allclose(reloaded.predict(batch, verbose=0), distiller.predict(batch, verbose=0), rtol=1e-5)
    reloaded.fit(batch, labels, epochs=1, batch_size=3, verbose=0)  # compiled as it was


def test_same_shapes_skip_the_view(batch):
    assert transforms.to_input_shape(batch, (28, 28, 1)) is batch


def test_with_view_feeds_the_model_its_view(batch):
    model = small((16, 16, 3))
    fitted = transforms.with_view(model, (28, 28, 1))
    expected = model(transforms.to_channels(transforms.resize(batch, 16), 3)).numpy()
    np.testing.assert_allclose(fitted(batch).numpy(), expected, rtol=1e-5, atol=1e-5)


def configured(**overrides):
    return config_lib.apply_overrides(config_lib.load_config("quickstart"), overrides)


def test_decode_size_is_the_largest_any_model_reads():
    config = configured(**{"teacher.image_size": 64, "student.image_size": 32, "distill.image_size": 32})
    assert phases.decode_size(config) == [64, 64]
    assert phases.model_input_shape(config, "teacher", (64, 64, 1)) == (64, 64, 1)
    assert phases.model_input_shape(config, "distill", (64, 64, 1)) == (32, 32, 1)
    assert phases.decode_size(configured()) is None
    sized = configured(**{"data.image_size": 32, "student.image_size": 16, "distill.image_size": 16})
    assert phases.decode_size(sized) == [32, 32]
    assert phases.model_input_shape(sized, "teacher", (32, 32, 1)) == (32, 32, 1)
    rgb = configured(**{"teacher.channels": 3, "teacher.image_size": [32, 48]})
    assert phases.model_input_shape(rgb, "teacher", (32, 48, 1)) == (32, 48, 3)
    assert phases.model_input_shape(rgb, "student", (32, 48, 1)) == (32, 48, 1)


@pytest.mark.parametrize("key, value, message", [
    ("student.image_size", -4, "pixel count"),
    ("student.image_size", [16], "pixel count"),
    ("student.image_size", [16, 0], "pixel count"),
    ("teacher.channels", 2, "1 \\(gray\\), 3 \\(RGB\\)"),
    ("teacher.image_size", "64", "int or list"),
])
def test_bad_views_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        configured(**{key: value})


@pytest.mark.slow
def test_a_phase_trains_a_student_at_half_the_teachers_resolution(tmp_path):
    from kdkeras.workflow import training

    config = configured(**{
        "name": "lowres", "data.limit": 96, "teacher.epochs": 1, "student.epochs": 1, "distill.epochs": 1,
        "teacher.model": "cnn_micro", "teacher.options": {}, "student.model": "cnn_nano", "student.image_size": 16,
        "distill.image_size": 16,
    })
    lines = []
    for phase in ("teacher", "student", "distill"):
        training.run_phase(config, phase, str(tmp_path), verbose=0, log=lines.append)
    assert any("reading a 16x16x1 view" in line for line in lines)
    for name in ("student", "distilled"):
        assert keras.models.load_model(tmp_path / "lowres" / f"{name}.keras").input_shape == (None, 16, 16, 1)
    assert keras.models.load_model(tmp_path / "lowres" / "teacher.keras").input_shape == (None, 28, 28, 1)


def test_capacity_gap_page_config_loads(tmp_path):
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[2] / "docs" / "capacity-gap.md"
    (block,) = re.findall(r"```toml\n(.*?)```", page.read_text(), re.S)
    path = tmp_path / "my_lowres.toml"
    path.write_text(block)
    config = config_lib.load_config(str(path))
    assert (config.student.image_size, config.distill.image_size, config.teacher.image_size) == (16, 16, 0)
    # The teacher reads the data's own 28 px: decoded at that native size, the student resizes from it.
    assert phases.decode_size(config) is None
    assert phases.model_input_shape(config, "teacher", (28, 28, 1)) == (28, 28, 1)
    assert phases.model_input_shape(config, "distill", (28, 28, 1)) == (16, 16, 1)
