"""Deployable students: SavedModel, TFLite and ONNX files, calibrated, measured, described.

`export_student` writes a trained student in the formats a clinic laptop or a
phone runs, then measures each written file the same way: bytes on disk, CPU
latency per image at batch 1, and test-split ACC / AUC / balanced accuracy
computed by `kdkeras.evaluation.metrics.classification_metrics`, beside the Keras model
it came from. The table is returned and written as `export.md` and
`export.json` next to the files.

| format | file | what it is |
| --- | --- | --- |
| `saved_model` | `saved_model/` | `serve` returns `logits` and `probabilities`, for TF Serving / TF.js |
| `tflite_float32` | `model_float32.tflite` | TFLite, float32 weights and activations |
| `tflite_dynamic_int8` | `model_dynamic_int8.tflite` | int8 weights, float activations (no calibration data) |
| `tflite_int8` | `model_int8.tflite` | full-integer: int8 weights, activations, input and output |
| `onnx` | `model.onnx` | ONNX opset 17 for ONNX Runtime / Triton (`pip install kdkeras[onnx]`; not written by default) |

Beside them, every export writes the bundle (`kdkeras.export.bundle`):
`metadata.json` (MONAI-bundle-style input/output format, preprocessing,
calibration, software versions, data source and licence, file hashes),
`model_card.md` / `.json` (Mitchell et al. 2019) and `checklist.md` / `.json`
(TRIPOD+AI and CLAIM), filled from the run folder of the exported model.

The exported files are deployable as calibrated: they return
`probabilities = softmax(logits / T)` with the temperature `T` fitted on
validation (`kdkeras.evaluation.calibration`, read from `<stem>_calibration.json`
beside the `.keras` file; T = 1 without one, and the table says so), and
the binary decision threshold of the operating point is written in
`export.md` / `export.json` (and `calibration.json`) beside them. The
SavedModel's `serve` signature also returns the raw `logits` (see
`kdkeras.export.serving`).

The full-integer model takes int8 input and returns int8 probabilities, so
it runs on integer-only accelerators (Edge TPU, microcontrollers, NNAPI). Its
input quantization comes from the representative images: the scale is their
brightest pixel / 255, not 1, so a caller quantizes with the file's own
`scale` and `zero_point` (pixels brighter than any calibration pixel
saturate); its output quantization spans [0, 1]. `TFLiteModel` applies the
file's own input and output quantization parameters, so every format is
called with float pixels and returns float probabilities. Every model of the
zoo starts with `kdkeras.models.InputPreprocessing` (scaling, grayscale-to-RGB
repeat), which is part of every exported graph.

Modules: `deploy` (`export_student`, `export_experiment`), `serving` (the
calibrated SavedModel), `tflite` (conversion, `TFLiteModel` on LiteRT or
tf.lite), `onnx` (conversion, `ONNXModel`), `bundle` (metadata, model card,
checklists), `table` (`ExportTable`), `dicom_sr` (DICOM Structured Reports
of `kdkeras predict`).
"""

from kdkeras.export.bundle import BUNDLE_FILES, METADATA, METADATA_SCHEMA
from kdkeras.export.deploy import (
    CALIBRATION,
    DEFAULT_FORMATS,
    FILENAMES,
    FORMATS,
    TABLE_JSON,
    TABLE_MD,
    export_experiment,
    export_student,
)
from kdkeras.export.onnx import ONNXModel
from kdkeras.export.serving import PROBABILITIES, SERVE
from kdkeras.export.table import ExportTable
from kdkeras.export.tflite import TFLiteModel

__all__ = [
    "BUNDLE_FILES",
    "CALIBRATION",
    "DEFAULT_FORMATS",
    "FILENAMES",
    "FORMATS",
    "METADATA",
    "METADATA_SCHEMA",
    "PROBABILITIES",
    "SERVE",
    "TABLE_JSON",
    "TABLE_MD",
    "ExportTable",
    "ONNXModel",
    "TFLiteModel",
    "export_experiment",
    "export_student",
]
