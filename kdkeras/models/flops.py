"""FLOPs of a forward pass, counted analytically from the layers' shapes."""

import math

import keras


def count_flops(model):
    """Counts the FLOPs of one forward pass of `model` on one image.

    FLOPs here are 2 x the multiply-accumulates (MACs) of the convolution and
    dense layers (a multiply and an add count as two), the convention of most
    papers' "FLOPs" tables. Biases, BatchNorm, activations, pooling and
    element-wise ops are left out: they are linear in the activations' size
    and add a few percent at most to these networks. Nested models are
    counted through their layers.

    Args:
        model: A functional or Sequential `keras.Model` with a fixed input size.

    Returns:
        The FLOPs count, an `int`.

    Raises:
        ValueError: The model has no fixed input size or is not graph-based.

    Example:

    ```python
    model = kdkeras.models.get_model("cnn296k", (224, 224, 3), num_classes=3)
    print(f"{count_flops(model) / 1e9:.2f} GFLOPs")
    ```
    """
    return 2 * _macs(model)


def _macs(model):
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _macs(layer)
        else:
            total += _layer_macs(layer, model.name)
    return total


def _layer_macs(layer, model_name):
    if isinstance(layer, keras.layers.Dense):
        units = layer.units
    elif isinstance(
        layer,
        (
            keras.layers.Conv1D,
            keras.layers.Conv2D,
            keras.layers.Conv3D,
            keras.layers.DepthwiseConv1D,
            keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv1D,
            keras.layers.SeparableConv2D,
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose,
        ),
    ):
        units = None
    else:
        return 0
    in_shape, out_shape = _shapes(layer, model_name)
    if units is not None:
        return math.prod(out_shape[1:-1]) * in_shape[-1] * units
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    in_channels = in_shape[1] if channels_first else in_shape[-1]
    out_spatial = out_shape[2:] if channels_first else out_shape[1:-1]
    in_spatial = in_shape[2:] if channels_first else in_shape[1:-1]
    window = math.prod(layer.kernel_size)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return math.prod(out_spatial) * in_channels * layer.depth_multiplier * window
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        depthwise = in_channels * layer.depth_multiplier
        return math.prod(out_spatial) * depthwise * (window + layer.filters)
    if isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    ):
        # Each input pixel scatters a full kernel into the output.
        return math.prod(in_spatial) * in_channels * window * layer.filters
    return math.prod(out_spatial) * layer.filters * window * in_channels // layer.groups


def _shapes(layer, model_name):
    try:
        in_shape, out_shape = tuple(layer.input.shape), tuple(layer.output.shape)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"count_flops: cannot read the shapes of layer {layer.name!r} of {model_name!r} "
            f"({error}); count a functional or Sequential model built on a keras.Input."
        ) from error
    if any(dim is None for dim in in_shape[1:] + out_shape[1:]):
        raise ValueError(
            f"count_flops: layer {layer.name!r} of {model_name!r} has a dynamic shape "
            f"{in_shape} -> {out_shape}; build the model with a fixed input size, "
            "e.g. keras.Input((224, 224, 3))."
        )
    return in_shape, out_shape
