"""Knowledge-distillation losses as Keras objects.

Every loss here follows the Keras `Loss` signature with the teacher in the
place of the target: `loss(teacher_logits, student_logits, sample_weight)`.
Both arguments are logits (pre-softmax), which is what the kdkeras model zoo
emits, so a loss can soften them with its own temperature.
"""

import keras
from keras import ops

_KERAS_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence", "KLDivergence")


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(
            f"`temperature` must be a positive number, got {temperature!r} "
            f"({type(temperature).__name__}). Typical values are 1 to 20; Hinton et al. use 2 to 20."
        )
    if not temperature > 0:
        raise ValueError(
            f"`temperature` must be > 0, got {temperature}. Softening divides logits by it; "
            "use 1.0 for no softening."
        )
    return float(temperature)


def knowledge_distillation(teacher_logits, student_logits, temperature=4.0):
    """Per-example soft-target KD loss of Hinton et al. (2015).

    Computes `T**2 * KL(softmax(z_t / T) || softmax(z_s / T))` over the last
    axis, in float32 whatever the dtype of the logits. The `T**2` factor keeps
    the gradient scale independent of the temperature (the convention of
    mdistiller, torchdistill and RepDistiller).

    Args:
        teacher_logits: Tensor `(..., num_classes)` of teacher logits.
        student_logits: Tensor of the same shape, student logits.
        temperature: Softening temperature `T > 0`.

    Returns:
        Tensor of shape `(...)`: one loss value per example (or per pixel for
        dense outputs).

    Example:

    >>> float(knowledge_distillation([[3.0, 0.5]], [[2.0, 1.0]], temperature=1.0)[0])
    0.1205...
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    log_p_teacher = ops.log_softmax(t, axis=-1)
    log_p_student = ops.log_softmax(s, axis=-1)
    kl = ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return (temperature**2) * kl


@keras.saving.register_keras_serializable(package="kdkeras")
class KnowledgeDistillation(keras.losses.Loss):
    """Soft-target knowledge-distillation loss (Hinton et al., 2015).

    `loss = T**2 * mean_over_batch KL(softmax(z_t / T) || softmax(z_s / T))`,
    computed from logits with a numerically stable log-softmax. Unlike
    `keras.distillation.LogitsDistillation` with its default string loss, it
    softens with a softmax and rescales by `T**2`.

    Args:
        temperature: Softening temperature `T > 0`. Defaults to 4.0.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`
            (the batch mean; for dense outputs the mean over pixels too).
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32 (`floatx`), also
            under a `mixed_float16` policy.

    Example:

    ```python
    kd = kdkeras.losses.KnowledgeDistillation(temperature=4.0)
    value = kd(teacher_logits, student_logits)  # teacher first, like y_true
    ```
    """

    def __init__(
        self,
        temperature=4.0,
        reduction="sum_over_batch_size",
        name="knowledge_distillation",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _check_temperature(temperature)

    def call(self, y_true, y_pred):
        return knowledge_distillation(y_true, y_pred, self.temperature)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config


@keras.saving.register_keras_serializable(package="kdkeras")
class FunctionLoss(keras.losses.Loss):
    """A Keras `Loss` around a plain function, with reduction and sample weights.

    Args:
        fn: Callable `fn(y_true, y_pred, **kwargs)` returning one value per
            example (or a scalar). To survive `save`/`load_model` it must be
            registered with `keras.saving.register_keras_serializable`.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss; defaults to the function's name.
        dtype: Dtype of the computation. Defaults to float32.
        **kwargs: Extra keyword arguments passed to `fn`.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="mine")
    def logit_mse(teacher_logits, student_logits):
        return keras.ops.mean(keras.ops.square(teacher_logits - student_logits), axis=-1)

    distiller.compile(distillation_loss_fn=logit_mse)  # wrapped in a FunctionLoss
    ```
    """

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "function_loss"), reduction=reduction, dtype=dtype)
        self.fn = fn
        self.fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(fn=keras.saving.serialize_keras_object(self.fn), **self.fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


def is_keras_kl_divergence(identifier):
    """Whether `identifier` names Keras's probability-space KL divergence.

    Such a loss expects probabilities, not logits. The keras.io distillation
    example applies it to `softmax(z / T)` and multiplies by `T**2`; the
    Distiller honours that meaning by substituting `KnowledgeDistillation`.

    Args:
        identifier: A loss string, function or instance.

    Returns:
        True for `"kl_divergence"` (and its aliases), `keras.losses.kl_divergence`
        and `keras.losses.KLDivergence` instances.
    """
    if isinstance(identifier, str):
        return identifier in _KERAS_KL_NAMES
    if isinstance(identifier, keras.losses.KLDivergence):
        return True
    return identifier is keras.losses.kl_divergence


def get(identifier, temperature=4.0):
    """Resolves a distillation-loss identifier to a Keras `Loss`.

    Args:
        identifier: None (the default soft-target KD loss), a `keras.losses.Loss`
            instance, a config dict, the name `"knowledge_distillation"`,
            Keras's KL divergence (see `is_keras_kl_divergence`), or any callable
            `fn(teacher_logits, student_logits)` returning one value per example
            (or a scalar).
        temperature: Temperature for the default loss and for Keras's KL divergence.

    Returns:
        A `keras.losses.Loss` taking `(teacher_logits, student_logits, sample_weight)`.

    Raises:
        ValueError: for an unknown name or a non-callable identifier.
    """
    if identifier is None or identifier == "knowledge_distillation":
        return KnowledgeDistillation(temperature=temperature)
    if is_keras_kl_divergence(identifier):
        return KnowledgeDistillation(temperature=temperature)
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str):
        raise ValueError(
            f"Unknown distillation loss {identifier!r}. Use 'knowledge_distillation', a "
            "kdkeras.losses object, or any callable fn(teacher_logits, student_logits)."
        )
    if callable(identifier):
        return FunctionLoss(identifier)
    raise ValueError(
        f"`distillation_loss_fn` must be a Keras loss or a callable "
        f"fn(teacher_logits, student_logits), got {identifier!r}."
    )
