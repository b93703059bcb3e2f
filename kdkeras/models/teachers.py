"""Teacher architectures: the seeds' ImageNet transfer models and a small-input ResNet-18.

Each builder returns a functional `keras.Model` from raw pixels in [0, 255] to
float32 logits. Use them through `kdkeras.models.get_model`, which validates
the arguments first.
"""

import keras

from kdkeras.models import weights as weights_lib
from kdkeras.models.outputs import logits_output
from kdkeras.models.preprocessing import InputPreprocessing, preprocessed_input
from kdkeras.registry import MODELS

# The seed counts VGG16's layers as keras.applications lists them: the input
# layer first, so its 8 frozen layers are the input and block1_conv1..block3_conv1.
VGG16_LAYERS = 19

# PyTorch's BatchNorm momentum (MedMNIST baselines): Keras's 0.99 needs hundreds of
# steps before the inference statistics fit, which misleads early validation on small data.
BN_MOMENTUM = 0.9


@MODELS.register(
    "vgg16_transfer", role="teacher", default_input_shape=(224, 224, 3), min_input_size=32, pretrained=True
)
def vgg16_transfer(
    input_shape,
    num_classes,
    source=weights_lib.WeightsSource(None),
    freeze_layers=8,
    dense_units=512,
    dropout=0.5,
):
    """VGG16 transfer model of seed 002 (27,561,795 parameters at 224 px, 3 classes).

    VGG16 without top, its first `freeze_layers` layers frozen, then
    Flatten -> Dense(dense_units, relu) -> Dropout -> Dense(num_classes).

    Args:
        input_shape: `(height, width, channels)`, at least 32 px.
        num_classes: Number of logits.
        source: A `WeightsSource` for the VGG16 base.
        freeze_layers: Leading layers of `keras.applications.VGG16().layers`
            (input layer included, as in seed 002) that are not trainable.
        dense_units: Width of the hidden dense layer.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"vgg16_transfer"`.
    """
    if not 0 <= freeze_layers <= VGG16_LAYERS:
        raise ValueError(
            f"vgg16_transfer: freeze_layers must be in [0, {VGG16_LAYERS}] (VGG16's layer "
            f"count, input layer included), got {freeze_layers}."
        )
    inputs, x = preprocessed_input(input_shape, "caffe", channels=3)
    base = weights_lib.build_base(
        keras.applications.VGG16,
        "vgg16",
        source,
        input_tensor=x,
        input_shape=tuple(input_shape[:2]) + (3,),
    )
    vgg_layers = _layers_after_preprocessing(base)
    for layer in vgg_layers[: max(freeze_layers - 1, 0)]:
        layer.trainable = False
    x = keras.layers.Flatten(name="head_flatten")(base.output)
    x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="vgg16_transfer")


@MODELS.register(
    "resnet50", role="teacher", default_input_shape=(224, 224, 3), min_input_size=32, pretrained=True
)
def resnet50(input_shape, num_classes, source=weights_lib.WeightsSource(None), dropout=0.5):
    """ResNet-50 teacher of seed 003 (23,600,002 parameters at 224 px, 2 classes).

    ResNet-50 without top -> GlobalAveragePooling -> Dropout ->
    BatchNormalization -> Dense(num_classes).

    Args:
        input_shape: `(height, width, channels)`, at least 32 px.
        num_classes: Number of logits.
        source: A `WeightsSource` for the ResNet-50 base.
        dropout: Dropout rate after pooling.

    Returns:
        A `keras.Model` named `"resnet50"`.
    """
    inputs, x = preprocessed_input(input_shape, "caffe", channels=3)
    base = weights_lib.build_base(
        keras.applications.ResNet50,
        "resnet50",
        source,
        input_tensor=x,
        input_shape=tuple(input_shape[:2]) + (3,),
    )
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="resnet50")


@MODELS.register(
    "efficientnet_b0", role="teacher", default_input_shape=(224, 224, 3), min_input_size=32, pretrained=True
)
def efficientnet_b0(input_shape, num_classes, source=weights_lib.WeightsSource(None), dropout=0.2):
    """EfficientNet-B0, the teacher of seed 000, with its Keras classification head.

    `keras.applications.EfficientNetB0` without top -> GlobalAveragePooling ->
    Dropout -> Dense(num_classes): with 1000 classes, exactly Keras's
    EfficientNetB0 (5,330,571 parameters). The base rescales pixels itself.
    Local ImageNet weights are read from the Keras cache only (see
    `weights.CACHE_ONLY`), not from a path.

    Args:
        input_shape: `(height, width, channels)`, at least 32 px.
        num_classes: Number of logits.
        source: A `WeightsSource` for the EfficientNet-B0 base.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"efficientnet_b0"`.
    """
    inputs, x = preprocessed_input(input_shape, "none", channels=3)
    base = weights_lib.build_base(
        keras.applications.EfficientNetB0,
        "efficientnetb0",
        source,
        input_tensor=x,
        input_shape=tuple(input_shape[:2]) + (3,),
    )
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="efficientnet_b0")


@MODELS.register(
    "resnet18", role="teacher", default_input_shape=(28, 28, 1), min_input_size=16, pretrained=False
)
def resnet18(input_shape, num_classes, width=64, stem="auto", dropout=0.0):
    """ResNet-18 (He et al. 2016) that also fits 28-64 px images.

    Four stages of two basic blocks (3x3 convs, BatchNorm, identity or 1x1
    projection shortcuts), widths `width * (1, 2, 4, 8)`, global average
    pooling, Dense. The `"small"` stem (one 3x3 stride-1 conv, no max-pool,
    as MedMNIST's ResNet-18 (28)) keeps a 28 px image at 4x4 before pooling;
    the `"imagenet"` stem (7x7 stride-2 conv and 3x3 stride-2 max-pool)
    divides it by 32 and suits 128 px and up. At 28x28x1 with 2 classes and
    `width=64` it has 11,178,306 parameters.

    Args:
        input_shape: `(height, width, channels)`, at least 16 px.
        num_classes: Number of logits.
        width: Filters of the first stage; 64 is ResNet-18, smaller is cheaper.
        stem: `"small"`, `"imagenet"`, or `"auto"`: small up to 64 px.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"resnet18"`.
    """
    if stem not in ("auto", "small", "imagenet"):
        raise ValueError(f"resnet18: stem must be 'auto', 'small' or 'imagenet', got {stem!r}.")
    if stem == "auto":
        stem = "small" if min(input_shape[:2]) <= 64 else "imagenet"
    inputs, x = preprocessed_input(input_shape, "unit")
    if stem == "small":
        x = _conv_bn(x, width, 3, 1, name="stem")
    else:
        x = _conv_bn(x, width, 7, 2, name="stem")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, multiplier in enumerate((1, 2, 4, 8), start=1):
        for block in (1, 2):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, width * multiplier, stride, name=f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="resnet18")


def _basic_block(x, filters, stride, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, name=f"{name}_proj", activation=False)
    x = _conv_bn(x, filters, 3, stride, name=f"{name}_conv1")
    x = _conv_bn(x, filters, 3, 1, name=f"{name}_conv2", activation=False)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def _conv_bn(x, filters, kernel_size, stride, name, activation=True):
    # No conv bias: the BatchNorm that follows has its own offset.
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def _layers_after_preprocessing(base):
    index = next(i for i, layer in enumerate(base.layers) if isinstance(layer, InputPreprocessing))
    return base.layers[index + 1 :]

