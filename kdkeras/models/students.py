"""Student architectures: the seeds' small CNNs, SqueezeNet 1.1 and small-input students.

Each builder returns a functional `keras.Model` from raw pixels in [0, 255] to
float32 logits, trained from scratch (inputs scaled to [0, 1]). Use them
through `kdkeras.models.get_model`, which validates the arguments first.
"""

import keras

from kdkeras.models.outputs import logits_output
from kdkeras.models.preprocessing import preprocessed_input
from kdkeras.registry import MODELS

# PyTorch's BatchNorm momentum (MedMNIST baselines): Keras's 0.99 needs hundreds of
# steps before the inference statistics fit, which misleads early validation on small data.
BN_MOMENTUM = 0.9

# (expansion, output channels, blocks, first stride) of MobileNetV2 (Sandler et al. 2018).
_MOBILENETV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# (squeeze, expand 1x1, expand 3x3) of fire2..fire9 of SqueezeNet 1.1; max-pools follow fire3 and fire5.
_SQUEEZENET_FIRES = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)


@MODELS.register(
    "cnn296k", role="student", default_input_shape=(224, 224, 3), min_input_size=156, pretrained=False
)
def cnn296k(input_shape, num_classes, dense_units=256, dropout=0.5):
    """The 296k-parameter student CNN of seed 002 (295,947 parameters at 224 px, 3 classes).

    Five blocks of two 3x3 valid ReLU convs (8, 16, 32, 64, 64 filters), each
    followed by 2x2 max-pooling, then Flatten -> Dense(dense_units, relu) ->
    Dropout -> Dense(num_classes). The valid convs need at least 156 px.

    Args:
        input_shape: `(height, width, channels)`, at least 156 px.
        num_classes: Number of logits.
        dense_units: Width of the hidden dense layer.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"cnn296k"`.
    """
    inputs, x = preprocessed_input(input_shape, "unit")
    for block, filters in enumerate((8, 16, 32, 64, 64), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                filters, 3, padding="valid", activation="relu", name=f"block{block}_conv{conv}"
            )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="cnn296k")


@MODELS.register(
    "dsnet", role="student", default_input_shape=(224, 224, 3), min_input_size=18, pretrained=False
)
def dsnet(input_shape, num_classes, dropout=0.25):
    """DSNet, the distilled student of seed 003 (268,898 parameters at 224 px, 2 classes).

    Conv(128) -> MaxPool(2) -> Conv(64) -> MaxPool(2) -> Conv(32) -> Dropout ->
    Flatten -> Dense(num_classes), all convs 3x3 valid with ReLU. The dense
    layer holds most parameters and grows with the input size; at 28x28x1 the
    model has 94,114.

    Args:
        input_shape: `(height, width, channels)`, at least 18 px.
        num_classes: Number of logits.
        dropout: Dropout rate before Flatten.

    Returns:
        A `keras.Model` named `"dsnet"`.
    """
    inputs, x = preprocessed_input(input_shape, "unit")
    for index, filters in enumerate((128, 64, 32), start=1):
        if index > 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index - 1}")(x)
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="dsnet")


@MODELS.register(
    "squeezenet1_1", role="student", default_input_shape=(224, 224, 3), min_input_size=25, pretrained=False
)
def squeezenet1_1(input_shape, num_classes, dropout=0.5):
    """SqueezeNet 1.1 (Iandola et al. 2016), the student of seed 000.

    The torchvision `squeezenet1_1` topology layer for layer: 3x3 stride-2
    conv(64), max-pools of 3x3 stride 2 with ceil rounding, fire2..fire9,
    Dropout -> 1x1 conv(num_classes) -> ReLU -> global average pooling.
    With 1000 classes it has 1,235,496 parameters, as published.

    Args:
        input_shape: `(height, width, channels)`, at least 25 px.
        num_classes: Number of logits.
        dropout: Dropout rate before the classifier conv.

    Returns:
        A `keras.Model` named `"squeezenet1_1"`.
    """
    inputs, x = preprocessed_input(input_shape, "unit")
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(x)
    x = _ceil_max_pool(x, name="pool1")
    for index, (squeeze, expand1, expand3) in enumerate(_SQUEEZENET_FIRES, start=2):
        x = _fire(x, squeeze, expand1, expand3, name=f"fire{index}")
        if index in (3, 5):
            x = _ceil_max_pool(x, name=f"pool{index}")
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Conv2D(
        num_classes,
        1,
        activation="relu",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="classifier",
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    return keras.Model(inputs, logits_output(x), name="squeezenet1_1")


@MODELS.register(
    "mobilenetv2_tiny", role="student", default_input_shape=(28, 28, 1), min_input_size=16, pretrained=False
)
def mobilenetv2_tiny(input_shape, num_classes, width_multiplier=0.3, stem_stride="auto", dropout=0.2):
    """A width-scaled MobileNetV2 (Sandler et al. 2018) under 0.3M parameters.

    MobileNetV2's inverted residual stages with every width, the last 1x1
    conv included, scaled by `width_multiplier` (Keras's MobileNetV2 keeps the
    1280-wide last conv: 410k parameters at 0.35 without top). A stride-1 stem
    up to 64 px keeps a 28 px image at 2x2 in the last stages. At 28x28x1
    with 2 classes it has 261,522 parameters.

    Args:
        input_shape: `(height, width, channels)`, at least 16 px.
        num_classes: Number of logits.
        width_multiplier: Scales every layer width (rounded to multiples of 8).
        stem_stride: `1`, `2`, or `"auto"`: 1 up to 64 px, else 2.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"mobilenetv2_tiny"`.
    """
    if width_multiplier <= 0:
        raise ValueError(f"mobilenetv2_tiny: width_multiplier must be > 0, got {width_multiplier}.")
    if stem_stride not in ("auto", 1, 2):
        raise ValueError(f"mobilenetv2_tiny: stem_stride must be 1, 2 or 'auto', got {stem_stride!r}.")
    if stem_stride == "auto":
        stem_stride = 1 if min(input_shape[:2]) <= 64 else 2
    inputs, x = preprocessed_input(input_shape, "unit")
    x = _conv_bn_relu6(x, _divisible(32 * width_multiplier), 3, stem_stride, name="stem")
    block = 0
    for expansion, channels, repeats, first_stride in _MOBILENETV2_STAGES:
        for repeat in range(repeats):
            block += 1
            stride = first_stride if repeat == 0 else 1
            x = _inverted_residual(
                x, expansion, _divisible(channels * width_multiplier), stride, name=f"block{block}"
            )
    x = _conv_bn_relu6(x, _divisible(1280 * width_multiplier), 1, 1, name="top")
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name="mobilenetv2_tiny")


@MODELS.register(
    "cnn_small", role="student", default_input_shape=(28, 28, 1), min_input_size=16, pretrained=False
)
def cnn_small(input_shape, num_classes, filters=(24, 48, 96), dropout=0.3, name="cnn_small"):
    """A compact BatchNorm CNN for 28-64 px images (162,458 parameters at 28x28x1, 2 classes).

    Three stages of two 3x3 conv -> BatchNorm -> ReLU, 2x2 max-pooling
    between stages, global average pooling, Dropout, Dense(num_classes).

    Args:
        input_shape: `(height, width, channels)`, at least 16 px.
        num_classes: Number of logits.
        filters: Filters of each stage.
        dropout: Dropout rate before the classifier.
        name: Name of the model.

    Returns:
        A `keras.Model` named `name`.
    """
    inputs, x = preprocessed_input(input_shape, "unit")
    for stage, stage_filters in enumerate(filters, start=1):
        if stage > 1:
            x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                stage_filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=f"stage{stage}_conv{conv}",
            )(x)
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"stage{stage}_bn{conv}")(x)
            x = keras.layers.Activation("relu", name=f"stage{stage}_relu{conv}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, logits_output(x), name=name)


# The students at the mission's ratio to the quickstart's 702,546-parameter teacher
# (`resnet18`, width 16): at most 1/50 of it, and about 1/100.
@MODELS.register(
    "cnn_micro", role="student", default_input_shape=(28, 28, 1), min_input_size=16, pretrained=False
)
def cnn_micro(input_shape, num_classes, filters=(8, 16, 24), dropout=0.3):
    """`cnn_small` with 8-16-24 filters: 13,178 parameters at 28x28x1, 2 classes (1/53 of the quickstart teacher).

    Args:
        input_shape: `(height, width, channels)`, at least 16 px.
        num_classes: Number of logits.
        filters: Filters of each stage.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"cnn_micro"`.
    """
    return cnn_small(input_shape, num_classes, filters=filters, dropout=dropout, name="cnn_micro")


@MODELS.register(
    "cnn_nano", role="student", default_input_shape=(28, 28, 1), min_input_size=16, pretrained=False
)
def cnn_nano(input_shape, num_classes, filters=(8, 12, 16), dropout=0.3):
    """`cnn_small` with 8-12-16 filters: 7,162 parameters at 28x28x1, 2 classes (1/98 of the quickstart teacher).

    Args:
        input_shape: `(height, width, channels)`, at least 16 px.
        num_classes: Number of logits.
        filters: Filters of each stage.
        dropout: Dropout rate before the classifier.

    Returns:
        A `keras.Model` named `"cnn_nano"`.
    """
    return cnn_small(input_shape, num_classes, filters=filters, dropout=dropout, name="cnn_nano")


def _fire(x, squeeze, expand1, expand3, name):
    x = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    left = keras.layers.Conv2D(expand1, 1, activation="relu", name=f"{name}_expand1x1")(x)
    right = keras.layers.Conv2D(expand3, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(x)
    return keras.layers.Concatenate(name=f"{name}_concat")([left, right])


def _ceil_max_pool(x, name):
    # torchvision pools with ceil_mode=True: an odd remainder gets one more
    # window. Zero padding reproduces it exactly because the input is post-ReLU
    # (>= 0) and every window still holds at least one real value.
    if (x.shape[1] - 3) % 2 or (x.shape[2] - 3) % 2:
        pad = ((0, (x.shape[1] - 3) % 2), (0, (x.shape[2] - 3) % 2))
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_ceil_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=name)(x)


def _inverted_residual(x, expansion, channels, stride, name):
    shortcut = x
    hidden = x.shape[-1] * expansion
    if expansion != 1:
        x = _conv_bn_relu6(x, hidden, 1, 1, name=f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{name}_depthwise"
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_project")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_project_bn")(x)
    if stride == 1 and shortcut.shape[-1] == channels:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def _conv_bn_relu6(x, filters, kernel_size, stride, name):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


def _divisible(value, divisor=8):
    # MobileNet rounding: nearest multiple of `divisor`, never 10% below `value`.
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded

