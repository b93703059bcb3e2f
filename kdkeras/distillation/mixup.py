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
import numpy as np
import tensorflow as tf

_TINY = float(np.finfo(np.float32).tiny)


def mix(x, concentration, seed_generator):
    """Mixes each image with another image of the batch.

    Args:
        x: Batch of images `(batch, ...)`, floating point.
        concentration: `a` of the mixing weight `lam ~ Beta(a, a)`, one draw
            per image, in `kdkeras.config.bounds.MIXUP_RANGE` (1.0 draws
            uniformly; small values mix little).
        seed_generator: A `keras.random.SeedGenerator`, so seeded runs repeat.

    Returns:
        `(mixed, lam, partner)`: `lam * x + (1 - lam) * x[partner]`, the
        weights `(batch,)` and the index of each image's partner.
    """
    batch = tf.shape(x)[0]
    lam = tf.cast(symmetric_beta((batch,), concentration, seed_generator), x.dtype)
    partner = tf.argsort(keras.random.uniform((batch,), seed=seed_generator))
    weight = tf.reshape(lam, tf.concat([[batch], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))
    mixed = weight * x + (1.0 - weight) * tf.gather(x, partner)
    return mixed, lam, partner


def symmetric_beta(shape, concentration, seed_generator):
    """Draws `Beta(a, a)` without underflow, for any `a` in `MIXUP_RANGE`.

    `Beta(a, a) = G1 / (G1 + G2)` with `Gi ~ Gamma(a)`; for small `a` the Gamma
    draws underflow float32 to 0 and the ratio is lost (Keras's
    `keras.random.beta` at `a = 0.001` puts most draws near 0.5, where
    almost none belong). Each Gamma is drawn in log space instead, as
    `log Gamma(a + 1) + log(U) / a` with `U ~ Uniform(0, 1)` (Marsaglia and
    Tsang's boost), and `lam = sigmoid(log G1 - log G2)`, which is exact to
    float32 at both ends.

    Args:
        shape: Shape of the draw.
        concentration: `a > 0`.
        seed_generator: A `keras.random.SeedGenerator`.

    Returns:
        float32 tensor of `shape` in [0, 1].
    """
    a = float(concentration)

    def log_gamma():
        boosted = keras.random.gamma(shape, a + 1.0, dtype="float32", seed=seed_generator)
        # U > 0, so that log(U) stays finite.
        u = keras.random.uniform(shape, minval=_TINY, maxval=1.0, dtype="float32", seed=seed_generator)
        return tf.math.log(boosted) + tf.math.log(u) / a

    return tf.sigmoid(log_gamma() - log_gamma())


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
