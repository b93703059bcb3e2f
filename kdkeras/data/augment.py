"""Train-time augmentation: the fused batch layer, its registered presets, and where it runs.

A preset is one `BatchAugmentation` layer: flips, rotation, shear and zoom
are composed into a single affine warp per image (one resampling pass
instead of four), then brightness and contrast are scaled, all drawn per
image. The layer runs in one of two places (`[data] augment_on`):

- `"pipeline"`: in `tf.data`, after batching, on the cached uint8 images.
  Each batch's randomness comes from a stateless seed drawn from
  `Dataset.random(seed)`, so batches are augmented in parallel and a seed
  still reproduces every epoch.
- `"device"`: inside the training step (`Distiller(augmentation=...)`, or
  `with_augmentation` for a plain model), drawn from the layer's
  `SeedGenerator`, so the accelerator does the work and the teacher and the
  student see the same augmented view.
"""

import math

import keras
import tensorflow as tf

from kdkeras.data.errors import DataError
from kdkeras.registry import AUGMENTATIONS

_FILL_MODES = ("nearest", "reflect", "constant", "wrap")
# Columns of the per-image uniform draws of `BatchAugmentation.augment`.
_FLIP_X, _FLIP_Y, _ANGLE, _SHEAR, _ZOOM_X, _ZOOM_Y, _SCALE, _CONTRAST = range(8)


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
        self.factor = _check_range(factor, "factor")
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


@keras.saving.register_keras_serializable(package="kdkeras")
class BatchAugmentation(keras.layers.Layer):
    """Random flips, rotation, shear, zoom, brightness and contrast in one pass per batch.

    The geometric part is one affine warp per image (bilinear, edges filled
    by `fill_mode`), the composition of the Keras layers `RandomFlip`,
    `RandomRotation`, `RandomShear` and `RandomZoom` with the same ranges;
    resampling once is both faster and sharper than four warps in a row.
    Then each image is multiplied by a brightness factor and its contrast
    around its per-channel mean is scaled, as `RandomIntensityScale` and
    `RandomContrast` do. Values stay in [0, 255]; output is float32.

    Args:
        horizontal_flip: Flip left-right with probability 1/2.
        vertical_flip: Flip upside down with probability 1/2.
        rotation: Largest rotation, as a fraction of a full turn (like
            `RandomRotation(factor)`): 5 / 360 is up to 5 degrees either way.
        shear: Largest horizontal shear factor (like `RandomShear(x_factor)`).
        zoom: Largest zoom, per axis independently: 0.1 scales the content
            by 1 / (1 +- 0.1) (like `RandomZoom(0.1, 0.1)`).
        fill_mode: How pixels outside the source are filled: "nearest",
            "reflect", "constant" (black) or "wrap".
        brightness: Optional `(low, high)` multiplier range.
        contrast: Largest contrast change: 0.2 scales contrast by 0.8-1.2.
        seed: Int seed of the layer's `SeedGenerator` (device augmentation).
        **kwargs: Base layer arguments.

    Example:

    ```python
    layer = BatchAugmentation(horizontal_flip=True, rotation=10 / 360, zoom=0.1, seed=0)
    views = layer(images, training=True)             # draws from the layer's SeedGenerator
    same = layer.augment(images, seed=tf.constant([1, 2]))   # stateless: same seed, same views
    ```
    """

    def __init__(
        self,
        horizontal_flip=False,
        vertical_flip=False,
        rotation=0.0,
        shear=0.0,
        zoom=0.0,
        fill_mode="nearest",
        brightness=None,
        contrast=0.0,
        seed=None,
        **kwargs,
    ):
        # Float32 even under a mixed precision policy: float16 holds [0, 255] only to 1/8.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for name, value in (("rotation", rotation), ("shear", shear), ("zoom", zoom), ("contrast", contrast)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
        if fill_mode not in _FILL_MODES:
            raise ValueError(f"`fill_mode` must be one of {_FILL_MODES}, got {fill_mode!r}.")
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.rotation = float(rotation)
        self.shear = float(shear)
        self.zoom = float(zoom)
        self.fill_mode = fill_mode
        self.brightness = None if brightness is None else _check_range(brightness, "brightness")
        self.contrast = float(contrast)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        return self.augment(images, self.seed_generator.next())

    def augment(self, images, seed):
        """Augments a batch with a stateless seed: the same seed gives the same views.

        Args:
            images: `(B, H, W, C)` images in [0, 255], uint8 or float.
            seed: int32/int64 tensor of shape `(2,)`.

        Returns:
            float32 tensor of the shape of `images`.
        """
        static_shape = images.shape
        shape = tf.shape(images)
        draws = tf.random.stateless_uniform([shape[0], 8], seed)
        # Warped as float: the kernel truncates uint8 results, a bias of -0.5.
        images = tf.cast(images, tf.float32)
        if self.horizontal_flip or self.vertical_flip or self.rotation or self.shear or self.zoom:
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images,
                transforms=self._warps(draws, shape),
                output_shape=shape[1:3],
                fill_value=tf.constant(0.0),
                interpolation="BILINEAR",
                fill_mode=self.fill_mode.upper(),
            )
        if self.brightness is not None:
            low, high = self.brightness
            images = images * _per_image(low + (high - low) * draws[:, _SCALE])
        if self.contrast:
            factor = _per_image(1.0 + self.contrast * (2.0 * draws[:, _CONTRAST] - 1.0))
            mean = tf.reduce_mean(images, axis=(1, 2), keepdims=True)
            images = (images - mean) * factor + mean
        # The warp's output size is a tensor: restore the static shape models need.
        return tf.ensure_shape(tf.clip_by_value(images, 0.0, 255.0), static_shape)

    def _warps(self, draws, shape):
        """Per-image projective transforms mapping output to input pixel coordinates."""

        def symmetric(column, limit):
            return limit * (2.0 * draws[:, column] - 1.0)

        def flip(column, enabled):
            return tf.where(draws[:, column] < 0.5, -1.0, 1.0) if enabled else tf.ones_like(draws[:, 0])

        angle = symmetric(_ANGLE, 2.0 * math.pi * self.rotation)
        cos, sin = tf.cos(angle), tf.sin(angle)
        shear = symmetric(_SHEAR, self.shear)
        zoom_x = 1.0 + symmetric(_ZOOM_X, self.zoom)
        zoom_y = 1.0 + symmetric(_ZOOM_Y, self.zoom)
        flip_x, flip_y = flip(_FLIP_X, self.horizontal_flip), flip(_FLIP_Y, self.vertical_flip)
        # Centered coordinates: input = Flip . Rotation . Shear . Zoom . output,
        # the order in which the separate Keras layers would map them.
        a0 = flip_x * cos * zoom_x
        a1 = flip_x * (cos * shear - sin) * zoom_y
        b0 = flip_y * sin * zoom_x
        b1 = flip_y * (sin * shear + cos) * zoom_y
        cy = (tf.cast(shape[1], tf.float32) - 1.0) / 2.0
        cx = (tf.cast(shape[2], tf.float32) - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy
        b2 = cy - b0 * cx - b1 * cy
        zeros = tf.zeros_like(a0)
        return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            horizontal_flip=self.horizontal_flip,
            vertical_flip=self.vertical_flip,
            rotation=self.rotation,
            shear=self.shear,
            zoom=self.zoom,
            fill_mode=self.fill_mode,
            brightness=self.brightness,
            contrast=self.contrast,
            seed=self.seed,
        )
        return config


@AUGMENTATIONS.register("light")
def light(seed=0):
    """Horizontal flip, rotation up to 10 degrees, zoom +-10%: a mild default for MedMNIST-sized images."""
    return BatchAugmentation(horizontal_flip=True, rotation=10 / 360, zoom=0.1, seed=seed, name="augment_light")


@AUGMENTATIONS.register("xray")
def xray(seed=0):
    """Seed 002's chest X-ray set: flips, rotation 5 degrees, shear 0.02 degrees, zoom +-10%, brightness 0.7-1.3.

    Seed 002's `ImageDataGenerator(rotation_range=5, shear_range=0.02,
    zoom_range=0.1, brightness_range=[0.7, 1.3], horizontal_flip=True,
    vertical_flip=True, fill_mode="nearest")`, zoom drawn per axis. Its
    `shear_range` is an angle in degrees, so 0.02 is a shear of
    sin(0.02 deg): kept for fidelity, it barely moves a pixel.
    """
    return BatchAugmentation(
        horizontal_flip=True,
        vertical_flip=True,
        rotation=5 / 360,
        shear=math.sin(math.radians(0.02)),
        zoom=0.1,
        brightness=(0.7, 1.3),
        seed=seed,
        name="augment_xray",
    )


@AUGMENTATIONS.register("dermoscopy")
def dermoscopy(seed=0):
    """Flips, any rotation, zoom +-10%, brightness 0.8-1.2, contrast +-20%, reflected fill.

    A lesion has no canonical orientation, so any flip or rotation is a valid
    view; color and contrast vary between dermatoscopes. The seeds on
    dermoscopy (000, 003) do not state their sets; this one follows common
    ISIC practice.
    """
    return BatchAugmentation(
        horizontal_flip=True,
        vertical_flip=True,
        rotation=0.5,
        zoom=0.1,
        fill_mode="reflect",
        brightness=(0.8, 1.2),
        contrast=0.2,
        seed=seed,
        name="augment_dermoscopy",
    )


def augmentation(preset_or_layers, seed=0):
    """Builds the train-time augmentation.

    Presets are the names in `kdkeras.registry.AUGMENTATIONS` (`kdkeras list`
    prints them): `"light"`, `"xray"` (seed 002's set) and `"dermoscopy"`;
    each keeps values in [0, 255]. Register another with
    `@AUGMENTATIONS.register("name")` on a `seed -> layer` builder.

    Args:
        preset_or_layers: A preset name, a `BatchAugmentation`, or a list of
            Keras layers.
        seed: Seed of a preset's layer (a layer or list keeps its own seeds).

    Returns:
        A `BatchAugmentation` for a preset or one, a `keras.Sequential` for a list.
        Preset layers compute in float32 even under a mixed precision policy.

    Example:

    ```python
    aug = augmentation("xray", seed=1)
    augmented = aug(images, training=True)
    ```
    """
    if isinstance(preset_or_layers, str):
        if preset_or_layers not in AUGMENTATIONS:
            raise DataError(
                f"Unknown augmentation preset {preset_or_layers!r}; "
                f"choose one of {sorted(AUGMENTATIONS.names())} or pass a list of Keras layers."
            )
        return AUGMENTATIONS.get(preset_or_layers, seed=seed)
    if isinstance(preset_or_layers, BatchAugmentation):
        return preset_or_layers
    layers = list(preset_or_layers)
    if not all(isinstance(layer, keras.layers.Layer) for layer in layers):
        raise TypeError(
            "augment must be a preset name, a BatchAugmentation or a list of keras.layers.Layer objects"
        )
    return keras.Sequential(layers, name="augment")


def with_augmentation(model, augment):
    """A model that augments its input in training only, then runs `model`.

    Fit the returned model and save `model` itself: the augmentation is not
    part of the deployable artifact, and `evaluate` / `predict` skip it.

    Args:
        model: A built `keras.Model`.
        augment: An augmentation layer or model (see `augmentation`).

    Returns:
        A functional `keras.Model` sharing `model`'s weights.
    """
    inputs = keras.Input(model.input_shape[1:], name="images")
    return keras.Model(inputs, model(augment(inputs)), name=f"{model.name}_augmented")


def _check_range(value, name):
    low, high = (float(v) for v in value)
    if not 0.0 <= low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {value!r}")
    return (low, high)


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])
