"""Relation-based distillation: match how predictions relate across classes and examples.

Pointwise losses (KL, DKD) match each example's distribution exactly; a
relation loss matches only its shape, which a small student can follow when a
much stronger teacher's exact probabilities are out of its reach.
"""

import keras
from keras import ops

from kdkeras.distillation.losses import _check_temperature, _check_weight
from kdkeras.distillation.term import DistillationTerm
from kdkeras.registry import DISTILLATION_TERMS

# The official code's guard against a zero standard deviation.
_EPS = 1e-8


def _pearson(a, b, axis):
    """Pearson correlation of `a` and `b` along `axis`, as DIST's official `pearson_correlation`."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    return ops.sum(a * b, axis=axis) / (ops.norm(a, axis=axis) * ops.norm(b, axis=axis) + _EPS)


def dist_relations(teacher_logits, student_logits, temperature=1.0):
    """DIST's inter-class relation per example and intra-class relation of the batch.

    With `p = softmax(z / T)` of shape `(batch, classes)`:

    - inter-class: `1 - pearson(p_s[i, :], p_t[i, :])` for each example `i`
      (does the student rank the classes as the teacher does?);
    - intra-class: `1 - mean_c pearson(p_s[:, c], p_t[:, c])` over the batch
      (does the student rank the examples within each class as the teacher?).

    Dense outputs `(..., classes)` are flattened to rows first, as in the
    official segmentation code.

    Args:
        teacher_logits: Tensor `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        temperature: Softening temperature `T > 0`.

    Returns:
        `(inter, intra)`: a float32 tensor of shape `(...)` and a scalar.
    """
    num_classes = student_logits.shape[-1]
    p_t = ops.softmax(ops.reshape(ops.cast(teacher_logits, "float32"), (-1, num_classes)) / temperature, axis=-1)
    p_s = ops.softmax(ops.reshape(ops.cast(student_logits, "float32"), (-1, num_classes)) / temperature, axis=-1)
    inter = 1.0 - _pearson(p_s, p_t, axis=1)
    intra = 1.0 - ops.mean(_pearson(p_s, p_t, axis=0))
    return ops.reshape(inter, ops.shape(student_logits)[:-1]), intra


@DISTILLATION_TERMS.register("dist")
@keras.saving.register_keras_serializable(package="kdkeras")
class DIST(DistillationTerm):
    """DIST: distillation from a stronger teacher (Huang et al., NeurIPS 2022).

    `loss = T**2 * (beta * inter + gamma * intra)` with the inter- and
    intra-class Pearson relations of `dist_relations`, as the official code
    (`hunto/image_classification_sota`, `lib/models/losses/dist_kd.py`, which
    has no temperature: this class's default `T = 1`); a temperature divides
    the logits and scales by `T**2` as OpenMMLab mmrazor's `DISTLoss(tau)`.

    The intra-class relation is a property of the whole batch
    (`batch_level = True`): each example's value is its own inter-class term
    plus the batch's intra-class term, so the batch mean is the official loss.
    Sample weights weigh the inter-class terms; the intra-class term gets the
    batch's mean weight. Under `tf.distribute` the intra-class relation is
    computed on each replica's share of the batch.

    Binary tasks: with two classes each example's inter-class correlation is
    exactly +1 or -1 (whether both put the larger probability on the same
    class), so that term has no gradient and the intra-class term does the
    teaching.

    Args:
        beta: Weight of the inter-class relation, `>= 0`. Defaults to 1.0.
        gamma: Weight of the intra-class relation, `>= 0`. Defaults to 1.0.
        temperature: Softening temperature `T > 0`. Defaults to 1.0, the
            paper's setting on ImageNet.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32.
        standardize: Z-score both logits per example first (logit
            standardization, Sun et al. 2024). Defaults to False.

    Example:

    ```python
    distiller.compile(optimizer="adam", distillation_loss_fn=kdkeras.distillation.relations.DIST(), alpha=0.5)
    ```
    """

    batch_level = True

    def __init__(
        self, beta=1.0, gamma=1.0, temperature=1.0, reduction="sum_over_batch_size", name="dist", dtype=None,
        standardize=False,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype, standardize=standardize)
        self.beta = _check_weight(beta, "beta", "DIST's inter-class relation")
        self.gamma = _check_weight(gamma, "gamma", "DIST's intra-class relation")
        self.temperature = _check_temperature(temperature)

    def call(self, y_true, y_pred):
        inter, intra = dist_relations(y_true, y_pred, self.temperature)
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta, gamma=self.gamma, temperature=self.temperature)
        return config
