"""`export_student` and `export_experiment`: write the deployable files and measure each one."""

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kdkeras import runs as runs_lib
from kdkeras import scores as scores_lib
from kdkeras.evaluation import calibration as calibration_lib
from kdkeras.evaluation import metrics as metrics_lib
from kdkeras.evaluation import profiling
from kdkeras.export import bundle, serving, tflite
from kdkeras.export import onnx as onnx_lib
from kdkeras.export.table import METRIC_COLUMNS, ExportTable
from kdkeras.files import load_model, write_text_atomic

FORMATS = ("saved_model", "tflite_float32", "tflite_dynamic_int8", "tflite_int8", "onnx")
# ONNX needs the optional extra `kdkeras[onnx]`: it is written when asked for.
DEFAULT_FORMATS = FORMATS[:4]
FILENAMES = {
    "saved_model": "saved_model",
    "tflite_float32": "model_float32.tflite",
    "tflite_dynamic_int8": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
TABLE_JSON = "export.json"
TABLE_MD = "export.md"
# The model's calibration (`kdkeras.evaluation.calibration`), copied beside the exported files when it has one.
CALIBRATION = "calibration.json"


# Long function: its docstring documents every format, option and output file; the body is under 50 lines.
def export_student(
    model_or_path,
    out_dir,
    formats=DEFAULT_FORMATS,
    representative_data=None,
    test_data=None,
    task="binary-class",
    class_names=None,
    representative_images=200,
    num_threads=None,
    latency_warmup=5,
    latency_repeats=50,
    unsafe_load=False,
    dataset_info=None,
):
    """Exports a student to SavedModel, TFLite and ONNX and measures every file.

    The exported files return calibrated probabilities, `softmax(logits / T)`
    (see `kdkeras.export.serving`), with `T` read from the model's calibration
    file (`<stem>_calibration.json`, written by `kdkeras report`), or 1.0 when
    it has none (the table says so). Files appear only when complete: everything
    is written into a temporary folder inside `out_dir` and renamed into place,
    a file at a time, once all conversions succeeded. Existing files of the
    same names are replaced.

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
        task: Task of the labels, as in `kdkeras.evaluation.metrics.TASKS`.
        class_names: Names of the classes, for the metrics.
        representative_images: At most this many images of
            `representative_data` are used.
        num_threads: CPU threads of the TFLite interpreter; None uses all
            the cores this process may run on, as TensorFlow does.
        latency_warmup: Untimed calls before timing each format.
        latency_repeats: Timed batch-1 calls per format (the median is kept).
        unsafe_load: Load a model file that stores Python code (Lambda
            layers); only for files you trust (see `kdkeras.files.load_model`).
        dataset_info: The `kdkeras.data.DatasetInfo` of the data the model
            was trained on, for the bundle's metadata and model card.

    Returns:
        An `ExportTable`, also written to `out_dir/export.json` and
        `out_dir/export.md` (with the temperature and, for a binary task with
        an operating point, the decision threshold). A model with a
        calibration file gets it copied as `out_dir/calibration.json`. The
        bundle's `metadata.json`, `model_card.md`, `model_card.json` and
        `checklist.md` (`kdkeras.export.bundle`) describe the files from the
        run folder the model was saved in.

    Raises:
        FileNotFoundError: `model_or_path` is a path that does not exist.
        ImportError: 'onnx' without the `kdkeras[onnx]` extra installed.
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
    task = scores_lib.check_task(task)
    _check_counts(representative_images, latency_warmup, latency_repeats)
    model, source_path = _load_model(model_or_path, unsafe_load)
    input_shape = _input_shape(model)
    calibration = serving.resolve_calibration(source_path)
    if "onnx" in formats:
        onnx_lib.check_installed()  # before any conversion: the message says what to install
    representative = None
    if "tflite_int8" in formats:
        if representative_data is None:
            raise ValueError(
                "Format 'tflite_int8' needs `representative_data` (e.g. the train split) to "
                "calibrate its int8 activations; pass it, or drop 'tflite_int8' from `formats`."
            )
        representative = _collect_images(representative_data, representative_images, input_shape,
                                         "representative_data")
    test = None if test_data is None else _collect_test(test_data, input_shape)
    num_threads = num_threads or tflite.cpu_count()
    # Read before anything is written: a damaged run file fails the export with nothing replaced.
    facts = bundle.run_facts(source_path, model, dataset_info)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir)
    try:
        # The files compute in float32: TFLite has no kernels for a mixed-precision model's float16 ops.
        written = _write_files(float32_model(model), work, formats, input_shape, calibration["temperature"], task,
                               representative)
        measure = _Measure(test, task, class_names, input_shape, num_threads, latency_warmup, latency_repeats)
        rows = [measure.keras_row(model, source_path, _keras_size(model, source_path, work),
                                  calibration["temperature"])]
        rows += [measure.file_row(fmt, path) for fmt, path in written.items()]
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
        representative_images=0 if representative is None else int(len(representative)),
        num_threads=int(num_threads),
        calibration=calibration,
        interpreter=tflite.INTERPRETER,
    )
    _write_tables(out_dir, table, source_path)
    bundle.write_bundle(out_dir, table, facts, model, source_path, class_names)
    return table


def float32_model(model):
    """`model` itself, or for a mixed-precision model a float32 copy with the same weights.

    A model trained under a `mixed_float16` (or `mixed_bfloat16`) policy
    computes in 16 bits; TFLite's converter finds no kernels for those ops
    and every format fails. Its variables are float32 already, so a copy
    whose layers compute in float32 takes the same weights and gives the
    same predictions, up to float16 rounding.

    Args:
        model: A Keras model.

    Returns:
        A Keras model whose layers all compute in float32.
    """
    if not any(_mixed(layer.dtype_policy.name) for layer in model._flatten_layers(include_self=True)):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _mixed(name):
    return isinstance(name, str) and name.startswith("mixed_")


def _float32_policies(config):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and _mixed(config["config"].get("name")):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: "float32" if _mixed(value) else _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def _check_counts(representative_images, latency_warmup, latency_repeats):
    if int(representative_images) < 1:
        raise ValueError(f"representative_images must be >= 1, got {representative_images}.")
    if int(latency_warmup) < 1 or int(latency_repeats) < 1:
        raise ValueError(
            f"latency_warmup and latency_repeats must be >= 1, got {latency_warmup} and "
            f"{latency_repeats}: the first call of each format allocates and must not be timed."
        )


def _write_files(model, work, formats, input_shape, temperature, task, representative):
    """Writes every format into `work`; returns `{format: path}` of those asked for."""
    saved_model = os.path.join(work, FILENAMES["saved_model"])
    # The TFLite files are converted from the SavedModel, so it is written even when not asked for.
    serving.write_saved_model(model, saved_model, input_shape, temperature, task)
    written = {"saved_model": saved_model} if "saved_model" in formats else {}
    for fmt in formats:
        if fmt == "saved_model":
            continue
        path = os.path.join(work, FILENAMES[fmt])
        if fmt == "onnx":
            content = onnx_lib.convert(model, input_shape, temperature, task)
        else:
            content = tflite.convert(saved_model, fmt, representative)
        with open(path, "wb") as f:
            f.write(content)
        written[fmt] = path
    return written


def _write_tables(out_dir, table, source_path):
    write_text_atomic(os.path.join(out_dir, TABLE_JSON), json.dumps(table.to_dict(), indent=2) + "\n")
    write_text_atomic(os.path.join(out_dir, TABLE_MD), table.to_markdown())
    stored = calibration_lib.load_calibration(source_path) if source_path else None
    path = os.path.join(out_dir, CALIBRATION)
    if stored is not None:
        # The calibration file travels with the files, as it travels with the .keras model.
        write_text_atomic(path, json.dumps(stored, indent=2) + "\n")
    elif os.path.exists(path):
        os.remove(path)  # a previous export's temperature would not be the one these files apply


def export_experiment(config, model_path=None, runs_dir="runs", formats=DEFAULT_FORMATS, out_dir=None,
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
        kdkeras.workflow.training.MissingArtifactError: the model file does not exist.
    """
    from kdkeras.workflow import training

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
    note = serving.resolve_calibration(model_path)["note"]
    if note:
        log(f"[export] {note}")
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
        dataset_info=info,
    )
    log(f"[export] wrote {os.path.join(out_dir, TABLE_MD)} and the bundle: {', '.join(bundle.BUNDLE_FILES)}")
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
    from kdkeras.distillation.distiller import Distiller

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
    from kdkeras.workflow.training import save_deployable

    path = os.path.join(work, "model.keras")
    save_deployable(model, path)
    return profiling.file_size_bytes(path)


class _Measure:
    """Scores the Keras model and each exported file alike: size, latency, test metrics."""

    def __init__(self, test, task, class_names, input_shape, num_threads, warmup, repeats):
        self.test, self.task, self.class_names = test, task, class_names
        self.input_shape, self.num_threads = input_shape, num_threads
        self.warmup, self.repeats = warmup, repeats
        self.reference = None

    def keras_row(self, model, source_path, size, temperature):
        """The Keras model's row; its calibrated probabilities are every file's reference."""
        ms = profiling.measure_latency(model, self.input_shape, (1,), self.warmup, self.repeats)[1]["ms_per_image"]
        logits = self._forward(lambda x: model(x, training=False))
        self.reference = None if logits is None else metrics_lib.logits_to_scores(logits / temperature, self.task)
        return self._row("keras", source_path, size, ms, self.reference)

    def file_row(self, fmt, path):
        """The row of one exported file, which returns probabilities."""
        if fmt == "saved_model":
            runner = serving.SavedModelRunner(path)
            ms = profiling.measure_latency(runner, self.input_shape, (1,), self.warmup, self.repeats)[1]["ms_per_image"]
        else:
            if fmt == "onnx":
                runner = onnx_lib.ONNXModel(path, num_threads=self.num_threads)
            else:
                runner = tflite.TFLiteModel(path, num_threads=self.num_threads)
            image = np.random.default_rng(0).uniform(0.0, 255.0, size=(1, *self.input_shape)).astype(np.float32)
            ms = 1000.0 * profiling.median_seconds(lambda: runner(image), self.warmup, self.repeats)
        probabilities = self._forward(runner)
        scores = None if probabilities is None else _two_columns(probabilities, self.task)
        return self._row(fmt, FILENAMES[fmt], profiling.file_size_bytes(path), ms, scores)

    def _forward(self, forward, batch_size=128):
        if self.test is None:
            return None
        images = self.test[0]
        return np.concatenate([np.asarray(forward(images[i:i + batch_size]), dtype=np.float64)
                               for i in range(0, len(images), batch_size)])

    def _row(self, fmt, path, size, ms, scores):
        row = {"format": fmt, "path": path, "size_bytes": int(size), "ms_per_image": float(ms)}
        if self.test is None:
            return {**row, **dict.fromkeys((*METRIC_COLUMNS, "agreement", "max_abs_diff"))}
        result = metrics_lib.classification_metrics(self.test[1], scores, self.task, self.class_names)
        row.update({key: result[key] for key in METRIC_COLUMNS})
        row["agreement"] = float(np.mean(_decisions(scores, self.task) == _decisions(self.reference, self.task)))
        # The largest probability difference from the Keras model over the whole test split.
        row["max_abs_diff"] = float(np.max(np.abs(scores - self.reference)))
        return row


def _two_columns(probabilities, task):
    """A one-logit binary model's `p` as the `[1 - p, p]` that `logits_to_scores` gives."""
    if task != "multi-label" and probabilities.shape[1] == 1:
        return np.concatenate([1.0 - probabilities, probabilities], axis=1)
    return probabilities


def _decisions(scores, task):
    if task == "multi-label":
        return scores > 0.5
    return np.argmax(scores, axis=-1)


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


