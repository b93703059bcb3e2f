"""The ImageNet-transfer teachers: exact sizes, frozen layers, shapes, `.keras` round trips.

Each 224 px teacher is built once per module (a few seconds each), without weights.
"""

import keras
import numpy as np
import pytest

from kdkeras.models import get_model
from kdkeras.registry import MODELS

# The ImageNet-transfer teachers, read from the registry.
TEACHERS = tuple(name for name in MODELS.names() if MODELS.metadata(name)["pretrained"])
# keras.applications.VGG16().layers[:8], the layers seed 002 freezes.
SEED_FROZEN = ("block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2", "block2_pool", "block3_conv1")


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


@pytest.fixture(scope="module")
def vgg224():
    return get_model("vgg16_transfer", (224, 224, 3), num_classes=3)


@pytest.fixture(scope="module")
def resnet224():
    return get_model("resnet50", (224, 224, 3), num_classes=2)


@pytest.fixture(scope="module")
def effnet224():
    return get_model("efficientnet_b0", (224, 224, 3), num_classes=1000)


@pytest.fixture(scope="module")
def smallest():
    """Each teacher at its smallest legal size, 32x32, grayscale."""
    return {name: get_model(name, (32, 32, 1), num_classes=3) for name in TEACHERS}


def test_vgg16_transfer_seed_002_size(vgg224):
    assert vgg224.count_params() == 27_561_795
    assert tuple(vgg224.output.shape) == (None, 3)
    assert tuple(vgg224.get_layer("head_flatten").output.shape) == (None, 7 * 7 * 512)


def test_resnet50_seed_003_size(resnet224):
    assert resnet224.count_params() == 23_600_002
    assert tuple(resnet224.output.shape) == (None, 2)
    assert [layer.name for layer in resnet224.layers[-5:]] == ["head_pool", "head_dropout", "head_bn", "classifier", "logits"]


def test_efficientnet_b0_matches_keras_published_size(effnet224):
    # keras.applications.EfficientNetB0(weights=None) with its 1000-class top: 5,330,571.
    assert effnet224.count_params() == 5_330_571
    assert tuple(effnet224.output.shape) == (None, 1000)


def test_vgg16_transfer_freezes_seed_layers(vgg224):
    frozen = [layer.name for layer in vgg224.layers if not layer.trainable]
    assert frozen == list(SEED_FROZEN)
    trainable = sum(int(np.prod(w.shape)) for w in vgg224.trainable_weights)
    frozen_params = 1_792 + 36_928 + 73_856 + 147_584 + 295_168
    assert trainable == 27_561_795 - frozen_params == 27_006_467
    assert vgg224.get_layer("block3_conv2").trainable and vgg224.get_layer("head_dense").trainable


def test_vgg16_transfer_freeze_option():
    model = get_model("vgg16_transfer", (32, 32, 3), freeze_layers=19)
    assert {layer.name for layer in model.layers if layer.trainable} >= {"head_dense", "classifier"}
    assert [w.path for w in model.trainable_weights] == [
        "head_dense/kernel",
        "head_dense/bias",
        "classifier/kernel",
        "classifier/bias",
    ]
    with pytest.raises(ValueError, match=r"freeze_layers must be in \[0, 19\].*got 20"):
        get_model("vgg16_transfer", (32, 32, 3), freeze_layers=20)


@pytest.mark.parametrize("name", TEACHERS)
def test_teachers_refuse_28px_with_a_fix(name):
    with pytest.raises(
        ValueError,
        match=rf"{name} needs images of at least 32x32 pixels, got 28x28\. Resize the images to >= 32 px "
        r"\(MedMNIST also comes in 64, 128 and 224 px\); models that take 28 px: .*resnet18",
    ):
        get_model(name, (28, 28, 1))


@pytest.mark.parametrize("name", TEACHERS)
@pytest.mark.parametrize("size", [64, 128])
def test_output_shapes(name, size):
    model = get_model(name, (size, size, 3), num_classes=7)
    assert tuple(model.output.shape) == (None, 7)
    assert model.layers[-1].name == "logits" and model.name == name


@pytest.mark.parametrize("name", TEACHERS)
def test_grayscale_repeated_inside_the_model(smallest, name):
    model = smallest[name]
    assert tuple(model.get_layer("preprocessing").output.shape) == (None, 32, 32, 3)
    logits = keras.ops.convert_to_numpy(model(_pixels((2, 32, 32, 1)), training=False))
    assert logits.shape == (2, 3) and logits.dtype == np.float32 and np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", TEACHERS)
def test_keras_round_trip(smallest, name, tmp_path):
    model = smallest[name]
    images = _pixels((2, 32, 32, 1), seed=7)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.ptp(expected) > 0
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == name and loaded.count_params() == model.count_params()
    assert [layer.trainable for layer in loaded.layers] == [layer.trainable for layer in model.layers]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_logits_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    model = get_model("efficientnet_b0", (32, 32, 3))
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    logits = model(_pixels((1, 32, 32, 3)), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
