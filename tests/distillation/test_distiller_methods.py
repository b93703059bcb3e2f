"""DKD, multi-label KD, several teachers, cached teacher logits and warm-up, through the Distiller."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras.distillation import losses
from kdkeras.distillation.teacher_cache import with_teacher_logits

Z_STUDENT = np.array([[2, 1, 0.1, -1], [0.5, 2.5, -0.3, 0]], "float32")
Z_TEACHER = np.array([[3, 0.5, 0.2, -2], [0, 3, 1, -1]], "float32")
Z_TEACHER_2 = np.array([[1, 2, -1, 0], [2, 0, 0.5, -0.5]], "float32")
X = np.eye(2, dtype="float32")  # row i of X selects row i of the logits below
Y = np.array([0, 1])


@keras.saving.register_keras_serializable(package="kdkeras_tests")
class CountingDense(keras.layers.Dense):
    """Counts its forward passes (run eagerly: one per call)."""

    calls = 0

    def call(self, inputs, training=None):
        CountingDense.calls += 1
        return super().call(inputs)


def fixed_logits_model(logits, name, layer=keras.layers.Dense):
    inputs = keras.Input((len(logits),))
    outputs = layer(logits.shape[1], use_bias=False, name="logits")(inputs)
    model = keras.Model(inputs, outputs, name=name)
    model.get_layer("logits").set_weights([logits])
    return model


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    return (p * np.log(p / q)).sum(-1)


def test_dkd_through_the_distiller_gets_the_labels():
    distiller = kdkeras.Distiller(fixed_logits_model(Z_STUDENT, "s"), fixed_logits_model(Z_TEACHER, "t"))
    distiller.compile(distillation_loss_fn=losses.DecoupledKD(tckd_weight=1.0, nckd_weight=8.0, temperature=4.0), alpha=0.0)
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(2.485962, abs=2e-5)
    assert logs["loss"] == pytest.approx(2.485962, abs=2e-5)


def test_multilabel_distillation_uses_per_label_sigmoids():
    distiller = kdkeras.Distiller(fixed_logits_model(Z_STUDENT, "s"), fixed_logits_model(Z_TEACHER, "t"))
    distiller.compile(student_loss_fn="binary_crossentropy", distillation_loss_fn="multilabel_kd", temperature=2.0)
    multi_hot = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], "float32")
    logs = distiller.evaluate(X, multi_hot, return_dict=True, verbose=0)
    p_t, p_s = 1 / (1 + np.exp(-Z_TEACHER / 2.0)), 1 / (1 + np.exp(-Z_STUDENT / 2.0))
    expected = 4.0 * (p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))).mean()
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-5)


def two_teacher_distiller(weights=(3.0, 1.0), loss=None, temperature=2.0):
    distiller = kdkeras.Distiller(
        fixed_logits_model(Z_STUDENT, "s"),
        [fixed_logits_model(Z_TEACHER, "t1"), fixed_logits_model(Z_TEACHER_2, "t2")],
        teacher_weights=weights,
    )
    distiller.compile(distillation_loss_fn=loss, temperature=temperature, alpha=0.0)
    return distiller


def test_several_teachers_average_their_soft_targets():
    distiller = two_teacher_distiller()
    assert distiller.teacher_weights == [0.75, 0.25]
    combined = distiller.teacher_logits(X).numpy()
    average = 0.75 * softmax(Z_TEACHER / 2.0) + 0.25 * softmax(Z_TEACHER_2 / 2.0)
    np.testing.assert_allclose(softmax(combined / 2.0), average, rtol=1e-5)
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    expected = 4.0 * kl(average, softmax(Z_STUDENT / 2.0)).mean()
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-5)


def test_several_teachers_average_sigmoids_for_multilabel_losses():
    distiller = two_teacher_distiller(weights=None, loss=losses.MultiLabelKD(3.0), temperature=None)
    combined = distiller.teacher_logits(X).numpy()

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    average = 0.5 * sigmoid(Z_TEACHER / 3.0) + 0.5 * sigmoid(Z_TEACHER_2 / 3.0)
    np.testing.assert_allclose(sigmoid(combined / 3.0), average, rtol=1e-5)


def test_several_teachers_round_trip_and_validation(tmp_path):
    distiller = two_teacher_distiller()
    path = os.path.join(tmp_path, "multi.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert [t.name for t in restored.teachers] == ["t1", "t2"] and restored.teacher_weights == [0.75, 0.25]
    ours = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    assert restored.evaluate(X, Y, return_dict=True, verbose=0) == pytest.approx(ours, rel=1e-6)
    with pytest.raises(AttributeError, match="2 teachers"):
        distiller.teacher  # noqa: B018 - the property raises
    with pytest.raises(ValueError, match="one number >= 0 per teacher \\(2\\)"):
        two_teacher_distiller(weights=(1.0,))
    with pytest.raises(ValueError, match="outputs 3 logits"):
        kdkeras.Distiller(fixed_logits_model(Z_STUDENT, "s"), [fixed_logits_model(Z_TEACHER[:, :3], "t")])


def counted_distiller(**compile_kwargs):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    student = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inputs)))
    teacher = fixed_logits_model(np.random.default_rng(0).normal(size=(6, 3)).astype("float32"), "t", CountingDense)
    distiller = kdkeras.Distiller(student, teacher)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"], alpha=0.3, **compile_kwargs)
    return distiller


DATA = tf.data.Dataset.from_tensor_slices(
    (np.random.default_rng(1).normal(size=(10, 6)).astype("float32"), np.arange(10) % 3)
).batch(4)


def test_cached_logits_give_the_same_losses_and_step_as_the_teacher():
    plain, cached = counted_distiller(), counted_distiller()
    stream = with_teacher_logits(DATA, cached.teacher, shuffle=False, verbose=False)
    assert plain.evaluate(DATA, return_dict=True, verbose=0) == pytest.approx(
        cached.evaluate(stream, return_dict=True, verbose=0), rel=1e-6
    )
    batch = next(iter(DATA))
    cached_batch = next(iter(stream))
    plain.train_on_batch(*batch)
    cached.train_on_batch(*cached_batch)
    for a, b in zip(plain.student.get_weights(), cached.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_cached_logits_skip_the_teacher_forward_pass():
    distiller = counted_distiller(run_eagerly=True)
    stream = with_teacher_logits(DATA, distiller.teacher, seed=0, verbose=False)
    CountingDense.calls = 0
    distiller.fit(DATA, epochs=1, verbose=0)
    assert CountingDense.calls == 3  # eager steps, one teacher pass per batch
    CountingDense.calls = 0
    distiller.fit(stream, epochs=2, verbose=0)
    distiller.predict(stream, verbose=0)
    assert CountingDense.calls == 0
    assert int(stream.cardinality()) == 3


def test_cached_stream_survives_a_shuffling_pipeline_and_reshuffles():
    distiller = counted_distiller()
    shuffled = DATA.unbatch().shuffle(10, seed=5, reshuffle_each_iteration=True).batch(4)
    stream = with_teacher_logits(shuffled, distiller.teacher, batch_size=10, seed=3, verbose=False)
    first, second = [next(iter(stream)) for _ in range(2)]
    x, y = first
    expected = distiller.teacher(x["inputs"], training=False).numpy()
    np.testing.assert_allclose(x["teacher_logits"].numpy(), expected, rtol=1e-5)
    images, labels = [np.concatenate(column) for column in zip(*DATA)]
    label_of = {tuple(np.round(image, 5)): label for image, label in zip(images, labels)}
    assert [label_of[tuple(np.round(image, 5))] for image in x["inputs"].numpy()] == list(y.numpy())
    assert not np.array_equal(x["inputs"].numpy(), second[0]["inputs"].numpy())
    assert int(stream.cardinality()) == 1


def test_cached_logits_errors():
    distiller = counted_distiller()
    with pytest.raises(ValueError, match="keys \\['inputs', 'labels', 'teacher_logits'\\]"):
        distiller.evaluate({"inputs": X, "teacher_logits": X, "labels": X}, Y, verbose=0)
    unbatched = DATA.unbatch().map(lambda x, y: (x[0], y))
    with pytest.raises(ValueError, match="needs a batched dataset"):
        with_teacher_logits(unbatched, distiller.teacher)
    with pytest.raises(ValueError, match="empty"):
        with_teacher_logits(DATA.take(0), distiller.teacher, verbose=False)


def test_warmup_ramps_the_distillation_term_linearly():
    distiller = kdkeras.Distiller(fixed_logits_model(Z_STUDENT, "s"), fixed_logits_model(Z_TEACHER, "t"))
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.2, temperature=4.0, warmup_steps=4)
    for step in range(6):
        logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
        factor = min(1.0, (step + 1) / 4)
        expected = 0.2 * logs["student_loss"] + factor * 0.8 * 0.306221
        assert logs["loss"] == pytest.approx(expected, abs=1e-5), step
        distiller.train_on_batch(X, Y)
    with pytest.raises(ValueError, match="warmup_steps"):
        distiller.compile(warmup_steps=-1)
