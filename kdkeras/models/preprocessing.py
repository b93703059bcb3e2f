"""The input layer every zoo model starts with: pixels in [0, 255] in, network input out."""

import keras
from keras import ops

# Per-channel ImageNet statistics, as keras.applications.imagenet_utils uses them.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)

MODES = ("unit", "caffe", "torch", "tf", "none")


@keras.saving.register_keras_serializable(package="kdkeras")
class InputPreprocessing(keras.layers.Layer):
    """Scales raw pixels and repeats grayscale to RGB inside the model graph.

    Datasets yield float32 pixels in [0, 255] whatever the model; each model
    converts them to what its first layer expects. That lets a teacher and a
    student read the same batch, and a saved `.keras` model be fed raw images.
    The layer holds no weights (its statistics are constants), so parameter
    counts stay those of the published architectures.

    Modes:
        - `"unit"`: `x / 255`, for models trained from scratch.
        - `"caffe"`: RGB to BGR, minus the ImageNet mean pixel
          (`keras.applications.vgg16/resnet50.preprocess_input`).
        - `"torch"`: `x / 255`, minus the ImageNet mean, over its std.
        - `"tf"`: `x / 127.5 - 1`, to [-1, 1].
        - `"none"`: unchanged, for networks that rescale internally
          (`keras.applications` EfficientNet).

    Args:
        mode: One of `"unit"`, `"caffe"`, `"torch"`, `"tf"`, `"none"`.
        channels: Channels the network needs: `3` repeats a 1-channel input
            to RGB (ImageNet weights read RGB), `None` keeps the input's.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    rgb = InputPreprocessing("caffe", channels=3)(inputs)  # (None, 28, 28, 3)
    ```
    """

    def __init__(self, mode="unit", channels=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"InputPreprocessing: unknown mode={mode!r}; use one of {MODES}.")
        if channels not in (None, 3):
            raise ValueError(
                f"InputPreprocessing: channels={channels!r} is not supported; use 3 to repeat "
                "grayscale to RGB, or None to keep the input's channels."
            )
        self.mode = mode
        self.channels = channels

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels not in (1, 3):
            raise ValueError(
                f"InputPreprocessing: images must have 1 (grayscale) or 3 (RGB) channels, "
                f"got input shape {tuple(input_shape)}; convert the images to grayscale or RGB."
            )
        if self.mode in ("caffe", "torch") and self._out_channels(in_channels) != 3:
            raise ValueError(
                f"InputPreprocessing: mode={self.mode!r} normalizes RGB channels, but the "
                f"input has {in_channels} channel and channels=None; pass channels=3."
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self._out_channels(x.shape[-1]) != x.shape[-1]:
            x = ops.repeat(x, self.channels, axis=-1)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - self._constant(_CAFFE_MEAN_BGR)
        if self.mode == "torch":
            return (x / 255.0 - self._constant(_TORCH_MEAN_RGB)) / self._constant(_TORCH_STD_RGB)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self._out_channels(input_shape[-1]),)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "channels": self.channels})
        return config

    def _out_channels(self, in_channels):
        return self.channels or in_channels

    def _constant(self, values):
        return ops.convert_to_tensor(values, dtype=self.compute_dtype)


def preprocessed_input(input_shape, mode, channels=None):
    """Creates a model's `Input` and its `InputPreprocessing` output.

    Args:
        input_shape: `(height, width, channels)` of the raw images.
        mode: Scaling mode of `InputPreprocessing`.
        channels: `3` to repeat grayscale to RGB, `None` to keep the input's.

    Returns:
        `(inputs, x)`: the `keras.Input` and the preprocessed tensor.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = InputPreprocessing(mode, channels=channels, name="preprocessing")(inputs)
    return inputs, x
