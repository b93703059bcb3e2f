"""tf.data pipelines for medical-image classification.

Every loader returns `(train, val, test, info)`: three batched
`tf.data.Dataset`s of `(float32 images (B, H, W, C) in [0, 255], labels)`
and a `DatasetInfo`. Labels are int32 class indices `(B,)`, or multi-hot
float32 `(B, L)` for multi-label tasks. Models scale pixels themselves
(`kdkeras.models.InputPreprocessing`), so a teacher and a student read the same batches.

A loader is a source (what is on disk: arrays or file paths, labels, groups,
class names) plus one builder, `kdkeras.data.pipeline.build`, which owns
decoding, cache, shuffle, batching and augmentation. Every loader takes the
builder's options as keyword arguments, declared and documented once in
`kdkeras.data.pipeline.PipelineOptions`: `image_size`, `channels`,
`batch_size`, `augment`, `shuffle`, `seed`, `cache`, `strict` and `limit`.

Data a loader cannot use (a truncated or corrupt file, labels out of range,
non-finite pixels, a bad layout or argument) raises `DataError` before any
pipeline runs, naming the file, the field and the fix.

Importing the package registers every loader, augmentation and data check
(`kdkeras.registry`): a new loader module is imported here.
"""

from kdkeras.data.augment import (
    BatchAugmentation,
    RandomIntensityScale,
    augmentation,
    with_augmentation,
)
from kdkeras.data.dermoscopy import load_ham10000
from kdkeras.data.errors import DataError
from kdkeras.data.folders import load_image_folder
from kdkeras.data.info import DatasetInfo
from kdkeras.data.medmnist import ROOT_ENV, bundled_npz, load_medmnist
from kdkeras.data.pipeline import PipelineOptions
from kdkeras.data.tfds import load_tfds
from kdkeras.data.transforms import image_size_tuple
from kdkeras.data.xray import load_xray_folder

__all__ = [
    "BatchAugmentation",
    "DataError",
    "DatasetInfo",
    "PipelineOptions",
    "ROOT_ENV",
    "RandomIntensityScale",
    "augmentation",
    "bundled_npz",
    "image_size_tuple",
    "load_ham10000",
    "load_image_folder",
    "load_medmnist",
    "load_tfds",
    "load_xray_folder",
    "with_augmentation",
]
