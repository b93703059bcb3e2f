"""weights=: ImageNet offline errors, local base files, saved model weights."""

import keras
import numpy as np
import pytest

from kdkeras.models import WeightsUnavailableError, get_model
from kdkeras.models import weights as weights_lib


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """Points Keras's download cache (read from KERAS_HOME at import) at an empty folder."""
    from keras.src.backend import config

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    return home


@pytest.fixture(scope="module")
def vgg16_notop_file(tmp_path_factory):
    """A VGG16 base in the legacy .h5 layout of Keras's *_notop.h5 ImageNet file."""
    keras.utils.set_random_seed(99)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("weights") / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    base.save(path)
    return path, {layer.name: [w.numpy() for w in layer.weights] for layer in base.layers}


def test_imagenet_urls_are_keras_own():
    from keras.src.applications import efficientnet, resnet, vgg16

    assert weights_lib.IMAGENET_FILES["vgg16"] == vgg16.WEIGHTS_PATH_NO_TOP
    assert weights_lib.IMAGENET_FILES["resnet50"] == (
        resnet.BASE_WEIGHTS_PATH + "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert weights_lib.IMAGENET_FILES["efficientnetb0"] == efficientnet.BASE_WEIGHTS_PATH + "efficientnetb0_notop.h5"


def test_imagenet_offline_says_how_to_use_a_local_file(empty_keras_home):
    # Grayscale input is not the problem: only the download is.
    with pytest.raises(WeightsUnavailableError) as caught:
        get_model("vgg16_transfer", (32, 32, 1), num_classes=3, weights="imagenet")
    message = str(caught.value)
    assert message.startswith(
        "The ImageNet weights of vgg16 could not be downloaded from "
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 ("
    )
    assert "~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "weights='/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'" in message
    assert list((empty_keras_home / "models").iterdir()) == []


def test_efficientnet_offline_points_to_the_keras_cache_only(empty_keras_home):
    with pytest.raises(WeightsUnavailableError) as caught:
        get_model("efficientnet_b0", (32, 32, 3), weights="imagenet")
    message = str(caught.value)
    assert "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5" in message
    assert message.endswith(
        "then copy it to ~/.keras/models/efficientnetb0_notop.h5 (or $KERAS_HOME/models/) "
        "and keep weights='imagenet'."
    )


def test_efficientnet_base_file_path_refused(tmp_path):
    path = tmp_path / "efficientnetb0_notop.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"efficientnetb0 base weights cannot be loaded from a path .*Copy the file to ~/\.keras/models/efficientnetb0_notop\.h5"):
        get_model("efficientnet_b0", (32, 32, 3), weights=path)


def test_local_base_file_loads_into_vgg16_transfer(vgg16_notop_file):
    path, reference = vgg16_notop_file
    model = get_model("vgg16_transfer", (32, 32, 3), num_classes=2, weights=str(path))
    for name in ("block1_conv1", "block3_conv1", "block5_conv3"):
        for loaded, expected in zip(model.get_layer(name).weights, reference[name]):
            np.testing.assert_array_equal(loaded.numpy(), expected)
    assert not model.get_layer("block1_conv1").trainable


def test_grayscale_with_rgb_base_weights_equals_repeated_rgb(vgg16_notop_file):
    path, _ = vgg16_notop_file
    gray_model = get_model("vgg16_transfer", (32, 32, 1), weights=path)
    rgb_model = get_model("vgg16_transfer", (32, 32, 3), weights=path)
    rgb_model.set_weights(gray_model.get_weights())
    gray = _pixels((2, 32, 32, 1))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gray_model(gray, training=False)),
        keras.ops.convert_to_numpy(rgb_model(np.repeat(gray, 3, axis=-1), training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_wrong_base_file_named(tmp_path):
    other = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.h5"
    other.save(path)
    with pytest.raises(ValueError, match=r"Could not load resnet50 base weights from '.*vgg16_notop\.h5'.*resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        get_model("resnet50", (32, 32, 3), weights=path)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_saved_model_weights_load_into_a_fresh_model(tmp_path, suffix):
    trained = get_model("cnn_small", (28, 28, 1), num_classes=3)
    for variable in trained.weights:
        variable.assign(np.random.default_rng(1).normal(size=variable.shape).astype("float32"))
    path = tmp_path / f"student{suffix}"
    if suffix == ".keras":
        trained.save(path)
    else:
        trained.save_weights(path)
    fresh = get_model("cnn_small", (28, 28, 1), num_classes=3, weights=path)
    for loaded, expected in zip(fresh.weights, trained.weights):
        np.testing.assert_array_equal(loaded.numpy(), expected.numpy())
    images = _pixels((2, 28, 28, 1))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fresh(images, training=False)),
        keras.ops.convert_to_numpy(trained(images, training=False)),
        rtol=1e-6,
    )


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_mismatched_saved_weights_explain_the_fix(tmp_path):
    path = tmp_path / "three_classes.weights.h5"
    get_model("dsnet", (28, 28, 1), num_classes=3).save_weights(path)
    with pytest.raises(
        ValueError,
        match=r"dsnet: could not load the weights in '.*three_classes\.weights\.h5' \(.*"
        r"variable\.shape=\(288, 2\), Received: value\.shape=\(288, 3\)\.\)\. The file must be a complete "
        r"Keras save of a model built with the same name, input_shape, num_classes and options\.",
    ):
        get_model("dsnet", (28, 28, 1), num_classes=2, weights=path)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_truncated_file(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    model = get_model("cnn_small", (28, 28, 1))
    if suffix == ".keras":
        model.save(good)
    else:
        model.save_weights(good)
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match=rf"cnn_small: could not load the weights in '.*broken{suffix}' \(.*\)\. The file must be a complete"):
        get_model("cnn_small", (28, 28, 1), weights=broken)


def test_missing_file():
    with pytest.raises(ValueError, match=r"cnn_small: weights file '/nonexistent/w\.weights\.h5' does not exist"):
        get_model("cnn_small", weights="/nonexistent/w.weights.h5")


def test_legacy_h5_refused_for_scratch_model(tmp_path):
    path = tmp_path / "old.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cnn_small: '.*old\.h5' is a legacy \.h5 file.*save_weights\('name\.weights\.h5'\)"):
        get_model("cnn_small", weights=path)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read weights from '.*weights\.pt': expected a \.keras or \.weights\.h5"):
        get_model("resnet50", (32, 32, 3), weights=path)


def test_weights_type_checked():
    with pytest.raises(ValueError, match=r"dsnet: weights must be None, 'imagenet' or a file path, got 3"):
        get_model("dsnet", weights=3)
