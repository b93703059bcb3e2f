"""Cached teacher logits: run the teacher once, then distil at the cost of the student alone.

The teacher is frozen, so when it sees exactly the same inputs every epoch its
logits never change: computing them once and streaming them with the data
removes the teacher's forward pass from every later step. This holds only for
pipelines without random augmentation (no random flips, crops, intensity
jitter) upstream of the model. With augmentation the teacher must see each
augmented image, so keep feeding plain `(x, y)` batches.
"""

import keras
import numpy as np
import tensorflow as tf

from kdkeras.distiller import Distiller


def teacher_logits_array(teacher, dataset, verbose=True):
    """The teacher's logits for every image of a batched dataset, in order.

    Args:
        teacher: A `keras.Model` emitting logits, or a compiled `Distiller`
            (its teachers, combined as in training).
        dataset: Batched `tf.data.Dataset` of `(x, y)` that yields the same
            images in the same order on every pass (no shuffle, no augmentation).
        verbose: Show a progress bar.

    Returns:
        float32 array `(num_images, num_classes)`.
    """
    if isinstance(teacher, Distiller):
        teacher._check_compiled()
        forward = tf.function(teacher.teacher_logits)
    else:
        forward = tf.function(lambda x: teacher(x, training=False))
    steps = int(dataset.cardinality())
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=1 if verbose else 0)
    logits = []
    for x, *_ in dataset:
        logits.append(forward(x).numpy())
        progress.add(1)
    if not logits:
        raise ValueError("The dataset is empty: there are no images to compute teacher logits for.")
    return np.concatenate(logits).astype("float32")


def with_teacher_logits(
    dataset,
    teacher,
    batch_size=None,
    shuffle=True,
    seed=None,
    verbose=True,
):
    """Pairs every image of `dataset` with the teacher's logits, computed once.

    Batches come out as `({"inputs": x, "teacher_logits": z}, y)`, the form the
    `Distiller` recognises: it then skips the teacher's forward pass. Images,
    labels and logits are held in memory (a cache), then shuffled and batched.

    Only valid when the teacher would see identical inputs every epoch: the
    dataset must be deterministic (built with `augment=None`, `shuffle=False`).
    Every pass over the returned dataset reshuffles when `shuffle` is True.

    Args:
        dataset: Batched `tf.data.Dataset` of `(x, y)`, deterministic.
        teacher: A `keras.Model` emitting logits, or a compiled `Distiller`.
        batch_size: Output batch size. Defaults to the input's batch size.
        shuffle: Reshuffle examples every epoch.
        seed: Shuffle seed, for reproducible runs.
        verbose: Show a progress bar for the one teacher pass.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Raises:
        ValueError: for an unbatched or empty dataset.

    Example:

    ```python
    train, val, test, info = kdkeras.data.load_medmnist("pneumoniamnist", augment=None, shuffle=False)
    cached = kdkeras.teacher_cache.with_teacher_logits(train, teacher, seed=0)
    distiller.fit(cached, validation_data=val, epochs=10)
    ```
    """
    x_spec = dataset.element_spec[0]
    if not isinstance(x_spec, tf.TensorSpec) or x_spec.shape.rank is None or x_spec.shape.rank < 2:
        raise ValueError(
            "with_teacher_logits needs a batched dataset of (images, labels) with images "
            f"(batch, height, width, channels); got the element spec {dataset.element_spec}."
        )
    if batch_size is None:
        batch_size = _first_batch_size(dataset)
    logits = teacher_logits_array(teacher, dataset, verbose=verbose)
    examples = dataset.unbatch()
    count = len(logits)
    logits_ds = tf.data.Dataset.from_tensor_slices(logits)
    paired = tf.data.Dataset.zip((examples, logits_ds)).map(
        lambda example, z: ({"inputs": example[0], "teacher_logits": z}, *example[1:])
    )
    paired = paired.cache()
    if shuffle:
        paired = paired.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    batched = paired.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return batched.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))


def _first_batch_size(dataset):
    for x, *_ in dataset.take(1):
        return int(x.shape[0])
    raise ValueError("with_teacher_logits got an empty dataset.")
