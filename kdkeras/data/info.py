"""`DatasetInfo`: what a loader tells the trainer about the data it yields."""

import dataclasses

import numpy as np

TASKS = ("binary-class", "multi-class", "multi-label", "ordinal-regression")
LABEL_MODES = ("sparse", "multi-hot")


@dataclasses.dataclass
class DatasetInfo:
    """Description of a loaded dataset, returned next to its three splits.

    Every field describes what the pipelines yield, not the files on disk:
    `n_channels` and `image_size` are those of the batches after resizing and
    channel conversion.

    Class weights use the "balanced" formula `n / (k * count_c)` on the train
    split (`n` examples, `k` classes), so `fit(..., class_weight=info.class_weights)`
    gives every class the same total weight; a class absent from train gets
    0.0. Keras applies `class_weight` to sparse labels only, so for a
    multi-label task `class_weights` is None and `pos_weights` holds, per
    label, `negatives / positives` on train (1.0 for a label never positive),
    the usual weight of the positive term of a binary cross-entropy.

    Args:
        name: Dataset name, e.g. `"pneumoniamnist"` or the root folder's name.
        task: One of `"binary-class"`, `"multi-class"`, `"multi-label"` or
            `"ordinal-regression"` (ordinal labels are sparse class indices,
            trained as multi-class).
        class_names: Name of each class (or label, for multi-label), in
            index order.
        n_channels: Channels of the yielded images (1 or 3).
        image_size: `(height, width)` of the yielded images.
        split_sizes: Examples per split: `{"train": n, "val": n, "test": n}`.
        class_counts: Train examples per class (positives per label, for
            multi-label), in index order.
        class_weights: `{class_index: weight}` for Keras `class_weight`, or
            None for multi-label.
        source: Where the data came from (file, folder or URL).
        skipped: Paths of image files skipped as unreadable.
        label_mode: `"sparse"` (int32 labels of shape `(batch,)`) or
            `"multi-hot"` (float32 labels of shape `(batch, num_classes)`).
        pos_weights: Per-label positive weights for multi-label, else None.

    Example:

    ```python
    train, val, test, info = load_medmnist("pneumoniamnist")
    model.fit(train, validation_data=val, class_weight=info.class_weights)
    ```
    """

    name: str
    task: str
    class_names: list
    n_channels: int
    image_size: tuple
    split_sizes: dict
    class_counts: list
    class_weights: dict = None
    source: str = ""
    skipped: list = dataclasses.field(default_factory=list)
    label_mode: str = "sparse"
    pos_weights: list = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"DatasetInfo: task must be one of {TASKS}, got {self.task!r}")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(
                f"DatasetInfo: label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}"
            )
        self.image_size = tuple(int(s) for s in self.image_size)

    @property
    def num_classes(self):
        """Number of classes (labels, for multi-label)."""
        return len(self.class_names)

    def to_dict(self):
        """Returns the fields as plain Python values, ready for `json.dumps`.

        Returns:
            A dict with every field plus `num_classes`; `image_size` becomes a
            list and `class_weights` keys stay ints (JSON writes them as strings,
            `from_dict` reads them back).
        """
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["num_classes"] = self.num_classes
        return out

    @classmethod
    def from_dict(cls, config):
        """Rebuilds a `DatasetInfo` from `to_dict()` output, also after a JSON round trip.

        Args:
            config: A dict as returned by `to_dict()`.

        Returns:
            A `DatasetInfo` equal to the original.
        """
        config = dict(config)
        config.pop("num_classes", None)
        if config.get("class_weights") is not None:
            config["class_weights"] = {int(k): float(v) for k, v in config["class_weights"].items()}
        return cls(**config)


def sparse_class_stats(labels, num_classes):
    """Train class counts and balanced class weights from sparse labels.

    Args:
        labels: Integer class indices of the train split.
        num_classes: Number of classes.

    Returns:
        `(counts, weights)`: a list of ints and a dict `{class: n / (k * count)}`
        (0.0 for an absent class).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes)
    total = int(counts.sum())
    weights = {
        c: (total / (num_classes * int(n)) if n else 0.0) for c, n in enumerate(counts.tolist())
    }
    return [int(n) for n in counts], weights


def multi_hot_stats(labels):
    """Train positives per label and positive weights from multi-hot labels.

    Args:
        labels: Array `(n, num_labels)` of 0/1 values, the train split.

    Returns:
        `(counts, pos_weights)`: positives per label (ints) and
        `negatives / positives` per label (1.0 where a label is never positive).
    """
    labels = np.asarray(labels)
    positives = labels.sum(axis=0).astype(np.int64)
    negatives = labels.shape[0] - positives
    pos_weights = [float(neg / pos) if pos else 1.0 for pos, neg in zip(positives, negatives)]
    return [int(p) for p in positives], pos_weights
