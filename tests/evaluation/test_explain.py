"""Grad-CAM: maps where the class evidence is, every zoo model, mixed precision; map agreement."""

import keras
import numpy as np
import pytest

from kdkeras import models
from kdkeras.evaluation import explain
from kdkeras.reporting import figures_clinical

SIZE = 16


def _quadrant_model():
    """Channel 0 of the image is the evidence of class 1, channel 1 that of class 0."""
    inputs = keras.Input((SIZE, SIZE, 2))
    features = keras.layers.Conv2D(2, 1, activation="relu", use_bias=False, name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(2, use_bias=False, name="logits")(pooled)
    model = keras.Model(inputs, logits)
    model.get_layer("features").set_weights([np.eye(2).reshape(1, 1, 2, 2)])
    model.get_layer("logits").set_weights([np.array([[0.0, 1.0], [1.0, 0.0]])])
    return model


def _quadrant_image():
    """Class-1 evidence top left, stronger class-0 evidence bottom right."""
    image = np.zeros((1, SIZE, SIZE, 2), "float32")
    image[0, 2:5, 2:5, 0] = 100.0
    image[0, 10:14, 11:14, 1] = 200.0
    return image


def _quadrant(heatmap):
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return ("top" if row < SIZE // 2 else "bottom") + ("_left" if col < SIZE // 2 else "_right")


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_map_maximum_sits_in_the_quadrant_of_the_class_evidence(policy):
    keras.config.set_dtype_policy(policy)  # conftest restores float32
    model, image = _quadrant_model(), _quadrant_image()
    assert explain.find_gradcam_layer(model) == "features"
    class1 = explain.gradcam(model, image, class_index=1)
    class0 = explain.gradcam(model, image, class_index=0)
    top = explain.gradcam(model, image)  # the top logit: class 0, whose evidence is stronger
    assert _quadrant(class1[0]) == "top_left"
    assert _quadrant(class0[0]) == "bottom_right"
    assert _quadrant(top[0]) == "bottom_right"
    for maps in (class0, class1):
        assert maps.shape == (1, SIZE, SIZE) and maps.dtype == np.float32
        assert maps.min() == 0.0 and maps.max() == pytest.approx(1.0)
    # The other class's evidence gets no weight at all.
    assert class1[0, 12, 12] == 0.0


@pytest.mark.parametrize("name", ["cnn_small", "resnet18", "mobilenetv2_tiny", "squeezenet1_1", "dsnet"])
def test_every_small_zoo_model_gets_maps_at_input_resolution(name):
    model = models.get_model(name, input_shape=(32, 32, 1), num_classes=3)
    layer = explain.find_gradcam_layer(model)
    assert len(model.get_layer(layer).output.shape) == 4
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    maps = explain.gradcam(model, images, class_index=[0, 1, 2], batch_size=2)
    assert maps.shape == (3, 32, 32)
    assert np.all((maps >= 0) & (maps <= 1)) and np.all(np.isfinite(maps))


def test_unknown_or_flat_layer_is_refused_with_the_fix():
    model = _quadrant_model()
    with pytest.raises(ValueError, match="has no layer 'conv9'"):
        explain.gradcam(model, _quadrant_image(), layer="conv9")
    with pytest.raises(ValueError, match="spatial"):
        explain.gradcam(model, _quadrant_image(), layer="logits")


def test_map_agreement_is_the_mean_pearson_correlation():
    rng = np.random.default_rng(1)
    a = rng.random((4, 8, 8))
    b = a + rng.normal(0, 0.3, a.shape)
    expected = np.mean([np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(4)])
    agreement = explain.map_agreement(a, b)
    assert agreement["pearson"] == pytest.approx(expected) and (agreement["n"], agreement["excluded"]) == (4, 0)
    assert agreement["interval"]["low"] <= agreement["pearson"] <= agreement["interval"]["high"]
    assert explain.map_agreement(a, a)["pearson"] == pytest.approx(1.0)
    flat = np.zeros_like(a)
    flat[:2] = a[:2]
    assert explain.map_agreement(flat, a)["n"] == 2  # constant maps have no correlation
    assert explain.map_agreement(flat, a)["excluded"] == 2


def _swapped_quadrant_model():
    """As `_quadrant_model`, but channel 1 is the evidence of class 1."""
    model = _quadrant_model()
    model.get_layer("logits").set_weights([np.eye(2)])
    return model


def _quadrant_split(n, seed):
    """Images with the class-1 evidence of both models in opposite corners, in batches of 8."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE, SIZE, 2), "float32")
    for i in range(n):
        row, col = rng.integers(0, 4, 2)
        images[i, row:row + 4, col:col + 4, 0] = rng.uniform(50, 255)
        images[i, 12 - row:16 - row, 12 - col:16 - col, 1] = rng.uniform(50, 255)
    images += rng.uniform(0, 5, images.shape).astype("float32")  # no map is exactly flat
    labels = np.ones(n, np.int64)
    return images, labels, [(images[i:i + 8], labels[i:i + 8]) for i in range(0, n, 8)]


def test_gradcam_agreement_over_a_split_is_the_mean_of_per_image_correlations():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    student = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    teacher = _quadrant_model()
    images, labels, batches = _quadrant_split(21, seed=3)  # the last batch is partial
    result = explain.gradcam_agreement(teacher, {"student": student, "same": teacher}, batches)
    reference = [
        np.corrcoef(explain.gradcam(teacher, images[i:i + 1], class_index=1).ravel(),
                    explain.gradcam(student, images[i:i + 1], class_index=1).ravel())[0, 1]
        for i in range(len(images))
    ]
    reference = np.asarray(reference)
    assert result["student"]["images"] == 21
    assert result["student"]["n"] == int(np.isfinite(reference).sum()) > 0
    assert result["student"]["pearson"] == pytest.approx(np.nanmean(reference), abs=1e-5)
    interval = result["student"]["interval"]
    assert interval["low"] <= result["student"]["pearson"] <= interval["high"] and interval["resamples"] == 2000
    assert result["same"]["pearson"] == pytest.approx(1.0) and result["same"]["n"] == 21


def test_models_looking_at_opposite_corners_disagree():
    _, _, batches = _quadrant_split(16, seed=4)
    result = explain.gradcam_agreement(_quadrant_model(), {"swapped": _swapped_quadrant_model()}, batches)
    assert result["swapped"]["n"] == 16
    assert result["swapped"]["pearson"] < 0.0 and result["swapped"]["interval"]["high"] < 0.2
    with pytest.raises(ValueError, match="one class index per image"):
        explain.gradcam_agreement(_quadrant_model(), {"x": _quadrant_model()}, [(batches[0][0], np.ones((8, 3)))])


def test_gradcam_grid_and_overlay_are_written(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (6, 16, 16, 1)).astype("float32")
    maps = rng.random((6, 16, 16))
    path = figures_clinical.plot_gradcam_grid(images, maps, maps[::-1], [0, 1, 0, 1, 0, 1], [0, 1, 1, 1, 0, 0],
                                     ["normal", "pneumonia"], str(tmp_path / "grid.png"), n=4)
    assert (tmp_path / "grid.png").stat().st_size > 10_000 and path.endswith("grid.png")
    figures_clinical.save_overlay(images[0], maps[0], str(tmp_path / "one.png"), title="x")
    assert (tmp_path / "one.png").exists()
