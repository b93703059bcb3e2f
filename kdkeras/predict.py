"""Runs a trained model on new image files: `kdkeras predict` and its Python API.

Inputs are files, folders (searched recursively) and zip / tar archives of
PNG, JPEG, BMP or GIF images, and DICOM files (`pip install kdkeras[dicom]`,
see `kdkeras.data.dicom`). Every image is prepared exactly as the training
pipelines prepare theirs: decoded by `kdkeras.data.images.decode_image_file`
(16-bit PNGs scaled by 1/257, alpha dropped, RGB to gray by BT.601 luminance
or gray repeated to RGB to match the model's input channels), resized with
antialiasing to the model's input size and rounded to uint8; the model scales
the pixels itself (its `InputPreprocessing` layer), so no scaling is applied
here.

What a run folder knows is read beside the model file (`runs/<exp>/distilled.keras`):

| file | gives |
| --- | --- |
| `distilled_metrics.json` | class names and task |
| `distilled_calibration.json` (optional) | temperature and the binary decision threshold (`kdkeras.evaluation.calibration`) |
| `config.toml` | the `[data] image_size`, only for a model without a fixed input size |

Every file seen gets a row: `ok`, `unreadable` (with the reason: damaged,
over the pixel limit, a format TensorFlow cannot decode) or `skipped` (not
an image, DICOM file or archive, such as a text file). Folders are walked
whole (hidden files and `__MACOSX` folders excluded) and archives inside folders or archives are extracted (to a
temporary folder removed at the end, also when the run is stopped).
Headers are checked first (size within `PIL.Image.MAX_IMAGE_PIXELS`, DICOM
included); then one tf.data pipeline decodes, batches and classifies the
images, and with `out` each batch's rows are written as they come: a stopped
run leaves a CSV of the rows done so far.
"""

import contextlib
import csv
import dataclasses
import json
import os
import tempfile
import tomllib

import numpy as np
import tensorflow as tf

from kdkeras.data import dicom as dicom_lib
from kdkeras.data import images as images_lib
from kdkeras.data import transforms
from kdkeras.data.errors import DataError
from kdkeras.evaluation import calibration
from kdkeras.evaluation.metrics import logits_to_scores
from kdkeras.files import ARCHIVE_SUFFIXES, atomic_path, load_model
from kdkeras.predict_inputs import (  # noqa: F401  (expand_inputs and the statuses are part of this API)
    STATUS_OK,
    STATUS_PENDING,
    STATUS_SKIPPED,
    STATUS_UNREADABLE,
    check_output,
    expand_inputs,
    screen_file,
)


class PredictionStopped(Exception):
    """A run stopped by SIGINT or SIGTERM; `out` holds the rows written before it."""


@dataclasses.dataclass
class ModelMetadata:
    """What predicting with a model needs beyond its weights.

    Attributes:
        class_names: One name per output column.
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        image_size: `(height, width)` the model reads.
        channels: 1 or 3, the channels the model reads.
        temperature: Divides the logits before softmax / sigmoid (1 = uncalibrated).
        threshold: Binary tasks: positive when the positive class's
            probability is `>= threshold`; None for the default rule
            (`> 0.5`, as `kdkeras.evaluation.metrics`).
        outputs: `"logits"` (kdkeras models), or `"probabilities"` for a
            model ending in softmax, whose outputs are not softmaxed again.
    """

    class_names: list
    task: str
    image_size: tuple
    channels: int
    temperature: float = 1.0
    threshold: float = None
    outputs: str = "logits"


@dataclasses.dataclass
class Predictions:
    """The result of `predict_files`.

    Attributes:
        rows: One dict per input file, in input order: `path`, `status`
            (`"ok"`, `"unreadable"` or `"skipped"`), `predicted`,
            `p_<class>` per class, `gradcam` (overlay path, when asked) and
            `error` (why a file was not classified).
        metadata: The `ModelMetadata` used.
    """

    rows: list
    metadata: ModelMetadata

    @property
    def unreadable(self):
        """`[(path, reason)]` of the files that could not be read (skipped ones excluded)."""
        return [(row["path"], row["error"]) for row in self.rows if row["status"] == STATUS_UNREADABLE]

    @property
    def skipped(self):
        """`[(path, reason)]` of the files that are not images."""
        return [(row["path"], row["error"]) for row in self.rows if row["status"] == STATUS_SKIPPED]

    @property
    def readable(self):
        """The rows of the images that were classified."""
        return [row for row in self.rows if row["status"] == STATUS_OK]

    def to_csv(self, path):
        """Writes the rows as CSV, atomically; returns `path`."""
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = _csv_writer(f, self.metadata, any("gradcam" in row for row in self.rows))
                writer.writerows(self.rows)
        return path


def _csv_writer(f, metadata, gradcam):
    columns = ["path", "status", "predicted", *probability_columns(metadata.class_names)]
    columns += ["gradcam", "error"] if gradcam else ["error"]
    writer = csv.DictWriter(f, fieldnames=columns, restval="")
    writer.writeheader()
    return writer


def probability_columns(class_names):
    """CSV column names of the class probabilities: `p_<class name>`."""
    return [f"p_{name}" for name in class_names]


def model_metadata(model, model_path=None):
    """Reads class names, task, input size and calibration of a model.

    Args:
        model: The loaded Keras model.
        model_path: Its `.keras` file, whose run folder is read; None for a
            model in memory (class names "0", "1", ...; a 2-column model is
            taken as binary-class, others as multi-class; no calibration).

    Returns:
        A `ModelMetadata`.

    Raises:
        DataError: A model that is not an image classifier with one output
            per class, a model whose input size is unknown (neither fixed in
            the model nor in the run's `config.toml`), or a metrics file whose
            class count differs from the model's outputs.
    """
    name = model_path or model.name
    _check_classifier(model, name)
    num_outputs = int(model.outputs[0].shape[-1])
    class_names = [str(k) for k in range(num_outputs)]
    task = "binary-class" if num_outputs == 2 else "multi-class"
    temperature, threshold = 1.0, None
    stem = os.path.splitext(os.fspath(model_path))[0] if model_path else None
    if stem:
        metrics = _read_json(f"{stem}_metrics.json")
        if metrics:
            names = [row["name"] for row in metrics.get("per_class", [])]
            task = metrics.get("task", task)
            if names and len(names) != num_outputs:
                raise DataError(
                    f"{stem}_metrics.json names {len(names)} classes but {model_path} outputs "
                    f"{num_outputs}: the metrics file belongs to another model; re-run the phase "
                    "that wrote the model, or delete the metrics file."
                )
            class_names = names or class_names
        stored = calibration.load_calibration(model_path)
        if stored:
            temperature, threshold = stored["temperature"], stored["threshold"]
    height, width, channels = model.inputs[0].shape[1:]
    if height is None or width is None:
        size = _configured_size(model_path)
        if size is None:
            raise DataError(
                f"{name} takes images of any size and its run folder has no "
                "[data] image_size in config.toml: resize the images yourself, or save the model "
                "with a fixed input size."
            )
        height, width = size
    if channels not in (1, 3):
        raise DataError(f"{name} reads {channels}-channel images; kdkeras predicts on 1 or 3.")
    outputs = "probabilities" if _ends_in_softmax(model) else "logits"
    return ModelMetadata(class_names, task, (int(height), int(width)), int(channels), temperature, threshold,
                         outputs)


def _check_classifier(model, name):
    """Refuses models that do not map one image to one score per class."""
    shapes = [tuple(t.shape) for t in model.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise DataError(
            f"{name} takes inputs of shape {', '.join(map(str, shapes))}; kdkeras predict runs image "
            "classifiers with one input of shape (batch, height, width, channels)."
        )
    outputs = [tuple(t.shape) for t in model.outputs]
    if len(outputs) != 1 or len(outputs[0]) != 2:
        raise DataError(
            f"{name} outputs {', '.join(map(str, outputs))}; kdkeras predict runs classifiers with one "
            "output of shape (batch, classes), not segmentation, detection or multi-output models."
        )
    if outputs[0][-1] is None or outputs[0][-1] < 2:
        raise DataError(
            f"{name} outputs {outputs[0][-1]} value per image; kdkeras predict needs one logit per "
            "class (2 for a binary classifier, as kdkeras models have): give it a 2-unit output layer."
        )


def _ends_in_softmax(model):
    layer = model.layers[-1]
    activation = getattr(layer, "activation", None)
    return type(layer).__name__ == "Softmax" or getattr(activation, "__name__", None) == "softmax"


def predict_files(model_or_path, paths, *, batch_size=32, gradcam_dir=None, gradcam_layer=None,
                  unsafe_load=False, out=None, on_batch=None):
    """Classifies image files, folders and archives with a trained model.

    Args:
        model_or_path: A `.keras` file (its run folder gives class names and
            calibration, see the module docstring) or a Keras model.
        paths: Files, folders and archives, or one of them.
        batch_size: Images per model call.
        gradcam_dir: If given, a Grad-CAM overlay of the predicted class is
            written there per image (`kdkeras.evaluation.explain`), and its path is
            given in the `gradcam` column.
        gradcam_layer: Feature layer of the Grad-CAM maps; default the last
            spatial one.
        unsafe_load: Load a model file that stores Python code (see
            `kdkeras.files.load_model`); only for files you trust.
        out: If given, the CSV the rows are written to as each batch is
            done (checked before any image is read). Interrupted
            (`KeyboardInterrupt`), it keeps the rows done so far and
            `PredictionStopped` is raised.
        on_batch: Called with the number of rows done after each batch.

    Returns:
        A `Predictions`: one row per file seen, unreadable and skipped ones included.

    Raises:
        DataError: When the inputs hold no file at all, or `out` cannot be written.
        PredictionStopped: `out` was given and the run was interrupted.

    Example:

    ```python
    result = predict_files("runs/quickstart/distilled.keras", ["new_xrays/"], out="predictions.csv")
    result.unreadable  # [("new_xrays/broken.png", "TensorFlow cannot decode it: ...")]
    ```
    """
    if out is not None:
        check_output(out)
    if isinstance(model_or_path, (str, os.PathLike)):
        model_path = os.fspath(model_or_path)
        model = load_model(model_path, unsafe_load)
    else:
        model_path, model = None, model_or_path
    metadata = model_metadata(model, model_path)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    with tempfile.TemporaryDirectory(prefix="kdkeras-predict-") as workdir:
        inputs = expand_inputs(paths, workdir)
        if not inputs:
            raise DataError(
                f"No files in {', '.join(map(str, paths))}: give PNG, JPEG, BMP, GIF or DICOM "
                f"files, folders of them, or archives ({', '.join(ARCHIVE_SUFFIXES)})."
            )
        run = _Run(model, metadata, inputs, gradcam_dir, gradcam_layer)
        with _row_sink(out, metadata, gradcam_dir is not None) as write:
            for done in run.stream(batch_size):
                write(done)
                if on_batch:
                    on_batch(len(run.written))
    return Predictions(run.rows, metadata)


@contextlib.contextmanager
def _row_sink(out, metadata, gradcam):
    """Yields `write(rows)`; with `out`, rows reach a temporary CSV renamed to `out` at the end,
    also when interrupted (then holding the rows done so far, and `PredictionStopped` is raised)."""
    if out is None:
        yield lambda rows: None
        return
    stopped = None
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = _csv_writer(f, metadata, gradcam)
            count = [0]

            def write(rows):
                writer.writerows(rows)  # one write per row: an interrupt never splits a row
                f.flush()
                count[0] += len(rows)

            try:
                yield write
            except KeyboardInterrupt:
                stopped = PredictionStopped(f"stopped: {out} holds the first {count[0]} row(s)")
    if stopped:
        raise stopped


class _Run:
    """The rows of one run, filled as the pipeline's batches come; `stream` yields them in input order."""

    def __init__(self, model, metadata, inputs, gradcam_dir, gradcam_layer):
        self.model, self.metadata = model, metadata
        self.gradcam = (gradcam_dir, gradcam_layer)
        self.rows, self.candidates = [], []
        for shown, path, reason in inputs:
            row = {"path": shown, "status": STATUS_UNREADABLE, "error": reason}
            self.rows.append(row)
            if reason is None:
                status, kind, detail = screen_file(path, metadata.image_size)
                if status != STATUS_PENDING:
                    row.update(status=status, error=detail)
                else:
                    row["error"] = None  # decided by the pipeline
                    self.candidates.append((len(self.rows) - 1, path, kind == "dicom", detail))
        self.written = []

    def stream(self, batch_size):
        """Yields lists of finished rows, in input order, one list per batch."""
        pending = {index: (path, is_dicom) for index, path, is_dicom, _ in self.candidates}
        batches = _pipeline(self.candidates, self.metadata, batch_size) if self.candidates else []
        for indices, pixels in batches:
            indices = indices.numpy()
            self._classify(indices, pixels.numpy())
            for index in indices:
                pending.pop(int(index))
            yield self._flush(int(indices.max()), pending)
        yield self._flush(len(self.rows), pending)

    def _flush(self, upto, pending):
        # A candidate before the batch's last index that is not in it failed to decode.
        for index in [i for i in pending if i < upto]:
            path, is_dicom = pending.pop(index)
            self.rows[index]["error"] = _decode_reason(path, is_dicom, self.metadata)
        done = self.rows[len(self.written):upto + 1]
        self.written.extend(done)
        return done

    def _classify(self, indices, batch):
        kept = [(int(i), self.rows[int(i)]) for i in indices]
        outputs = np.asarray(self.model(batch.astype(np.float32), training=False), dtype=np.float64)
        logits = np.log(np.clip(outputs, 1e-300, None)) if self.metadata.outputs == "probabilities" else outputs
        scores = logits_to_scores(logits / self.metadata.temperature, self.metadata.task)
        predicted = predicted_classes(scores, self.metadata)
        for (_, row), score, label in zip(kept, scores, predicted):
            row.update(status=STATUS_OK, error="", predicted=label)
            row.update({c: f"{p:.6f}" for c, p in zip(probability_columns(self.metadata.class_names), score)})
        folder, layer = self.gradcam
        if folder is not None:
            # The map of the class the row reports (binary: at the operating point).
            targets = (
                [self.metadata.class_names.index(row["predicted"]) for _, row in kept]
                if self.metadata.task == "binary-class" else np.argmax(logits, axis=1)
            )
            _write_gradcams(self.model, batch.astype(np.float32), targets, kept, folder, layer,
                            self.metadata.class_names)


def _pipeline(candidates, metadata, batch_size):
    """One tf.data pipeline over every candidate: `(indices, uint8 pixels)` batches; files whose
    decoding fails are dropped (their index is missing) and named by `_decode_reason`."""
    size, channels = tuple(metadata.image_size), metadata.channels

    def dicom(path):
        return read_image(os.fsdecode(path), metadata)

    def load(index, path, is_dicom, ratio):
        def from_dicom():
            return tf.ensure_shape(tf.numpy_function(dicom, [path], tf.uint8, stateful=False),
                                   [*size, channels])

        image = tf.cond(is_dicom, from_dicom,
                        lambda: images_lib.decode_image_file(path, channels, size, ratio))
        return index, image

    ds = tf.data.Dataset.from_tensor_slices((
        np.array([c[0] for c in candidates], np.int64),
        images_lib.tf_paths(c[1] for c in candidates),
        np.array([c[2] for c in candidates], bool),
        np.array([c[3] for c in candidates], np.int32),
    ))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    return ds.batch(batch_size).prefetch(1)


def _decode_reason(path, is_dicom, metadata):
    try:
        if is_dicom:
            read_image(path, metadata)
        else:
            header, reason = images_lib.read_header(path, tuple(metadata.image_size))
            return reason or images_lib.decode_error(header)
    except (DataError, ImportError) as e:
        return str(e)
    return "the pipeline failed to decode it once"


def read_image(path, metadata):
    """One file as the model reads it: uint8 `(H, W, C)` at the model's size and channels.

    Raises:
        DataError: With the reason the file cannot be read.
    """
    size, channels = metadata.image_size, metadata.channels
    if path.lower().endswith(dicom_lib.DICOM_EXTENSIONS) or dicom_lib.is_dicom(path):
        try:
            pixels = dicom_lib.read_dicom(path)
        except (DataError, ImportError):
            raise
        except Exception as e:  # pydicom raises many types on damaged files
            raise DataError(f"{type(e).__name__}: {e}") from e
        image = transforms.to_channels(tf.constant(pixels), channels)
        if tuple(image.shape[:2]) != tuple(size):
            image = transforms.resize(image, size)
        return transforms.to_uint8(image).numpy()
    header, reason = images_lib.read_header(path, tuple(size))
    if header is None:
        raise DataError(reason)
    try:
        return images_lib.decode_image_file(images_lib.tf_paths([path])[0], channels, size, header.jpeg_ratio).numpy()
    except tf.errors.OpError as e:
        raise DataError(images_lib.decode_error(header)) from e


def predicted_classes(scores, metadata):
    """Predicted class names: the operating point for binary tasks, else the argmax.

    Multi-label rows name every label with probability > 0.5, joined by `;`.
    """
    names = metadata.class_names
    if metadata.task.startswith("multi-label"):
        return [";".join(n for n, p in zip(names, row) if p > 0.5) for row in scores]
    if metadata.task == "binary-class":
        positive = scores[:, -1] >= metadata.threshold if metadata.threshold is not None else scores[:, -1] > 0.5
        return [names[-1] if flag else names[0] for flag in positive]
    return [names[k] for k in np.argmax(scores, axis=1)]


def _write_gradcams(model, batch, targets, kept, folder, layer, class_names):
    # TensorFlow's gradients, matplotlib and the figure style load only when maps are asked for.
    from kdkeras.evaluation import explain
    from kdkeras.reporting import figures_clinical

    maps = explain.gradcam(model, batch, class_index=targets, layer=layer)
    for (position, row), image, heatmap, target in zip(kept, batch, maps, targets):
        stem = os.path.splitext(os.path.basename(row["path"]))[0]
        path = os.path.join(folder, f"{position:05d}_{stem}.png")
        figures_clinical.save_overlay(image, heatmap, path, title=f"{row['path']}\nGrad-CAM of {class_names[target]}")
        row["gradcam"] = path


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e}); re-run the phase that wrote it.") from e


def _configured_size(model_path):
    if not model_path:
        return None
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.toml"), "rb") as f:
            size = tomllib.load(f).get("data", {}).get("image_size")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return transforms.image_size_tuple(size) if size else None
