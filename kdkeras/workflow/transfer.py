"""Transfer sets: distil through images whose labels the student never sees.

Hinton et al. (2015) distil through a "transfer set": a teacher trained on a
labeled archive passes what it knows through images nobody has labeled, the
everyday situation in a hospital. kdkeras marks an unlabeled image with the
label `UNLABELED` (-1, scikit-learn's semi-supervised convention): the
`Distiller`'s student loss and metrics skip it, its distillation terms see it.

An experiment chooses how much of the train split keeps its labels with
`[data] labeled_fraction` (a seeded, stratified choice shared by the student
and distill phases; the teacher always trains on every label, as the labeled
archive it stands for), and what the distill phase learns through with
`[distill] transfer_set`: `""` (the labeled images only), `"train"` (the train
images whose labels were withheld) or the path of a folder of images or of
an `.npz` holding an `images` array.

The student alone and the distilled student get the same budget: the same
epochs of the same number of steps (`fit_plan`), the student alone cycling
through its labeled images as many times as that takes.
"""

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from kdkeras.config import ConfigError
from kdkeras.data import images as images_lib
from kdkeras.data import transforms

UNLABELED = -1


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """The train set of one phase and its budget.

    Attributes:
        train: Batched dataset of `(x, y)` or, with class weights or
            unlabeled images, `(x, y, sample_weight)`; repeats forever when
            `steps_per_epoch` is set.
        steps_per_epoch: Steps of one epoch for `fit`, or None (one pass).
        labeled: Number of labeled train images.
        unlabeled: Number of unlabeled (transfer-set) images.
        class_weight: The `class_weight` to pass to `fit` (None when it is
            already in the sample weights).
    """

    train: tf.data.Dataset
    steps_per_epoch: int | None
    labeled: int
    unlabeled: int
    class_weight: dict | None

    def describe(self):
        """One log line: images, labels and steps of the phase's epochs."""
        steps = f", {self.steps_per_epoch} steps per epoch" if self.steps_per_epoch else ""
        return f"train set: {self.labeled:,} labeled + {self.unlabeled:,} unlabeled images{steps}"


def uses_transfer_split(config):
    """Whether the config withholds labels or adds a transfer set."""
    return config.labeled_fraction < 1.0 or bool(config.distill.transfer_set)


def labeled_indices(labels, fraction, seed=0):
    """A seeded, stratified choice of the train examples that keep their labels.

    Every class keeps at least one labeled example.

    Args:
        labels: int array of class indices `(n,)`.
        fraction: Fraction in (0, 1] to keep labeled.
        seed: Seed of the choice.

    Returns:
        Sorted int array of the indices that keep their labels.
    """
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # Per class, so that a rare class keeps its share (and at least one label).
        count = max(1, int(round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen))


def fit_plan(config, phase, train_source, info, batch_size, class_weight):
    """The train set and budget of a student or distill phase.

    Args:
        config: The `ExperimentConfig`.
        phase: "student" or "distill".
        train_source: The unshuffled, un-augmented train split as batched
            `(x, y)` (the loader called with `shuffle=False, augment=None`).
        info: The data's `DatasetInfo`.
        batch_size: Global batch size.
        class_weight: Class weights of the phase, or None.

    Returns:
        A `FitPlan`.
    """
    if info.label_mode != "sparse":
        raise ConfigError(
            f"[data] labeled_fraction / [distill] transfer_set need one class label per image, "
            f"but {info.name} is {info.task}: remove them for this dataset."
        )
    images, labels = _arrays(train_source)
    keep = labeled_indices(labels, config.labeled_fraction, config.seed)
    labeled_images, labeled_labels = images[keep], labels[keep]
    withheld = np.setdiff1d(np.arange(len(labels)), keep)
    transfer = _transfer_images(config.distill.transfer_set, images[withheld], info)
    total_steps = math.ceil((len(keep) + len(transfer)) / batch_size)
    if phase == "distill" and len(transfer):
        x = np.concatenate([labeled_images, transfer])
        y = np.concatenate([labeled_labels, np.full(len(transfer), UNLABELED, labeled_labels.dtype)])
        train = _pipeline(x, y, config, batch_size)
        return FitPlan(_with_weights(train, class_weight, info), None, len(keep), len(transfer), None)
    # The student alone, or distillation on the labeled images only: as many steps as a
    # pass over labeled + transfer images, so that both arms train equally long.
    train = _pipeline(labeled_images, labeled_labels, config, batch_size)
    if total_steps > math.ceil(len(keep) / batch_size):
        return FitPlan(train.repeat(), total_steps, len(keep), 0, class_weight)
    return FitPlan(train, None, len(keep), 0, class_weight)


def load_transfer_images(path, info):
    """Unlabeled images from a folder of image files or an `.npz`, as the data's pipeline shapes them.

    Args:
        path: A folder (searched recursively) or an `.npz` with an `images`
            array `(n, H, W)` or `(n, H, W, C)` of uint8 pixels.
        info: The `DatasetInfo` of the labeled data (image size, channels).

    Returns:
        float32 array `(n, H, W, C)` in [0, 255] at the data's image size.
    """
    if os.path.isdir(path):
        return _folder_images(path, info)
    if path.endswith(".npz") and os.path.isfile(path):
        return _npz_images(path, info)
    raise ConfigError(
        f"[distill] transfer_set = {path!r} is neither \"\", \"train\", a folder of images "
        "nor an .npz file: fix the path."
    )


def _folder_images(path, info):
    files = images_lib.list_image_files(path)
    if not files:
        raise ConfigError(f"[distill] transfer_set = {path!r} holds no image files ({', '.join(images_lib.IMAGE_EXTENSIONS)}).")
    source = f"[distill] transfer_set {path}"
    headers, _ = images_lib.inspect_images(files, source=source, image_size=info.image_size)
    if not headers:
        raise ConfigError(f"{source}: none of its {len(files)} image files is readable (see the warning above).")
    ds = tf.data.Dataset.from_tensor_slices(
        (images_lib.tf_paths(h.path for h in headers), np.array([h.jpeg_ratio for h in headers], np.int32))
    ).map(
        lambda p, ratio: images_lib.decode_image_file(p, info.n_channels, tuple(info.image_size), ratio),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return np.stack(list(ds.as_numpy_iterator())).astype("float32")


def _npz_images(path, info):
    where = f"[distill] transfer_set = {path!r}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files:
                raise ConfigError(
                    f"{where} has the arrays {npz.files}, not `images`: "
                    "save the unlabeled images with np.savez(path, images=...)."
                )
            x = npz["images"]
    except ConfigError:
        raise
    except Exception as e:  # zipfile, pickle refusal and format errors raise many types
        raise ConfigError(
            f"{where} is not a readable npz file ({type(e).__name__}: {e}): save the unlabeled "
            "images again with np.savez(path, images=uint8_array)."
        ) from e
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.dtype != np.uint8 or x.shape[-1] not in (1, 2, 3, 4) or 0 in x.shape[1:3]:
        raise ConfigError(
            f"{where}: `images` must be uint8 (n, H, W[, C]) with C = 1 to 4, "
            f"got {x.dtype} {x.shape}."
        )
    if not len(x):
        raise ConfigError(f"{where}: `images` holds 0 images; give at least one, or set transfer_set = \"\".")
    x = transforms.to_channels(tf.constant(x, tf.float32), info.n_channels)
    if tuple(x.shape[1:3]) != tuple(info.image_size):
        x = transforms.resize(x, tuple(info.image_size))
    return transforms.to_uint8(x).numpy().astype("float32")


def _transfer_images(transfer_set, withheld, info):
    if not transfer_set:
        return withheld[:0]
    if transfer_set == "train":
        return withheld
    return load_transfer_images(transfer_set, info)


def _arrays(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _pipeline(x, y, config, batch_size):
    return transforms.finalize(
        tf.data.Dataset.from_tensor_slices((x, y)),
        batch_size=batch_size,
        training=True,
        seed=config.seed,
        cache=False,  # the arrays are in memory already
        # With augment_on = "device" the training step augments, not the pipeline.
        augment=None if config.data.get("augment_on") == "device" else config.data.get("augment"),
        num_examples=len(y),
    )


def _with_weights(train, class_weight, info):
    # Keras's `class_weight` looks every label up in a table, and -1 has no row:
    # the weights travel as sample weights instead, 1 for an unlabeled image.
    weights = [1.0] + [float(class_weight[k]) if class_weight else 1.0 for k in range(info.num_classes)]
    table = tf.constant(weights, tf.float32)
    return train.map(lambda x, y: (x, y, tf.gather(table, tf.cast(y, tf.int32) + 1)))
