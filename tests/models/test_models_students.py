"""Registry and the from-scratch architectures (students and resnet18): cheap to build."""

import keras
import numpy as np
import pytest

from kdkeras.models import ModelSpec, get_model, list_models, students
from kdkeras.registry import MODELS

# Every zoo model trained from scratch (students and resnet18), read from the registry: a new
# one is checked the moment it is registered.
SMALL_ARCHITECTURES = tuple(name for name in MODELS.names() if not MODELS.metadata(name)["pretrained"])


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


def test_list_models_sorted_with_roles():
    names = [spec.name for spec in list_models()]
    assert names == [
        "cnn296k",
        "cnn_micro",
        "cnn_nano",
        "cnn_small",
        "dsnet",
        "efficientnet_b0",
        "mobilenetv2",
        "mobilenetv2_tiny",
        "mobilenetv3_small",
        "resnet18",
        "resnet50",
        "squeezenet1_1",
        "vgg16_transfer",
    ]
    assert [s.name for s in list_models("teacher")] == ["efficientnet_b0", "resnet18", "resnet50", "vgg16_transfer"]
    assert all(isinstance(s, ModelSpec) and s.role == "student" for s in list_models("student"))
    assert {s.name for s in list_models() if s.pretrained} == {"efficientnet_b0", "resnet50", "vgg16_transfer"}
    assert all("seed" in s.description for s in list_models() if s.default_input_shape == (224, 224, 3))


def test_list_models_bad_role():
    with pytest.raises(ValueError, match="role must be None, 'teacher' or 'student', got 'teachers'"):
        list_models("teachers")


def test_spec_options():
    spec = next(s for s in list_models() if s.name == "vgg16_transfer")
    assert spec.options == {"freeze_layers": 8, "dense_units": 512, "dropout": 0.5}


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match=r"Unknown model 'vgg19'; available models: cnn296k, cnn_micro, cnn_nano, cnn_small, .*vgg16_transfer, keras:<Application>"):
        get_model("vgg19")


def test_unknown_option_lists_accepted():
    with pytest.raises(ValueError, match=r"dsnet does not take option\(s\) width; its options \(defaults\): dropout=0.25\."):
        get_model("dsnet", (28, 28, 1), width=3)


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 2), (0, 28, 1), "28x28x1", (28.5, 28, 1)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"cnn_small: input_shape must be \(height, width, channels\) with 1 or 3 channels"):
        get_model("cnn_small", shape)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True, "2"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 2 \(binary tasks use 2 logits\)"):
        get_model("cnn_small", num_classes=num_classes)


def test_numpy_ints_accepted():
    model = get_model("cnn_small", (np.int64(32), np.int64(32), np.int64(3)), num_classes=np.int32(4))
    assert tuple(model.output.shape) == (None, 4)


def test_imagenet_refused_for_scratch_model():
    with pytest.raises(ValueError, match="cnn296k has no ImageNet weights.*pretrained model: efficientnet_b0, resnet50, vgg16_transfer"):
        get_model("cnn296k", weights="imagenet")


def test_too_small_input_names_minimum_and_alternatives():
    with pytest.raises(
        ValueError,
        match=r"cnn296k needs images of at least 156x156 pixels, got 64x64\. Resize the images to >= 156 px .*"
        r"models that take 64 px: cnn_micro, cnn_nano, cnn_small, dsnet, efficientnet_b0, mobilenetv2, mobilenetv2_tiny, "
        r"mobilenetv3_small, resnet18, resnet50, squeezenet1_1, vgg16_transfer\.",
    ):
        get_model("cnn296k", (64, 64, 3))


def test_default_input_shapes():
    assert tuple(get_model("cnn_small").input.shape) == (None, 28, 28, 1)
    assert tuple(get_model("dsnet").input.shape) == (None, 224, 224, 3)


@pytest.mark.parametrize(
    "name, input_shape, num_classes, params",
    [
        ("cnn296k", (224, 224, 3), 3, 295_947),
        ("dsnet", (224, 224, 3), 2, 268_898),
        ("squeezenet1_1", (224, 224, 3), 1000, 1_235_496),
        ("dsnet", (28, 28, 1), 2, 94_114),
        ("cnn_small", (28, 28, 1), 2, 162_458),
        ("mobilenetv2_tiny", (28, 28, 1), 2, 261_522),
        ("resnet18", (28, 28, 1), 2, 11_178_306),
    ],
)
def test_parameter_counts(name, input_shape, num_classes, params):
    model = get_model(name, input_shape, num_classes=num_classes)
    assert model.count_params() == params
    assert model.name == name


def test_mobilenetv2_tiny_under_300k_at_every_size():
    for size in (28, 64, 128, 224):
        assert get_model("mobilenetv2_tiny", (size, size, 3), num_classes=7).count_params() < 300_000


@pytest.mark.parametrize("name", SMALL_ARCHITECTURES)
@pytest.mark.parametrize("size", [28, 64, 128, 224])
def test_output_shape_or_clear_error(name, size):
    smallest = MODELS.metadata(name)["min_input_size"]
    if size < smallest:
        with pytest.raises(ValueError, match=f"{name} needs images of at least {smallest}x{smallest} pixels, got {size}x{size}"):
            get_model(name, (size, size, 3), num_classes=3)
        return
    model = get_model(name, (size, size, 3), num_classes=3)
    assert tuple(model.output.shape) == (None, 3)
    assert model.layers[0].name == "image" and model.layers[1].name == "preprocessing"
    assert model.layers[-1].name == "logits"


@pytest.mark.parametrize("name", ["mobilenetv2_tiny", "cnn_small", "resnet18", "dsnet", "squeezenet1_1"])
def test_forward_pass_on_grayscale_28(name):
    model = get_model(name, (28, 28, 1), num_classes=2)
    logits = keras.ops.convert_to_numpy(model(_pixels((3, 28, 28, 1)), training=False))
    assert logits.shape == (3, 2) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", SMALL_ARCHITECTURES)
def test_minimum_size_builds(name):
    spec = next(s for s in list_models() if s.name == name)
    size = spec.min_input_size
    model = get_model(name, (size, size, 1))
    assert tuple(model.output.shape) == (None, 2)
    with pytest.raises(ValueError, match=f"{name} needs images of at least {size}x{size} pixels, got {size - 1}x{size}"):
        get_model(name, (size - 1, size, 1))


@pytest.mark.parametrize("name", ["cnn296k", "dsnet"])
def test_valid_conv_minimum_is_tight(name):
    # The builders themselves (no registry check): one pixel under the declared
    # minimum leaves a layer nothing to compute, which Keras reports; the minimum builds.
    builder, size = getattr(students, name), next(s for s in list_models() if s.name == name).min_input_size
    assert tuple(builder((size, size, 1), 2).output.shape) == (None, 2)
    with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
        builder((size - 1, size - 1, 1), 2)


def test_squeezenet_minimum_leaves_a_full_window_to_the_last_pool():
    model = get_model("squeezenet1_1", (25, 25, 3))
    assert tuple(model.get_layer("pool5").input.shape) == (None, 3, 3, 256)
    assert tuple(model.get_layer("classifier").output.shape) == (None, 1, 1, 2)


def test_squeezenet_pools_with_ceil_rounding():
    # torchvision's ceil_mode=True: a 6x6 map gives 3x3 windows starting at 0, 2, 4.
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, students._ceil_max_pool(inputs, name="pool"))
    x = np.random.default_rng(3).uniform(0, 1, size=(1, 6, 6, 1)).astype("float32")
    expected = np.array(
        [[x[0, r : min(r + 3, 6), c : min(c + 3, 6), 0].max() for c in (0, 2, 4)] for r in (0, 2, 4)]
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x))[0, :, :, 0], expected)


def test_squeezenet_224_feature_sizes_match_torchvision():
    model = get_model("squeezenet1_1", (224, 224, 3), num_classes=1000)
    assert tuple(model.get_layer("conv1").output.shape) == (None, 111, 111, 64)
    assert tuple(model.get_layer("pool1").output.shape) == (None, 55, 55, 64)
    assert tuple(model.get_layer("pool3").output.shape) == (None, 27, 27, 128)
    assert tuple(model.get_layer("pool5").output.shape) == (None, 13, 13, 256)
    assert tuple(model.get_layer("fire9_concat").output.shape) == (None, 13, 13, 512)


def test_resnet18_stem_follows_input_size():
    small = get_model("resnet18", (28, 28, 1))
    large = get_model("resnet18", (128, 128, 3))
    assert tuple(small.get_layer("stage4_block2_out").output.shape) == (None, 4, 4, 512)
    assert "stem_pool" not in [layer.name for layer in small.layers]
    assert tuple(large.get_layer("stage4_block2_out").output.shape) == (None, 4, 4, 512)
    assert tuple(large.get_layer("stem_conv").kernel.shape) == (7, 7, 3, 64)


def test_resnet18_width_option():
    model = get_model("resnet18", (28, 28, 1), width=16)
    assert tuple(model.get_layer("stage4_block2_out").output.shape) == (None, 4, 4, 128)
    with pytest.raises(ValueError, match="resnet18: stem must be 'auto', 'small' or 'imagenet', got 'tiny'"):
        get_model("resnet18", stem="tiny")


def test_mobilenetv2_tiny_stem_stride_and_width():
    assert tuple(get_model("mobilenetv2_tiny", (28, 28, 1)).get_layer("top_relu").output.shape) == (None, 2, 2, 384)
    assert tuple(get_model("mobilenetv2_tiny", (128, 128, 3)).get_layer("top_relu").output.shape) == (None, 4, 4, 384)
    wider = get_model("mobilenetv2_tiny", (28, 28, 1), width_multiplier=1.0)
    assert tuple(wider.get_layer("top_relu").output.shape) == (None, 2, 2, 1280)
    with pytest.raises(ValueError, match="width_multiplier must be > 0, got 0"):
        get_model("mobilenetv2_tiny", width_multiplier=0)


def test_logits_are_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    model = get_model("cnn_small", (28, 28, 1))
    assert model.get_layer("stage1_conv1").compute_dtype == "float16"
    logits = model(_pixels((2, 28, 28, 1)), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


@pytest.mark.parametrize("name", SMALL_ARCHITECTURES)
def test_keras_round_trip(name, tmp_path):
    size = 160 if name == "cnn296k" else 32
    model = get_model(name, (size, size, 1), num_classes=3)
    images = _pixels((4, size, size, 1), seed=5)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.ptp(expected) > 0
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == name and loaded.count_params() == model.count_params()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images, training=False)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_learns_pneumonia_28px(pneumonia_npz):
    data = np.load(pneumonia_npz)
    images = data["train_images"][:512, :, :, None].astype("float32")
    labels = data["train_labels"][:512, 0].astype("int32")
    val_images = data["val_images"][:, :, :, None].astype("float32")
    val_labels = data["val_labels"][:, 0].astype("int32")
    model = get_model("cnn_small", (28, 28, 1), filters=(8, 16, 32))
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images, labels, epochs=6, batch_size=64, verbose=0)
    _, val_accuracy = model.evaluate(val_images, val_labels, verbose=0)
    majority = max(val_labels.mean(), 1 - val_labels.mean())
    assert majority == pytest.approx(0.7424, abs=1e-4)
    assert val_accuracy > 0.80
