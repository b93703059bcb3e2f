"""Where a model looks: Grad-CAM maps and teacher-student map agreement.

Grad-CAM (Selvaraju et al., ICCV 2017) weighs the channels of a
convolutional feature map by the spatially averaged gradient of a class's
logit and keeps the positive part: `ReLU(sum_k mean_ij(d y_c / d A_k) A_k)`.
The map is upsampled to the input size and scaled to [0, 1] per image.

Every zoo model is a flat functional model, so the feature map of any layer
is reachable; by default the last layer with a spatial (rank-4) output is
used, the layer the original paper recommends: the deepest one that still
has a spatial layout. Maps are computed in float32 from whatever the model
computes in, so mixed-precision models work too.

`gradcam_agreement` compares a reference model's maps (the teacher's) with
other models' maps over a whole split, streamed a batch at a time: one
gradient tape per model and batch, per-image Pearson correlations, and a
seeded bootstrap interval of their mean over images. The overlays and grids
are drawn by `kdkeras.reporting.figures_clinical`.
"""

import keras
import numpy as np
import tensorflow as tf

from kdkeras import stats
from kdkeras.data import transforms
from kdkeras.models.preprocessing import InputPreprocessing

# Layers whose 4-D output is the (scaled) image, not a feature map, or (dropout)
# the previous layer's map unchanged at inference.
_NOT_FEATURES = (keras.layers.InputLayer, InputPreprocessing, keras.layers.Dropout)


def find_gradcam_layer(model):
    """The name of the last layer of `model` with a spatial `(B, H, W, C)` output.

    Raises:
        ValueError: For a model without such a layer (no convolutions), or a
            subclassed model whose layers have no symbolic outputs.
    """
    _check_functional(model)
    candidates = [layer.name for layer in model.layers if _is_spatial(layer)]
    if not candidates:
        raise ValueError(
            f"Model {model.name!r} has no layer with a spatial (batch, height, width, channels) "
            "output, so Grad-CAM has no feature map to weigh; it needs a convolutional model."
        )
    return candidates[-1]


def gradcam(model, images, class_index=None, layer=None, batch_size=32):
    """Grad-CAM maps of `model` on `images`, at input resolution, in [0, 1].

    Args:
        model: A functional Keras model that outputs logits `(B, C)`.
        images: float array `(N, H, W, C)` as the model reads it (pixels in
            [0, 255] for zoo models).
        class_index: The class whose evidence is mapped: None (each image's
            top logit), an int (the same class for all), or ints `(N,)`.
        layer: Name of the feature layer; default `find_gradcam_layer(model)`.
        batch_size: Images per gradient computation.

    Returns:
        float32 array `(N, H, W)` with values in [0, 1]; each map is divided by
        its maximum, and a map with no positive evidence is all zeros.

    Example:

    ```python
    maps = gradcam(student, x_test[:16], class_index=y_test[:16])
    ```
    """
    probe = _probe(model, layer)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}.")
    targets = _class_indices(class_index, len(images))
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        chosen = None if targets is None else targets[start:start + batch_size]
        maps.append(_gradcam_batch(probe, batch, chosen).numpy())
    return np.concatenate(maps) if maps else np.zeros((0,) + images.shape[1:3], np.float32)


def _probe(model, layer=None):
    """A model returning `(feature map of layer, logits)`, for `_gradcam_batch`."""
    _check_functional(model)
    layer = layer or find_gradcam_layer(model)
    try:
        features = model.get_layer(layer).output
    except ValueError:
        names = ", ".join(repr(candidate.name) for candidate in model.layers[-8:])
        raise ValueError(
            f"Model {model.name!r} has no layer {layer!r}; name one of its layers (the last ones: "
            f"{names}) or leave the layer out to use the last spatial one."
        ) from None
    if len(features.shape) != 4:
        raise ValueError(
            f"Layer {layer!r} of {model.name!r} outputs shape {tuple(features.shape)}; Grad-CAM needs "
            "a spatial (batch, height, width, channels) feature map."
        )
    return keras.Model(model.inputs, [features, model.outputs[0]])


def _gradcam_batch(probe, images, chosen):
    # Each model reads its own view (its size and channels); its map is resized back to the
    # batch's size, so a 16-px student's map and a 28-px teacher's compare pixel by pixel.
    with tf.GradientTape() as tape:
        features, logits = probe(transforms.for_model(images, probe), training=False)
        tape.watch(features)
        logits = tf.cast(logits, tf.float32)
        index = tf.argmax(logits, axis=1, output_type=tf.int32) if chosen is None else tf.constant(chosen, tf.int32)
        score = tf.gather(logits, index, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


def map_correlations(maps_a, maps_b):
    """Per-image Pearson correlation between two sets of maps.

    Args:
        maps_a: float array `(N, H, W)`, e.g. the teacher's Grad-CAM maps.
        maps_b: float array `(N, H, W)` of the same images, e.g. the student's.

    Returns:
        float64 array `(N,)` in [-1, 1]; NaN where either map is constant (no
        evidence, or uniform), which has no correlation.
    """
    a = np.asarray(maps_a, dtype=np.float64)
    b = np.asarray(maps_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must both be (N, H, W) of the same shape, got {a.shape} and {b.shape}.")
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(axis=1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    valid = norms > 1e-12
    r = np.full(len(a), np.nan)
    r[valid] = np.sum(a[valid] * b[valid], axis=1) / norms[valid]
    return r


def map_agreement(maps_a, maps_b, n_resamples=stats.DEFAULT_RESAMPLES,
                  confidence=stats.DEFAULT_CONFIDENCE, seed=0):
    """Mean per-image Pearson correlation between two sets of maps, with its interval.

    Images where either map is constant have no correlation and are left out
    of the mean (and counted in `excluded`).

    Args:
        maps_a: float array `(N, H, W)`, e.g. the teacher's Grad-CAM maps.
        maps_b: float array `(N, H, W)` of the same images, e.g. the student's.
        n_resamples: Bootstrap resamples of the interval.
        confidence: Coverage of the interval.
        seed: Seed of the resamples.

    Returns:
        See `summarize_correlations`.
    """
    return summarize_correlations(map_correlations(maps_a, maps_b), n_resamples, confidence, seed)


def summarize_correlations(correlations, n_resamples=stats.DEFAULT_RESAMPLES,
                           confidence=stats.DEFAULT_CONFIDENCE, seed=0):
    """The mean of per-image correlations and its bootstrap interval over images.

    The interval is the percentile interval of the mean over resamples of the
    images (`kdkeras.stats.stratified_resample_counts` with one stratum), as
    the report's other intervals.

    Args:
        correlations: float array `(N,)`, NaN for images without a correlation.
        n_resamples: Bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resamples.

    Returns:
        `{"pearson": mean in [-1, 1] or None, "interval": {"low", "high",
        "confidence", "resamples"} or None (fewer than 2 images), "n": images
        counted, "excluded": images left out for a constant map}`.
    """
    r = np.asarray(correlations, dtype=np.float64).reshape(-1)
    valid = r[np.isfinite(r)]
    result = {"pearson": None, "interval": None, "n": int(valid.size), "excluded": int(r.size - valid.size)}
    if not valid.size:
        return result
    result["pearson"] = float(np.mean(valid))
    if valid.size > 1:
        counts = stats.stratified_resample_counts(np.zeros(valid.size), n_resamples, seed)
        means = counts @ valid / valid.size
        tail = 100.0 * (1.0 - confidence) / 2.0
        low, high = np.percentile(means, [tail, 100.0 - tail])
        result["interval"] = {"low": float(low), "high": float(high), "confidence": confidence,
                              "resamples": int(n_resamples)}
    return result


def gradcam_agreement(reference, models, batches, layers=None, n_resamples=stats.DEFAULT_RESAMPLES,
                      confidence=stats.DEFAULT_CONFIDENCE, seed=0):
    """Grad-CAM agreement of each model with a reference model over a whole split.

    The maps are those of each image's true class (single-label tasks). The
    split is streamed: each batch gets one gradient tape per model, and only
    the per-image correlations are kept, so a split of any size fits in memory.

    Args:
        reference: The reference model (the teacher), functional, emitting logits.
        models: `{name: keras.Model}` compared with `reference`.
        batches: Iterable of `(images, labels)` batches (a `tf.data.Dataset`
            of the test split, for example); labels are class indices `(B,)`
            or `(B, 1)`.
        layers: Optional `{name: feature layer}`; the key `None` names the
            reference's layer. Default: the last spatial layer of each model.
        n_resamples: Bootstrap resamples of the intervals.
        confidence: Coverage of the intervals.
        seed: Seed of the resamples.

    Returns:
        `{name: summary}`, each as `summarize_correlations` returns it plus
        `"images"`, the number of images of the split.

    Example:

    ```python
    _, _, test, _ = kdkeras.workflow.training.load_data(config)
    gradcam_agreement(teacher, {"distilled": distilled}, test)["distilled"]["pearson"]
    ```
    """
    layers = layers or {}
    reference_probe = _probe(reference, layers.get(None))
    probes = {name: _probe(model, layers.get(name)) for name, model in models.items()}
    correlations = {name: [] for name in probes}
    for images, labels, *_ in batches:
        images = tf.cast(images, tf.float32)
        targets = np.asarray(labels).reshape(len(images), -1)
        if targets.shape[1] != 1:
            raise ValueError(
                f"gradcam_agreement maps each image's true class, so it needs one class index per "
                f"image; got labels of shape {np.shape(labels)} (a multi-label task has no single class)."
            )
        targets = targets[:, 0].astype(np.int32)
        reference_maps = _gradcam_batch(reference_probe, images, targets).numpy()
        for name, probe in probes.items():
            maps = _gradcam_batch(probe, images, targets).numpy()
            correlations[name].append(map_correlations(reference_maps, maps))
    result = {}
    for name, parts in correlations.items():
        r = np.concatenate(parts) if parts else np.zeros(0)
        result[name] = {**summarize_correlations(r, n_resamples, confidence, seed), "images": int(r.size)}
    return result


def _class_indices(class_index, n):
    if class_index is None:
        return None
    if np.ndim(class_index) == 0:
        return np.full(n, int(class_index), dtype=np.int32)
    indices = np.asarray(class_index).reshape(-1).astype(np.int32)
    if len(indices) != n:
        raise ValueError(f"class_index has {len(indices)} entries for {n} images; give one per image.")
    return indices


def _check_functional(model):
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            f"Grad-CAM reads intermediate layers, which needs a functional keras.Model (built with "
            f"keras.Model(inputs, outputs)); {model.name!r} is subclassed or not built."
        )


def _is_spatial(layer):
    if isinstance(layer, _NOT_FEATURES):
        return False
    output = getattr(layer, "output", None)
    return output is not None and not isinstance(output, (list, tuple)) and len(output.shape) == 4
