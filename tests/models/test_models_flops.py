"""count_flops: 2 x multiply-accumulates of conv and dense layers, checked by hand."""

import keras
import pytest

from kdkeras.models import count_flops, get_model


def test_conv_and_dense_by_hand():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)  # 6x6x4 outputs, 3x3x1 window each
    x = keras.layers.MaxPooling2D()(x)  # 3x3x4
    x = keras.layers.Flatten()(x)  # 36
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    conv_macs = 6 * 6 * 4 * 3 * 3 * 1
    dense_macs = 36 * 2
    assert count_flops(model) == 2 * (conv_macs + dense_macs) == 2736


def test_depthwise_separable_grouped_and_transposed_by_hand():
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inputs)  # 10x10x8
    x = keras.layers.SeparableConv2D(6, 3, strides=2, padding="same")(x)  # 5x5x6
    x = keras.layers.Conv2D(4, 1, groups=2)(x)  # 5x5x4, 3 inputs per output
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)  # 10x10x2
    model = keras.Model(inputs, x)
    depthwise = 10 * 10 * 8 * 9
    separable = 5 * 5 * 8 * 9 + 5 * 5 * 8 * 6
    grouped = 5 * 5 * 4 * 3
    transposed = 5 * 5 * 4 * 4 * 2
    assert count_flops(model) == 2 * (depthwise + separable + grouped + transposed)


def test_nested_model_and_dense_on_feature_maps():
    inner_in = keras.Input((4, 4, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(5, 1)(inner_in))
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(7)(inner(inputs))  # a Dense per pixel: 16 x 5 x 7
    model = keras.Model(inputs, outputs)
    assert count_flops(model) == 2 * (16 * 3 * 5 + 16 * 5 * 7)


def test_cnn296k_by_hand():
    sizes = []
    size = 224
    for _ in range(5):
        sizes.append((size - 2, size - 4))
        size = (size - 4) // 2
    filters = (8, 16, 32, 64, 64)
    macs = 0
    in_channels = 3
    for (first, second), f in zip(sizes, filters):
        macs += first * first * f * 9 * in_channels + second * second * f * 9 * f
        in_channels = f
    macs += 3 * 3 * 64 * 256 + 256 * 3
    model = get_model("cnn296k", (224, 224, 3), num_classes=3)
    assert count_flops(model) == 2 * macs == 278_925_504


def test_dynamic_input_size_rejected():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs), name="fcn")
    with pytest.raises(ValueError, match="layer 'conv2d.*' of 'fcn' has a dynamic shape.*fixed input size"):
        count_flops(model)


def test_sequential_model():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    assert count_flops(model) == 2 * (5 * 3 + 3 * 2)
