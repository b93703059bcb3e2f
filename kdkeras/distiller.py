"""The Distiller: a `keras.Model` that trains a student against a frozen teacher."""

import keras
import tensorflow as tf

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

    `loss = alpha * student_loss(y, z_s) + (1 - alpha) * distillation_loss(z_t, z_s)
    + sum(student.losses)`

    with gradients for the student's trainable variables only. By default the
    distillation loss is `T**2 * KL(softmax(z_t / T) || softmax(z_s / T))`
    (Hinton et al., 2015). `fit` and `evaluate` log `loss`, `student_loss`,
    `distillation_loss` and every compiled metric (computed on the student's
    logits). `sample_weight` and `class_weight` weight both loss terms per
    example. Calling the Distiller (and `predict`) returns the student's logits.

    The teacher is set to `trainable = False` in place: the model object you
    pass is frozen.

    Args:
        student: The `keras.Model` to train. It must output logits.
        teacher: A trained, built `keras.Model` with logits of the same width.
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

    def __init__(self, student, teacher, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_model(student, "student")
        _check_model(teacher, "teacher")
        if not teacher.built:
            raise ValueError(
                f"The teacher {teacher.name!r} is not built, so it has no weights to distil "
                "from. Pass a trained teacher (e.g. `keras.models.load_model('teacher.keras')`), "
                "or build it with `teacher.build(input_shape)` before creating the Distiller."
            )
        _check_widths(_output_width(teacher), _output_width(student))
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self.alpha = None
        self.temperature = None
        self._student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        if student.built:
            self.built = True

    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=0.1,
        temperature=None,
        weighted_metrics=None,
        **kwargs,
    ):
        """Configures the Distiller for training.

        Args:
            optimizer: Optimizer instance or name; it updates student variables only.
            metrics: Metrics computed on the student's logits, e.g. `["accuracy"]`.
            student_loss_fn: Loss of the student's logits against the labels.
                Defaults to `SparseCategoricalCrossentropy(from_logits=True)`.
                A crossentropy given by name is built with `from_logits=True`;
                an instance with `from_logits=False` is rejected, because the
                Distiller always passes logits.
            distillation_loss_fn: Loss of `(teacher_logits, student_logits)`.
                Defaults to `kdkeras.losses.KnowledgeDistillation(temperature)`.
                Keras's `KLDivergence` (instance or name) is understood as in
                the keras.io example, on `softmax(z / T)` and scaled by `T**2`,
                so it is replaced by `KnowledgeDistillation(temperature)`. Any
                other Keras loss or callable is used as given.
            alpha: Weight of the student loss in `[0, 1]`; the distillation
                loss gets `1 - alpha`. Defaults to 0.1.
            temperature: Softening temperature `T > 0` of the default loss.
                Defaults to 4.0, or to the `temperature` of the loss you pass.
            weighted_metrics: Metrics weighted by `sample_weight`/`class_weight`.
            **kwargs: Passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, `run_eagerly`, ...).
        """
        alpha = _check_alpha(alpha)
        if temperature is not None:
            temperature = kd_losses._check_temperature(temperature)
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
        )
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # The saved optimizer state is loaded into these variables next.
            self.optimizer.build(self.student.trainable_variables)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled()
        teacher_logits = tf.stop_gradient(self.teacher(x, training=False))
        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            loss = self._compute_losses(x, y, student_logits, teacher_logits, sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        return self.compute_metrics(x, y, student_logits, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled()
        teacher_logits = self.teacher(x, training=False)
        student_logits = self.student(x, training=False)
        self._compute_losses(x, y, student_logits, teacher_logits, sample_weight)
        return self.compute_metrics(x, y, student_logits, sample_weight=sample_weight)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(x, training=False)

    def _compute_losses(self, x, y, student_logits, teacher_logits, sample_weight):
        """Returns the total loss of this replica and updates the loss trackers.

        Keras losses already divide their batch mean by the number of replicas
        (their gradients are summed across replicas); the regularization term
        is divided here the same way, and the trackers log the global values.
        """
        _check_widths(teacher_logits.shape[-1], student_logits.shape[-1])
        student_loss = self.student_loss_fn(y, student_logits, sample_weight=sample_weight)
        distillation_loss = self.distillation_loss_fn(
            teacher_logits, student_logits, sample_weight=sample_weight
        )
        loss = self.alpha * student_loss + (1.0 - self.alpha) * distillation_loss
        if self.student.losses:
            regularization = tf.add_n([tf.cast(r, loss.dtype) for r in self.student.losses])
            loss = loss + regularization / _replicas(loss.dtype)
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        for tracker, value in (
            (self._loss_tracker, loss),
            (self._student_loss_tracker, student_loss),
            (self._distillation_loss_tracker, distillation_loss),
        ):
            tracker.update_state(value * _replicas(value.dtype), sample_weight=batch_size)
        return loss

    def _check_compiled(self):
        if self.student_loss_fn is None:
            raise RuntimeError(
                "The Distiller is not compiled. Call `distiller.compile(optimizer=..., "
                "metrics=..., alpha=..., temperature=...)` before `fit` or `evaluate`."
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            student=keras.saving.serialize_keras_object(self.student),
            teacher=keras.saving.serialize_keras_object(self.teacher),
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(
            config.pop("student"), custom_objects=custom_objects
        )
        teacher = keras.saving.deserialize_keras_object(
            config.pop("teacher"), custom_objects=custom_objects
        )
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(student=student, teacher=teacher, **config)


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
