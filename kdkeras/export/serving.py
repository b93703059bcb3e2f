"""The calibrated serving graph: a SavedModel that returns logits and calibrated probabilities.

The Keras model keeps emitting raw logits (the KD loss and every saved metric
read them). What is deployed is calibrated: the exported SavedModel has two
signatures around the same weights,

| signature | returns |
| --- | --- |
| `serve` (also `serving_default`) | `{"logits": (B, C), "probabilities": (B, C)}` |
| `probabilities` | the probabilities alone; the TFLite files are converted from it |

with `probabilities = softmax(logits / T)` (element-wise sigmoid for
multi-label tasks and one-logit binary models) and `T` the temperature
fitted on validation (`kdkeras.evaluation.calibration`), read from
`<model stem>_calibration.json` beside the `.keras` file.
"""

import os

import keras
import tensorflow as tf

from kdkeras.evaluation import calibration as calibration_lib

SERVE = "serve"
PROBABILITIES = "probabilities"


def resolve_calibration(source_path):
    """The temperature and decision rule the exported files carry.

    Args:
        source_path: The `.keras` file exported, or None for an in-memory model.

    Returns:
        `{"temperature", "source", "threshold", "operating_point",
        "positive_class", "note"}`: `source` is the calibration file's name;
        without one, `temperature` is 1.0, `source` None and `note` says so.

    Raises:
        kdkeras.files.ModelFileError: an unreadable calibration file.
    """
    stored = calibration_lib.load_calibration(source_path) if source_path else None
    if stored is None:
        expected = f"`{calibration_lib.calibration_path(source_path)}`" if source_path else "calibration file"
        return {
            "temperature": 1.0, "source": None, "threshold": None, "operating_point": {}, "positive_class": None,
            "note": f"no {expected} beside the model: the exported probabilities use T = 1.0 (uncalibrated); "
                    "`kdkeras report` fits a temperature on validation and writes that file",
        }
    return {
        "temperature": stored["temperature"],
        "source": os.path.basename(calibration_lib.calibration_path(source_path)),
        "threshold": stored["threshold"],
        "operating_point": dict(stored.get("operating_point") or {}),
        "positive_class": stored.get("positive_class"),
        "note": None,
    }


def probabilities(logits, temperature, task):
    """`softmax(logits / T)`, or the sigmoid for multi-label and one-logit models, in float32."""
    z = tf.cast(logits, tf.float32) / tf.constant(temperature, tf.float32)
    if task == "multi-label" or z.shape[-1] == 1:
        return tf.sigmoid(z)
    return tf.nn.softmax(z, axis=-1)


def write_saved_model(model, path, input_shape, temperature, task):
    """Writes the calibrated SavedModel of `model` (see the module docstring)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec((None, *input_shape), tf.float32, name="images")]

    def serve(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        return {"logits": logits, PROBABILITIES: probabilities(logits, temperature, task)}

    def calibrated(images):
        return probabilities(model(images, training=False), temperature, task)

    # The first endpoint is also `serving_default`, what TF Serving calls.
    archive.add_endpoint(SERVE, serve, input_signature=spec)
    archive.add_endpoint(PROBABILITIES, calibrated, input_signature=spec)
    archive.write_out(path, verbose=False)


class SavedModelRunner:
    """Calls an exported SavedModel's `serve` signature; returns its probabilities."""

    def __init__(self, path):
        # The loaded object owns the variables `serve` reads: keep it alive.
        self._loaded = tf.saved_model.load(path)

    def __call__(self, images, training=False):
        del training
        return self._loaded.serve(tf.convert_to_tensor(images, tf.float32))[PROBABILITIES]
