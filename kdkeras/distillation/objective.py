"""The distillation objective: what a term is, what it sees, how several teachers fuse.

The `Distiller` minimises

`alpha * student_loss + warmup * sum_i weight_i * term_i + sum(student.losses)`

over a weighted list of distillation terms. A term is a Keras `Loss` with the
teacher in the place of the target, `term(y_true, student_logits, sample_weight)`,
and it declares in `requires` what `y_true` must hold:

| requires | `y_true` |
| --- | --- |
| `("teacher_logits",)` (the default) | the teacher's logits tensor |
| anything else, from `"teacher_logits"`, `"labels"`, `"inputs"` | a dict of those keys |

`"inputs"` is the batch of images as the models take it. Terms whose value
depends on the whole batch, not on each example alone (DIST's correlations
across the batch), set `batch_level = True`: under `tf.distribute` they are
computed on each replica's share of the batch.

Feature terms (`kdkeras.distillation.features.FeatureMatch`) hold layer names and adapter
weights, so they are fixed when the Distiller is built; they follow the same
protocol through `compute(batch, sample_weight)`.

Several teachers are fused per term: a term softens logits with its
`activation` and `temperature`, and the teachers' probabilities are averaged in
that space (`fuse_teachers`); terms that share a space share one fusion.
"""

import tensorflow as tf

from kdkeras.distillation import losses as kd_losses

# The base class lives in `term`, below the terms; `objective.DistillationTerm` stays its public name.
from kdkeras.distillation.term import REQUIREMENTS, DistillationTerm, standardize_logits, targets  # noqa: F401
from kdkeras.registry import CHECKS, DISTILLATION_TERMS


def compute(term, batch, sample_weight=None):
    """The value of any term on a batch: a `DistillationTerm`, a feature term or a plain loss.

    Args:
        term: An object with `compute(batch, sample_weight)`, or a Keras loss
            or `FunctionLoss` of `(teacher_logits, student_logits)`.
        batch: The step's tensors by name (see `Distiller._compute_losses`).
        sample_weight: Per-example weights, or None.

    Returns:
        A scalar tensor, reduced over the batch.
    """
    if hasattr(term, "compute"):
        return term.compute(batch, sample_weight)
    return term(targets(term, batch), batch["student_logits"], sample_weight=sample_weight)


def fusion(term, default_temperature=1.0):
    """`(temperature, activation)` in which `term` averages several teachers.

    A plain Keras loss has neither attribute: it averages softmax
    probabilities at the Distiller's temperature.
    """
    return getattr(term, "temperature", default_temperature), getattr(term, "activation", "softmax")


def fuse_teachers(logits, weights, temperature, activation="softmax"):
    """Fuses several teachers' logits by averaging their softened probabilities.

    Returns `T * log(sum_k w_k * softmax(z_k / T))`, whose softmax at `T` is the
    weighted average of the teachers' probabilities; for "sigmoid" the same
    per label (the log-odds of the averaged sigmoids, times `T`).

    Args:
        logits: List of tensors `(batch, num_classes)`, one per teacher.
        weights: One weight per teacher, summing to 1.
        temperature: Softening temperature `T > 0`.
        activation: "softmax" or "sigmoid".

    Returns:
        Tensor `(batch, num_classes)` in float32.
    """
    log_weights = [tf.math.log(tf.constant(w, tf.float32)) for w in weights]
    scaled = [tf.cast(z, tf.float32) / temperature for z in logits]
    if activation == "sigmoid":
        positive = tf.reduce_logsumexp(
            tf.stack([w + tf.math.log_sigmoid(z) for w, z in zip(log_weights, scaled)]), axis=0
        )
        negative = tf.reduce_logsumexp(
            tf.stack([w + tf.math.log_sigmoid(-z) for w, z in zip(log_weights, scaled)]), axis=0
        )
        return temperature * (positive - negative)
    return temperature * tf.reduce_logsumexp(
        tf.stack([w + tf.nn.log_softmax(z, axis=-1) for w, z in zip(log_weights, scaled)]), axis=0
    )


def check_terms(terms):
    """Validates a weighted list of resolved logits terms.

    Args:
        terms: List of `(term, weight)` pairs.

    Returns:
        The list as `(term, float weight)` pairs.

    Raises:
        ValueError: for a feature term, an unknown requirement, a negative
            weight or two terms of one name (their logs would collide).
    """
    checked = []
    for term, weight in terms:
        if hasattr(term, "student_layer"):
            raise ValueError(
                f"{term!r} reads intermediate layers through adapter weights, which are fixed when "
                "the Distiller is built: pass it as `Distiller(..., features=[...])`, not to compile."
            )
        unknown = sorted(set(getattr(term, "requires", ())) - set(REQUIREMENTS))
        if unknown:
            raise ValueError(
                f"The term {term.name!r} requires {unknown}, which the Distiller does not provide. "
                f"A term may require {', '.join(REQUIREMENTS)}."
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"The weight of the term {term.name!r} must be a number >= 0, got {weight!r}.")
        checked.append((term, float(weight)))
    names = [term.name for term, _ in checked]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Two distillation terms share a name in {names}: give each its own `name=` so that "
            "their logs stay apart."
        )
    return checked


def resolve_terms(distillation_terms, distillation_loss_fn, temperature, weight):
    """The Distiller's `(term, weight)` list, from `distillation_terms` or the keras.io shortcut.

    Args:
        distillation_terms: `compile`'s list of `(term, weight)` pairs or bare
            terms, or None for the shortcut.
        distillation_loss_fn: The shortcut's one term (any form
            `kdkeras.distillation.losses.get` takes).
        temperature: The shortcut's temperature, or None for the term's own default.
        weight: The shortcut term's weight (`1 - alpha` unless `compile`
            was given `distillation_weight`).

    Returns:
        A checked list of `(term, float weight)` pairs.

    Raises:
        ValueError: for both forms at once, an empty list, or a bad term.
    """
    if distillation_terms is not None:
        if distillation_loss_fn is not None or temperature is not None:
            raise ValueError(
                "`distillation_terms` replaces `distillation_loss_fn` and `temperature` (each "
                "term has its own temperature): pass either the list or the keras.io shortcut."
            )
        terms = check_terms([_as_weighted_term(item, kd_losses.get) for item in distillation_terms])
        if not terms:
            raise ValueError("`distillation_terms` is empty: give at least one (term, weight) pair.")
        return terms
    loss = kd_losses.get(distillation_loss_fn, temperature=temperature)
    loss_temperature = getattr(loss, "temperature", None)
    if temperature is not None and loss_temperature is not None and loss_temperature != temperature:
        raise ValueError(
            f"`temperature={temperature}` disagrees with the temperature {loss_temperature} of "
            f"`distillation_loss_fn` ({loss.name}). Set the temperature in one place only."
        )
    return check_terms([(loss, weight)])


def _as_weighted_term(item, get_loss):
    """`(term, weight)` from a pair or a bare term (weight 1); names build with the class defaults."""
    term, weight = item if isinstance(item, (tuple, list)) else (item, 1.0)
    if isinstance(term, str) and term in DISTILLATION_TERMS:
        return DISTILLATION_TERMS.get(term), weight
    if hasattr(term, "compute"):  # a term object already, checked next
        return term, weight
    return get_loss(term), weight


def weighted_mean(values, weights):
    """The terms' weighted mean (plain mean when all weights are 0): the logged `distillation_loss`.

    With a single term it is that term's value, whatever its weight, so the
    keras.io shortcut logs the distillation loss itself, as before terms existed.
    """
    if len(values) == 1:
        return values[0]
    total = sum(weights)
    if not total:
        return tf.add_n(values) / len(values)
    return tf.add_n([(weight / total) * value for weight, value in zip(weights, values)])


@CHECKS.register("teacher_weights")
def check_teacher_weights(weights, count):
    """Validates the weights of `count` teachers' soft targets and normalises them.

    Args:
        weights: One number >= 0 per teacher with a positive sum, or None for
            equal weights.
        count: Number of teachers.

    Returns:
        List of `count` floats summing to 1.

    Raises:
        ValueError: for a wrong length, a negative or non-numeric weight, or a
            zero sum.
    """
    if weights is None:
        return [1.0 / count] * count
    weights = list(weights)
    if (
        len(weights) != count
        or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights)
        or not sum(weights) > 0
    ):
        raise ValueError(
            f"`teacher_weights` must hold one number >= 0 per teacher ({count}), with a positive "
            f"sum; got {weights!r}."
        )
    return [float(w) / sum(weights) for w in weights]
