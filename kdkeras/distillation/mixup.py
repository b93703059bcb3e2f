"""Mixup inside the distillation step: the "function matching" of Beyer et al. (CVPR 2022).

"Knowledge distillation: a good teacher is patient and consistent" trains the
student to match the teacher on the very images the student sees, and shows
that the best of those images are mixtures: mixup (Zhang et al., ICLR 2018)
of the batch with a shuffled copy of itself, fed to teacher and student
alike. The teacher then labels points between the training images, where the
labels say nothing, and the student learns the teacher's function there too.

`mix` makes the mixed batch; `mixed_labels` gives the student loss its
labels for it, so that with `alpha > 0` the supervised term stays the usual
mixup loss `lam * L(y_i) + (1 - lam) * L(y_j)`.
"""

import keras
import tensorflow as tf


def mix(x, concentration, seed_generator):
    """Mixes each image with another image of the batch.

    Args:
        x: Batch of images `(batch, ...)`, floating point.
        concentration: `a > 0` of the mixing weight `lam ~ Beta(a, a)`, one draw
            per image (1.0 draws uniformly; small values mix little).
        seed_generator: A `keras.random.SeedGenerator`, so seeded runs repeat.

    Returns:
        `(mixed, lam, partner)`: `lam * x + (1 - lam) * x[partner]`, the
        weights `(batch,)` and the index of each image's partner.
    """
    batch = tf.shape(x)[0]
    lam = keras.random.beta((batch,), concentration, concentration, seed=seed_generator)
    lam = tf.cast(lam, x.dtype)
    partner = tf.argsort(keras.random.uniform((batch,), seed=seed_generator))
    weight = tf.reshape(lam, tf.concat([[batch], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))
    mixed = weight * x + (1.0 - weight) * tf.gather(x, partner)
    return mixed, lam, partner


def mixed_labels(y, sample_weight, lam, partner):
    """The labels and weights of a mixed batch, as two halves of one loss.

    Sparse labels cannot be averaged, so the loss is computed twice, on each
    image's own label with weight `lam` and on its partner's with `1 - lam`;
    summed, the two give the mixup loss. Dense (multi-hot) labels are mixed
    directly into one loss. Without labels there is nothing to mix.

    Args:
        y: Labels `(batch,)` (sparse; < 0 marks an unlabeled image) or
            `(batch, k)` floating point multi-hot.
        sample_weight: Per-example weights `(batch,)` or None.
        lam: Mixing weights from `mix`.
        partner: Partner indices from `mix`.

    Returns:
        A list of `(y, sample_weight)` whose losses add up to the mixup loss.
    """
    if y is None:
        return [(y, sample_weight)]
    own = tf.ones_like(lam) if sample_weight is None else tf.cast(sample_weight, lam.dtype)
    other = tf.gather(own, partner)
    if y.dtype.is_floating:
        dense = tf.reshape(lam, [-1, 1]) * y + tf.reshape(1.0 - lam, [-1, 1]) * tf.gather(y, partner)
        mixed = lam * own + (1.0 - lam) * other
        return [(dense, mixed)]
    return [(y, lam * own), (tf.gather(y, partner), (1.0 - lam) * other)]
