"""The ONNX file: the calibrated probabilities graph for ONNX Runtime and Triton, and `ONNXModel` to run it.

ONNX is an optional extra, `pip install kdkeras[onnx]` (tf2onnx converts,
onnxruntime checks). The file is converted from the same calibrated function
as the SavedModel's `probabilities` signature (`kdkeras.export.serving`): one
float32 input `images` `(batch, H, W, C)` of pixels in [0, 255], one output
`probabilities` `(batch, classes)`. Opset 17 is what ONNX Runtime 1.14 and
later, and Triton's ONNX backend, run.
"""

import os

import numpy as np
import tensorflow as tf

from kdkeras.export import serving

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = serving.PROBABILITIES
_INSTALL = "pip install 'kdkeras[onnx]' (tf2onnx and onnxruntime)"


def _require(module):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"Format 'onnx' needs the {module} package: {_INSTALL}, or drop 'onnx' "
                          "from the formats.") from e


def check_installed():
    """Raises `ImportError` saying what to install unless tf2onnx and onnxruntime import."""
    _require("tf2onnx")
    _require("onnxruntime")


def convert(model, input_shape, temperature, task):
    """The bytes of an ONNX file returning `model`'s calibrated probabilities.

    Args:
        model: A Keras model emitting logits.
        input_shape: `(height, width, channels)` of one image.
        temperature: Divides the logits (see `kdkeras.export.serving.probabilities`).
        task: Task of the model's labels.

    Raises:
        ImportError: tf2onnx is not installed; the message says what to install.
        ValueError: The converter failed; the message names the format to drop.
    """
    _require("tf2onnx")
    import tf2onnx.convert

    spec = (tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def calibrated(images):
        # A dict output names the ONNX output after its key.
        return {OUTPUT_NAME: serving.probabilities(model(images, training=False), temperature, task)}

    try:
        proto, _ = tf2onnx.convert.from_function(calibrated, input_signature=spec, opset=OPSET)
    except Exception as e:  # tf2onnx raises many unrelated types
        raise ValueError(f"ONNX conversion failed: {type(e).__name__}: {e}. Drop 'onnx' from `formats`.") from e
    return proto.SerializeToString()


class ONNXModel:
    """Runs an exported `.onnx` classifier with ONNX Runtime on the CPU.

    Args:
        path: The `.onnx` file.
        num_threads: Intra-op threads; None lets ONNX Runtime choose.

    Example:

    ```python
    probabilities = ONNXModel("runs/quickstart/export/model.onnx")(images)  # float32 (batch, classes)
    ```
    """

    def __init__(self, path, num_threads=None):
        ort = _require("onnxruntime")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file {path!r} not found: write it with `kdkeras export --formats onnx`.")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self._session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        (given,) = self._session.get_inputs()
        self._input = given.name
        self.input_shape = tuple(given.shape[1:])

    def __call__(self, images, training=False):
        """The output of a batch of float pixel images, shape `(batch, classes)`."""
        del training
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"ONNXModel takes images of shape {self.input_shape}, got {images.shape[1:]}.")
        return self._session.run(None, {self._input: images})[0]
