"""Deployable students: SavedModel and TFLite files, measured against the Keras model.

`export_student` writes a trained student in the formats a clinic laptop or a
phone runs, then measures each written file the same way: bytes on disk, CPU
latency per image at batch 1, and test-split ACC / AUC / balanced accuracy
computed by `kdkeras.metrics.classification_metrics`, beside the Keras model
it came from. The table is returned and written as `export.md` and
`export.json` next to the files.

| format | file | what it is |
| --- | --- | --- |
| `saved_model` | `saved_model/` | `model.export(..., format="tf_saved_model")`, for TF Serving / TF.js |
| `tflite_float32` | `model_float32.tflite` | TFLite, float32 weights and activations |
| `tflite_dynamic_int8` | `model_dynamic_int8.tflite` | int8 weights, float activations (no calibration data) |
| `tflite_int8` | `model_int8.tflite` | full-integer: int8 weights, activations, input and output |

The full-integer model takes int8 input and returns int8 logits, so it runs on
integer-only accelerators (Edge TPU, microcontrollers, NNAPI). Its input
quantization comes from the representative images: the scale is their
brightest pixel / 255, not 1, so a caller quantizes with the file's own
`scale` and `zero_point` (pixels brighter than any calibration pixel
saturate). `TFLiteModel` applies the file's own input and output quantization
parameters, so every format is called with float pixels and returns float
logits. Every model of the zoo starts with `kdkeras.models.InputPreprocessing`
(scaling, grayscale-to-RGB repeat), which is part of every exported graph.
"""

import dataclasses
import json
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from kdkeras import calibration as calibration_lib
from kdkeras import metrics as metrics_lib
from kdkeras import profiling
from kdkeras import runs as runs_lib
from kdkeras.formatting import format_bytes
from kdkeras.files import load_model, write_text_atomic

FORMATS = ("saved_model", "tflite_float32", "tflite_dynamic_int8", "tflite_int8")
FILENAMES = {
    "saved_model": "saved_model",
    "tflite_float32": "model_float32.tflite",
    "tflite_dynamic_int8": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
}
TABLE_JSON = "export.json"
TABLE_MD = "export.md"
# The model's calibration (`kdkeras.calibration`), copied beside the exported files when it has one.
CALIBRATION = "calibration.json"

_METRIC_COLUMNS = ("acc", "auc", "balanced_acc")


@dataclasses.dataclass
class ExportTable:
    """What `export_student` wrote and measured, one row per format.

    Attributes:
        model: Where the Keras model came from (a path, or its name).
        input_shape: Shape of one input image, `(height, width, channels)`.
        rows: One dict per format, the Keras model first, with `format`,
            `path` (relative to the output folder; None for an in-memory
            Keras model), `size_bytes`, `ms_per_image` (median CPU latency at
            batch 1), `acc`, `auc`, `balanced_acc` (None without test data)
            and `agreement` (share of test images whose prediction equals the
            Keras model's; None without test data).
        task: Task used for the metrics.
        test_images: Number of test images scored (0 without test data).
        representative_images: Images used to calibrate `tflite_int8`.
        num_threads: CPU threads of the TFLite interpreter.
    """

    model: str
    input_shape: tuple
    rows: list
    task: str
    test_images: int
    representative_images: int
    num_threads: int

    def row(self, fmt):
        """The row of format `fmt` ("keras" or one of `FORMATS`)."""
        for row in self.rows:
            if row["format"] == fmt:
                return row
        raise KeyError(f"No row for format {fmt!r}; the table has {[r['format'] for r in self.rows]}.")

    def to_dict(self):
        """The table as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_markdown(self):
        """The table in GitHub markdown, with the measuring conditions under it."""
        lines = [
            "| Format | File | Size | Latency (batch 1) | ACC | AUC | Balanced ACC | Agreement with Keras |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.rows:
            path = f"`{row['path']}`" if row["path"] else "(in memory)"
            cells = [row["format"], path, format_bytes(row["size_bytes"]), f"{row['ms_per_image']:.3f} ms/img"]
            cells += [_number(row[key]) for key in (*_METRIC_COLUMNS, "agreement")]
            lines.append("| " + " | ".join(cells) + " |")
        scored = f"{self.test_images} test images" if self.test_images else "no test data"
        lines.append("")
        lines.append(
            f"Model `{self.model}`, input {'x'.join(map(str, self.input_shape))}, task {self.task}; "
            f"metrics on {scored}; `tflite_int8` calibrated on {self.representative_images} train "
            f"images; TFLite interpreter with {self.num_threads} thread(s); latency is the median "
            "after warm-up calls, fed float pixels (int8 files include the input quantization)."
        )
        return "\n".join(lines) + "\n"


class TFLiteModel:
    """Runs a `.tflite` classifier on float pixels and returns float logits.

    Integer inputs and outputs (the full-integer `tflite_int8` file) are
    quantized and dequantized with the file's own scale and zero point, so
    every format is called the same way.

    Args:
        path_or_content: Path of a `.tflite` file, or its bytes.
        num_threads: CPU threads of the interpreter; None uses all the CPU
            cores this process may run on.

    Example:

    ```python
    lite = TFLiteModel("runs/quickstart/export/model_int8.tflite")
    logits = lite(images)  # float32 (batch, classes)
    ```
    """

    def __init__(self, path_or_content, num_threads=None):
        self.num_threads = num_threads or _cpu_count()
        if isinstance(path_or_content, bytes):
            source = {"model_content": path_or_content}
        else:
            if not os.path.isfile(path_or_content):
                raise FileNotFoundError(
                    f"TFLite file {path_or_content!r} not found: write it with "
                    "`kdkeras.export.export_student` or `kdkeras export` first."
                )
            source = {"model_path": os.fspath(path_or_content)}
        with warnings.catch_warnings():
            # TF 2.21 warns that tf.lite.Interpreter moves to ai_edge_litert;
            # it is the interpreter that ships with TensorFlow.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            self._interpreter = tf.lite.Interpreter(**source, num_threads=self.num_threads)
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
        """Logits of a batch of float pixel images, shape `(batch, classes)`."""
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.input_shape:
            raise ValueError(
                f"TFLiteModel takes images of shape {self.input_shape}, got {images.shape[1:]}."
            )
        self._resize(len(images))
        self._interpreter.set_tensor(self._input["index"], _quantize(images, self._input))
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)

    def _resize(self, batch):
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [batch, *self.input_shape])
            self._interpreter.allocate_tensors()
            self._batch = batch


def export_student(
    model_or_path,
    out_dir,
    formats=FORMATS,
    representative_data=None,
    test_data=None,
    task="binary-class",
    class_names=None,
    representative_images=200,
    num_threads=None,
    latency_warmup=5,
    latency_repeats=50,
    unsafe_load=False,
):
    """Exports a student to SavedModel and TFLite and measures every file.

    Files appear only when complete: everything is written into a temporary
    folder inside `out_dir` and renamed into place, a file at a time, once
    all conversions succeeded. Existing files of the same names are replaced.

    Args:
        model_or_path: A Keras model emitting logits, or the path of a saved
            `.keras` model (a saved `kdkeras.Distiller` exports its student).
        out_dir: Output folder, created if needed.
        formats: Any of `FORMATS`.
        representative_data: Images that calibrate the activations of
            `tflite_int8`, ideally unaugmented train images: a `tf.data.Dataset`
            of image batches or `(images, labels)` batches, or an array
            `(N, H, W, C)` of float pixels in [0, 255]. Required for
            `tflite_int8`.
        test_data: Batches of `(images, labels)` (a `tf.data.Dataset`, or one
            `(images, labels)` pair of arrays) to score every format on; None
            leaves the metric columns empty.
        task: Task of the labels, as in `kdkeras.metrics.TASKS`.
        class_names: Names of the classes, for the metrics.
        representative_images: At most this many images of
            `representative_data` are used.
        num_threads: CPU threads of the TFLite interpreter; None uses all
            the cores this process may run on, as TensorFlow does.
        latency_warmup: Untimed calls before timing each format.
        latency_repeats: Timed batch-1 calls per format (the median is kept).
        unsafe_load: Load a model file that stores Python code (Lambda
            layers); only for files you trust (see `kdkeras.files.load_model`).

    Returns:
        An `ExportTable`, also written to `out_dir/export.json` and
        `out_dir/export.md`. A model saved with a calibration file (the
        report fits one on validation) gets it copied as
        `out_dir/calibration.json`: the temperature that divides the exported
        logits and the binary decision threshold.

    Raises:
        FileNotFoundError: `model_or_path` is a path that does not exist.
        ValueError: unknown formats, a model that is not a single-input
            image classifier, `tflite_int8` without representative data, or
            data whose image shape differs from the model's input.

    Example:

    ```python
    train, _, test, info = kdkeras.data.load_medmnist("pneumoniamnist", path=kdkeras.data.bundled_npz())
    table = export_student("runs/quickstart/distilled.keras", "runs/quickstart/export",
                           representative_data=train, test_data=test, task=info.task)
    print(table.to_markdown())
    ```
    """
    formats = _check_formats(formats)
    if int(representative_images) < 1:
        raise ValueError(f"representative_images must be >= 1, got {representative_images}.")
    if int(latency_warmup) < 1 or int(latency_repeats) < 1:
        raise ValueError(
            f"latency_warmup and latency_repeats must be >= 1, got {latency_warmup} and "
            f"{latency_repeats}: the first call of each format allocates and must not be timed."
        )
    model, source_path = _load_model(model_or_path, unsafe_load)
    input_shape = _input_shape(model)
    calibration = None
    if "tflite_int8" in formats:
        if representative_data is None:
            raise ValueError(
                "Format 'tflite_int8' needs `representative_data` (e.g. the train split) to "
                "calibrate its int8 activations; pass it, or drop 'tflite_int8' from `formats`."
            )
        calibration = _collect_images(representative_data, representative_images, input_shape, "representative_data")
    test = None if test_data is None else _collect_test(test_data, input_shape)
    num_threads = num_threads or _cpu_count()
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir)
    try:
        keras_size = _keras_size(model, source_path, work)
        saved_model = os.path.join(work, FILENAMES["saved_model"])
        model.export(saved_model, format="tf_saved_model", verbose=False)
        written = {"saved_model": saved_model} if "saved_model" in formats else {}
        for fmt in formats:
            if fmt.startswith("tflite_"):
                path = os.path.join(work, FILENAMES[fmt])
                with open(path, "wb") as f:
                    f.write(_convert(saved_model, fmt, calibration))
                written[fmt] = path
        reference = _forward_logits(lambda x: model(x, training=False), test)
        rows = [
            _row(
                "keras",
                source_path,
                keras_size,
                profiling.measure_latency(model, input_shape, (1,), latency_warmup, latency_repeats)[1]["ms_per_image"],
                reference,
                reference,
                test,
                task,
                class_names,
            )
        ]
        for fmt, path in written.items():
            runner = _runner(fmt, path, num_threads)
            ms = _latency(runner, input_shape, latency_warmup, latency_repeats)
            logits = _forward_logits(runner, test)
            rows.append(
                _row(fmt, FILENAMES[fmt], profiling.file_size_bytes(path), ms, logits, reference, test, task, class_names)
            )
        for fmt, path in written.items():
            _move_into_place(path, os.path.join(out_dir, FILENAMES[fmt]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = ExportTable(
        model=source_path or model.name,
        input_shape=input_shape,
        rows=rows,
        task=task,
        test_images=0 if test is None else int(len(test[1])),
        representative_images=0 if calibration is None else int(len(calibration)),
        num_threads=int(num_threads),
    )
    write_text_atomic(os.path.join(out_dir, TABLE_JSON), json.dumps(table.to_dict(), indent=2) + "\n")
    write_text_atomic(os.path.join(out_dir, TABLE_MD), table.to_markdown())
    calibrated = calibration_lib.load_calibration(source_path) if source_path else None
    if calibrated is not None:
        # Every exported file emits logits, as the Keras model does: the temperature and the
        # decision threshold fitted on validation travel beside them, for the deployment to apply.
        write_text_atomic(os.path.join(out_dir, CALIBRATION), json.dumps(calibrated, indent=2) + "\n")
    return table


def export_experiment(config, model_path=None, runs_dir="runs", formats=FORMATS, out_dir=None,
                      representative_images=200, log=print, unsafe_load=False):
    """`export_student` on an experiment's model, with its own data splits.

    The representative images are the first `representative_images` of the
    experiment's train split without augmentation; the metrics use its test
    split. This is what `kdkeras export` runs.

    Args:
        config: An `ExperimentConfig`.
        model_path: The `.keras` model; defaults to the distilled student,
            `<runs_dir>/<experiment>/distilled.keras`.
        runs_dir: Parent folder of run folders.
        formats: Any of `FORMATS`.
        out_dir: Output folder; defaults to `<runs_dir>/<experiment>/export`.
        representative_images: Train images that calibrate `tflite_int8`.
        log: Callable receiving progress lines.
        unsafe_load: Load a model file that stores Python code; see `export_student`.

    Returns:
        The `ExportTable`.

    Raises:
        kdkeras.training.MissingArtifactError: the model file does not exist.
    """
    from kdkeras import training

    formats = _check_formats(formats)
    run = runs_lib.RunFolder.of(config, runs_dir)
    model_path = model_path or run.model("distilled")
    if not os.path.isfile(model_path):
        raise training.MissingArtifactError(
            f"{model_path} not found: export needs a saved .keras model. Run `make distill` "
            f"(or `kdkeras distill --config {config.path or config.name}`) first, or pass --model."
        )
    out_dir = out_dir or os.path.join(run.path, "export")
    unaugmented = dataclasses.replace(config, data={**config.data, "augment": None})
    train, _, test, info = training.load_data(unaugmented)
    log(f"[export] {model_path} -> {out_dir}: {', '.join(formats)}")
    table = export_student(
        model_path,
        out_dir,
        formats=formats,
        representative_data=train,
        test_data=test,
        task=info.task,
        class_names=info.class_names,
        representative_images=representative_images,
        unsafe_load=unsafe_load,
    )
    log(f"[export] wrote {os.path.join(out_dir, TABLE_MD)}")
    return table


def _check_formats(formats):
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"Unknown export format(s) {', '.join(map(repr, unknown))}; use one or more of {', '.join(FORMATS)}."
        )
    if not formats:
        raise ValueError(f"No export format given; use one or more of {', '.join(FORMATS)}.")
    return tuple(dict.fromkeys(formats))


def _load_model(model_or_path, unsafe_load=False):
    from kdkeras.distiller import Distiller

    if isinstance(model_or_path, keras.Model):
        model, path = model_or_path, None
    else:
        path = os.fspath(model_or_path)
        if not path.endswith(".keras"):
            raise ValueError(f"{path}: expected a Keras 3 `.keras` file (saved with `model.save`).")
        model = load_model(path, unsafe_load=unsafe_load)
    if isinstance(model, Distiller):
        model = model.student
    return model, path


def _input_shape(model):
    try:
        shapes = model.input_shape
    except (AttributeError, ValueError):
        shapes = None
    if not isinstance(shapes, tuple) or len(shapes) != 4 or None in shapes[1:]:
        raise ValueError(
            f"Model {model.name!r} has input shape {shapes!r}; export needs one image input with "
            "a fixed (height, width, channels), as every kdkeras.models model has."
        )
    return tuple(int(d) for d in shapes[1:])


def _collect_images(data, limit, input_shape, name):
    if isinstance(data, tf.data.Dataset):
        batches, count = [], 0
        for element in data:
            images = element[0] if isinstance(element, (tuple, list)) else element
            batches.append(np.asarray(images, dtype=np.float32))
            count += len(batches[-1])
            if count >= limit:
                break
        images = np.concatenate(batches) if batches else np.zeros((0, *input_shape), np.float32)
    else:
        images = np.asarray(data, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"`{name}` yields images of shape {images.shape[1:]} but the model takes "
            f"{tuple(input_shape)}: load the data at the model's image size and channels."
        )
    if not len(images):
        raise ValueError(f"`{name}` yields no images.")
    return images[:limit]


def _collect_test(data, input_shape):
    if isinstance(data, tf.data.Dataset):
        images, labels = [], []
        for element in data:
            images.append(np.asarray(element[0], dtype=np.float32))
            labels.append(np.asarray(element[1]))
        if not images:
            raise ValueError("`test_data` yields no batches.")
        images, labels = np.concatenate(images), np.concatenate(labels)
    else:
        images, labels = data
        images, labels = np.asarray(images, dtype=np.float32), np.asarray(labels)
    images = _collect_images(images, len(images), input_shape, "test_data")
    if len(labels) != len(images):
        raise ValueError(f"`test_data` has {len(images)} images but {len(labels)} labels.")
    return images, labels


def _keras_size(model, source_path, work):
    if source_path:
        return profiling.file_size_bytes(source_path)
    # An uncompiled copy, as kdkeras saves deployable models: no optimizer state.
    from kdkeras.training import save_deployable

    path = os.path.join(work, "model.keras")
    save_deployable(model, path)
    return profiling.file_size_bytes(path)


def _convert(saved_model, fmt, calibration):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
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
        raise ValueError(
            f"TFLite conversion to {fmt} failed: {e}. A layer without an int8 kernel cannot be "
            f"fully quantized: drop {fmt!r} from `formats` or use 'tflite_dynamic_int8'."
        ) from e


def _runner(fmt, path, num_threads):
    if fmt == "saved_model":
        return _SavedModelRunner(path)
    return TFLiteModel(path, num_threads=num_threads)


class _SavedModelRunner:
    """Calls a SavedModel's `serve` endpoint like a Keras model."""

    def __init__(self, path):
        # The loaded object owns the variables `serve` reads: keep it alive.
        self._loaded = tf.saved_model.load(path)

    def __call__(self, images, training=False):
        del training
        return self._loaded.serve(tf.convert_to_tensor(images, tf.float32))


def _latency(runner, input_shape, warmup, repeats):
    if isinstance(runner, TFLiteModel):
        image = np.random.default_rng(0).uniform(0.0, 255.0, size=(1, *input_shape)).astype(np.float32)
        return 1000.0 * profiling.median_seconds(lambda: runner(image), warmup, repeats)
    return profiling.measure_latency(runner, input_shape, (1,), warmup, repeats)[1]["ms_per_image"]


def _forward_logits(forward, test, batch_size=128):
    if test is None:
        return None
    images = test[0]
    return np.concatenate(
        [np.asarray(forward(images[i : i + batch_size]), dtype=np.float64) for i in range(0, len(images), batch_size)]
    )


def _row(fmt, path, size, ms, logits, reference, test, task, class_names):
    row = {"format": fmt, "path": path, "size_bytes": int(size), "ms_per_image": float(ms)}
    if test is None:
        return {**row, **dict.fromkeys((*_METRIC_COLUMNS, "agreement"))}
    scores = metrics_lib.logits_to_scores(logits, task)
    result = metrics_lib.classification_metrics(test[1], scores, task, class_names)
    row.update({key: result[key] for key in _METRIC_COLUMNS})
    row["agreement"] = float(np.mean(_decisions(logits, task) == _decisions(reference, task)))
    return row


def _decisions(logits, task):
    if task == "multi-label":
        return logits > 0
    return np.argmax(logits, axis=-1)


def _quantize(images, detail):
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return images
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values, detail):
    if np.dtype(detail["dtype"]) == np.float32:
        return values.copy()
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def _move_into_place(src, dst):
    if os.path.isdir(src):
        # A folder cannot replace a non-empty one in one rename: the old copy
        # is renamed aside first, so `dst` is always either complete or absent.
        if os.path.exists(dst):
            aside = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(dst))
            os.replace(dst, os.path.join(aside, "old"))
            os.replace(src, dst)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(src, dst)
        return
    os.replace(src, dst)


def _number(value):
    return "" if value is None else f"{value:.4f}"


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
