"""The Distiller: a `keras.Model` that trains a student against a frozen teacher."""

import keras
import tensorflow as tf

from kdkeras import features as kd_features
from kdkeras import losses as kd_losses

_CROSSENTROPY_NAMES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(keras.Model):
    """Knowledge distillation as a `keras.Model`: `compile`, then `fit`.

    Each training step runs the frozen teacher (`training=False`) and the
    student (`training=True`) once on the same batch and minimises

    `loss = alpha * student_loss(y, z_s) + w * ((1 - alpha) * distillation_loss(z_t, z_s)
    + sum_i weight_i * feature_loss_i) + sum(student.losses)`

    with gradients for the student's trainable variables (and the feature
    adapters) only; `w` ramps linearly from 0 to 1 over `warmup_steps`. By
    default the distillation loss is `T**2 * KL(softmax(z_t / T) || softmax(z_s / T))`
    (Hinton et al., 2015). `fit` and `evaluate` log `loss`, `student_loss`,
    `distillation_loss` (and `feature_loss` with `features`) and every
    compiled metric, computed on the student's logits. `sample_weight` and
    `class_weight` weight every loss term per example. Calling the Distiller
    (and `predict`) returns the student's logits.

    Three ways to change what the student learns from:

    - `features`: match intermediate layers (FitNets hints, attention
      transfer, cosine) through adapters that are not part of the student.
      The student still runs once per step, in the step's training mode.
    - several teachers: their softened probabilities are averaged with
      `teacher_weights`, and the losses see the logits of that average.
    - cached teacher logits: batches `({"inputs": x, "teacher_logits": z}, y)`
      (see `kdkeras.teacher_cache.with_teacher_logits`) skip the teacher's
      forward pass entirely.

    Teachers are set to `trainable = False` in place: the model objects you
    pass are frozen.

    Args:
        student: The `keras.Model` to train. It must output logits.
        teacher: A trained, built `keras.Model` with logits of the same width,
            or a list of them.
        features: Optional list of `kdkeras.features.FeatureMatch`; needs
            functional models and a single teacher.
        teacher_weights: Weights of several teachers' soft targets (normalised
            to sum to 1). Defaults to equal weights.
        augmentation: Optional layer applied to each training batch, once,
            before the teacher and the student (`[data] augment_on = "device"`),
            so both see the same view. Not saved with the Distiller's config.
        name: Name of the model.
        **kwargs: Passed to `keras.Model`.

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
        super().__init__(name=name, **kwargs)
        self.augmentation = augmentation
        _check_model(student, "student")
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("`teacher` is an empty list: pass at least one trained teacher.")
        for model in teachers:
            _check_teacher(model)
        width = _output_width(student)
        for model in teachers:
            _check_widths(_output_width(model), width)
        self.student = student
        self.teachers = teachers
        self.teacher_weights = check_teacher_weights(teacher_weights, len(teachers))
        self.features = [_as_feature_match(f) for f in features or ()]
        self._student_features = self._teacher_features = None
        self.adapters = []
        if self.features:
            self._build_feature_models()
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self.alpha = None
        self.temperature = None
        self.warmup_steps = 0
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

    def _build_feature_models(self):
        if len(self.teachers) > 1:
            raise ValueError(
                "Feature distillation matches layers of one teacher; with several teachers "
                "distil their logits only (drop `features`)."
            )
        self._student_features = kd_features.feature_models(
            self.student, [f.student_layer for f in self.features], "student"
        )
        self._teacher_features = kd_features.feature_models(
            self.teachers[0], [f.teacher_layer for f in self.features], "teacher"
        )
        student_shapes = [t.shape for t in self._student_features.outputs[1:]]
        teacher_shapes = [t.shape for t in self._teacher_features.outputs[1:]]
        self.adapters = [
            match.build_adapter(s, t) for match, s, t in zip(self.features, student_shapes, teacher_shapes)
        ]

    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=0.1,
        temperature=None,
        warmup_steps=0,
        weighted_metrics=None,
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
            distillation_loss_fn: Loss of `(teacher_logits, student_logits)`:
                a `kdkeras.losses` object or name ("knowledge_distillation",
                "decoupled_kd", "multilabel_kd"), or any Keras loss or callable.
                Defaults to `kdkeras.losses.KnowledgeDistillation(temperature)`.
                Keras's `KLDivergence` (instance or name) is understood as in
                the keras.io example, on `softmax(z / T)` and scaled by `T**2`,
                so it is replaced by `KnowledgeDistillation(temperature)`.
            alpha: Weight of the student loss in `[0, 1]`; the distillation
                loss gets `1 - alpha`. Defaults to 0.1.
            temperature: Softening temperature `T > 0` of a loss built here.
                Defaults to 4.0, or to the `temperature` of the loss you pass.
            warmup_steps: Optimizer steps over which the distillation and
                feature terms ramp linearly from 0 to full weight (DKD uses 20
                epochs' worth). Defaults to 0, no warm-up.
            weighted_metrics: Metrics weighted by `sample_weight`/`class_weight`.
            **kwargs: Passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, `run_eagerly`, ...).
        """
        alpha = _check_alpha(alpha)
        if temperature is not None:
            temperature = kd_losses._check_temperature(temperature)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an integer >= 0, got {warmup_steps!r}.")
        distillation_loss_fn = kd_losses.get(
            distillation_loss_fn, temperature=4.0 if temperature is None else temperature
        )
        loss_temperature = getattr(distillation_loss_fn, "temperature", None)
        if temperature is not None and loss_temperature is not None and loss_temperature != temperature:
            raise ValueError(
                f"`temperature={temperature}` disagrees with the temperature "
                f"{loss_temperature} of `distillation_loss_fn` ({distillation_loss_fn.name}). "
                "Set the temperature in one place only."
            )
        super().compile(
            optimizer=optimizer, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs
        )
        self.student_loss_fn = _resolve_student_loss(student_loss_fn)
        self.distillation_loss_fn = distillation_loss_fn
        self.alpha = alpha
        self.temperature = loss_temperature if loss_temperature is not None else temperature
        self.warmup_steps = warmup_steps

    def get_compile_config(self):
        config = super().get_compile_config()
        if not config:
            return config
        config.pop("loss", None)
        config.pop("loss_weights", None)
        config.update(
            student_loss_fn=keras.saving.serialize_keras_object(self.student_loss_fn),
            distillation_loss_fn=keras.saving.serialize_keras_object(self.distillation_loss_fn),
            alpha=self.alpha,
            temperature=self.temperature,
            warmup_steps=self.warmup_steps,
        )
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # The saved optimizer state is loaded into these variables next.
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        inputs, _ = _split_inputs(inputs)
        return self.student(inputs, training=training)

    def teacher_logits(self, inputs):
        """The teachers' logits for a batch; the soft targets of several are averaged.

        Several teachers are combined as `T * log(sum_k w_k * softmax(z_k / T))`
        (sigmoid losses: the same in logit space), whose softmax at `T` is the
        weighted average of the teachers' softened probabilities.

        Args:
            inputs: A batch of images, as the teachers take them.

        Returns:
            Tensor `(batch, num_classes)` of (combined) teacher logits.
        """
        logits = [teacher(inputs, training=False) for teacher in self.teachers]
        if len(logits) == 1:
            return logits[0]
        self._check_compiled()
        return _combine_teachers(
            logits,
            self.teacher_weights,
            self.temperature or 1.0,
            getattr(self.distillation_loss_fn, "activation", "softmax"),
        )

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled()
        x, teacher_logits = _split_inputs(x)
        if self.augmentation is not None:
            x = self.augmentation(x, training=True)
        teacher_logits, teacher_features = self._teacher_outputs(x, teacher_logits)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            student_logits, student_features = self._student_outputs(x, training=True)
            loss = self._compute_losses(
                x, y, student_logits, teacher_logits, student_features, teacher_features, sample_weight
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        return self.compute_metrics(x, y, student_logits, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled()
        x, teacher_logits = _split_inputs(x)
        teacher_logits, teacher_features = self._teacher_outputs(x, teacher_logits)
        student_logits, student_features = self._student_outputs(x, training=False)
        self._compute_losses(
            x, y, student_logits, teacher_logits, student_features, teacher_features, sample_weight
        )
        return self.compute_metrics(x, y, student_logits, sample_weight=sample_weight)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = _split_inputs(x)
        return self.student(x, training=False)

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
            logits, *features = self._teacher_features(x, training=False)
            return tf.stop_gradient(logits), [tf.stop_gradient(f) for f in features]
        return tf.stop_gradient(self.teacher_logits(x)), []

    def _student_outputs(self, x, training):
        """`(student_logits, adapted_features)` from a single forward pass."""
        if not self.features:
            return self.student(x, training=training), []
        logits, *features = self._student_features(x, training=training)
        return logits, [adapter(f, training=training) for adapter, f in zip(self.adapters, features)]

    def _compute_losses(
        self, x, y, student_logits, teacher_logits, student_features, teacher_features, sample_weight
    ):
        """Returns the total loss of this replica and updates the loss trackers.

        Keras losses already divide their batch mean by the number of replicas
        (their gradients are summed across replicas); the regularization term
        is divided here the same way, and the trackers log the global values.
        """
        _check_widths(teacher_logits.shape[-1], student_logits.shape[-1])
        student_loss = self.student_loss_fn(y, student_logits, sample_weight=sample_weight)
        targets = teacher_logits
        if getattr(self.distillation_loss_fn, "requires_labels", False):
            targets = {"teacher_logits": teacher_logits, "labels": y}
        distillation_loss = self.distillation_loss_fn(targets, student_logits, sample_weight=sample_weight)
        distillation = (1.0 - self.alpha) * distillation_loss
        tracked = [
            (self._student_loss_tracker, student_loss),
            (self._distillation_loss_tracker, distillation_loss),
        ]
        if self.features:
            feature_loss = tf.add_n([
                match.weight * match.loss(t, s, sample_weight=sample_weight)
                for match, s, t in zip(self.features, student_features, teacher_features)
            ])
            distillation = distillation + feature_loss
            tracked.append((self._feature_loss_tracker, feature_loss))
        loss = self.alpha * student_loss + self._warmup_factor(distillation.dtype) * distillation
        if self.student.losses:
            regularization = tf.add_n([tf.cast(r, loss.dtype) for r in self.student.losses])
            loss = loss + regularization / _replicas(loss.dtype)
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        for tracker, value in [(self._loss_tracker, loss), *tracked]:
            tracker.update_state(value * _replicas(value.dtype), sample_weight=batch_size)
        return loss

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
        teachers = [keras.saving.serialize_keras_object(t) for t in self.teachers]
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


def _split_inputs(inputs):
    """`(model_inputs, cached_teacher_logits or None)` of a batch's `x`."""
    if isinstance(inputs, dict) and "teacher_logits" in inputs:
        if set(inputs) != {"inputs", "teacher_logits"}:
            raise ValueError(
                "A batch with cached teacher logits must be ({'inputs': x, 'teacher_logits': z}, y); "
                f"got the keys {sorted(inputs)}. Build it with kdkeras.teacher_cache.with_teacher_logits."
            )
        return inputs["inputs"], inputs["teacher_logits"]
    return inputs, None


def _combine_teachers(logits, weights, temperature, activation):
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


def _check_teacher(teacher):
    _check_model(teacher, "teacher")
    if not teacher.built:
        raise ValueError(
            f"The teacher {teacher.name!r} is not built, so it has no weights to distil "
            "from. Pass a trained teacher (e.g. `keras.models.load_model('teacher.keras')`), "
            "or build it with `teacher.build(input_shape)` before creating the Distiller."
        )
    teacher.trainable = False


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


def _as_feature_match(item):
    if isinstance(item, dict):
        item = keras.saving.deserialize_keras_object(item) if "class_name" in item else kd_features.FeatureMatch(**item)
    if not isinstance(item, kd_features.FeatureMatch):
        raise TypeError(f"`features` must be a list of kdkeras.features.FeatureMatch, got {item!r}.")
    return item


def _check_model(model, role):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{role}` must be a keras.Model that outputs logits, got {type(model).__name__}. "
            "Wrap layers in `keras.Model(inputs, outputs)` or use `kdkeras.models.get_model(...)`."
        )


def _output_width(model):
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


def _check_widths(teacher_width, student_width):
    if teacher_width is not None and student_width is not None and teacher_width != student_width:
        raise ValueError(
            f"The teacher outputs {teacher_width} logits but the student outputs "
            f"{student_width}: both must predict the same classes, in the same order. Build "
            f"the student with num_classes={teacher_width}."
        )


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"`alpha` must be a number in [0, 1], got {alpha!r}. It weighs the student loss; "
            "the distillation loss gets 1 - alpha (Hinton et al. use a small alpha, e.g. 0.1)."
        )
    return float(alpha)


def _resolve_student_loss(identifier):
    if identifier is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(identifier, str) and identifier in _CROSSENTROPY_NAMES:
        return _CROSSENTROPY_NAMES[identifier](from_logits=True)
    loss = keras.losses.get(identifier) if not isinstance(identifier, keras.losses.Loss) else identifier
    if getattr(loss, "_fn_kwargs", {}).get("from_logits") is False:
        raise ValueError(
            f"`student_loss_fn` {loss.name!r} has from_logits=False, but the Distiller passes it "
            f"the student's logits. Use `{type(loss).__name__}(from_logits=True)`."
        )
    if not isinstance(loss, keras.losses.Loss):
        loss = kd_losses.FunctionLoss(loss)
    return loss


def _replicas(dtype):
    return tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, dtype)
