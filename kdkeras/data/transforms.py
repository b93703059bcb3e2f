"""Transforms shared by every loader: size, channels, augmentation, pipeline finishing.

Pipelines keep images as uint8 from decoding to `cache()` (a quarter of the
memory of float32) and cast them to float32 in [0, 255] per batch, after
which train batches are augmented. Loaders assemble them with `finalize`.
"""

import glob
import math
import os

import keras
import numpy as np
import tensorflow as tf

from kdkeras import files
from kdkeras.data.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE

# Augmentation runs in the input pipeline, so it stays float32 under mixed precision.
_F32 = {"dtype": "float32"}

# File caches are not shared with the shuffle buffer, so bound the buffer there.
_FILE_CACHE_SHUFFLE_BUFFER = 8192

# Luminance weights of ITU-R BT.601, as `tf.image.rgb_to_grayscale` and PIL use.
_LUMA = (0.2989, 0.5870, 0.1140)
# Larger images are refused before a pipeline exists: 100,000 px would only
# fail, out of memory, a minute into the first epoch.
MAX_IMAGE_SIZE = 8192



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
    size = image_size_tuple(size)
    images = tf.image.resize(tf.cast(images, tf.float32), size, antialias=True)
    return tf.clip_by_value(images, 0.0, 255.0)


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


@keras.saving.register_keras_serializable(package="kdkeras")
class RandomIntensityScale(keras.layers.Layer):
    """Multiplies each image by a random factor, like `brightness_range` of `ImageDataGenerator`.

    `keras.layers.RandomBrightness` adds a delta; the seeds' Keras 2 pipelines
    scaled pixel values instead, which keeps a black background black.

    Args:
        factor: `(low, high)` range of the multiplier, e.g. `(0.7, 1.3)`.
        value_range: `(min, max)` to clip the result to.
        seed: Optional int seed.
        **kwargs: Base layer arguments.

    Example:

    ```python
    layer = RandomIntensityScale((0.7, 1.3), seed=0)
    brighter_or_darker = layer(images, training=True)
    ```
    """

    def __init__(self, factor=(0.7, 1.3), value_range=(0.0, 255.0), seed=None, **kwargs):
        super().__init__(**kwargs)
        low, high = (float(f) for f in factor)
        if not 0.0 <= low <= high:
            raise ValueError(f"factor must be (low, high) with 0 <= low <= high, got {factor!r}")
        self.factor = (low, high)
        self.value_range = tuple(float(v) for v in value_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        shape = keras.ops.shape(images)
        scale_shape = (shape[0], 1, 1, 1) if len(images.shape) == 4 else (1, 1, 1)
        scale = keras.random.uniform(
            scale_shape,
            minval=self.factor[0],
            maxval=self.factor[1],
            dtype=self.compute_dtype,
            seed=self.seed_generator,
        )
        images = keras.ops.cast(images, self.compute_dtype) * scale
        return keras.ops.clip(images, self.value_range[0], self.value_range[1])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor, "value_range": self.value_range, "seed": self.seed})
        return config


def _light(seed):
    return [
        keras.layers.RandomFlip("horizontal", seed=seed, **_F32),
        keras.layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed + 1, **_F32),
        keras.layers.RandomZoom(0.1, 0.1, fill_mode="nearest", seed=seed + 2, **_F32),
    ]


def _xray(seed):
    # Seed 002's ImageDataGenerator(rotation_range=5, shear_range=0.02, zoom_range=0.1,
    # brightness_range=[0.7, 1.3], horizontal_flip=True, vertical_flip=True,
    # fill_mode="nearest"). Its shear_range is an angle in degrees, so 0.02 is a
    # shear of sin(0.02 deg): kept for fidelity, it barely moves a pixel.
    shear = math.sin(math.radians(0.02))
    return [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed, **_F32),
        keras.layers.RandomRotation(5 / 360, fill_mode="nearest", seed=seed + 1, **_F32),
        keras.layers.RandomShear(x_factor=shear, fill_mode="nearest", seed=seed + 2, **_F32),
        keras.layers.RandomZoom(0.1, 0.1, fill_mode="nearest", seed=seed + 3, **_F32),
        RandomIntensityScale((0.7, 1.3), seed=seed + 4, **_F32),
    ]


def _dermoscopy(seed):
    # A lesion has no canonical orientation, so any flip or rotation is a valid
    # view; color and contrast vary between dermatoscopes.
    return [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed, **_F32),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1, **_F32),
        keras.layers.RandomZoom(0.1, 0.1, fill_mode="reflect", seed=seed + 2, **_F32),
        RandomIntensityScale((0.8, 1.2), seed=seed + 3, **_F32),
        keras.layers.RandomContrast(0.2, seed=seed + 4, **_F32),
    ]


AUGMENTATION_PRESETS = {"light": _light, "xray": _xray, "dermoscopy": _dermoscopy}


def augmentation(preset_or_layers, seed=0):
    """Builds the train-time augmentation model.

    Presets (every one keeps values in [0, 255]):

    - `"light"`: horizontal flip, rotation up to 10 degrees, zoom +-10%.
      A mild default for MedMNIST-sized images.
    - `"xray"`: seed 002's chest X-ray set: horizontal and vertical flips,
      rotation up to 5 degrees, shear of 0.02 degrees, independent zoom +-10%
      per axis, brightness scaled by 0.7-1.3, nearest fill.
    - `"dermoscopy"`: flips, any rotation, zoom +-10%, brightness scaled by
      0.8-1.2, contrast +-20%. The seeds on dermoscopy (000, 003) do not state
      their sets; this one follows common ISIC practice.

    Args:
        preset_or_layers: A preset name or a list of Keras layers.
        seed: Base seed; layer `i` of a preset gets `seed + i`.

    Returns:
        A `keras.Sequential`. Preset layers compute in float32 even under a
        mixed precision policy, since they run in the input pipeline.

    Example:

    ```python
    aug = augmentation("xray", seed=1)
    augmented = aug(images, training=True)
    ```
    """
    if isinstance(preset_or_layers, str):
        if preset_or_layers not in AUGMENTATION_PRESETS:
            raise DataError(
                f"Unknown augmentation preset {preset_or_layers!r}; "
                f"choose one of {sorted(AUGMENTATION_PRESETS)} or pass a list of Keras layers."
            )
        layers = AUGMENTATION_PRESETS[preset_or_layers](seed)
        name = f"augment_{preset_or_layers}"
    else:
        layers = list(preset_or_layers)
        if not all(isinstance(layer, keras.layers.Layer) for layer in layers):
            raise TypeError("augment must be a preset name or a list of keras.layers.Layer objects")
        name = "augment"
    return keras.Sequential(layers, name=name)


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
    `cache` -> seeded shuffle, new order each epoch -> batch -> float32 ->
    augmentation -> `prefetch(AUTOTUNE)`. Shuffling and augmentation happen
    only when `training`; evaluation splits keep their order.

    Args:
        ds: Dataset of `(x, label)` examples, unbatched.
        batch_size: Batch size.
        training: Whether this is the train split.
        shuffle: Shuffle the train split (ignored unless `training`).
        seed: Seed of the shuffle and of preset augmentations.
        cache: True (in memory), False, or a file path for `Dataset.cache`
            (see `split_cache`; a killed run's lockfile is cleared by
            `claim_file_cache`).
        augment: None, a preset name, or a list of Keras layers (train only).
        decode: Optional function mapping `(x, label)` to a uint8 image
            `(H, W, C)` and its label, run in parallel before the cache.
        num_examples: Size of `ds`; defaults to its cardinality.
        channels: If 3 and the examples are gray, they are repeated to 3
            channels per batch, after the cache, which thus stays 3x smaller.

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
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
        if shuffled:
            if cache is not True:
                buffer = min(buffer, _FILE_CACHE_SHUFFLE_BUFFER)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    aug = augmentation(augment, seed=seed) if (training and augment is not None) else None

    def to_float(images, labels):
        images = tf.cast(images, tf.float32)
        if channels == 3 and images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        if aug is not None:
            images = tf.cast(aug(images, training=True), tf.float32)
        return images, labels

    # Keras random layers advance one seed variable per call: mapping batches in
    # order is what makes a seed reproduce the same augmented epoch.
    ds = ds.map(to_float, num_parallel_calls=None if aug is not None else AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
