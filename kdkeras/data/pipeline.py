"""The pipeline builder: a source's examples in, three batched pipelines and a `DatasetInfo` out.

A loader has two halves. Its source reads and validates what is on disk (an
npz, a folder tree, a CSV, a TFDS dataset) and returns a `Source`: the
examples of each split, how to decode one, the class names. `build` owns
everything after that, the same for every loader: decoding, cache, shuffle,
batching, augmentation (`transforms.finalize`) and the `DatasetInfo`, class
statistics included. The pipeline options are declared once, as the fields
of `PipelineOptions`; `loader` gives each registered loader its source's
arguments plus those fields, so a config's `[data]` table takes them all.

Example:

```python
@LOADERS.register("my_npz")
@pipeline.loader
def load_my_npz(path, *, options):
    ...  # read and validate `path`, honour options.limit, options.seed
    return pipeline.Source(name=..., splits={"train": ..., "val": ..., "test": ...}, ...)

train, val, test, info = load_my_npz("data.npz", batch_size=32, augment="light")
```
"""

import dataclasses
import functools
import inspect

import numpy as np
import tensorflow as tf

from kdkeras.data import transforms
from kdkeras.data.errors import DataError
from kdkeras.data.info import DatasetInfo, multi_hot_stats, sparse_class_stats

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """The options every loader takes, turning examples into batched pipelines.

    Attributes:
        image_size: None (native size; a file source needs all images to
            share one), an int (square) or `(height, width)` to resize to.
        channels: None (native: 1 if every image is gray, else 3), 1 or 3.
        batch_size: Examples per batch, the global batch over all replicas
            (`kdkeras.distribute.batching`).
        augment: None, a preset name (`"light"`, `"xray"`, `"dermoscopy"`),
            a `BatchAugmentation` or a list of Keras layers; train split only,
            after the cache (see `kdkeras.data.augment`).
        shuffle: Shuffle the train split, seeded, in a new order each epoch.
        seed: Seed of shuffles, augmentation, `limit` sampling and the splits
            a source carves (by patient, lesion or class).
        cache: True (memory), False, or a file path prefix (`-train`, `-val`,
            `-test` appended; see `transforms.split_cache`). Caches hold uint8
            images; a source whose arrays are in memory already caches only
            what it resizes or converts.
        strict: Raise on an unreadable image file instead of skipping it
            (sources without files ignore it).
        limit: At most this many examples per split, a seeded sample.
    """

    image_size: int | tuple | None = None
    channels: int | None = None
    batch_size: int = 64
    augment: object = None
    shuffle: bool = True
    seed: int = 0
    cache: bool | str = True
    strict: bool = False
    limit: int | None = None

    def __post_init__(self):
        if self.channels not in (None, 1, 3):
            raise DataError(f"channels must be None, 1 or 3, got {self.channels!r}")

    @property
    def size(self):
        """`image_size` as `(height, width)`, or None (see `transforms.image_size_tuple`)."""
        return transforms.image_size_tuple(self.image_size)


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(PipelineOptions))


def global_batch_size(data):
    """The batch size of a `[data]` table: its `batch_size`, else the builder's default.

    Args:
        data: The `[data]` table (a dict of loader arguments).

    Returns:
        The global batch size, split over the replicas by `kdkeras.distribute.batching`.
    """
    return data.get("batch_size", PipelineOptions.batch_size)


@dataclasses.dataclass(frozen=True)
class Examples:
    """The examples of one split, before decoding.

    Attributes:
        dataset: Unbatched `tf.data.Dataset` of examples whose last component
            is the label; `Source.decode` maps one to `(uint8 image, label)`.
        size: Number of examples.
        labels: The labels as an array (sparse ints or multi-hot rows), or
            None where reading them costs a pass; the train split's are
            required, for class statistics.
    """

    dataset: tf.data.Dataset
    size: int
    labels: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, *columns):
        """Examples sliced from in-memory arrays (images or paths, ..., labels last)."""
        labels = columns[-1]
        return cls(tf.data.Dataset.from_tensor_slices(tuple(columns)), len(labels), labels)


@dataclasses.dataclass(frozen=True)
class Source:
    """What a source read: the examples of each split and how the pipeline yields them.

    Attributes:
        name: Dataset name for `DatasetInfo`.
        task: `DatasetInfo.task`.
        class_names: Class (or label) names in index order.
        n_channels: Channels of the yielded images (1 or 3).
        image_size: `(height, width)` of the yielded images.
        splits: `{"train": Examples, "val": Examples, "test": Examples}`.
        decode: Function mapping one example to `(uint8 image (H, W, C), label)`,
            run before the cache, or None for examples that are images already.
        source: Where the data came from (file, folder or URL).
        skipped: Paths of image files skipped as unreadable.
        label_mode: `"sparse"` or `"multi-hot"`.
        cacheable: Whether caching pays off; False for arrays in memory that
            are not decoded, which a cache would only copy.
    """

    name: str
    task: str
    class_names: list
    n_channels: int
    image_size: tuple
    splits: dict
    decode: object = None
    source: str = ""
    skipped: list = dataclasses.field(default_factory=list)
    label_mode: str = "sparse"
    cacheable: bool = True


def build(source, options):
    """The three batched pipelines of a source and their `DatasetInfo`.

    Args:
        source: A `Source`.
        options: The `PipelineOptions`.

    Returns:
        `(train, val, test, info)`: `tf.data.Dataset`s of
        `(float32 images (B, H, W, C) in [0, 255], labels)` and a `DatasetInfo`.
    """
    datasets = [
        transforms.finalize(
            source.splits[split].dataset,
            batch_size=options.batch_size,
            training=split == "train",
            shuffle=options.shuffle,
            seed=options.seed,
            cache=transforms.split_cache(options.cache, split) if source.cacheable else False,
            augment=options.augment,
            decode=source.decode,
            num_examples=source.splits[split].size,
            channels=source.n_channels,
        )
        for split in SPLITS
    ]
    return (*datasets, dataset_info(source))


def dataset_info(source):
    """The `DatasetInfo` of a source, with the class statistics of its train split."""
    train_labels = source.splits["train"].labels
    weights = pos_weights = None
    if source.label_mode == "multi-hot":
        counts, pos_weights = multi_hot_stats(train_labels)
    else:
        counts, weights = sparse_class_stats(train_labels, len(source.class_names))
    return DatasetInfo(
        name=source.name,
        task=source.task,
        class_names=list(source.class_names),
        n_channels=source.n_channels,
        image_size=source.image_size,
        split_sizes={split: int(source.splits[split].size) for split in SPLITS},
        class_counts=counts,
        class_weights=weights,
        source=str(source.source),
        skipped=list(source.skipped),
        label_mode=source.label_mode,
        pos_weights=pos_weights,
    )


def loader(source_fn):
    """Makes a loader of a source function: its arguments plus the `PipelineOptions`.

    `source_fn(*args, options, **kwargs)` returns a `Source`; the loader takes
    the same arguments, with the option fields as keyword-only arguments in
    place of `options`, and returns `build(source, options)`. Its signature
    lists every argument, so a config's `[data]` keys are checked against it.

    Args:
        source_fn: A function with a keyword-only `options` argument.

    Returns:
        The loader, returning `(train, val, test, info)`.
    """
    signature = inspect.signature(source_fn)
    own = [p for name, p in signature.parameters.items() if name != "options"]
    clashing = sorted(set(OPTION_NAMES) & {p.name for p in own})
    if "options" not in signature.parameters or clashing:
        raise TypeError(
            f"{source_fn.__qualname__} must take a keyword-only `options` argument and none of "
            f"the pipeline options {clashing or list(OPTION_NAMES)} itself."
        )
    defaults = PipelineOptions()
    option_parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name))
        for name in OPTION_NAMES
    ]

    @functools.wraps(source_fn)
    def load(*args, **kwargs):
        options = PipelineOptions(**{name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs})
        return build(source_fn(*args, options=options, **kwargs), options)

    load.__signature__ = signature.replace(parameters=own + option_parameters)
    load.source = source_fn
    return load
