"""InputPreprocessing: the same numbers as keras.applications' preprocess_input, no weights."""

import keras
import numpy as np
import pytest

from kdkeras.models import InputPreprocessing


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", keras.applications.vgg16.preprocess_input),
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("none", keras.applications.efficientnet.preprocess_input),
    ],
)
def test_matches_keras_applications_preprocess_input(mode, reference):
    images = _pixels((2, 5, 4, 3))
    ours = keras.ops.convert_to_numpy(InputPreprocessing(mode)(images))
    np.testing.assert_allclose(ours, reference(images.copy()), rtol=1e-6, atol=1e-4)


def test_unit_scales_to_zero_one():
    images = np.array([[[[0.0], [127.5]], [[255.0], [51.0]]]], dtype="float32")
    out = keras.ops.convert_to_numpy(InputPreprocessing("unit")(images))
    np.testing.assert_allclose(out[..., 0], [[[0.0, 0.5], [1.0, 0.2]]], atol=1e-7)


def test_caffe_known_pixel():
    # RGB (10, 20, 30) -> BGR (30, 20, 10) minus the BGR mean pixel.
    pixel = np.array([10.0, 20.0, 30.0], dtype="float32").reshape(1, 1, 1, 3)
    out = keras.ops.convert_to_numpy(InputPreprocessing("caffe")(pixel)).reshape(3)
    np.testing.assert_allclose(out, [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)


def test_grayscale_repeated_to_rgb_before_scaling():
    gray = _pixels((2, 6, 6, 1), seed=1)
    out = keras.ops.convert_to_numpy(InputPreprocessing("caffe", channels=3)(gray))
    assert out.shape == (2, 6, 6, 3)
    expected = keras.applications.vgg16.preprocess_input(np.repeat(gray, 3, axis=-1))
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_channels_none_keeps_grayscale():
    gray = _pixels((1, 4, 4, 1))
    out = keras.ops.convert_to_numpy(InputPreprocessing("tf")(gray))
    assert out.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(out, gray / 127.5 - 1.0, atol=1e-6)


def test_holds_no_weights_and_keeps_symbolic_shape():
    inputs = keras.Input((28, 28, 1))
    layer = InputPreprocessing("torch", channels=3)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, 28, 28, 3)
    assert layer.weights == []
    assert keras.Model(inputs, outputs).count_params() == 0


def test_config_round_trip():
    layer = InputPreprocessing("caffe", channels=3, name="prep")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, InputPreprocessing)
    assert (clone.mode, clone.channels, clone.name) == ("caffe", 3, "prep")


def test_mixed_precision_computes_in_float16():
    keras.config.set_dtype_policy("mixed_float16")
    out = InputPreprocessing("unit")(_pixels((1, 2, 2, 3)))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"unknown mode='imagenet'; use one of \('unit', 'caffe'"):
        InputPreprocessing("imagenet")


def test_unsupported_channels():
    with pytest.raises(ValueError, match="channels=1 is not supported; use 3"):
        InputPreprocessing("unit", channels=1)


def test_two_channel_input_rejected():
    with pytest.raises(ValueError, match=r"1 \(grayscale\) or 3 \(RGB\) channels, got input shape \(None, 8, 8, 2\)"):
        InputPreprocessing("unit")(keras.Input((8, 8, 2)))


def test_rgb_mode_on_grayscale_needs_channels_3():
    with pytest.raises(ValueError, match="mode='caffe' normalizes RGB channels.*pass channels=3"):
        InputPreprocessing("caffe")(keras.Input((8, 8, 1)))
