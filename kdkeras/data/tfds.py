"""Image-classification datasets of TensorFlow Datasets, by name."""

import numpy as np
import tensorflow as tf

from kdkeras.data import pipeline, transforms
from kdkeras.data.errors import DataError
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
@pipeline.loader
def load_tfds(name, split=None, data_dir=None, download=True, image_key="image", label_key="label", *, options):
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
        options: The pipeline options, passed as keyword arguments
            (`image_size`: None takes the feature's fixed size; ...; see
            `kdkeras.data.pipeline.PipelineOptions`).

    Returns:
        `(train, val, test, info)`: batched datasets of
        `(float32 images in [0, 255], int32 labels)` and a `DatasetInfo`.

    Example:

    ```python
    train, val, test, info = load_tfds("patch_camelyon", image_size=64)
    ```
    """
    builder = _builder(name, data_dir, download)
    image_feature, label_feature = _features(builder, name, image_key, label_key)
    shape = image_feature.shape
    native_channels = 1 if shape[-1] in (1, 2) else 3
    n_channels = options.channels or native_channels
    decoded_channels = min(n_channels, native_channels)
    size = options.size
    if size is None:
        if shape[0] is None or shape[1] is None:
            raise DataError(
                f"Images of {name!r} vary in size (feature shape {shape}); pass image_size=(h, w)."
            )
        size = (shape[0], shape[1])
    split = tuple(split) if split is not None else default_splits(builder.info.splits.keys())
    if len(split) != 3:
        raise DataError(f"split must name three splits (train, val, test), got {split!r}")
    scale = 257.0 if image_feature.dtype == tf.uint16 else 1.0

    def convert(example):
        image = tf.cast(example[image_key], tf.float32) / scale
        if image.shape[-1] != decoded_channels:
            image = transforms.to_channels(image, decoded_channels)
        if tuple(image.shape[:2]) != size:
            image = transforms.resize(image, size)
        return transforms.to_uint8(image), tf.cast(example[label_key], tf.int32)

    return pipeline.Source(
        name=name,
        task="binary-class" if label_feature.num_classes == 2 else "multi-class",
        class_names=list(label_feature.names),
        n_channels=n_channels,
        image_size=size,
        splits={
            role: _examples(builder, tfds_split, (image_key, label_key), options, labels=role == "train")
            for role, tfds_split in zip(SPLITS, split)
        },
        decode=convert,
        source=str(builder.data_dir),
    )


def _features(builder, name, image_key, label_key):
    """The image and `ClassLabel` features, checked to describe single-label image classification."""
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise DataError(
                f"TFDS dataset {name!r} has no feature {key!r} (it has {sorted(features)}); "
                "pass image_key= and label_key=."
            )
    label_feature = features[label_key]
    if not isinstance(label_feature, _tfds().features.ClassLabel):
        raise DataError(
            f"Feature {label_key!r} of {name!r} is {type(label_feature).__name__}, not a "
            "ClassLabel; load_tfds handles single-label classification only."
        )
    shape = features[image_key].shape
    if len(shape) != 3 or shape[-1] not in (1, 2, 3, 4):
        raise DataError(
            f"Feature {image_key!r} of {name!r} has shape {shape}; expected (h, w, c) images."
        )
    return features[image_key], label_feature


def _examples(builder, tfds_split, keys, options, labels):
    """One split's records, sampled by `options.limit`; with `labels`, their labels too (one pass)."""
    n = builder.info.splits[tfds_split].num_examples
    ds = builder.as_dataset(split=tfds_split, shuffle_files=False)
    keep = transforms.subset_indices(n, options.limit, options.seed)
    if len(keep) < n:
        mask = np.zeros(n, dtype=bool)
        mask[keep] = True
        mask = tf.constant(mask)
        ds = ds.enumerate().filter(lambda i, _: mask[i]).map(lambda _, example: example)
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(keep)))
    if not labels:
        return pipeline.Examples(ds, int(len(keep)))
    image_key, label_key = keys
    all_labels = builder.as_dataset(
        split=tfds_split,
        shuffle_files=False,
        decoders={image_key: _tfds().decode.SkipDecoding()},
    ).map(lambda example: example[label_key])
    all_labels = np.concatenate([np.asarray(b) for b in all_labels.batch(4096)] or [np.zeros(0, np.int64)])
    return pipeline.Examples(ds, int(len(keep)), all_labels[keep])
