"""Feature distillation: losses against their papers' formulas, adapters, the Distiller with features."""

import os

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.distillation import features

RNG = np.random.default_rng(7)
F_TEACHER = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
F_STUDENT = RNG.normal(size=(2, 4, 4, 6)).astype("float32")


def official_at_loss(f_student, f_teacher):
    """szagoruyko/attention-transfer `utils.at_loss(x, y)`, transcribed to float64 numpy.

    at(x) = F.normalize(x.pow(2).mean(1).view(x.size(0), -1)) on NCHW tensors;
    at_loss(x, y) = (at(x) - at(y)).pow(2).mean().
    """

    def at(x):
        x = np.transpose(np.asarray(x, "float64"), (0, 3, 1, 2))  # NHWC -> NCHW, as the official code
        a = (x**2).mean(1).reshape(len(x), -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # F.normalize

    return ((at(f_student) - at(f_teacher)) ** 2).mean()


def paper_at_loss(f_student, f_teacher, beta=1000.0):
    """Zagoruyko & Komodakis's printed eq. 2: beta / 2 * ||q_s - q_t||_2, beta divided by H * W and batch size."""

    def q(f):
        a = (np.asarray(f, "float64") ** 2).sum(-1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    batch, height, width = f_student.shape[:3]
    return beta / (height * width * batch) / 2 * np.linalg.norm(q(f_student) - q(f_teacher), axis=-1).sum()


def test_hint_loss_is_mean_squared_error():
    expected = ((F_STUDENT.astype("float64") - F_TEACHER) ** 2).reshape(2, -1).mean(-1)
    np.testing.assert_allclose(features.hint_loss(F_TEACHER, F_STUDENT), expected, rtol=1e-5)
    assert float(features.HintLoss()(F_TEACHER, F_STUDENT)) == pytest.approx(expected.mean(), rel=1e-5)


def test_attention_transfer_matches_the_official_at_loss():
    teacher = RNG.normal(size=(2, 4, 4, 8)).astype("float32")  # channel counts may differ
    expected = official_at_loss(F_STUDENT, teacher)
    assert float(np.mean(features.attention_transfer(teacher, F_STUDENT))) == pytest.approx(expected, rel=1e-5)
    value = features.AttentionTransfer()(teacher, F_STUDENT)  # beta = 1000 by default, as tuned officially
    assert float(value) == pytest.approx(1000.0 * expected, rel=1e-5)
    per_example = [official_at_loss(F_STUDENT[i : i + 1], teacher[i : i + 1]) for i in range(2)]
    np.testing.assert_allclose(features.attention_transfer(teacher, F_STUDENT), per_example, rtol=1e-5)
    assert float(features.AttentionTransfer()(F_TEACHER, 3.0 * F_TEACHER)) == pytest.approx(0.0, abs=1e-4)


def test_attention_transfer_is_not_the_papers_printed_equation():
    """Official over printed is 2 * ||q_s - q_t||: no constant beta turns one into the other."""
    far = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
    ratios = []
    for teacher in (far, F_STUDENT + 0.01 * far):  # maps far apart, then nearly converged
        ours = float(features.AttentionTransfer()(teacher, F_STUDENT))
        ratios.append(ours / paper_at_loss(F_STUDENT, teacher))
    assert ratios[0] > 1.2 and ratios[1] < 0.02  # measured 1.48 and 0.0096


def test_cosine_distance_per_position():
    t, s = F_TEACHER.astype("float64"), F_STUDENT.astype("float64")
    cos = (t * s).sum(-1) / (np.linalg.norm(t, axis=-1) * np.linalg.norm(s, axis=-1))
    expected = (1 - cos).reshape(2, -1).mean(-1)
    np.testing.assert_allclose(features.cosine_feature_distance(F_TEACHER, F_STUDENT), expected, rtol=1e-5)
    assert float(features.CosineFeatureLoss()(F_TEACHER, 2.5 * F_TEACHER)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "loss, student_shape, teacher_shape, channels, size",
    [
        ("hint", (None, 8, 8, 16), (None, 4, 4, 32), 32, (4, 4)),
        ("hint", (None, 4, 4, 32), (None, 4, 4, 32), 32, None),  # FitNets: a regressor even at equal widths
        ("cosine", (None, 4, 4, 32), (None, 4, 4, 32), None, None),
        ("cosine", (None, 4, 4, 16), (None, 2, 2, 32), 32, (2, 2)),
        ("attention", (None, 8, 8, 16), (None, 4, 4, 64), None, (4, 4)),
        ("hint", (None, 16), (None, 64), 64, None),
    ],
)
def test_adapter_maps_student_onto_teacher_shape(loss, student_shape, teacher_shape, channels, size):
    adapter = features.FeatureMatch("s", "t", loss).build_adapter(student_shape, teacher_shape)
    assert (adapter.channels, adapter.size) == (channels, size)
    out = adapter(np.zeros((2, *student_shape[1:]), "float32"))
    expected = list(teacher_shape[1:])
    if loss == "attention":
        expected[-1] = student_shape[-1]
    assert tuple(out.shape) == (2, *expected)


def test_feature_match_validation_and_round_trip():
    with pytest.raises(ValueError, match="Unknown feature loss 'l2'"):
        features.FeatureMatch("a", "b", "l2")
    with pytest.raises(ValueError, match="weight"):
        features.FeatureMatch("a", "b", weight=-1)
    with pytest.raises(ValueError, match="two feature maps"):
        features.FeatureMatch("a", "b").build_adapter((None, 4, 4, 8), (None, 8))
    with pytest.raises(ValueError, match="needs feature maps"):
        features.FeatureMatch("a", "b", "attention").build_adapter((None, 8), (None, 8))
    match = features.FeatureMatch("a", "b", features.AttentionTransfer(beta=10.0), weight=0.5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(match))
    assert (restored.student_layer, restored.weight, restored.loss.beta) == ("a", 0.5, 10.0)


@keras.saving.register_keras_serializable(package="kdkeras_tests")
class CountingConv(keras.layers.Conv2D):
    """Records the `training` flag of every call (run eagerly, one entry per forward pass)."""

    calls = []

    def call(self, inputs, training=None):
        CountingConv.calls.append(training)
        return super().call(inputs)


def small_models():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="t_conv1")(inputs)
    h = keras.layers.MaxPooling2D(name="t_pool")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="t_conv2")(h)
    teacher = keras.Model(inputs, keras.layers.Dense(3, name="t_logits")(keras.layers.GlobalAveragePooling2D()(h)))
    inputs = keras.Input((8, 8, 1))
    h = CountingConv(4, 3, padding="same", activation="relu", name="s_conv1")(inputs)
    h = keras.layers.BatchNormalization(name="s_bn")(h)
    student = keras.Model(inputs, keras.layers.Dense(3, name="s_logits")(keras.layers.GlobalAveragePooling2D()(h)))
    return student, teacher


def feature_distiller(**compile_kwargs):
    student, teacher = small_models()
    distiller = kdkeras.Distiller(
        student,
        teacher,
        features=[
            features.FeatureMatch("s_bn", "t_conv2", "hint", weight=0.5),
            features.FeatureMatch("s_conv1", "t_conv1", "attention"),
        ],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), alpha=0.5, **compile_kwargs)
    return distiller


DATA_X = RNG.uniform(0, 255, size=(8, 8, 8, 1)).astype("float32")
DATA_Y = RNG.integers(0, 3, size=8)


def test_student_runs_once_per_step_in_the_right_mode():
    distiller = feature_distiller(run_eagerly=True)
    CountingConv.calls.clear()
    distiller.fit(DATA_X, DATA_Y, batch_size=4, epochs=1, verbose=0)
    assert CountingConv.calls == [True, True]  # 2 steps, one forward each, training mode
    CountingConv.calls.clear()
    distiller.evaluate(DATA_X, DATA_Y, batch_size=4, verbose=0)
    assert CountingConv.calls == [False, False]


def test_feature_loss_is_logged_and_matches_the_losses():
    distiller = feature_distiller()
    logs = distiller.evaluate(DATA_X, DATA_Y, batch_size=8, return_dict=True, verbose=0)
    t_logits, t_conv2, t_conv1 = distiller._teacher_features(DATA_X, training=False)
    s_logits, s_bn, s_conv1 = distiller._student_features(DATA_X, training=False)
    hint = features.hint_loss(t_conv2, distiller.adapters[0](s_bn))
    attention = 1000.0 * features.attention_transfer(t_conv1, distiller.adapters[1](s_conv1))
    assert logs["feature_loss"] == pytest.approx(float(0.5 * np.mean(hint) + np.mean(attention)), rel=1e-4)
    kd = float(np.mean(kdkeras.distillation.losses.knowledge_distillation(t_logits, s_logits, 4.0)))
    assert logs["distillation_loss"] == pytest.approx(kd, rel=1e-4)
    expected = 0.5 * logs["student_loss"] + 0.5 * kd + logs["feature_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)


def test_adapters_train_but_are_not_in_the_exported_student(tmp_path):
    distiller = feature_distiller()
    before = [w.copy() for w in distiller.adapters[0].get_weights()]
    distiller.fit(DATA_X, DATA_Y, batch_size=4, epochs=1, verbose=0)
    assert not np.allclose(before[0], distiller.adapters[0].get_weights()[0])
    assert len(distiller.trainable_variables) == len(distiller.student.trainable_variables) + 2
    path = os.path.join(tmp_path, "student.keras")
    distiller.student.save(path)
    exported = keras.models.load_model(path)
    assert not any("adapter" in layer.name for layer in exported.layers)
    assert exported.count_params() == distiller.student.count_params()


@pytest.mark.slow
def test_distiller_with_features_saves_and_resumes(tmp_path):
    distiller = feature_distiller()
    distiller.fit(DATA_X, DATA_Y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert [f.loss.name for f in restored.features] == ["hint", "attention"]
    ours = distiller.evaluate(DATA_X, DATA_Y, return_dict=True, verbose=0)
    theirs = restored.evaluate(DATA_X, DATA_Y, return_dict=True, verbose=0)
    assert theirs == pytest.approx(ours, rel=1e-5)
    restored.fit(DATA_X, DATA_Y, batch_size=4, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations) == 4


def test_clear_errors_for_unknown_layers_and_subclassed_models():
    student, teacher = small_models()
    with pytest.raises(ValueError, match="has no layer 'nope'. Its layers: s_conv1"):
        kdkeras.Distiller(student, teacher, features=[features.FeatureMatch("nope", "t_conv1")])

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

    sub = Subclassed()
    sub.build((None, 8, 8, 1))
    with pytest.raises(ValueError, match="must be a functional keras.Model"):
        kdkeras.Distiller(sub, teacher, features=[features.FeatureMatch("a", "t_conv1")])
    with pytest.raises(ValueError, match="one teacher"):
        kdkeras.Distiller(student, [teacher, teacher], features=[features.FeatureMatch("s_bn", "t_conv1")])


@pytest.mark.slow
def test_features_train_under_mixed_precision_and_xla():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        distiller = feature_distiller(jit_compile=True)
        history = distiller.fit(DATA_X, DATA_Y, batch_size=4, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert type(distiller.optimizer).__name__ == "LossScaleOptimizer"
    assert distiller.adapters[0].size == (4, 4)  # the resize path, whose gradient mixed dtypes before
    assert all(np.isfinite(v[-1]) for v in history.history.values())


@pytest.mark.slow
def test_warmup_ramps_the_feature_terms_from_zero_too():
    """Every distillation term, feature losses included, is scaled by min(1, step / warmup_steps)."""
    distiller = feature_distiller(warmup_steps=4)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.5, warmup_steps=4)
    reference = feature_distiller()
    reference.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.5)
    for step in range(6):
        # Trained in lockstep (BatchNorm statistics move even at learning rate 0).
        full = reference.evaluate(DATA_X, DATA_Y, batch_size=8, return_dict=True, verbose=0)
        assert full["feature_loss"] > 0.01
        logs = distiller.evaluate(DATA_X, DATA_Y, batch_size=8, return_dict=True, verbose=0)
        # The factor of the step about to be taken: 1/4 on the first, reaching 1 at the 4th;
        # the ramp starts from 0 (no distillation before the first step).
        factor = min(1.0, (step + 1) / 4)
        expected = 0.5 * full["student_loss"] + factor * (0.5 * full["distillation_loss"] + full["feature_loss"])
        assert logs["loss"] == pytest.approx(expected, rel=1e-5), step
        distiller.train_on_batch(DATA_X, DATA_Y)
        reference.train_on_batch(DATA_X, DATA_Y)
