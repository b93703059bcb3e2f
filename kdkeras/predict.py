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

A file that cannot be read is listed with `status = unreadable` and the
reason, and the batch goes on.
"""

import csv
import dataclasses
import json
import os
import tempfile
import tomllib
import warnings

import numpy as np
import tensorflow as tf

from kdkeras.evaluation import calibration
from kdkeras.data import images as images_lib
from kdkeras.data import transforms
from kdkeras.data.dicom import DICOM_EXTENSIONS, is_dicom, read_dicom
from kdkeras.data.errors import DataError
from kdkeras.files import ARCHIVE_SUFFIXES, atomic_path, extract_archive, load_model
from kdkeras.evaluation.metrics import logits_to_scores

STATUS_OK = "ok"
STATUS_UNREADABLE = "unreadable"


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
    """

    class_names: list
    task: str
    image_size: tuple
    channels: int
    temperature: float = 1.0
    threshold: float = None


@dataclasses.dataclass
class Predictions:
    """The result of `predict_files`.

    Attributes:
        rows: One dict per input image, in input order: `path`, `status`
            (`"ok"` or `"unreadable"`), `predicted`, `p_<class>` per class,
            `gradcam` (overlay path, when asked) and `error` (the reason a
            file could not be read).
        metadata: The `ModelMetadata` used.
    """

    rows: list
    metadata: ModelMetadata

    @property
    def unreadable(self):
        """`[(path, reason)]` of the files that could not be read."""
        return [(row["path"], row["error"]) for row in self.rows if row["status"] != STATUS_OK]

    @property
    def readable(self):
        """The rows of the images that were classified."""
        return [row for row in self.rows if row["status"] == STATUS_OK]

    def to_csv(self, path):
        """Writes the rows as CSV, atomically; returns `path`."""
        columns = ["path", "status", "predicted", *probability_columns(self.metadata.class_names)]
        if any("gradcam" in row for row in self.rows):
            columns.append("gradcam")
        columns.append("error")
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(self.rows)
        return path


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
        DataError: A model whose input size is unknown (neither fixed in the
            model nor in the run's `config.toml`), or a metrics file whose
            class count differs from the model's outputs.
    """
    num_outputs = int(model.output_shape[-1])
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
    height, width, channels = model.input_shape[1:]
    if height is None or width is None:
        size = _configured_size(model_path)
        if size is None:
            raise DataError(
                f"{model_path or model.name} takes images of any size and its run folder has no "
                "[data] image_size in config.toml: resize the images yourself, or save the model "
                "with a fixed input size."
            )
        height, width = size
    if channels not in (1, 3):
        raise DataError(f"{model_path or model.name} reads {channels}-channel images; kdkeras predicts on 1 or 3.")
    return ModelMetadata(class_names, task, (int(height), int(width)), int(channels), temperature, threshold)


def predict_files(model_or_path, paths, *, batch_size=32, gradcam_dir=None, gradcam_layer=None,
                  unsafe_load=False):
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

    Returns:
        A `Predictions`: one row per image, unreadable files included.

    Raises:
        DataError: When the inputs hold no image file at all.

    Example:

    ```python
    result = predict_files("runs/quickstart/distilled.keras", ["new_xrays/"])
    result.to_csv("predictions.csv")
    result.unreadable  # [("new_xrays/broken.png", "OSError: ...")]
    ```
    """
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
                f"No image files in {', '.join(map(str, paths))}: give PNG, JPEG, BMP, GIF or DICOM "
                f"files, folders of them, or archives ({', '.join(ARCHIVE_SUFFIXES)})."
            )
        rows = []
        for start in range(0, len(inputs), batch_size):
            rows.extend(_predict_batch(model, metadata, inputs[start:start + batch_size], start,
                                       gradcam_dir, gradcam_layer))
    return Predictions(rows, metadata)


def expand_inputs(paths, workdir):
    """Lists the files behind files, folders and archives.

    Args:
        paths: Input paths.
        workdir: Folder where archives are extracted (removed by the caller).

    Returns:
        `[(shown_path, file_path, reason)]` in order: `shown_path` is what the
        user recognises (`scans.zip/a/1.png` for an archive member),
        `file_path` where it can be read, `reason` a string when the input is
        already known to be unusable (missing, or a damaged archive), else None.
    """
    found = []
    for index, path in enumerate(paths):
        path = os.fspath(path)
        if os.path.isdir(path):
            found.extend((p, p, None) for p in _image_files(path))
        elif path.lower().endswith(ARCHIVE_SUFFIXES) and os.path.isfile(path):
            try:
                folder = extract_archive(path, os.path.join(workdir, str(index)))
            except Exception as e:  # zipfile, tarfile and the unsafe-member check raise many types
                found.append((path, path, f"archive not extracted: {type(e).__name__}: {e}"))
                continue
            found.extend(
                (os.path.join(path, os.path.relpath(p, folder)), p, None) for p in _image_files(folder)
            )
        elif os.path.isfile(path):
            found.append((path, path, None))
        else:
            found.append((path, path, "file not found"))
    return found


def _image_files(folder):
    # list_image_files lists the formats the training loaders read; DICOM files
    # are added with the same rules (hidden files and folders skipped).
    dicom = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__MACOSX"))]
        dicom.extend(
            os.path.join(dirpath, name)
            for name in filenames
            if not name.startswith(".") and name.lower().endswith(DICOM_EXTENSIONS)
        )
    return sorted(images_lib.list_image_files(folder) + dicom)


def read_image(path, metadata):
    """One file as the model reads it: uint8 `(H, W, C)` at the model's size and channels.

    Raises:
        DataError: With the reason the file cannot be read.
    """
    size, channels = metadata.image_size, metadata.channels
    if path.lower().endswith(DICOM_EXTENSIONS) or is_dicom(path):
        try:
            pixels = read_dicom(path)
        except (DataError, ImportError):
            raise
        except Exception as e:  # pydicom raises many types on damaged files
            raise DataError(f"{type(e).__name__}: {e}") from e
        image = transforms.to_channels(tf.constant(pixels), channels)
        if tuple(image.shape[:2]) != tuple(size):
            image = transforms.resize(image, size)
        return transforms.to_uint8(image).numpy()
    # The loaders' own check: the pipeline's decoder, at the JPEG scale it will use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (header,), _ = images_lib.inspect_images([path], strict=True, image_size=tuple(size))
    try:
        return images_lib.decode_image_file(images_lib.tf_paths([path])[0], channels, size, header.jpeg_ratio).numpy()
    except tf.errors.OpError as e:
        raise DataError(f"TensorFlow could not decode it: {e.message}") from e


def _predict_batch(model, metadata, inputs, offset, gradcam_dir, gradcam_layer):
    rows, pixels, kept = [], [], []
    for position, (shown, path, reason) in enumerate(inputs, start=offset):
        row = {"path": shown, "status": STATUS_UNREADABLE, "error": reason}
        rows.append(row)
        if reason:
            continue
        try:
            pixels.append(read_image(path, metadata))
        except (DataError, ImportError) as e:
            row["error"] = str(e)
            continue
        kept.append((position, row))
    if not kept:
        return rows
    batch = np.stack(pixels).astype(np.float32)
    logits = np.asarray(model(batch, training=False), dtype=np.float64)
    scores = logits_to_scores(logits / metadata.temperature, metadata.task)
    predicted = predicted_classes(scores, metadata)
    for (_, row), score, label in zip(kept, scores, predicted):
        row.update(status=STATUS_OK, error="", predicted=label)
        row.update({column: f"{p:.6f}" for column, p in zip(probability_columns(metadata.class_names), score)})
    if gradcam_dir is not None:
        # The map of the class the row reports (binary: at the operating point).
        targets = (
            [metadata.class_names.index(row["predicted"]) for _, row in kept]
            if metadata.task == "binary-class" else np.argmax(logits, axis=1)
        )
        _write_gradcams(model, batch, targets, kept, gradcam_dir, gradcam_layer, metadata.class_names)
    return rows


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
