"""Mixup inside the distillation step (kdkeras.distillation.mixup), checked against float64 references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras.config import ConfigError, apply_overrides, load_config
from kdkeras.distillation import mixup


def test_mix_is_a_convex_combination_with_a_permuted_partner():
    x = np.arange(6, dtype="float32")[:, None, None, None] * np.ones((6, 2, 2, 1), "float32")
    mixed, lam, partner = mixup.mix(tf.constant(x), 1.0, keras.random.SeedGenerator(3))
    mixed, lam, partner = (np.asarray(v) for v in (mixed, lam, partner))
    assert sorted(partner) == list(range(6))
    assert np.all((lam >= 0) & (lam <= 1)) and len(set(np.round(lam, 6))) > 1  # one draw per image
    expected = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)


def test_mix_repeats_for_a_seed():
    x = tf.random.stateless_uniform((8, 3, 3, 1), seed=(1, 2))
    first = mixup.mix(x, 0.4, keras.random.SeedGenerator(7))
    second = mixup.mix(x, 0.4, keras.random.SeedGenerator(7))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sparse_halves_add_up_to_the_cross_entropy_of_mixed_one_hot_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3))
    y = np.array([0, 2, 1, 1, 0])
    weight = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    lam = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    partner = np.array([3, 0, 4, 2, 1])
    halves = mixup.mixed_labels(tf.constant(y), tf.constant(weight, tf.float32), tf.constant(lam, tf.float32),
                                tf.constant(partner))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours = sum(float(loss(yy, tf.constant(logits, tf.float32), ww)) for yy, ww in halves)
    # Reference: per image, lam * w_i * CE(y_i) + (1 - lam) * w_j * CE(y_j), averaged over the batch.
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    own = -log_p[np.arange(5), y] * weight * lam
    other = -log_p[np.arange(5), y[partner]] * weight[partner] * (1 - lam)
    assert ours == pytest.approx(float(np.mean(own + other)), rel=1e-5)


def test_dense_labels_are_mixed_into_one_loss():
    y = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    (labels, weight), = mixup.mixed_labels(y, None, tf.constant([0.25, 1.0]), tf.constant([1, 0]))
    np.testing.assert_allclose(np.asarray(labels), [[0.25, 0.75], [0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(weight), [1.0, 1.0])


class Recorder(keras.layers.Layer):
    """Keeps every batch it sees (eager steps only), so a test can look at it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x):
        if tf.executing_eagerly():
            self.seen.append(keras.ops.convert_to_numpy(x))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def recording_model(name, seed):
    inputs = keras.Input((4, 4, 1))
    seen = Recorder(name="recorder")(inputs)
    outputs = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed))(
        keras.layers.Flatten()(seen))
    return keras.Model(inputs, outputs, name=name)


def test_teacher_and_student_see_the_same_mixed_images():
    keras.utils.set_random_seed(0)
    teacher, student = recording_model("teacher", 1), recording_model("student", 2)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="sgd", alpha=0.5, mixup=1.0, run_eagerly=True)
    x = np.arange(8, dtype="float32")[:, None, None, None] * np.ones((8, 4, 4, 1), "float32")
    y = np.array([0, 1] * 4)
    teacher.get_layer("recorder").seen.clear()
    student.get_layer("recorder").seen.clear()
    distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    (seen_by_teacher,), (seen_by_student,) = teacher.get_layer("recorder").seen, student.get_layer("recorder").seen
    np.testing.assert_array_equal(seen_by_teacher, seen_by_student)
    assert not np.allclose(seen_by_teacher, x)  # mixed, not the batch itself
    assert np.all((seen_by_teacher >= 0) & (seen_by_teacher <= 7))
    np.testing.assert_allclose(seen_by_teacher, seen_by_teacher[:, :1, :1, :] * np.ones((1, 4, 4, 1)))


def test_evaluation_does_not_mix():
    keras.utils.set_random_seed(0)
    teacher, student = recording_model("teacher", 1), recording_model("student", 2)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="sgd", mixup=1.0, run_eagerly=True)
    x = np.random.default_rng(0).random((4, 4, 4, 1)).astype("float32")
    distiller.evaluate(x, np.array([0, 1, 0, 1]), batch_size=4, verbose=0)
    np.testing.assert_array_equal(teacher.get_layer("recorder").seen[-1], x)


def test_seeded_fits_repeat_and_differ_from_no_mixup():
    def fit(mix):
        keras.utils.set_random_seed(5)
        teacher, student = recording_model("teacher", 1), recording_model("student", 2)
        distiller = kdkeras.Distiller(student=student, teacher=teacher)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.0, mixup=mix)
        x = np.random.default_rng(1).random((16, 4, 4, 1)).astype("float32")
        distiller.fit(x, np.arange(16) % 2, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return student.get_weights()

    first, again, plain = fit(0.5), fit(0.5), fit(0.0)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(np.allclose(a, b) for a, b in zip(first, plain))


def test_compile_refuses_what_mixup_cannot_do():
    student, teacher = recording_model("student", 2), recording_model("teacher", 1)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    with pytest.raises(ValueError, match="`mixup` must be a finite number >= 0"):
        distiller.compile(mixup=-1.0)
    with pytest.raises(ValueError, match=r"mixup mixes two images' labels.*decoupled_kd"):
        distiller.compile(distillation_loss_fn="decoupled_kd", mixup=1.0)
    distiller.compile(optimizer="sgd", mixup=1.0)
    cached = {"inputs": np.zeros((2, 4, 4, 1), "float32"), "teacher_logits": np.zeros((2, 2), "float32")}
    with pytest.raises(ValueError, match="cannot use cached teacher logits"):
        distiller.train_on_batch(cached, np.array([0, 1]))


def test_mixup_travels_in_the_compile_config():
    distiller = kdkeras.Distiller(student=recording_model("student", 2), teacher=recording_model("teacher", 1))
    distiller.compile(optimizer="sgd", mixup=0.4)
    clone = kdkeras.Distiller(student=recording_model("student", 2), teacher=recording_model("teacher", 1))
    clone.compile_from_config(distiller.get_compile_config())
    assert clone.mixup == 0.4


def test_config_validates_mixup():
    config = load_config("quickstart")
    assert apply_overrides(config, {"distill.mixup": 1.0}).distill.mixup == 1.0
    with pytest.raises(ConfigError, match=r"\[distill\] mixup.*>= 0"):
        apply_overrides(config, {"distill.mixup": -0.5})
    with pytest.raises(ConfigError, match=r"\[distill\] mixup.*decoupled_kd"):
        apply_overrides(config, {"distill.mixup": 1.0, "distill.loss": "decoupled_kd"})


@pytest.mark.parametrize("a", [0.1, 1.0, 5.0])
def test_symmetric_beta_matches_the_beta_distribution(a):
    from scipy import stats

    lam = np.asarray(mixup.symmetric_beta((4000,), a, keras.random.SeedGenerator(11)))
    # NumPy's float64 draws, rounded to float32 as ours are (within 6e-8 of 1, lambda is 1.0).
    reference = np.random.default_rng(0).beta(a, a, 4000).astype("float32")
    assert stats.ks_2samp(lam, reference).pvalue > 0.01


def test_small_concentrations_put_lambda_near_0_or_1():
    # Issue 26 defect 11: keras.random.beta underflows here and put 85% of lambda near 0.5.
    lam = np.asarray(mixup.symmetric_beta((5000,), 0.001, keras.random.SeedGenerator(2)))
    assert np.all(np.isfinite(lam)) and np.all((lam >= 0) & (lam <= 1))
    assert np.mean((lam < 0.01) | (lam > 0.99)) > 0.98
    assert 0.4 < np.mean(lam > 0.5) < 0.6  # symmetric: half near 1
    x = tf.random.stateless_uniform((64, 2, 2, 1), seed=(1, 2))
    mixed, lam, _ = mixup.mix(x, 0.001, keras.random.SeedGenerator(3))
    assert np.all(np.isfinite(np.asarray(mixed)))


@pytest.mark.parametrize("a", [1e-5, 2e4, 1e308])
def test_mixup_outside_its_numerical_range_is_refused(a):
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    distiller = kdkeras.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match=r"`mixup` = .* must be 0 \(off\) or in \[0.0001, 10000\]"):
        distiller.compile(optimizer="adam", mixup=a)
    with pytest.raises(ConfigError, match=r"\[distill\] mixup = .* must be 0 \(off\) or in \[0.0001, 10000\]"):
        apply_overrides(load_config("quickstart"), {"distill.mixup": a})
