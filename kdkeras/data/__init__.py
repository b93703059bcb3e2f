"""tf.data pipelines for medical-image classification.

Every loader returns `(train, val, test, info)`: three batched
`tf.data.Dataset`s of `(float32 images (B, H, W, C) in [0, 255], labels)`
and a `DatasetInfo`. Labels are int32 class indices `(B,)`, or multi-hot
float32 `(B, L)` for multi-label tasks. Models scale pixels themselves
(`kdkeras.models.InputPreprocessing`), so a teacher and a student read the same batches.

Loaders share these keyword arguments: `image_size` (None = native, int or
`(h, w)`), `channels` (None = native, 1 or 3), `batch_size`, `augment`
(None, `"light"`, `"xray"`, `"dermoscopy"`, a `BatchAugmentation` or a list
of Keras layers; train only, after the cache, see `kdkeras.data.augment`), `shuffle` (train only, seeded, new order each epoch),
`seed`, `cache`, `strict` (unreadable images raise instead of being skipped)
and `limit` (at most that many examples per split, a seeded sample).

Data a loader cannot use (a truncated or corrupt file, labels out of range,
non-finite pixels, a bad layout or argument) raises `DataError` before any
pipeline runs, naming the file, the field and the fix.
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
from kdkeras.data.tfds import load_tfds
from kdkeras.data.xray import load_xray_folder

__all__ = [
    "BatchAugmentation",
    "DataError",
    "DatasetInfo",
    "ROOT_ENV",
    "RandomIntensityScale",
    "augmentation",
    "bundled_npz",
    "load_ham10000",
    "load_image_folder",
    "load_medmnist",
    "load_tfds",
    "load_xray_folder",
    "with_augmentation",
]
