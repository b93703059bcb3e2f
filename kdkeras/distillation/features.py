"""Feature distillation: match intermediate layers of the student to the teacher's.

A `FeatureMatch` names one student layer, one teacher layer and a loss:

| loss | paper | adapter on the student side |
| --- | --- | --- |
| `"hint"` (`HintLoss`) | FitNets, Romero et al. 2015 | learned 1x1 conv (or dense) to the teacher's width, always |
| `"attention"` (`AttentionTransfer`) | Zagoruyko & Komodakis 2017, official code's form | none (attention maps are channel-free) |
| `"cosine"` (`CosineFeatureLoss`) | cosine matching, as in seed 001 | learned 1x1 conv only when widths differ |

When spatial sizes differ the adapter also resizes the student's map to the
teacher's (bilinear). Adapters train with the student but live in the
Distiller, so `distiller.student` (the model you export) never contains them.
The losses follow the kdkeras convention: teacher first,
`loss(teacher_features, student_features)`, and are registered by name in
`kdkeras.registry.FEATURE_LOSSES` (a new one declares its `projection`:
"always", "mismatch" or "never").
"""

import keras
from keras import ops

from kdkeras.registry import CHECKS, FEATURE_LOSSES


def hint_loss(teacher_features, student_features):
    """Per-example FitNets hint loss: the mean squared error over all feature entries.

    Args:
        teacher_features: Tensor `(batch, ...)`.
        student_features: Tensor of the same shape (already adapted).

    Returns:
        Tensor `(batch,)` in float32.
    """
    diff = ops.cast(student_features, "float32") - ops.cast(teacher_features, "float32")
    return ops.mean(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)


def attention_map(features, p=2.0):
    """The L2-normalised spatial attention map `vec(mean_c |A_c|**p)` of a feature map.

    The official code's `at(x) = F.normalize(x.pow(2).mean(1).view(B, -1))`
    (NCHW there, channels last here), for `p = 2`.

    Args:
        features: Tensor `(batch, height, width, channels)`.
        p: Exponent of the activation magnitudes.

    Returns:
        Tensor `(batch, height * width)`, each row of unit L2 norm.
    """
    magnitude = ops.mean(ops.power(ops.abs(ops.cast(features, "float32")), p), axis=-1)
    flat = ops.reshape(magnitude, (ops.shape(magnitude)[0], -1))
    return flat / ops.maximum(ops.norm(flat, axis=-1, keepdims=True), 1e-12)


def attention_transfer(teacher_features, student_features, p=2.0):
    """Per-example attention-transfer loss of Zagoruyko & Komodakis (2017), official form.

    `mean_j (q_s[j] - q_t[j])**2` over the `H * W` positions, with `q` the
    normalised attention maps of `attention_map`: the batch mean of this is
    the official `at_loss(x, y) = (at(x) - at(y)).pow(2).mean()`
    (szagoruyko/attention-transfer, `utils.py`). The channel counts may
    differ; the spatial sizes must agree.

    Args:
        teacher_features: Tensor `(batch, height, width, c_t)`.
        student_features: Tensor `(batch, height, width, c_s)`.
        p: Exponent of the activation magnitudes (the official code uses 2).

    Returns:
        Tensor `(batch,)` in float32, each value in [0, 4 / (H * W)].
    """
    diff = attention_map(student_features, p) - attention_map(teacher_features, p)
    return ops.mean(ops.square(diff), axis=-1)


def cosine_feature_distance(teacher_features, student_features):
    """Per-example `1 - cosine similarity` along channels, averaged over positions.

    Args:
        teacher_features: Tensor `(batch, ..., channels)`.
        student_features: Tensor of the same shape (already adapted).

    Returns:
        Tensor `(batch,)` in float32, each value in [0, 2].
    """
    t = ops.cast(teacher_features, "float32")
    s = ops.cast(student_features, "float32")
    dot = ops.sum(t * s, axis=-1)
    norms = ops.maximum(ops.norm(t, axis=-1) * ops.norm(s, axis=-1), 1e-12)
    distance = 1.0 - dot / norms
    return ops.mean(ops.reshape(distance, (ops.shape(distance)[0], -1)), axis=-1)


@FEATURE_LOSSES.register("hint")
@keras.saving.register_keras_serializable(package="kdkeras")
class HintLoss(keras.losses.Loss):
    """FitNets hint loss (Romero et al., 2015): MSE between adapted student and teacher features.

    Args:
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32.

    Example:

    ```python
    value = kdkeras.distillation.features.HintLoss()(teacher_features, adapted_student_features)
    ```
    """

    projection = "always"

    def __init__(self, reduction="sum_over_batch_size", name="hint", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return hint_loss(y_true, y_pred)


@FEATURE_LOSSES.register("attention")
@keras.saving.register_keras_serializable(package="kdkeras")
class AttentionTransfer(keras.losses.Loss):
    """Attention transfer (Zagoruyko & Komodakis, 2017), in the official code's convention.

    `loss = beta * mean over batch and positions (q_s - q_t)**2`, with
    `q = vec(mean_c |A_c|**p) / ||.||_2` (see `attention_transfer`): the
    official `beta * at_loss(student, teacher)` with the `beta = 1000` tuned
    for it (szagoruyko/attention-transfer; mdistiller uses the same form).

    The paper's printed eq. 2 differs: `beta / 2 * || q_s - q_t ||_2` (a norm,
    not its square), with beta "divided by the number of elements in the
    attention map and the batch size". The two differ by the factor
    `2 * || q_s - q_t ||_2`: far apart the paper's form is larger, and its
    gradient keeps a constant size as the maps converge, where the squared
    form's shrinks to zero. `beta = 1000` was tuned for the squared form.

    Args:
        p: Exponent of the activation magnitudes. Defaults to 2.
        beta: Weight of the term. Defaults to 1000, the official setting.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32.

    Example:

    ```python
    value = kdkeras.distillation.features.AttentionTransfer()(teacher_features, student_features)
    ```
    """

    projection = "never"

    def __init__(self, p=2.0, beta=1000.0, reduction="sum_over_batch_size", name="attention", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for key, value in (("p", p), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"AttentionTransfer `{key}` must be a number > 0, got {value!r}.")
        self.p = float(p)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        return self.beta * attention_transfer(y_true, y_pred, self.p)

    def get_config(self):
        config = super().get_config()
        config.update(p=self.p, beta=self.beta)
        return config


@FEATURE_LOSSES.register("cosine")
@keras.saving.register_keras_serializable(package="kdkeras")
class CosineFeatureLoss(keras.losses.Loss):
    """Feature matching by cosine distance along channels, averaged over positions.

    Insensitive to the scale of the activations, unlike the hint loss.

    Args:
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32.

    Example:

    ```python
    value = kdkeras.distillation.features.CosineFeatureLoss()(teacher_features, student_features)
    ```
    """

    projection = "mismatch"

    def __init__(self, reduction="sum_over_batch_size", name="cosine", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return cosine_feature_distance(y_true, y_pred)


@keras.saving.register_keras_serializable(package="kdkeras")
class FeatureAdapter(keras.layers.Layer):
    """Maps student features onto the teacher's shape: optional 1x1 projection, then resize.

    Args:
        channels: Output width of a learned projection (1x1 conv for feature
            maps, dense for vectors), or None for no projection.
        size: `(height, width)` to resize feature maps to, or None to keep them.
        **kwargs: Passed to `keras.layers.Layer`.

    Example:

    ```python
    adapter = FeatureAdapter(channels=256, size=(14, 14))
    adapted = adapter(student_features)  # (batch, 14, 14, 256)
    ```
    """

    def __init__(self, channels=None, size=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.size = tuple(size) if size is not None else None
        self.projection = None

    def build(self, input_shape):
        if self.channels is not None:
            if len(input_shape) == 4:
                self.projection = keras.layers.Conv2D(self.channels, 1, name="projection", dtype=self.dtype_policy)
            else:
                self.projection = keras.layers.Dense(self.channels, name="projection", dtype=self.dtype_policy)
            self.projection.build(input_shape)
        self.built = True

    def call(self, inputs):
        outputs = inputs
        if self.size is not None:
            # Resizing float16 maps yields float32 and an XLA gradient of mixed precisions;
            # an explicit cast keeps every gradient in one dtype.
            outputs = ops.image.resize(ops.cast(outputs, "float32"), self.size, interpolation="bilinear")
        if self.projection is not None:
            outputs = self.projection(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.size is not None:
            shape[1:3] = self.size
        if self.channels is not None:
            shape[-1] = self.channels
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, size=self.size)
        return config


@CHECKS.register("feature_match")
@keras.saving.register_keras_serializable(package="kdkeras")
class FeatureMatch:
    """One feature-distillation term: a student layer, a teacher layer and a loss.

    Args:
        student_layer: Name of a layer of the (functional) student.
        teacher_layer: Name of a layer of the (functional) teacher.
        loss: A name of `kdkeras.registry.FEATURE_LOSSES` ("hint",
            "attention", "cosine"), or one of those loss objects (e.g.
            `AttentionTransfer(beta=500.0)`).
        weight: Weight of this term in the Distiller's total loss, `>= 0`.

    Example:

    ```python
    distiller = kdkeras.Distiller(
        student, teacher,
        features=[kdkeras.distillation.features.FeatureMatch("block2_out", "conv4_block6_out", "hint")],
    )
    ```
    """

    # The Distiller's batch holds, under "features", each match's
    # `(teacher_features, adapted_student_features)` pair keyed by the match.
    requires = ("features",)

    def __init__(self, student_layer, teacher_layer, loss="hint", weight=1.0):
        for key, value in (("student_layer", student_layer), ("teacher_layer", teacher_layer)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"FeatureMatch `{key}` must be a layer name, got {value!r}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"FeatureMatch `weight` must be a number >= 0, got {weight!r}.")
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.loss = _get_loss(loss)
        self.weight = float(weight)

    def compute(self, batch, sample_weight=None):
        """This term's loss on a batch dict (the `kdkeras.distillation.objective` protocol), before `weight`."""
        teacher, student = batch["features"][self]
        return self.loss(teacher, student, sample_weight=sample_weight)

    def build_adapter(self, student_shape, teacher_shape):
        """The adapter mapping this student layer's output onto the teacher layer's.

        Args:
            student_shape: Output shape of the student layer, batch axis first.
            teacher_shape: Output shape of the teacher layer.

        Returns:
            A built `FeatureAdapter`.

        Raises:
            ValueError: for shapes the loss cannot compare.
        """
        where = f"FeatureMatch({self.student_layer!r} -> {self.teacher_layer!r})"
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 4):
            raise ValueError(
                f"{where}: the student layer outputs {tuple(student_shape)} and the teacher layer "
                f"{tuple(teacher_shape)}; match two feature maps (batch, H, W, C) or two vectors "
                "(batch, D)."
            )
        if len(student_shape) == 2 and self.loss.projection == "never":
            raise ValueError(f"{where}: attention transfer needs feature maps (batch, H, W, C), not vectors.")
        spatial = tuple(teacher_shape[1:3]) if len(teacher_shape) == 4 else None
        if spatial is not None and None in spatial + tuple(student_shape[1:3]):
            raise ValueError(f"{where}: feature maps need static sizes; give the models a fixed input shape.")
        size = spatial if spatial is not None and spatial != tuple(student_shape[1:3]) else None
        widths_differ = student_shape[-1] != teacher_shape[-1]
        project = self.loss.projection == "always" or (self.loss.projection == "mismatch" and widths_differ)
        adapter = FeatureAdapter(
            channels=teacher_shape[-1] if project else None,
            size=size,
            name=f"adapter_{self.student_layer}",
        )
        adapter.build(tuple(student_shape))
        return adapter

    def get_config(self):
        return {
            "student_layer": self.student_layer,
            "teacher_layer": self.teacher_layer,
            "loss": keras.saving.serialize_keras_object(self.loss),
            "weight": self.weight,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)

    def __repr__(self):
        return (
            f"FeatureMatch({self.student_layer!r}, {self.teacher_layer!r}, "
            f"loss={self.loss.name!r}, weight={self.weight})"
        )


def _get_loss(loss):
    names = FEATURE_LOSSES.names()
    if isinstance(loss, str):
        if loss not in names:
            raise ValueError(f"Unknown feature loss {loss!r}. Use one of {', '.join(names)}.")
        return FEATURE_LOSSES.get(loss)
    if isinstance(loss, dict):
        loss = keras.saving.deserialize_keras_object(loss)
    classes = tuple(FEATURE_LOSSES.lookup(name) for name in names)
    if not isinstance(loss, classes):
        raise ValueError(
            f"A feature loss must be one of {', '.join(names)} or an object of "
            f"{', '.join(c.__name__ for c in classes)}, got {loss!r}."
        )
    return loss


def feature_models(model, layer_names, role):
    """A functional model returning `[logits, *features]` in one forward pass.

    Args:
        model: A functional `keras.Model` with one logits output.
        layer_names: Names of layers whose outputs to return with the logits.
        role: "student" or "teacher", for error messages.

    Returns:
        A `keras.Model` sharing `model`'s layers and weights.

    Raises:
        ValueError: for a subclassed model or an unknown layer name.
    """
    try:
        inputs, outputs = model.input, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if inputs is None or not outputs:
        raise ValueError(
            f"Feature distillation reads layers by name, so the {role} {model.name!r} must be a "
            "functional keras.Model (built with keras.Model(inputs, outputs)), not a subclassed one."
        )
    names = [layer.name for layer in model.layers]
    features = []
    for layer_name in layer_names:
        if layer_name not in names:
            shown = ", ".join(n for n in names if not n.startswith("input"))
            raise ValueError(f"The {role} {model.name!r} has no layer {layer_name!r}. Its layers: {shown}.")
        features.append(model.get_layer(layer_name).output)
    return keras.Model(inputs, [outputs[0], *features], name=f"{model.name}_features")


def matching_models(student, teachers, matches):
    """What a Distiller needs to match `matches`: two feature models and the adapters.

    Args:
        student: The functional student.
        teachers: The teachers; feature matching takes exactly one.
        matches: `FeatureMatch`es naming layers of both.

    Returns:
        `(student_features, teacher_features, adapters)`: `feature_models` of
        student and teacher, and one built adapter per match, mapping the
        student's feature shape to the teacher's.

    Raises:
        ValueError: for several teachers, a subclassed model or an unknown layer.
    """
    if len(teachers) > 1:
        raise ValueError(
            "Feature distillation matches layers of one teacher; with several teachers "
            "distil their logits only (drop `features`)."
        )
    student_features = feature_models(student, [m.student_layer for m in matches], "student")
    teacher_features = feature_models(teachers[0], [m.teacher_layer for m in matches], "teacher")
    adapters = [
        match.build_adapter(s.shape, t.shape)
        for match, s, t in zip(matches, student_features.outputs[1:], teacher_features.outputs[1:])
    ]
    return student_features, teacher_features, adapters

