"""The Distiller's arguments: checked at the boundary, with the fix in every message.

`Distiller.__init__` and `Distiller.compile` call these before building
anything, so a wrong model, weight or keyword fails here with the kdkeras
spelling instead of deep inside a training step. `from_keras_distillation`
maps `keras.distillation.Distiller`'s arguments where the objective is the
same, and says what to write where it is not.
"""

import warnings

import keras

from kdkeras.config import bounds
from kdkeras.distillation import features as kd_features
from kdkeras.distillation import losses as kd_losses

CROSSENTROPY_NAMES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}


def check_teacher(teacher):
    check_model(teacher, "teacher")
    if not teacher.built:
        raise ValueError(
            f"The teacher {teacher.name!r} is not built, so it has no weights to distil "
            "from. Pass a trained teacher (e.g. `keras.models.load_model('teacher.keras')`), "
            "or build it with `teacher.build(input_shape)` before creating the Distiller."
        )
    teacher.trainable = False


def as_feature_match(item):
    if isinstance(item, dict):
        item = keras.saving.deserialize_keras_object(item) if "class_name" in item else kd_features.FeatureMatch(**item)
    if not isinstance(item, kd_features.FeatureMatch):
        raise TypeError(f"`features` must be a list of kdkeras.distillation.features.FeatureMatch, got {item!r}.")
    return item


def check_model(model, role):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{role}` must be a keras.Model that outputs logits, got {type(model).__name__}. "
            "Wrap layers in `keras.Model(inputs, outputs)` or use `kdkeras.models.get_model(...)`."
        )


def output_width(model):
    """The static number of logits of a single-output model, or None if unknown."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(outputs)} outputs; the Distiller needs one logits "
            "output per model. Build a model whose only output is the logits tensor."
        )
    return outputs[0].shape[-1]


def check_widths(teacher_width, student_width):
    if teacher_width is not None and student_width is not None and teacher_width != student_width:
        raise ValueError(
            f"The teacher outputs {teacher_width} logits but the student outputs "
            f"{student_width}: both must predict the same classes, in the same order. Build "
            f"the student with num_classes={teacher_width}."
        )


# Hinton et al. 2015 weigh the hard labels lightly; one home for Distiller.compile and
# `[distill] alpha` (unset there = this).
DEFAULT_ALPHA = 0.1


def check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"`alpha` must be a number in [0, 1], got {alpha!r}. It weighs the student loss; "
            "the distillation loss gets 1 - alpha (Hinton et al. use a small alpha, e.g. 0.1)."
        )
    return float(alpha)


def check_distillation_weight(weight, distillation_terms=None):
    if distillation_terms is not None:
        raise ValueError(
            "`distillation_weight` weighs the keras.io shortcut's one term; with "
            "`distillation_terms` give each term its weight in the list instead."
        )
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
        raise ValueError(
            f"`distillation_weight` must be a finite number >= 0, got {weight!r}; leave it out for "
            "Hinton's `1 - alpha`."
        )
    return float(weight)


def check_warmup_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`warmup_steps` must be an integer >= 0, got {steps!r}.")


def check_mixup(mixup, terms):
    """`mixup` as a float; refused for terms that read one label per image."""
    if isinstance(mixup, bool) or not isinstance(mixup, (int, float)) or not 0 <= mixup < float("inf"):
        raise ValueError(f"`mixup` must be a finite number >= 0 (0 disables it), got {mixup!r}.")
    problem = bounds.mixup_problem(mixup)
    if problem:
        raise ValueError(f"`mixup` = {mixup!r} {problem}")
    needs_labels = [t.name for t, _ in terms if "labels" in getattr(t, "requires", ())]
    if mixup and needs_labels:
        raise ValueError(
            f"mixup mixes two images' labels, but the term(s) {needs_labels} read one label per image: "
            "set mixup=0, or use a term that reads teacher logits only (knowledge_distillation, dist)."
        )
    return float(mixup)


def warn_if_swapped(student, teacher):
    """Warns when the teacher is smaller than the student: the order of keras.distillation is the reverse."""
    if teacher.built and student.built and teacher.count_params() < student.count_params():
        warnings.warn(
            f"The teacher {teacher.name!r} has {teacher.count_params():,} parameters and the student "
            f"{student.name!r} {student.count_params():,}: kdkeras.Distiller takes (student, teacher), "
            "keras.distillation.Distiller (teacher, student). Pass them by keyword if they are swapped.",
            stacklevel=3,
        )


KERAS_DISTILLATION_ARGUMENTS = ("distillation_losses", "distillation_loss_weights", "student_loss_weight")


def from_keras_distillation(arguments, student, teachers):
    """Compile defaults equal to `keras.distillation.Distiller(**arguments)`'s objective.

    keras.distillation minimises `w_s * student_loss + (1 - w_s) * sum_i w_i * term_i`.
    One `LogitsDistillation` with a `keras.losses.KLDivergence()` instance and
    weight 1 is `T**2 * KL(softmax(z_t / T) || softmax(z_s / T))`, kdkeras's
    `KnowledgeDistillation(T)`, with `alpha = w_s`. Everything else raises.
    """
    from keras import distillation as keras_distillation

    alpha = arguments.get("student_loss_weight", 0.5)  # keras.distillation's default
    defaults = {"alpha": check_alpha(alpha)}
    terms = arguments.get("distillation_losses")
    if terms is None:
        raise TypeError(
            "Got keras.distillation's `student_loss_weight` without `distillation_losses`: "
            f"write `distiller.compile(alpha={alpha}, ...)`; the soft-target loss is the default."
        )
    terms = list(terms) if isinstance(terms, (list, tuple)) else [terms]
    weights = arguments.get("distillation_loss_weights") or [1.0] * len(terms)
    logits = keras_distillation.LogitsDistillation
    kd_hint = (
        f"For Hinton's soft targets write `Distiller(student=..., teacher=...)` and "
        f"`compile(distillation_loss_fn=kdkeras.distillation.losses.KnowledgeDistillation(temperature=T), alpha={alpha})`"
    )
    for term in terms:
        if isinstance(term, keras_distillation.FeatureDistillation):
            raise TypeError(
                "keras.distillation.FeatureDistillation compares raw layer outputs of equal shape; "
                "kdkeras matches features through a learned adapter: write "
                "`Distiller(..., features=[kdkeras.distillation.features.FeatureMatch(student_layer=..., "
                f"teacher_layer=..., loss='hint', weight=(1 - {alpha}) * w)])`, and distil the logits "
                "with `compile(distillation_loss_fn=...)`."
            )
        if not isinstance(term, logits):
            raise TypeError(f"Unrecognised keras.distillation term {term!r}. {kd_hint}.")
        if not isinstance(term.loss, keras.losses.KLDivergence):
            raise TypeError(
                f"LogitsDistillation(loss={term.loss!r}) applies that loss to z / T without a softmax "
                "(for 'kl_divergence', KL of logits clipped to [1e-7, 1]: not a distillation objective), "
                f"which kdkeras does not reproduce. {kd_hint}; for another loss `fn(t, s)` of softened "
                "logits, `compile(distillation_loss_fn=lambda t, s: fn(t / T, s / T))`."
            )
    if len(terms) != 1 or list(weights) != [1.0]:
        raise TypeError(
            f"distillation_losses with weights {list(weights)}: kdkeras weighs its single logits term "
            f"with `distillation_weight` (default 1 - alpha). Write `compile(alpha={alpha}, "
            f"distillation_weight=(1 - {alpha}) * w, distillation_loss_fn=kdkeras.distillation.losses."
            "KnowledgeDistillation(temperature=T))`."
        )
    defaults["distillation_loss_fn"] = kd_losses.KnowledgeDistillation(temperature=terms[0].temperature)
    return defaults


# keras.Model.compile's arguments that mean the same for a Distiller.
KERAS_COMPILE_ARGUMENTS = ("run_eagerly", "steps_per_execution", "jit_compile", "auto_scale_loss")
# Arguments the Distiller would otherwise drop or misread, with the kdkeras spelling.
COMPILE_SPELLINGS = {
    "loss": "`student_loss_fn=` (the loss of the student's logits against the labels; the "
    "teacher term is `distillation_loss_fn=`)",
    "loss_weights": "`alpha=` (the student loss weight) and `distillation_weight=` (the distillation "
    "term's weight, by default 1 - alpha)",
    "student_loss_weight": "`alpha=`",
    "distillation_losses": "`distillation_loss_fn=` in compile, or `features=` in the constructor",
}


def check_compile_kwargs(kwargs):
    for key in kwargs:
        if key in KERAS_COMPILE_ARGUMENTS:
            continue
        fix = COMPILE_SPELLINGS.get(key)
        hint = f"kdkeras spells it {fix}." if fix else (
            "Distiller.compile takes optimizer, metrics, weighted_metrics, student_loss_fn, "
            "distillation_loss_fn, distillation_terms, alpha, temperature, distillation_weight, warmup_steps, "
            "mixup and "
            f"keras.Model.compile's {', '.join(KERAS_COMPILE_ARGUMENTS)}."
        )
        raise TypeError(f"Distiller.compile() does not take `{key}=`: {hint}")


def resolve_student_loss(identifier):
    if identifier is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(identifier, str) and identifier in CROSSENTROPY_NAMES:
        return CROSSENTROPY_NAMES[identifier](from_logits=True)
    loss = keras.losses.get(identifier) if not isinstance(identifier, keras.losses.Loss) else identifier
    if getattr(loss, "_fn_kwargs", {}).get("from_logits") is False:
        raise ValueError(
            f"`student_loss_fn` {loss.name!r} has from_logits=False, but the Distiller passes it "
            f"the student's logits. Use `{type(loss).__name__}(from_logits=True)`."
        )
    if not isinstance(loss, keras.losses.Loss):
        loss = kd_losses.FunctionLoss(loss)
    return loss


def log_views(student, teachers):
    """Says once, when teacher and student read different inputs, how each batch is resized for them."""
    shapes = [getattr(model, "input_shape", None) for model in (student, *teachers)]  # subclassed: none
    if None not in shapes and any(shape != shapes[0] for shape in shapes):
        views = ", ".join(f"{m.name} {'x'.join(map(str, m.input_shape[1:]))}" for m in (*teachers, student))
        print(f"kdkeras.Distiller: teacher and student read different inputs ({views}); each step resizes "
              "the batch to each model's view (antialiased when shrinking).")


def without_compile_state(serialized):
    """A serialized teacher without its compile state: it is saved to run, not to train."""
    serialized = dict(serialized)
    serialized.pop("compile_config", None)
    return serialized
