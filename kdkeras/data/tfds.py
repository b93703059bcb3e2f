"""Image-classification datasets of TensorFlow Datasets, by name."""

import numpy as np
import tensorflow as tf

from kdkeras.data import transforms
from kdkeras.data.errors import DataError
from kdkeras.data.info import DatasetInfo, sparse_class_stats
from kdkeras.registry import LOADERS

SPLITS = ("train", "val", "test")


def _tfds():
    # tensorflow_datasets takes seconds to import; only this loader needs it.
    import tensorflow_datasets

    return tensorflow_datasets


def default_splits(available):
    """TFDS split names for train / val / test, given the splits a dataset has.

    - train, validation, test: used as they are.
    - train, test: validation is the last 10% of train.
    - train only: 80% / 10% / 10% of train, in that order.

    Args:
        available: Split names of the dataset.

    Returns:
        A tuple of three TFDS split strings.
    """
    available = set(available)
    if "train" not in available:
        raise DataError(
            f"The dataset has no 'train' split (it has {sorted(available)}); "
            "pass split=(train, val, test)."
        )
    if {"validation", "test"} <= available:
        return ("train", "validation", "test")
    if "test" in available:
        return ("train[:90%]", "train[90%:]", "test")
    return ("train[:80%]", "train[80%:90%]", "train[90%:]")


def _builder(name, data_dir, download):
    tfds = _tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    where = data_dir or "the TFDS data folder (~/tensorflow_datasets)"
    if not download:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {where} and download=False; run "
            f"`tfds build {name}` or pass download=True (or data_dir= where it is prepared)."
        )
    try:
        builder.download_and_prepare()
    except Exception as e:  # download errors come from many libraries (urllib, requests, gcs).
        raise OSError(
            f"Could not download and prepare TFDS dataset {name!r} into {where} ({e}). On a "
            f"machine with internet, run `tfds build {name} --data_dir=...` and copy that folder "
            "here, then pass data_dir=."
        ) from e
    return builder


@LOADERS.register("tfds")
def load_tfds(
    name,
    split=None,
    data_dir=None,
    download=True,
    image_key="image",
    label_key="label",
    image_size=None,
    channels=None,
    batch_size=64,
    augment=None,
    shuffle=True,
    seed=0,
    cache=True,
    strict=False,
    limit=None,
):
    """Loads a TFDS image-classification dataset (an image and a class label per example).

    Args:
        name: TFDS name, e.g. `"cassava"` or `"patch_camelyon"`.
        split: Three TFDS split strings for train / val / test, e.g.
            `("train", "validation", "test")` or `("train[:90%]", "train[90%:]", "test")`;
            None picks them with `default_splits`.
        data_dir: TFDS data folder (default: TFDS's own).
        download: Download and prepare the dataset if it is not prepared yet.
        image_key: Name of the image feature.
        label_key: Name of the `ClassLabel` feature.
        image_size: None (the feature's fixed size), int or `(h, w)`.
        channels: None (the feature's channels), 1 or 3.
        batch_size: Batch size.
        augment: None, a preset name or a list of Keras layers; train only.
        shuffle: Shuffle the train split each epoch (seeded).
        seed: Seed of shuffles, augmentation and `limit` sampling.
        cache: True (memory), False, or a file path prefix (`-train`, `-val`,
            `-test` appended; see `transforms.split_cache`).
        strict: Accepted for a uniform signature; TFDS records are decoded by TFDS.
        limit: At most this many examples per split.

    Returns:
        `(train, val, test, info)`: batched datasets of
        `(float32 images in [0, 255], int32 labels)` and a `DatasetInfo`.

    Example:

    ```python
    train, val, test, info = load_tfds("patch_camelyon", image_size=64)
    ```
    """
    del strict
    tfds = _tfds()
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be None, 1 or 3, got {channels!r}")
    builder = _builder(name, data_dir, download)
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise DataError(
                f"TFDS dataset {name!r} has no feature {key!r} (it has {sorted(features)}); "
                "pass image_key= and label_key=."
            )
    label_feature = features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise DataError(
            f"Feature {label_key!r} of {name!r} is {type(label_feature).__name__}, not a "
            "ClassLabel; load_tfds handles single-label classification only."
        )
    shape = features[image_key].shape
    if len(shape) != 3 or shape[-1] not in (1, 2, 3, 4):
        raise DataError(
            f"Feature {image_key!r} of {name!r} has shape {shape}; expected (h, w, c) images."
        )
    native_channels = 1 if shape[-1] in (1, 2) else 3
    n_channels = channels or native_channels
    decoded_channels = min(n_channels, native_channels)
    size = transforms.image_size_tuple(image_size)
    if size is None:
        if shape[0] is None or shape[1] is None:
            raise DataError(
                f"Images of {name!r} vary in size (feature shape {shape}); pass image_size=(h, w)."
            )
        size = (shape[0], shape[1])
    split = tuple(split) if split is not None else default_splits(builder.info.splits.keys())
    if len(split) != 3:
        raise DataError(f"split must name three splits (train, val, test), got {split!r}")
    scale = 257.0 if features[image_key].dtype == tf.uint16 else 1.0

    def convert(example):
        image = tf.cast(example[image_key], tf.float32) / scale
        if image.shape[-1] != decoded_channels:
            image = transforms.to_channels(image, decoded_channels)
        if tuple(image.shape[:2]) != size:
            image = transforms.resize(image, size)
        return transforms.to_uint8(image), tf.cast(example[label_key], tf.int32)

    datasets, split_sizes = [], {}
    for role, tfds_split in zip(SPLITS, split):
        n = builder.info.splits[tfds_split].num_examples
        ds = builder.as_dataset(split=tfds_split, shuffle_files=False)
        keep = transforms.subset_indices(n, limit, seed)
        if len(keep) < n:
            mask = np.zeros(n, dtype=bool)
            mask[keep] = True
            mask = tf.constant(mask)
            ds = ds.enumerate().filter(lambda i, _: mask[i]).map(lambda _, example: example)
            ds = ds.apply(tf.data.experimental.assert_cardinality(len(keep)))
        split_sizes[role] = int(len(keep))
        if role == "train":
            labels = builder.as_dataset(
                split=tfds_split,
                shuffle_files=False,
                decoders={image_key: tfds.decode.SkipDecoding()},
            ).map(lambda example: example[label_key])
            labels = np.concatenate([np.asarray(b) for b in labels.batch(4096)] or [np.zeros(0, np.int64)])
            counts, weights = sparse_class_stats(labels[keep], label_feature.num_classes)
        datasets.append(
            transforms.finalize(
                ds,
                batch_size=batch_size,
                training=role == "train",
                shuffle=shuffle,
                seed=seed,
                cache=transforms.split_cache(cache, role),
                augment=augment,
                decode=convert,
                num_examples=len(keep),
                channels=n_channels,
            )
        )
    info = DatasetInfo(
        name=name,
        task="binary-class" if label_feature.num_classes == 2 else "multi-class",
        class_names=list(label_feature.names),
        n_channels=n_channels,
        image_size=size,
        split_sizes=split_sizes,
        class_counts=counts,
        class_weights=weights,
        source=str(builder.data_dir),
        label_mode="sparse",
    )
    return (*datasets, info)
