"""What a distillation term is: a Keras `Loss` that declares what its `y_true` holds.

The base class lives apart from `objective` so the terms (`losses`,
`relations`) sit below the objective that resolves and weighs them; the
`objective` module docstring describes the protocol.
"""

import keras

REQUIREMENTS = ("teacher_logits", "labels", "inputs")


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
    """

    requires = ("teacher_logits",)
    activation = "softmax"
    temperature = 1.0
    batch_level = False

    def compute(self, batch, sample_weight=None):
        """The term's value on a batch dict (see `compute`)."""
        return self(targets(self, batch), batch["student_logits"], sample_weight=sample_weight)


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
