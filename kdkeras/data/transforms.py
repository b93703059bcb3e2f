"""Transforms shared by every loader: size, channels, augmentation, pipeline finishing.

Pipelines keep images as uint8 from decoding to `cache()` (a quarter of the
memory of float32) and cast them to float32 in [0, 255] per batch, after
which train batches are augmented. Loaders assemble them with `finalize`.
"""

import glob
import os

import keras
import numpy as np
import tensorflow as tf

from kdkeras import files
from kdkeras.data.augment import BatchAugmentation, augmentation
from kdkeras.data.errors import DataError
from kdkeras.registry import CHECKS

AUTOTUNE = tf.data.AUTOTUNE

# File caches are not shared with the shuffle buffer, so bound the buffer there.
_FILE_CACHE_SHUFFLE_BUFFER = 8192

# Luminance weights of ITU-R BT.601, as `tf.image.rgb_to_grayscale` and PIL use.
_LUMA = (0.2989, 0.5870, 0.1140)
# Larger images are refused before a pipeline exists: 100,000 px would only
# fail, out of memory, a minute into the first epoch.
MAX_IMAGE_SIZE = 8192



@CHECKS.register("image_size")
def image_size_tuple(image_size):
    """Normalizes an `image_size` argument to `(height, width)` or None.

    Args:
        image_size: None, an int (square) or a pair of ints.

    Returns:
        None or a tuple of two positive ints.
    """
    if image_size is None:
        return None
    # A string or float is refused, not converted: tuple("32") would be (3, 2).
    pair = image_size if isinstance(image_size, (list, tuple)) else (image_size, image_size)
    if len(pair) != 2 or not all(_is_whole(s) and s >= 1 for s in pair):
        raise DataError(
            f"image_size must be a positive int or a (height, width) pair of ints, got {image_size!r}"
        )
    size = tuple(int(s) for s in pair)
    if max(size) > MAX_IMAGE_SIZE:
        raise DataError(
            f"image_size = {image_size!r} is over {MAX_IMAGE_SIZE} px, which would not fit in memory "
            f"(a batch of 64 RGB images of {max(size)} px holds {64 * 3 * 4 * max(size) ** 2 / 1e9:.0f} GB "
            "of float32). Pick the size the model takes, e.g. 28, 224 or 512."
        )
    return size


def _is_whole(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def resize(images, size):
    """Resizes images to `size` with antialiased bilinear interpolation.

    Antialiasing matters here: X-rays and dermoscopy photos are downscaled by
    10-100x, and plain bilinear sampling would alias fine texture.
    The aspect ratio is not kept (like `flow_from_directory(target_size=...)`).

    Args:
        images: Tensor `(H, W, C)` or `(B, H, W, C)`, values in [0, 255].
        size: `(height, width)` or an int.

    Returns:
        float32 tensor of the new size, clipped to [0, 255].

    Example:

    >>> resize(tf.zeros((300, 400, 1)), 28).shape
    TensorShape([28, 28, 1])
    """
    height, width = image_size_tuple(size)
    rank = len(images.shape)
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)

    def by_matrices():
        return _resample_axis(_resample_axis(images, rank - 3, height), rank - 2, width)

    # TensorFlow's kernel costs about as much as decoding the DCT-scaled JPEG it
    # resizes; two matrix products cost half, as long as each axis shrinks at most 2x.
    dense = tf.logical_and(shape[rank - 3] <= 2 * height, shape[rank - 2] <= 2 * width)
    images = tf.cond(
        dense, by_matrices, lambda: tf.image.resize(images, (height, width), antialias=True)
    )
    return tf.clip_by_value(images, 0.0, 255.0)


def _resample_axis(images, axis, size):
    """Resamples one axis with the filter of `tf.image.resize(antialias=True)`, by a matrix product.

    The triangle filter of `ScaleAndTranslate`: half-pixel centers, a kernel
    `1 / s` input pixels wide when shrinking by `s`, weights normalised at
    the borders.
    """
    length = tf.shape(images)[axis]
    scale = tf.cast(size, tf.float32) / tf.cast(length, tf.float32)
    support = tf.maximum(1.0 / scale, 1.0)
    taps = 2 * tf.cast(tf.math.ceil(support), tf.int32) + 1
    centers = (tf.range(size, dtype=tf.float32) + 0.5) / scale
    first = tf.cast(tf.math.ceil(centers - support - 0.5), tf.int32)
    sources = first[:, None] + tf.range(taps)[None, :]
    distance = tf.abs(tf.cast(sources, tf.float32) + 0.5 - centers[:, None]) / support
    inside = tf.logical_and(sources >= 0, sources < length)
    weights = tf.where(inside, tf.maximum(1.0 - distance, 0.0), 0.0)
    weights /= tf.reduce_sum(weights, axis=1, keepdims=True)
    # A dense (size, length) matrix: one matrix product runs faster than gathering taps.
    matrix = tf.reduce_sum(
        tf.one_hot(tf.clip_by_value(sources, 0, length - 1), length) * weights[..., None], axis=1
    )
    if axis == len(images.shape) - 3:
        return tf.einsum("oh,...hwc->...owc", matrix, images)
    return tf.einsum("ow,...hwc->...hoc", matrix, images)


def to_channels(images, channels):
    """Converts images to 1 or 3 channels.

    Gray becomes RGB by repetition, RGB becomes gray by BT.601 luminance, an
    alpha channel (gray+alpha, RGBA) is dropped. The input's channel count
    must be static.

    Args:
        images: Tensor `(..., H, W, C)` with C in 1, 2, 3 or 4.
        channels: 1 or 3.

    Returns:
        Tensor `(..., H, W, channels)`: float32 after a luminance conversion,
        else of the input's dtype.

    Example:

    >>> to_channels(tf.zeros((28, 28, 1)), 3).shape
    TensorShape([28, 28, 3])
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    source = images.shape[-1]
    if source not in (1, 2, 3, 4):
        raise ValueError(f"images must have 1 to 4 channels, got shape {images.shape}")
    if source == channels:
        return images
    if source in (1, 2):
        gray = images[..., :1]
        return gray if channels == 1 else tf.repeat(gray, 3, axis=-1)
    rgb = images[..., :3]
    if channels == 3:
        return rgb
    return tf.reduce_sum(tf.cast(rgb, tf.float32) * tf.constant(_LUMA), axis=-1, keepdims=True)


def to_input_shape(images, input_shape):
    """A batch of images as a model of `input_shape` reads it: its own size and channels.

    Teacher and student may read different views of one decoded batch (a
    224-px RGB teacher and a 64-px gray student): each gets the batch resized
    with `resize` (antialiased when shrinking) and converted with
    `to_channels`. A view the batch already has is returned unchanged, so a
    model of the data's shape pays nothing.

    Args:
        images: Tensor `(batch, height, width, channels)`, values in [0, 255].
        input_shape: `(height, width, channels)` of the model; a None
            dimension takes whatever the batch has.

    Returns:
        The images at the model's size and channels.
    """
    height, width, channels = input_shape
    if (height, width) != (None, None) and tuple(images.shape[1:3]) != (height, width):
        images = resize(images, (height or images.shape[1], width or images.shape[2]))
    if channels is not None and images.shape[-1] != channels:
        images = to_channels(images, channels)
    return images


@keras.saving.register_keras_serializable(package="kdkeras")
class InputView(keras.layers.Layer):
    """`to_input_shape` as a layer: puts a model that reads its own view behind the data's shape.

    Args:
        target_shape: `(height, width, channels)` the wrapped model reads.
        **kwargs: Base layer arguments (`name`, `dtype`).
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(target_shape)

    def call(self, images):
        return to_input_shape(images, self.target_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(t or s for t, s in zip(self.target_shape, input_shape[1:])))

    def get_config(self):
        config = super().get_config()
        config["target_shape"] = list(self.target_shape)
        return config


def with_view(model, data_shape, augment=None):
    """A model fed at `data_shape` that augments (in training), then runs `model` on its own view.

    Fit the returned model and save `model` itself: the deployable model reads
    images at its own size, never at the data's.

    Args:
        model: A built `keras.Model` with one image input.
        data_shape: `(height, width, channels)` of the batches.
        augment: An augmentation layer, or None.

    Returns:
        A functional `keras.Model` sharing `model`'s weights.
    """
    inputs = keras.Input(tuple(data_shape), name="images")
    x = augment(inputs) if augment is not None else inputs
    x = InputView(model.input_shape[1:], name="input_view")(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_view")


def for_model(images, model):
    """`images` as `model` reads them: `to_input_shape` at the model's declared input shape.

    Only batches of images `(batch, height, width, channels)` for a model with one such input
    are viewed; anything else (vectors, several inputs) is passed on as it is.
    """
    shape = getattr(model, "input_shape", None)  # a subclassed model may declare none
    if not isinstance(shape, tuple) or len(shape) != 4 or len(getattr(images, "shape", ())) != 4:
        return images
    return to_input_shape(images, tuple(shape[1:]))


def to_uint8(images):
    """Rounds float images in [0, 255] to uint8 (the cached representation)."""
    images = tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0))
    return tf.cast(images, tf.uint8)


def subset_indices(n, limit, seed=0):
    """Indices of at most `limit` of `n` examples, seeded and in their original order.

    Taking the first `limit` files would give a one-class smoke run on sorted
    folders; a seeded sample keeps the class mix and stays reproducible.

    Args:
        n: Number of examples.
        limit: None (all) or the maximum number to keep.
        seed: Seed of the sample.

    Returns:
        Sorted int64 numpy array of indices.
    """
    if limit is not None and not (_is_whole(limit) and limit >= 1):
        raise DataError(f"limit must be a positive int or None, got {limit!r}")
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:limit])


def split_cache(cache, split):
    """The `cache` argument of one split: a file prefix gets a `-{split}` suffix.

    Splits must never share a cache file, and TensorFlow does not check that a
    file cache matches the pipeline that reads it: use one prefix per dataset
    and set of arguments, and delete the files when either changes.

    Args:
        cache: True, False or a file path prefix.
        split: `"train"`, `"val"` or `"test"`.

    Returns:
        `cache` itself if it is a bool, else `"{cache}-{split}"`.
    """
    if isinstance(cache, bool):
        return cache
    return f"{os.fspath(cache)}-{split}"


def claim_file_cache(prefix):
    """Makes a TensorFlow file cache usable again after the run filling it was killed.

    While `Dataset.cache(prefix)` fills its files it holds `<prefix>_<n>.lockfile`,
    removed when the cache is complete. A killed process leaves the lockfile
    behind, and every later run would stop in its first epoch with
    `AlreadyExistsError`. The process that builds a pipeline on the cache
    records its id in `<prefix>.owner`; a lockfile whose recorded owner is no
    longer running is removed (the cache is then rebuilt), any other one
    raises before training.

    Args:
        prefix: The file path prefix given to `Dataset.cache`.

    Raises:
        DataError: If the cache is being filled by a running process, or a
            lockfile has no recorded owner.
    """
    prefix = os.fspath(prefix)
    owner_path = f"{prefix}.owner"
    locks = glob.glob(f"{glob.escape(prefix)}_*.lockfile")
    try:
        with open(owner_path, encoding="utf-8") as f:
            owner = int(f.read().strip())
    except (OSError, ValueError):
        owner = None
    if locks and owner is None:
        raise DataError(
            f"{locks[0]} exists: a run filling the cache {prefix} was killed, or another process "
            "is filling it now. If no other run uses this cache, delete the lockfile (the cache "
            "is then rebuilt); otherwise give this run another cache prefix."
        )
    if locks and owner != os.getpid():
        if files.process_alive(owner):
            raise DataError(
                f"The cache {prefix} is being filled by process {owner}: wait for it to finish, "
                "or give this run another cache prefix."
            )
        for stale in locks + glob.glob(f"{glob.escape(prefix)}_*.tempstate*"):
            os.remove(stale)
    files.write_text_atomic(owner_path, str(os.getpid()))


def finalize(
    ds,
    *,
    batch_size,
    training=False,
    shuffle=True,
    seed=0,
    cache=True,
    augment=None,
    decode=None,
    num_examples=None,
    channels=None,
):
    """Turns a dataset of examples into the batched pipeline a model reads.

    Order: (shuffle raw examples, when not caching) -> parallel `decode` ->
    `cache` of uint8 images -> seeded shuffle, new order each epoch -> batch
    -> augmentation -> float32 -> `prefetch(AUTOTUNE)`. Shuffling and
    augmentation happen only when `training`; evaluation splits keep their
    order.

    A preset augmentation draws each batch's randomness from a stateless
    seed of `Dataset.random(seed)`, new every epoch, so batches are augmented
    in parallel and a seed reproduces every epoch. A list of Keras layers
    advances its layers' seed variables, so its batches are augmented in turn.

    Args:
        ds: Dataset of unbatched examples whose last component is the label.
        batch_size: Batch size.
        training: Whether this is the train split.
        shuffle: Shuffle the train split (ignored unless `training`).
        seed: Seed of the shuffle and of preset augmentations.
        cache: True (in memory), False, or a file path for `Dataset.cache`
            (see `split_cache`; a killed run's lockfile is cleared by
            `claim_file_cache`). Either holds uint8 images, a quarter of
            float32; a file cache prints its size on disk.
        augment: None, a preset name, or a list of Keras layers (train only).
        decode: Optional function mapping an example to a uint8 image
            `(H, W, C)` and its label, run in parallel before the cache.
        num_examples: Size of `ds`; defaults to its cardinality.
        channels: If 3 and the examples are gray, they are repeated to 3
            channels per batch, after the cache and a preset augmentation,
            which thus work on a third of the data.

    Returns:
        A `tf.data.Dataset` of `(float32 images (B, H, W, C) in [0, 255], labels)`.
    """
    if batch_size is None or int(batch_size) < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_examples is None:
        num_examples = int(ds.cardinality())
    buffer = max(1, num_examples)
    shuffled = training and shuffle
    if shuffled and not cache:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if decode is not None:
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
    if cache is not True and cache:
        claim_file_cache(cache)
        _print_file_cache(cache, ds.element_spec[0], num_examples)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
        if shuffled:
            if cache is not True:
                buffer = min(buffer, _FILE_CACHE_SHUFFLE_BUFFER)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    aug = augmentation(augment, seed=seed) if (training and augment is not None) else None
    return _augmented_floats(ds, aug, seed, channels).prefetch(AUTOTUNE)


def _augmented_floats(ds, aug, seed, channels):
    """Batches of uint8 images as float32 in [0, 255], augmented by `aug` (None, a preset or layers)."""

    def to_float(images, labels):
        images = tf.cast(images, tf.float32)
        if channels == 3 and images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        return images, labels

    if isinstance(aug, BatchAugmentation):
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def augment_batch(batch, batch_seed):
            images, labels = batch
            images = aug.augment(images, tf.stack([batch_seed, tf.constant(seed, tf.int64)]))
            return to_float(images, labels)

        ds = tf.data.Dataset.zip(ds, batch_seeds).map(augment_batch, num_parallel_calls=AUTOTUNE)
    elif aug is not None:
        # Keras random layers advance one seed variable per call: mapping batches in
        # order is what makes a seed reproduce the same augmented epoch.
        def augment_in_turn(images, labels):
            images, labels = to_float(images, labels)
            return tf.cast(aug(images, training=True), tf.float32), labels

        ds = ds.map(augment_in_turn)
    else:
        ds = ds.map(to_float, num_parallel_calls=AUTOTUNE)
    return ds


def _print_file_cache(prefix, image_spec, num_examples):
    prefix = os.fspath(prefix)
    existing = [
        path for path in glob.glob(f"{glob.escape(prefix)}.*") if not path.endswith(".owner")
    ]
    if os.path.exists(f"{prefix}.index"):
        size = sum(os.path.getsize(path) for path in existing)
        print(f"Reading the image cache {prefix}: {num_examples:,} images, {_megabytes(size)} on disk")
        return
    described = f"{num_examples:,} {image_spec.dtype.name} images"
    if image_spec.shape.is_fully_defined():
        size = num_examples * image_spec.shape.num_elements() * image_spec.dtype.size
        described += f" of {'x'.join(map(str, image_spec.shape))}, {_megabytes(size)} on disk"
    print(f"Filling the image cache {prefix} in the first epoch: {described}")


def _megabytes(size):
    return f"{size / 1e6:,.1f} MB"
