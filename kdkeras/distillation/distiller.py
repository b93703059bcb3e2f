"""The Distiller: a `keras.Model` that trains a student against a frozen teacher."""

import keras
import tensorflow as tf

from kdkeras.data import transforms
from kdkeras.distillation import arguments, batches, objective
from kdkeras.distillation import features as kd_features
from kdkeras.distillation import losses as kd_losses
from kdkeras.distillation import mixup as mixup_lib
from kdkeras.distillation.objective import check_teacher_weights


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(keras.Model):
    """Knowledge distillation as a `keras.Model`: `compile`, then `fit`.

    Each training step runs the frozen teacher (`training=False`) and the
    student (`training=True`) once on the same batch and minimises

    `loss = alpha * student_loss(y, z_s) + w * (sum_i weight_i * term_i
    + sum_j weight_j * feature_term_j) + sum(student.losses)`

    with gradients for the student's trainable variables (and the feature
    adapters) only; `w` ramps linearly from 0 to 1 over `warmup_steps`. The
    terms are `kdkeras.distillation.objective.DistillationTerm`s given to `compile`
    (`distillation_terms`, or the keras.io shortcut `distillation_loss_fn`
    with weight `1 - alpha`); by default one term,
    `T**2 * KL(softmax(z_t / T) || softmax(z_s / T))` (Hinton et al., 2015).
    `fit` and `evaluate` log `loss`, `student_loss`, `distillation_loss` (the
    weight-averaged terms: the one term's value for the shortcut), each
    term's `<name>_loss` when there are several, `feature_loss` with
    `features`, and every compiled metric, computed on the student's logits.
    `sample_weight` and `class_weight` weight every loss term per example.
    Calling the Distiller (and `predict`) returns the student's logits.

    Unlabeled images (a transfer set, see `kdkeras.workflow.transfer`) carry the sparse
    label -1: the student loss and the metrics skip them (the student loss
    is the mean over the batch's labeled images), the distillation terms use
    them like any other image.

    Three ways to change what the student learns from:

    - `features`: match intermediate layers (FitNets hints, attention
      transfer, cosine) through adapters that are not part of the student.
      The student still runs once per step, in the step's training mode.
    - several teachers: their softened probabilities are averaged with
      `teacher_weights`, in each term's space (its `activation` and
      `temperature`), and the term sees the logits of that average.
    - cached teacher logits: batches `({"inputs": x, "teacher_logits": z}, y)`
      (see `kdkeras.distillation.teacher_cache.with_teacher_logits`) skip the teacher's
      forward pass entirely.

    Teachers are set to `trainable = False` in place: the model objects you
    pass are frozen.

    Args:
        student: The `keras.Model` to train. It must output logits.
        teacher: A trained, built `keras.Model` with logits of the same width,
            or a list of them.
        features: Optional list of `kdkeras.distillation.features.FeatureMatch`; needs
            functional models and a single teacher.
        teacher_weights: Weights of several teachers' soft targets (normalised
            to sum to 1). Defaults to equal weights.
        augmentation: Optional layer applied to each training batch, once,
            before the teacher and the student (`[data] augment_on = "device"`),
            so both see the same view. Not saved with the Distiller's config.
        name: Name of the model.
        **kwargs: Passed to `keras.Model`. `keras.distillation.Distiller`'s
            `distillation_losses`, `distillation_loss_weights` and
            `student_loss_weight` are understood where kdkeras computes the
            same objective: one `LogitsDistillation(T, loss=keras.losses.KLDivergence())`
            becomes `compile`'s default `distillation_loss_fn=KnowledgeDistillation(T)`
            and `student_loss_weight` its default `alpha`. Any other value
            raises an error that says what to write instead.

    Example:

    ```python
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=["accuracy"],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        alpha=0.1,
        temperature=4.0,
    )
    distiller.fit(train_ds, validation_data=val_ds, epochs=10)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self, student, teacher, features=None, teacher_weights=None, augmentation=None, name="distiller", **kwargs
    ):
        # keras.distillation's arguments become compile defaults; keras.Model must not see them.
        migrated = {key: kwargs.pop(key) for key in arguments.KERAS_DISTILLATION_ARGUMENTS if key in kwargs}
        super().__init__(name=name, **kwargs)
        self.augmentation = augmentation
        arguments.check_model(student, "student")
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("`teacher` is an empty list: pass at least one trained teacher.")
        width = arguments.output_width(student)
        for model in teachers:
            arguments.check_teacher(model)
            arguments.check_widths(arguments.output_width(model), width)
            arguments.warn_if_swapped(student, model)  # whatever the arguments, positional ones included
        self.student = student
        self.teachers = teachers
        arguments.log_views(student, teachers)
        self.teacher_weights = check_teacher_weights(teacher_weights, len(teachers))
        self.features = [arguments.as_feature_match(f) for f in features or ()]
        self._student_features = self._teacher_features = None
        self.adapters = []
        if self.features:
            self._student_features, self._teacher_features, self.adapters = kd_features.matching_models(
                student, teachers, self.features
            )
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self._distillation_terms = ()
        self._term_trackers = []
        self.alpha = None
        self.distillation_weight = None
        self._distillation_weight_argument = None
        self.temperature = None
        self.warmup_steps = 0
        self._compile_defaults = arguments.from_keras_distillation(migrated, student, teachers) if migrated else {}
        self._student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self._feature_loss_tracker = keras.metrics.Mean(name="feature_loss") if self.features else None
        if student.built:
            self.built = True

    @property
    def teacher(self):
        """The teacher model; for several teachers use `teachers`."""
        if len(self.teachers) > 1:
            raise AttributeError(
                f"This Distiller has {len(self.teachers)} teachers: use `distiller.teachers`."
            )
        return self.teachers[0]

    # Long function: the docstring documents every argument of the keras.io shortcut and of the term
    # list; the body is under 50 lines.
    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=None,
        temperature=None,
        warmup_steps=0,
        weighted_metrics=None,
        distillation_terms=None,
        distillation_weight=None,
        mixup=0.0,
        **kwargs,
    ):
        """Configures the Distiller for training.

        Args:
            optimizer: Optimizer instance or name; it updates the student's
                variables (and the feature adapters') only.
            metrics: Metrics computed on the student's logits, e.g. `["accuracy"]`.
            student_loss_fn: Loss of the student's logits against the labels.
                Defaults to `SparseCategoricalCrossentropy(from_logits=True)`.
                A crossentropy given by name is built with `from_logits=True`;
                an instance with `from_logits=False` is rejected, because the
                Distiller always passes logits.
            distillation_loss_fn: Loss of `(teacher_logits, student_logits)`,
                the one term of the keras.io shortcut, weighted `1 - alpha`: a
                `kdkeras.distillation.objective.DistillationTerm` or its registered name
                ("knowledge_distillation", "decoupled_kd", "dist", ...: see
                `kdkeras list`), or any Keras loss or callable.
                Defaults to `kdkeras.distillation.losses.KnowledgeDistillation(temperature)`.
                Keras's `KLDivergence` (instance or name) is understood as in
                the keras.io example, on `softmax(z / T)` and scaled by `T**2`,
                so it is replaced by `KnowledgeDistillation(temperature)`.
            alpha: Weight of the student loss in `[0, 1]`; the distillation
                loss gets `1 - alpha`. Defaults to 0.1 (or the constructor's
                `student_loss_weight`).
            temperature: Softening temperature `T > 0` of a loss built here.
                Defaults to the loss's own (4.0 for `KnowledgeDistillation`,
                1.0 for DIST), or to the `temperature` of the loss you pass.
            warmup_steps: Optimizer steps over which the distillation and
                feature terms ramp linearly from 0 to full weight (DKD uses 20
                epochs' worth). Defaults to 0, no warm-up.
            weighted_metrics: Metrics weighted by `sample_weight`/`class_weight`.
            distillation_terms: The objective as a list of `(term, weight)`
                pairs (a bare term weighs 1), each term a
                `kdkeras.distillation.objective.DistillationTerm`, a registered name
                ("dist", built with its defaults) or any form
                `distillation_loss_fn` takes, e.g.
                `[(KnowledgeDistillation(4.0), 0.9), (DIST(), 2.0)]`.
                Replaces `distillation_loss_fn` and `temperature` (each term
                has its own); `alpha` still weighs the student loss. Feature
                terms go to `Distiller(features=...)`.
            distillation_weight: Weight of the distillation term. Defaults to
                `1 - alpha` (Hinton et al., keras.io, `keras.distillation`);
                seed 002's article optimises `alpha * CE + KL`: weight 1.0,
                with `KnowledgeDistillation(T, t_squared=False)`.
            mixup: Concentration `a` of mixup inside each training step
                (`kdkeras.distillation.mixup`, the function matching of Beyer et al. 2022):
                every image is mixed with another of the batch, weight
                `lam ~ Beta(a, a)`, and teacher and student see the mixture;
                the student loss becomes the mixup loss. 0 (the default)
                disables it. Needs the teacher's forward pass (no cached
                logits).
            **kwargs: Passed to `keras.Model.compile`: `jit_compile`,
                `steps_per_execution`, `run_eagerly`, `auto_scale_loss`.

        Raises:
            TypeError: for an argument the Distiller would not honour, such as
                `loss` (write `student_loss_fn`) or `loss_weights` (`alpha`).
        """
        arguments.check_compile_kwargs(kwargs)
        if distillation_loss_fn is None:
            distillation_loss_fn = self._compile_defaults.get("distillation_loss_fn")
        if alpha is None:
            alpha = self._compile_defaults.get("alpha", arguments.DEFAULT_ALPHA)
        alpha = arguments.check_alpha(alpha)
        if distillation_weight is not None:
            distillation_weight = arguments.check_distillation_weight(distillation_weight, distillation_terms)
        if temperature is not None:
            temperature = kd_losses._check_temperature(temperature)
        arguments.check_warmup_steps(warmup_steps)
        weight = 1.0 - alpha if distillation_weight is None else distillation_weight
        terms = objective.resolve_terms(distillation_terms, distillation_loss_fn, temperature, weight)
        mixup = arguments.check_mixup(mixup, terms)
        super().compile(
            optimizer=optimizer, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs
        )
        self.student_loss_fn = arguments.resolve_student_loss(student_loss_fn)
        # The shortcut's one term is `distillation_loss_fn`; a list has none.
        self.distillation_loss_fn = terms[0][0] if distillation_terms is None else None
        self._distillation_terms = tuple(terms)
        # With one term its value is `distillation_loss` already.
        self._term_trackers = [keras.metrics.Mean(name=f"{t.name}_loss") for t, _ in terms] if len(terms) > 1 else []
        self.alpha = alpha
        self.distillation_weight = 1.0 - alpha if distillation_weight is None else distillation_weight
        self._distillation_weight_argument = distillation_weight  # None keeps following alpha on reload
        if self.distillation_loss_fn is not None:
            self.temperature = getattr(self.distillation_loss_fn, "temperature", temperature)
        else:
            self.temperature = None
        self.warmup_steps = warmup_steps
        self.mixup = mixup
        # Created here, in the strategy scope compile runs in; seeded by keras.utils.set_random_seed.
        self._mixup_seed = keras.random.SeedGenerator() if self.mixup else None

    @property
    def distillation_terms(self):
        """The compiled objective: a list of `(term, weight)` pairs (features excluded)."""
        return list(self._distillation_terms)

    @property
    def metrics(self):
        return [*super().metrics, *self._term_trackers]

    def get_compile_config(self):
        config = super().get_compile_config()
        if not config:
            return config
        config.pop("loss", None)
        config.pop("loss_weights", None)
        config.update(
            student_loss_fn=keras.saving.serialize_keras_object(self.student_loss_fn),
            alpha=self.alpha,
            warmup_steps=self.warmup_steps,
            distillation_weight=self._distillation_weight_argument,
            mixup=self.mixup,
        )
        if self.distillation_loss_fn is not None:
            config.update(
                distillation_loss_fn=keras.saving.serialize_keras_object(self.distillation_loss_fn),
                temperature=self.temperature,
            )
        else:
            config["distillation_terms"] = [
                [keras.saving.serialize_keras_object(term), weight] for term, weight in self._distillation_terms
            ]
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # The saved optimizer state is loaded into these variables next.
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        inputs, _ = batches.split_inputs(inputs)
        return self.student(transforms.for_model(inputs, self.student), training=training)

    def teacher_logits(self, inputs):
        """The teachers' logits for a batch; the soft targets of several are averaged.

        Several teachers are combined as `T * log(sum_k w_k * softmax(z_k / T))`
        (sigmoid terms: the same in logit space), whose softmax at `T` is the
        weighted average of the teachers' softened probabilities, in the
        space of the compiled terms (see `kdkeras.distillation.objective.fuse_teachers`).

        Args:
            inputs: A batch of images; each teacher reads its own view of it
                (`kdkeras.data.transforms.for_model`).

        Returns:
            Tensor `(batch, num_classes)` of (combined) teacher logits.

        Raises:
            ValueError: for several teachers and terms that soften differently,
                which need one fusion each.
        """
        logits = [teacher(transforms.for_model(inputs, teacher), training=False) for teacher in self.teachers]
        if len(logits) == 1:
            return logits[0]
        self._check_compiled()
        fusions = {self._fusion(term) for term, _ in self._distillation_terms}
        if len(fusions) > 1:
            raise ValueError(
                f"The terms soften the teachers differently ({sorted(fusions)} as (temperature, "
                "activation)), so there is no one combined teacher: distil from one teacher, or give "
                "the terms one temperature."
            )
        return objective.fuse_teachers(logits, self.teacher_weights, *fusions.pop())

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled()
        x, teacher_logits = batches.split_inputs(x)
        if self.augmentation is not None:
            x = self.augmentation(x, training=True)
        labels = [(y, sample_weight)]
        if self.mixup:
            if teacher_logits is not None:
                raise ValueError(
                    "mixup shows the teacher images it has not seen, so it cannot use cached teacher "
                    "logits: set mixup=0, or drop the cache ([distill] cache_teacher = false)."
                )
            x, lam, partner = mixup_lib.mix(x, self.mixup, self._mixup_seed)
            labels = mixup_lib.mixed_labels(y, sample_weight, lam, partner)
        teacher_logits, teacher_features = self._teacher_outputs(x, teacher_logits)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            student_logits, student_features = self._student_outputs(x, training=True)
            loss = self._compute_losses(
                x, labels, student_logits, teacher_logits, student_features, teacher_features, sample_weight
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        return self.compute_metrics(x, *batches.labeled(y, student_logits, sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled()
        x, teacher_logits = batches.split_inputs(x)
        teacher_logits, teacher_features = self._teacher_outputs(x, teacher_logits)
        student_logits, student_features = self._student_outputs(x, training=False)
        self._compute_losses(
            x, [(y, sample_weight)], student_logits, teacher_logits, student_features, teacher_features,
            sample_weight,
        )
        return self.compute_metrics(x, *batches.labeled(y, student_logits, sample_weight))

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = batches.split_inputs(x)
        return self.student(transforms.for_model(x, self.student), training=False)

    def _teacher_outputs(self, x, cached_logits):
        """`(teacher_logits, teacher_features)`, without gradients."""
        if cached_logits is not None:
            if self.features:
                raise ValueError(
                    "Cached teacher logits carry no intermediate features, and this Distiller "
                    "matches features: feed plain (x, y) batches, or drop `features`."
                )
            return tf.stop_gradient(cached_logits), []
        if self.features:
            logits, *features = self._teacher_features(transforms.for_model(x, self.teachers[0]), training=False)
            return tf.stop_gradient(logits), [tf.stop_gradient(f) for f in features]
        logits = [tf.stop_gradient(t(transforms.for_model(x, t), training=False)) for t in self.teachers]
        return (logits if len(logits) > 1 else logits[0]), []  # several are fused per term, in _compute_losses

    def _student_outputs(self, x, training):
        """`(student_logits, adapted_features)` from a single forward pass, on the student's view."""
        x = transforms.for_model(x, self.student)
        if not self.features:
            return self.student(x, training=training), []
        logits, *features = self._student_features(x, training=training)
        return logits, [adapter(f, training=training) for adapter, f in zip(self.adapters, features)]

    def _compute_losses(
        self, x, labels, student_logits, teacher_logits, student_features, teacher_features, sample_weight
    ):
        """Returns the total loss of this replica and updates the loss trackers.

        `labels` is a list of `(y, sample_weight)` whose student losses add up:
        one pair, or mixup's two halves (`kdkeras.distillation.mixup.mixed_labels`).

        Every term sees the same batch dict (`kdkeras.distillation.objective.compute`) and
        takes what its `requires` asks for; `teacher_logits` is a list when
        there are several teachers, fused here once per softening space.

        Keras losses already divide their batch mean by the number of replicas
        (their gradients are summed across replicas); the regularization term
        is divided here the same way, and the trackers log the global values.
        """
        teachers = teacher_logits if isinstance(teacher_logits, list) else [teacher_logits]
        for logits in teachers:
            arguments.check_widths(logits.shape[-1], student_logits.shape[-1])
        student_loss = tf.add_n([self.student_loss_fn(*batches.labeled(y, student_logits, w)) for y, w in labels])
        batch = {
            "inputs": x,
            "labels": labels[0][0],
            "student_logits": student_logits,
            "features": dict(zip(self.features, zip(teacher_features, student_features))),
        }
        fused = {}
        values = []
        for term, _ in self._distillation_terms:
            fusion = self._fusion(term)
            if fusion not in fused:
                fused[fusion] = teachers[0] if len(teachers) == 1 else objective.fuse_teachers(
                    teachers, self.teacher_weights, *fusion
                )
            values.append(objective.compute(term, dict(batch, teacher_logits=fused[fusion]), sample_weight))
        weights = [weight for _, weight in self._distillation_terms]
        distillation = tf.add_n([weight * value for weight, value in zip(weights, values)])
        tracked = [
            (self._student_loss_tracker, student_loss),
            (self._distillation_loss_tracker, objective.weighted_mean(values, weights)),
            *zip(self._term_trackers, values),
        ]
        if self.features:
            feature_loss = tf.add_n([
                match.weight * objective.compute(match, batch, sample_weight) for match in self.features
            ])
            distillation = distillation + feature_loss
            tracked.append((self._feature_loss_tracker, feature_loss))
        loss = self.alpha * student_loss + self._warmup_factor(distillation.dtype) * distillation
        if self.student.losses:
            regularization = tf.add_n([tf.cast(r, loss.dtype) for r in self.student.losses])
            loss = loss + regularization / batches.replicas(loss.dtype)
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        for tracker, value in [(self._loss_tracker, loss), *tracked]:
            tracker.update_state(value * batches.replicas(value.dtype), sample_weight=batch_size)
        return loss

    def _fusion(self, term):
        return objective.fusion(term, self.temperature or 1.0)

    def _warmup_factor(self, dtype):
        if not self.warmup_steps:
            return tf.constant(1.0, dtype)
        step = tf.cast(self.optimizer.iterations + 1, dtype)
        return tf.minimum(step / self.warmup_steps, 1.0)

    def _check_compiled(self):
        if self.student_loss_fn is None:
            raise RuntimeError(
                "The Distiller is not compiled. Call `distiller.compile(optimizer=..., "
                "metrics=..., alpha=..., temperature=...)` before `fit` or `evaluate`."
            )

    def get_config(self):
        config = super().get_config()
        # A teacher is saved as a model to run, not to train: its own compile state (the
        # optimizer it was trained with) would come back unbuilt and make loading warn.
        teachers = [arguments.without_compile_state(keras.saving.serialize_keras_object(t)) for t in self.teachers]
        config.update(
            student=keras.saving.serialize_keras_object(self.student),
            teacher=teachers[0] if len(teachers) == 1 else teachers,
            features=[keras.saving.serialize_keras_object(f) for f in self.features] or None,
            teacher_weights=self.teacher_weights if len(teachers) > 1 else None,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)

        def load(item):
            return keras.saving.deserialize_keras_object(item, custom_objects=custom_objects)

        student = load(config.pop("student"))
        teacher = config.pop("teacher")
        teacher = [load(t) for t in teacher] if isinstance(teacher, list) else load(teacher)
        features = [load(f) for f in config.pop("features", None) or ()]
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(student=student, teacher=teacher, features=features or None, **config)
