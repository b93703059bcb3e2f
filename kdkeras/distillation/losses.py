"""Knowledge-distillation losses on logits: the Distiller's logits terms.

Every loss here is a `kdkeras.distillation.objective.DistillationTerm`: a Keras `Loss` with
the teacher in the place of the target, `loss(teacher_logits, student_logits,
sample_weight)`. Both arguments are logits (pre-softmax), which is what the
kdkeras model zoo emits, so a loss can soften them with its own temperature.
A term that needs more than the teacher's logits says so in `requires`
(DKD needs the labels) and then takes a dict `{"teacher_logits": z_t, "labels": y}`.

Each class is registered by name in `kdkeras.registry.DISTILLATION_TERMS`, the
names `[distill] loss` accepts. Adding a method is one class (here, or in
`kdkeras.distillation.relations` for batch-level relations) plus its
`@DISTILLATION_TERMS.register(name)` line.
"""

import warnings

import keras
from keras import ops

from kdkeras.config import bounds
from kdkeras.distillation.term import DistillationTerm
from kdkeras.registry import DISTILLATION_TERMS

# Hinton et al.'s soft-target temperature, the default of every KD-family term here. A term
# with another native default keeps its own (DIST: 1); a loss built from a name without a
# temperature gets its class default, so each default lives once, in its class.
DEFAULT_TEMPERATURE = 4.0

_KERAS_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence", "KLDivergence")
# Subtracted from the target logit to drop it from a softmax; finite, so that
# 0 * (masked - masked) stays 0 instead of NaN.
_MASKED = 1e9


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
    problem = bounds.temperature_problem(temperature)
    if problem:
        raise ValueError(f"`temperature` = {temperature:g} {problem}")
    return float(temperature)


def _check_weight(value, name, term):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"`{name}` weighs {term} and must be a number >= 0, got {value!r}.")
    return float(value)


def knowledge_distillation(teacher_logits, student_logits, temperature=DEFAULT_TEMPERATURE):
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


@DISTILLATION_TERMS.register("knowledge_distillation")
@keras.saving.register_keras_serializable(package="kdkeras")
class KnowledgeDistillation(DistillationTerm):
    """Soft-target knowledge-distillation loss (Hinton et al., 2015).

    `loss = T**2 * mean_over_batch KL(softmax(z_t / T) || softmax(z_s / T))`,
    computed from logits with a numerically stable log-softmax. Unlike
    `keras.distillation.LogitsDistillation` with its default string loss, it
    softens with a softmax and rescales by `T**2`.

    Args:
        temperature: Softening temperature `T > 0`. Defaults to `DEFAULT_TEMPERATURE` (4.0).
        t_squared: Multiply by `T**2` (Hinton et al.). False gives the plain
            `KL(softmax(z_t / T) || softmax(z_s / T))` of seed 002's article
            (and of the keras.io example before it added `T**2`), whose
            gradients shrink as `1 / T**2`. Defaults to True.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`
            (the batch mean; for dense outputs the mean over pixels too).
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32 (`floatx`), also
            under a `mixed_float16` policy.
        standardize: Z-score both logits per example first (logit
            standardization, Sun et al. 2024; see `LogitStandardizedKD`).

    Example:

    ```python
    kd = kdkeras.distillation.losses.KnowledgeDistillation(temperature=4.0)
    value = kd(teacher_logits, student_logits)  # teacher first, like y_true
    ```
    """

    def __init__(
        self,
        temperature=DEFAULT_TEMPERATURE,
        t_squared=True,
        reduction="sum_over_batch_size",
        name="knowledge_distillation",
        dtype=None,
        standardize=False,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype, standardize=standardize)
        self.temperature = _check_temperature(temperature)
        if not isinstance(t_squared, bool):
            raise ValueError(f"`t_squared` must be True or False, got {t_squared!r}.")
        self.t_squared = t_squared

    def call(self, y_true, y_pred):
        value = knowledge_distillation(y_true, y_pred, self.temperature)
        return value if self.t_squared else value / self.temperature**2

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, t_squared=self.t_squared)
        return config


def _label_mask(labels, logits):
    """One-hot float mask of the target class from sparse or one-hot labels."""
    num_classes = logits.shape[-1]
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == num_classes:
        return ops.cast(labels, "float32")
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")


def _target_log_probs(scaled_logits, mask):
    """`(log p_target, log (1 - p_target))` computed without forming 1 - p."""
    log_norm = ops.logsumexp(scaled_logits, axis=-1)
    log_target = ops.sum(mask * scaled_logits, axis=-1) - log_norm
    log_others = ops.logsumexp(scaled_logits - _MASKED * mask, axis=-1) - log_norm
    return log_target, log_others


def decoupled_kd_terms(teacher_logits, student_logits, labels, temperature=DEFAULT_TEMPERATURE):
    """Per-example TCKD and NCKD of Decoupled KD (Zhao et al., CVPR 2022).

    With `b = [p_target, 1 - p_target]` the binary target/non-target split and
    `p_hat` the softmax over the non-target classes only (all at temperature T):

    - `TCKD = T**2 * KL(b_teacher || b_student)`
    - `NCKD = T**2 * KL(p_hat_teacher || p_hat_student)`

    They decompose the classic KD loss per example:
    `KD = TCKD + (1 - p_teacher_target) * NCKD`. With two classes the
    non-target distribution has a single class, so NCKD is exactly 0.

    Args:
        teacher_logits: Tensor `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        labels: Sparse class indices `(...)` (or `(..., 1)`), or one-hot
            labels `(..., num_classes)`.
        temperature: Softening temperature `T > 0`.

    Returns:
        `(tckd, nckd)`: two tensors of shape `(...)`, in float32.

    Example:

    >>> tckd, nckd = decoupled_kd_terms([[3.0, 0.5, 0.2]], [[2.0, 1.0, 0.1]], [0])
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    mask = _label_mask(labels, t)
    t_target, t_others = _target_log_probs(t, mask)
    s_target, s_others = _target_log_probs(s, mask)
    tckd = ops.exp(t_target) * (t_target - s_target) + ops.exp(t_others) * (t_others - s_others)
    log_q_t = ops.log_softmax(t - _MASKED * mask, axis=-1)
    log_q_s = ops.log_softmax(s - _MASKED * mask, axis=-1)
    nckd = ops.sum((1.0 - mask) * ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)
    return (temperature**2) * tckd, (temperature**2) * nckd


@DISTILLATION_TERMS.register("decoupled_kd")
@keras.saving.register_keras_serializable(package="kdkeras")
class DecoupledKD(DistillationTerm):
    """Decoupled knowledge distillation, DKD (Zhao et al., CVPR 2022).

    `loss = tckd_weight * TCKD + nckd_weight * NCKD` (see `decoupled_kd_terms`;
    the paper's alpha and beta, renamed so that neither is mistaken for the
    Distiller's `alpha`, the weight of the student loss). Classic KD weighs
    NCKD by the teacher's non-target mass `1 - p_target`, which shrinks
    exactly when the teacher is confident; DKD gives it a free weight.
    The paper's CIFAR-100 setting is `tckd_weight=1, nckd_weight=8, T=4` with the
    distillation term warmed up linearly over the first 20 epochs
    (`Distiller.compile(warmup_steps=...)`).

    The loss needs the labels, so it takes `{"teacher_logits": z_t, "labels": y}`
    in place of the teacher's logits; the Distiller passes that for you.

    Binary tasks: with two classes NCKD is identically 0 and DKD reduces to
    `tckd_weight * TCKD`, which equals `tckd_weight` times the classic KD loss. The loss
    then warns once and computes exactly that, so binary medical tasks still
    train; use `KnowledgeDistillation` there to say what you mean.

    Args:
        tckd_weight: Weight of TCKD (the paper's alpha), `>= 0`. Defaults to 1.0.
        nckd_weight: Weight of NCKD (the paper's beta), `>= 0`. Defaults to 8.0.
        temperature: Softening temperature `T > 0`. Defaults to `DEFAULT_TEMPERATURE` (4.0).
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32.
        standardize: Z-score both logits per example first (logit
            standardization, Sun et al. 2024). Defaults to False.

    Example:

    ```python
    distiller.compile(
        optimizer="adam",
        distillation_loss_fn=kdkeras.distillation.losses.DecoupledKD(tckd_weight=1.0, nckd_weight=8.0, temperature=4.0),
        alpha=0.5,
        warmup_steps=20 * steps_per_epoch,
    )
    ```
    """

    requires = ("teacher_logits", "labels")

    def __init__(
        self,
        tckd_weight=1.0,
        nckd_weight=8.0,
        temperature=DEFAULT_TEMPERATURE,
        reduction="sum_over_batch_size",
        name="decoupled_kd",
        dtype=None,
        standardize=False,
        *,
        alpha=None,
        beta=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype, standardize=standardize)
        # kdkeras 0.1 named the weights after the paper; the names stay readable one release.
        for old, new, value in (("alpha", "tckd_weight", alpha), ("beta", "nckd_weight", beta)):
            if value is not None:
                warnings.warn(
                    f"DecoupledKD({old}=...) is deprecated: use {new}= (the paper's {old}); "
                    f"`{old}` will be removed.",
                    DeprecationWarning,
                    stacklevel=2,
                )
        tckd_weight = tckd_weight if alpha is None else alpha
        nckd_weight = nckd_weight if beta is None else beta
        self.tckd_weight = _check_weight(tckd_weight, "tckd_weight", "TCKD")
        self.nckd_weight = _check_weight(nckd_weight, "nckd_weight", "NCKD")
        self.temperature = _check_temperature(temperature)

    def call(self, y_true, y_pred):
        if not isinstance(y_true, dict) or set(y_true) != {"teacher_logits", "labels"}:
            raise ValueError(
                "DecoupledKD needs the labels: call it as "
                "`loss({'teacher_logits': z_t, 'labels': y}, z_s)` (the Distiller does this)."
            )
        if y_pred.shape[-1] == 2:
            warnings.warn(
                "DecoupledKD on 2 classes: the non-target distribution has a single class, so "
                "NCKD is 0 and DKD equals tckd_weight * KD. Use KnowledgeDistillation for binary tasks.",
                stacklevel=2,
            )
        tckd, nckd = decoupled_kd_terms(
            y_true["teacher_logits"], y_pred, y_true["labels"], self.temperature
        )
        return self.tckd_weight * tckd + self.nckd_weight * nckd

    def get_config(self):
        config = super().get_config()
        config.update(tckd_weight=self.tckd_weight, nckd_weight=self.nckd_weight, temperature=self.temperature)
        return config


def multilabel_kd(teacher_logits, student_logits, temperature=DEFAULT_TEMPERATURE):
    """Per-example soft-target KD for multi-label outputs (one sigmoid per label).

    Each label is its own binary distribution `[sigmoid(z / T), 1 - sigmoid(z / T)]`:
    the loss is `T**2 * mean over labels of KL(teacher || student)`, the
    sigmoid counterpart of `knowledge_distillation` (a softmax across labels
    would wrongly make the findings of one X-ray compete with each other).

    Args:
        teacher_logits: Tensor `(..., num_labels)` of teacher logits.
        student_logits: Tensor of the same shape.
        temperature: Softening temperature `T > 0`.

    Returns:
        Tensor of shape `(...)`, in float32.

    Example:

    >>> float(multilabel_kd([[2.0, -1.0]], [[0.0, 0.0]], temperature=1.0)[0])
    0.2193...
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    t_pos, t_neg = ops.log_sigmoid(t), ops.log_sigmoid(-t)
    s_pos, s_neg = ops.log_sigmoid(s), ops.log_sigmoid(-s)
    kl = ops.exp(t_pos) * (t_pos - s_pos) + ops.exp(t_neg) * (t_neg - s_neg)
    return (temperature**2) * ops.mean(kl, axis=-1)


@DISTILLATION_TERMS.register("multilabel_kd")
@keras.saving.register_keras_serializable(package="kdkeras")
class MultiLabelKD(KnowledgeDistillation):
    """Soft-target KD for multi-label tasks such as ChestMNIST's 14 findings.

    `loss = T**2 * mean over batch and labels of KL(sigmoid(z_t / T) || sigmoid(z_s / T))`,
    each label as a binary distribution (see `multilabel_kd`).

    Args:
        temperature: Softening temperature `T > 0`. Defaults to `DEFAULT_TEMPERATURE` (4.0).
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32.

    Example:

    ```python
    distiller.compile(
        student_loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
        distillation_loss_fn=kdkeras.distillation.losses.MultiLabelKD(temperature=2.0),
    )
    ```
    """

    activation = "sigmoid"

    def __init__(self, temperature=DEFAULT_TEMPERATURE, reduction="sum_over_batch_size", name="multilabel_kd", dtype=None):
        super().__init__(temperature=temperature, reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return multilabel_kd(y_true, y_pred, self.temperature)

    def get_config(self):
        # Always scaled by T**2 (`multilabel_kd`): the parent's `t_squared` is no argument here,
        # and leaving it in made a saved MultiLabelKD fail to load.
        config = super().get_config()
        config.pop("t_squared", None)
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


def get(identifier, temperature=None, **options):
    """Resolves a distillation-loss identifier to a Keras `Loss`.

    Args:
        identifier: None (the default soft-target KD loss), a `keras.losses.Loss`
            instance, a config dict, a name of `kdkeras.registry.DISTILLATION_TERMS`,
            Keras's KL divergence (see `is_keras_kl_divergence`), or any
            callable `fn(teacher_logits, student_logits)` returning one value
            per example (or a scalar).
        temperature: Temperature of a loss built from a name (and of Keras's
            KL divergence); None builds it at its class's own default
            (`DEFAULT_TEMPERATURE` for the KD family, 1 for DIST).
        **options: Extra arguments of a loss built from a name, e.g.
            `tckd_weight=1.0, nckd_weight=8.0` for "decoupled_kd".

    Returns:
        A `keras.losses.Loss` taking `(teacher_logits, student_logits, sample_weight)`.

    Raises:
        ValueError: for an unknown name, options given with an instance, or a
            non-callable identifier.
    """
    if identifier is None:
        identifier = "knowledge_distillation"
    if is_keras_kl_divergence(identifier):
        identifier = "knowledge_distillation"
    if isinstance(identifier, str):
        names = DISTILLATION_TERMS.names()
        if identifier not in names:
            raise ValueError(
                f"Unknown distillation loss {identifier!r}. Use one of {', '.join(names)}, a "
                "kdkeras.distillation.losses object, or any callable fn(teacher_logits, student_logits)."
            )
        if temperature is not None:
            options["temperature"] = temperature
        try:
            return DISTILLATION_TERMS.get(identifier, **options)
        except TypeError as error:
            raise ValueError(f"Bad options {options} for the {identifier!r} loss: {error}.") from None
    if options:
        raise ValueError(
            f"Options {sorted(options)} apply to a loss given by name, not to {identifier!r}: "
            "set them on the loss object instead."
        )
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if callable(identifier):
        return FunctionLoss(identifier)
    raise ValueError(
        f"`distillation_loss_fn` must be a Keras loss or a callable "
        f"fn(teacher_logits, student_logits), got {identifier!r}."
    )

