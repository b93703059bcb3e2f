"""TFLite files: conversion from the exported SavedModel, and `TFLiteModel` to run them.

The files run on LiteRT (`ai_edge_litert`, `pip install kdkeras[litert]`), the
successor of `tf.lite.Interpreter` (deprecated in TF 2.21), when it is
installed, and on TensorFlow's own interpreter otherwise; `INTERPRETER` says which.
"""

import os
import warnings

import numpy as np
import tensorflow as tf

from kdkeras.export.serving import PROBABILITIES

try:
    from ai_edge_litert.interpreter import Interpreter as _LiteRTInterpreter
except ImportError:  # the optional extra is not installed: TensorFlow's interpreter runs the same files
    _LiteRTInterpreter = None

# Which interpreter runs the files, as the export table states it.
INTERPRETER = "LiteRT (ai_edge_litert)" if _LiteRTInterpreter is not None else "tf.lite"


class TFLiteModel:
    """Runs a `.tflite` classifier on float pixels and returns its float output.

    Files written by `export_student` return calibrated probabilities
    (`softmax(logits / T)`); files converted elsewhere return whatever their
    single output is, e.g. logits. Integer inputs and outputs (the
    full-integer `tflite_int8` file) are quantized and dequantized with the
    file's own scale and zero point, so every format is called the same way.

    Args:
        path_or_content: Path of a `.tflite` file, or its bytes.
        num_threads: CPU threads of the interpreter; None uses all the CPU
            cores this process may run on.

    Example:

    ```python
    lite = TFLiteModel("runs/quickstart/export/model_int8.tflite")
    probabilities = lite(images)  # float32 (batch, classes)
    ```
    """

    def __init__(self, path_or_content, num_threads=None):
        self.num_threads = num_threads or cpu_count()
        if isinstance(path_or_content, bytes):
            source = {"model_content": path_or_content}
        else:
            if not os.path.isfile(path_or_content):
                raise FileNotFoundError(
                    f"TFLite file {path_or_content!r} not found: write it with "
                    "`kdkeras.export.export_student` or `kdkeras export` first."
                )
            source = {"model_path": os.fspath(path_or_content)}
        self._interpreter = interpreter(**source, num_threads=self.num_threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"TFLiteModel expects one input and one output, got {len(inputs)} and {len(outputs)}."
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])
        self._batch = None

    @property
    def input_dtype(self):
        """NumPy dtype the file takes (float32, or int8 for full-integer files)."""
        return np.dtype(self._input["dtype"])

    def __call__(self, images):
        """The output of a batch of float pixel images, shape `(batch, classes)`."""
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.input_shape:
            raise ValueError(
                f"TFLiteModel takes images of shape {self.input_shape}, got {images.shape[1:]}."
            )
        self._resize(len(images))
        self._interpreter.set_tensor(self._input["index"], quantize(images, self._input))
        self._interpreter.invoke()
        return dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)

    def _resize(self, batch):
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [batch, *self.input_shape])
            self._interpreter.allocate_tensors()
            self._batch = batch


def interpreter(**kwargs):
    """A TFLite interpreter: LiteRT's when installed, else `tf.lite.Interpreter` (same arguments)."""
    if _LiteRTInterpreter is not None:
        return _LiteRTInterpreter(**kwargs)
    with warnings.catch_warnings():
        # TF 2.21 warns that tf.lite.Interpreter moves to ai_edge_litert, which is not installed here.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return tf.lite.Interpreter(**kwargs)


def convert(saved_model, fmt, calibration):
    """The bytes of a TFLite file of `fmt` from the SavedModel's probabilities signature.

    Args:
        saved_model: Folder written by `kdkeras.export.serving.write_saved_model`.
        fmt: "tflite_float32", "tflite_dynamic_int8" or "tflite_int8".
        calibration: float images `(N, H, W, C)` that calibrate the int8
            activations (and the input and output quantization) of "tflite_int8".

    Raises:
        ValueError: The converter failed; the message names the format to drop.
    """
    # One output, the calibrated probabilities: int8 output quantization then spans [0, 1].
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[PROBABILITIES])
    if fmt != "tflite_float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "tflite_int8":
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as e:  # the converter raises several unrelated types
        # The converter's own message is a page of MLIR: its first line says what failed.
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        advice = {
            "tflite_int8": "a layer without an int8 kernel cannot be fully quantized: drop 'tflite_int8' from "
                           "`formats` or use 'tflite_dynamic_int8'",
            "tflite_dynamic_int8": "drop 'tflite_dynamic_int8' from `formats` or use 'tflite_float32'",
        }.get(fmt, "the model has an op TFLite has no kernel for: export 'saved_model' only, and run it with TensorFlow")
        raise ValueError(f"TFLite conversion to {fmt} failed ({first}): {advice}.") from e


def quantize(images, detail):
    """Float pixels as the input tensor `detail` takes them (int8 files: its scale and zero point)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return images
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values, detail):
    """An output tensor's values as float32."""
    if np.dtype(detail["dtype"]) == np.float32:
        return values.copy()
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def cpu_count():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
