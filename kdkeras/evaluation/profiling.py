"""What a model costs to ship and to run: parameters, bytes on disk, CPU latency."""

import os
import statistics
import time

import numpy as np
import tensorflow as tf


def count_params(model):
    """Total number of weights of a built Keras model.

    Non-trainable weights (e.g. BatchNorm moving statistics) are included: they
    ship with the model, and the published parameter counts we compare against
    (VGG16's 27 M, DSNet's 268,898) include them.

    Args:
        model: A built `keras.Model`.

    Returns:
        int.

    Raises:
        ValueError: If the model has not been built yet.

    Example:

    ```python
    count_params(keras.applications.VGG16(weights=None))  # 138357544
    ```
    """
    _check_built(model)
    return _weight_count(model.weights)


def file_size_bytes(path):
    """Size on disk of a saved model: a `.keras` file or a SavedModel folder.

    The file is measured as saved. A compiled model saved by Keras 3 carries
    its optimizer state: Adam stores two extra values per weight, and the
    5,954-parameter quickstart student takes 118 kB compiled against 62 kB
    uncompiled. Save the deployable copy from an uncompiled model (or measure
    `model.export` / `save_weights` output) to report what ships.

    Args:
        path: A file, or a folder whose files (recursively) are summed.

    Returns:
        int, bytes.

    Raises:
        FileNotFoundError: If `path` does not exist.

    Example:

    ```python
    model.save("runs/quickstart/student.keras")
    file_size_bytes("runs/quickstart/student.keras")
    ```
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.getsize(path)
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(folder, name))
            for folder, _, names in os.walk(path)
            for name in names
        )
    raise FileNotFoundError(
        f"Saved model {path!r} not found: save the model there first "
        "(`model.save(path)` for .keras, `model.export(path)` for a SavedModel)."
    )


def measure_latency(model, input_shape, batch_sizes=(1, 32), warmup=3, repeats=20):
    """Median CPU inference time of a model, per batch and per image.

    The model runs as a `tf.function` of `model(x, training=False)` on
    `/CPU:0`, fed random float32 images in [0, 255] (the package's image
    convention). For each batch size, `warmup` untimed calls (the first one
    traces the graph) precede `repeats` timed calls; each timed call includes
    copying the output to host memory, so it is finished when the clock stops.
    The median is reported because it ignores the occasional call slowed by
    other processes. Times depend on the TensorFlow thread settings
    (`tf.config.threading`) and on the machine's load: compare numbers measured
    together.

    Args:
        model: A Keras model (or any callable taking `training=`).
        input_shape: Shape of one input image without the batch axis, e.g.
            `(28, 28, 1)`.
        batch_sizes: Batch sizes to time.
        warmup: Untimed calls per batch size, at least 1 so that tracing is
            never timed.
        repeats: Timed calls per batch size.

    Returns:
        `{batch_size: {"ms_per_image": float, "ms_per_batch": float,
        "images_per_s": float}}` with int keys (they become strings in JSON).

    Example:

    ```python
    measure_latency(student, (28, 28, 1))[1]["ms_per_image"]
    ```
    """
    input_shape = _check_shape(input_shape, "input_shape")
    batch_sizes = _check_shape(batch_sizes, "batch_sizes")
    if int(warmup) < 1 or int(repeats) < 1:
        raise ValueError(
            f"`warmup` and `repeats` must be >= 1, got {warmup} and {repeats}: the first "
            "call traces the graph and must not be timed."
        )
    with tf.device("/CPU:0"):
        forward = tf.function(lambda x: model(x, training=False))
        rng = np.random.default_rng(0)
        latency = {}
        for batch_size in batch_sizes:
            images = tf.constant(
                rng.uniform(0.0, 255.0, size=(batch_size, *input_shape)).astype(np.float32)
            )
            latency[batch_size] = _timing(median_seconds(lambda: _run(forward, images), warmup, repeats), batch_size)
    return latency


def _timing(seconds, batch_size):
    """One batch size's entry of a `measure_latency` result, from the seconds one call took."""
    return {"ms_per_image": 1000.0 * seconds / batch_size, "ms_per_batch": 1000.0 * seconds,
            "images_per_s": batch_size / seconds}


def measure_latencies(models, batch_sizes=(1, 32), rounds=3, warmup=3, repeats=20):
    """`measure_latency` of several models measured together, in interleaved rounds.

    Each round times every model in turn, and each model keeps the median over rounds: load
    from other processes, or a machine that slows down, then falls on every model alike, so the
    numbers compare where times measured at different moments (each model's at the end of its
    own training) do not.

    Args:
        models: `{name: keras.Model}`; each model's input shape is read from the model.
        batch_sizes: Batch sizes to time.
        rounds: Rounds over all models, at least 1.
        warmup: Untimed calls per model and batch size in the first round; later rounds
            make one, which traces the graph anew.
        repeats: Timed calls per model, batch size and round.

    Returns:
        `{name: latency}`, each as `measure_latency` returns it.

    Example:

    ```python
    measure_latencies({"student": student, "distilled": distilled})["distilled"][1]["ms_per_image"]
    ```
    """
    if int(rounds) < 1:
        raise ValueError(f"`rounds` must be >= 1, got {rounds}.")
    per_round = {name: [] for name in models}
    for index in range(int(rounds)):
        for name, model in models.items():
            per_round[name].append(measure_latency(model, tuple(model.input_shape[1:]), batch_sizes,
                                                   warmup if index == 0 else 1, repeats))
    return {
        name: {batch_size: _timing(statistics.median(t[batch_size]["ms_per_batch"] for t in timings) / 1000.0,
                                   batch_size) for batch_size in timings[0]}
        for name, timings in per_round.items()
    }


def describe_model(model, path=None, input_shape=None, **latency_kwargs):
    """Size and speed of a model, as stored in each model's `metrics.json`.

    Args:
        model: A built Keras model.
        path: Optional saved copy of the model (`.keras` file or SavedModel
            folder) whose size on disk is reported.
        input_shape: Shape of one input without the batch axis; defaults to the
            model's own input shape (functional and Sequential models know it).
        **latency_kwargs: Passed to `measure_latency` (`batch_sizes`, `warmup`,
            `repeats`).

    Returns:
        A dict with `params`, `trainable_params`, `non_trainable_params`,
        `size_bytes` (None without `path`) and `latency` (see `measure_latency`).

    Raises:
        ValueError: If the model is not built, or if `input_shape` is not given
            and the model does not declare a fully defined one.

    Example:

    ```python
    info = describe_model(student, "runs/quickstart/student.keras")
    info["params"], info["latency"][1]["ms_per_image"]
    ```
    """
    params = count_params(model)
    trainable = _weight_count(model.trainable_weights)
    if input_shape is None:
        input_shape = _declared_input_shape(model)
    return {
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "size_bytes": None if path is None else file_size_bytes(path),
        "latency": measure_latency(model, input_shape, **latency_kwargs),
    }


def median_seconds(call, warmup, repeats):
    """Median wall time of `call()` over `repeats` calls, after `warmup` untimed ones.

    `call` must return only when its work is done (copy results to the host).
    The one timing loop of kdkeras: `measure_latency` and the TFLite rows of
    `kdkeras.export` both use it.
    """
    for _ in range(int(warmup)):
        call()
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _run(forward, images):
    for tensor in tf.nest.flatten(forward(images)):
        tensor.numpy()


def _weight_count(weights):
    return int(sum(np.prod(weight.shape, dtype=np.int64) for weight in weights))


def _check_built(model):
    if not getattr(model, "built", False):
        raise ValueError(
            f"Model {getattr(model, 'name', model)!r} is not built, so it has no weights "
            "yet: call it on a batch or `model.build(input_shape)` first."
        )


def _declared_input_shape(model):
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        shape = None
    if not isinstance(shape, tuple) or None in shape[1:]:
        raise ValueError(
            f"Cannot infer the input shape of model {model.name!r} (got {shape!r}); "
            "pass `input_shape`, e.g. input_shape=(28, 28, 1)."
        )
    return shape[1:]


def _check_shape(values, name):
    values = tuple(values)
    if not values or not all(isinstance(v, (int, np.integer)) and v > 0 for v in values):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive ints, got {values}.")
    return tuple(int(v) for v in values)
