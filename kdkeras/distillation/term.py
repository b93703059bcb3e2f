"""What a distillation term is: a Keras `Loss` that declares what its `y_true` holds.

The base class lives apart from `objective` so the terms (`losses`,
`relations`) sit below the objective that resolves and weighs them; the
`objective` module docstring describes the protocol.
"""

import keras
import tensorflow as tf

REQUIREMENTS = ("teacher_logits", "labels", "inputs")


# The official logit-standardization code's guard against a zero standard deviation.
_STANDARDIZE_EPS = 1e-7


def standardize_logits(logits):
    """Per-example z-score of logits: logit standardization (Sun et al., CVPR 2024).

    `(z - mean(z)) / (std(z) + 1e-7)` over the class axis, with the unbiased
    standard deviation, as the official code's `normalize` (`torch.std`). A
    term on standardized logits matches the teacher's relations between classes,
    not its logit scale, which a much smaller student may not reach.

    With two classes the result is `+-1/sqrt(2)` for every example: only which
    class the teacher prefers survives, not how sure it is.

    Args:
        logits: Tensor `(..., num_classes)` with at least two classes.

    Returns:
        float32 tensor of the same shape.
    """
    z = tf.cast(logits, tf.float32)
    centered = z - tf.reduce_mean(z, axis=-1, keepdims=True)
    classes = tf.cast(tf.shape(z)[-1], tf.float32)
    std = tf.sqrt(tf.reduce_sum(tf.square(centered), axis=-1, keepdims=True) / (classes - 1.0))
    return centered / (std + _STANDARDIZE_EPS)


@keras.saving.register_keras_serializable(package="kdkeras")
class DistillationTerm(keras.losses.Loss):
    """Base class of the distillation terms: a Keras `Loss` that says what it needs.

    Subclasses implement `call(y_true, y_pred)` returning one value per example,
    like any Keras loss; `y_true` is shaped by `requires` (see the module
    docstring), `y_pred` is the student's logits. Register a new term with
    `@kdkeras.registry.DISTILLATION_TERMS.register(name)` to make it available
    by name in configs.

    Attributes:
        requires: What `y_true` holds, a tuple from `REQUIREMENTS`.
        activation: How the term turns logits into probabilities, "softmax"
            or "sigmoid"; several teachers are averaged in that space.
        temperature: Softening temperature of the term (1.0 when it has none).
        batch_level: Whether the value depends on the whole batch.
        standardize: Whether teacher and student logits are z-scored per
            example before the term sees them (`standardize_logits`); any
            softmax term takes `standardize=True`.
    """

    requires = ("teacher_logits",)
    activation = "softmax"
    temperature = 1.0
    batch_level = False

    def __init__(self, standardize=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(standardize, bool):
            raise ValueError(f"`standardize` must be True or False, got {standardize!r}.")
        if standardize and self.activation != "softmax":
            raise ValueError(
                f"{type(self).__name__} scores each output with a {self.activation}; z-scoring logits "
                "across outputs (logit standardization) is defined for one softmax over classes only."
            )
        self.standardize = standardize

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.standardize:
            if isinstance(y_true, dict):
                y_true = dict(y_true, teacher_logits=standardize_logits(y_true["teacher_logits"]))
            else:
                y_true = standardize_logits(y_true)
            y_pred = standardize_logits(y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def compute(self, batch, sample_weight=None):
        """The term's value on a batch dict (see `compute`)."""
        return self(targets(self, batch), batch["student_logits"], sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        if self.standardize:
            config["standardize"] = True
        return config


def targets(term, batch):
    """The `y_true` a logits term takes from a batch dict, as its `requires` asks.

    Args:
        term: A `DistillationTerm`, or any Keras loss or callable (which gets
            the teacher's logits).
        batch: Dict with "teacher_logits", "labels", "inputs" and "student_logits".

    Returns:
        The teacher's logits, or a dict of the required entries.
    """
    requires = tuple(getattr(term, "requires", ("teacher_logits",)))
    if requires == ("teacher_logits",):
        return batch["teacher_logits"]
    return {key: batch[key] for key in requires}
