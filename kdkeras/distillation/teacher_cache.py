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

from kdkeras.data import transforms
from kdkeras.distillation.distiller import Distiller


def with_teacher_logits(
    dataset,
    teacher,
    batch_size=None,
    shuffle=True,
    seed=None,
    verbose=True,
):
    """Pairs every example of `dataset` with the teacher's logits, computed once.

    Batches come out as `({"inputs": x, "teacher_logits": z}, y)`, the form the
    `Distiller` recognises: it then skips the teacher's forward pass. One pass
    over `dataset` collects images, labels (and sample weights) together with
    the teacher's logits, so an input pipeline that shuffles is fine; the
    examples are then held in memory (`N * H * W * C * 4` bytes of images),
    reshuffled every epoch and batched.

    Only valid when the teacher would see identical inputs every epoch: build
    the dataset without random augmentation (`augment=None`).

    Args:
        dataset: Batched `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`.
        teacher: A `keras.Model` emitting logits, or a compiled `Distiller`
            (its teachers, combined as in training).
        batch_size: Output batch size. Defaults to the input's first batch size.
        shuffle: Reshuffle examples every epoch.
        seed: Shuffle seed, for reproducible runs.
        verbose: Show a progress bar for the one teacher pass.

    Returns:
        A batched, prefetched `tf.data.Dataset` with a known cardinality.

    Raises:
        ValueError: for an unbatched or empty dataset.

    Example:

    ```python
    train, val, test, info = kdkeras.data.load_medmnist("pneumoniamnist", augment=None)
    cached = kdkeras.distillation.teacher_cache.with_teacher_logits(train, teacher, seed=0)
    distiller.fit(cached, validation_data=val, epochs=10)
    ```
    """
    x_spec = dataset.element_spec[0]
    if not isinstance(x_spec, tf.TensorSpec) or x_spec.shape.rank is None or x_spec.shape.rank < 2:
        raise ValueError(
            "with_teacher_logits needs a batched dataset of (images, labels) with images "
            f"(batch, height, width, channels); got the element spec {dataset.element_spec}."
        )
    if isinstance(teacher, Distiller):
        teacher._check_compiled()
        forward = tf.function(teacher.teacher_logits)
    else:
        forward = tf.function(lambda x: teacher(transforms.for_model(x, teacher), training=False))
    steps = int(dataset.cardinality())
    progress = keras.utils.Progbar(steps if steps > 0 else None, verbose=1 if verbose else 0)
    columns = None
    for x, *rest in dataset:
        batch = [x.numpy(), forward(x).numpy(), *(r.numpy() for r in rest)]
        columns = [[] for _ in batch] if columns is None else columns
        for column, value in zip(columns, batch):
            column.append(value)
        progress.add(1)
    if columns is None:
        raise ValueError("The dataset is empty: there are no images to compute teacher logits for.")
    images, logits, *rest = [np.concatenate(column) for column in columns]
    count = len(images)
    paired = tf.data.Dataset.from_tensor_slices(
        ({"inputs": images, "teacher_logits": logits.astype("float32")}, *rest)
    )
    if shuffle:
        paired = paired.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    batch_size = batch_size or len(columns[0][0])
    return paired.batch(batch_size).prefetch(tf.data.AUTOTUNE)
