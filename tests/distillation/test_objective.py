"""The objective interface: weighted distillation terms through the Distiller."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import kdkeras
from kdkeras.distillation import features, losses, objective, relations

RNG = np.random.default_rng(11)
Z_STUDENT = RNG.normal(scale=2.0, size=(6, 4)).astype("float32")
Z_TEACHER = RNG.normal(scale=3.0, size=(6, 4)).astype("float32")
Z_TEACHER_2 = RNG.normal(scale=3.0, size=(6, 4)).astype("float32")
X = np.eye(6, dtype="float32")  # row i of X selects row i of the logits below
Y = np.array([0, 1, 2, 3, 0, 1])


def fixed_logits_model(logits, name):
    inputs = keras.Input((len(logits),))
    outputs = keras.layers.Dense(logits.shape[1], use_bias=False, name="logits")(inputs)
    model = keras.Model(inputs, outputs, name=name)
    model.get_layer("logits").set_weights([logits])
    return model


def distiller(teacher=Z_TEACHER, **compile_kwargs):
    teachers = [fixed_logits_model(z, f"t{i}") for i, z in enumerate(teacher)] if isinstance(teacher, list) else (
        fixed_logits_model(teacher, "t")
    )
    model = kdkeras.Distiller(fixed_logits_model(Z_STUDENT, "s"), teachers)
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
    return model


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kd(p_teacher, z_student, temperature):
    p_student = softmax(np.asarray(z_student, "float64") / temperature)
    return temperature**2 * (p_teacher * np.log(p_teacher / p_student)).sum(-1).mean()


def test_one_term_list_is_the_keras_io_shortcut():
    shortcut = distiller(alpha=0.3, temperature=4.0).evaluate(X, Y, return_dict=True, verbose=0)
    listed = distiller(alpha=0.3, distillation_terms=[(losses.KnowledgeDistillation(4.0), 0.7)])
    assert listed.evaluate(X, Y, return_dict=True, verbose=0) == pytest.approx(shortcut, abs=1e-6)
    assert listed.distillation_loss_fn is None and listed.temperature is None


def test_weighted_terms_log_each_and_sum_into_the_loss():
    model = distiller(
        alpha=0.2, distillation_terms=[(losses.KnowledgeDistillation(4.0), 0.5), (relations.DIST(), 2.0)]
    )
    logs = model.evaluate(X, Y, batch_size=6, return_dict=True, verbose=0)
    kd_value = kd(softmax(Z_TEACHER.astype("float64") / 4.0), Z_STUDENT, 4.0)
    dist_value = float(relations.DIST()(Z_TEACHER, Z_STUDENT))
    assert logs["knowledge_distillation_loss"] == pytest.approx(kd_value, rel=1e-5)
    assert logs["dist_loss"] == pytest.approx(dist_value, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx((0.5 * kd_value + 2.0 * dist_value) / 2.5, rel=1e-5)
    assert logs["loss"] == pytest.approx(0.2 * logs["student_loss"] + 0.5 * kd_value + 2.0 * dist_value, rel=1e-5)
    history = model.fit(X, Y, batch_size=6, epochs=1, verbose=0).history
    assert {"dist_loss", "knowledge_distillation_loss", "distillation_loss"} <= set(history)


@keras.saving.register_keras_serializable(package="kdkeras_tests")
class InputScaledMargin(objective.DistillationTerm):
    """A term that needs the images and the labels: sum(x) * (z_t - z_s) at the true class."""

    requires = ("teacher_logits", "labels", "inputs")

    def __init__(self, name="input_scaled_margin", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true["labels"], (-1, 1)), "int32")
        margin = ops.take_along_axis(y_true["teacher_logits"] - y_pred, labels, axis=-1)[:, 0]
        return ops.sum(y_true["inputs"], axis=-1) * margin


def test_a_term_gets_what_it_requires():
    x = 3.0 * X  # logits triple too; the term sees the images themselves
    model = distiller(alpha=0.0, distillation_terms=[InputScaledMargin()])
    logs = model.evaluate(x, Y, return_dict=True, verbose=0)
    expected = (3.0 * (3.0 * Z_TEACHER - 3.0 * Z_STUDENT)[np.arange(6), Y]).mean()
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-5)


def test_several_teachers_fuse_in_each_terms_space():
    weights = (0.5, 0.5)
    model = distiller(
        teacher=[Z_TEACHER, Z_TEACHER_2],
        alpha=0.0,
        distillation_terms=[(losses.KnowledgeDistillation(2.0, name="kd2"), 1.0), (losses.KnowledgeDistillation(4.0), 1.0)],
    )
    logs = model.evaluate(X, Y, return_dict=True, verbose=0)
    for name, temperature in (("kd2", 2.0), ("knowledge_distillation", 4.0)):
        average = sum(w * softmax(z.astype("float64") / temperature) for w, z in zip(weights, (Z_TEACHER, Z_TEACHER_2)))
        assert logs[f"{name}_loss"] == pytest.approx(kd(average, Z_STUDENT, temperature), rel=1e-5)
    with pytest.raises(ValueError, match="soften the teachers differently"):
        model.teacher_logits(X)


def test_terms_list_round_trip_resumes_training(tmp_path):
    model = distiller(
        alpha=0.1, distillation_terms=[(losses.DecoupledKD(nckd_weight=2.0), 0.4), (relations.DIST(temperature=2.0), 1.5)]
    )
    model.fit(X, Y, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "terms.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert [(type(t), w) for t, w in restored.distillation_terms] == [(losses.DecoupledKD, 0.4), (relations.DIST, 1.5)]
    assert restored.distillation_terms[1][0].temperature == 2.0
    before = model.evaluate(X, Y, return_dict=True, verbose=0)
    assert restored.evaluate(X, Y, return_dict=True, verbose=0) == pytest.approx(before, abs=1e-6)
    restored.fit(X, Y, epochs=1, verbose=0)
    model.fit(X, Y, epochs=1, verbose=0)
    np.testing.assert_allclose(restored.student.get_weights()[0], model.student.get_weights()[0], rtol=1e-6)


def test_names_build_registered_terms_with_their_defaults():
    model = distiller(distillation_terms=["dist", ("decoupled_kd", 0.5)])
    (dist, w1), (dkd, w2) = model.distillation_terms
    assert (type(dist), dist.temperature, w1) == (relations.DIST, 1.0, 1.0)
    assert (type(dkd), dkd.temperature, w2) == (losses.DecoupledKD, 4.0, 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"distillation_terms": [(features.FeatureMatch("a", "b"), 1.0)]}, "pass it as `Distiller\\(..., features"),
        ({"distillation_terms": ["dist"], "temperature": 2.0}, "replaces `distillation_loss_fn` and `temperature`"),
        ({"distillation_terms": ["dist", relations.DIST()]}, "Two distillation terms share a name"),
        ({"distillation_terms": [("dist", -1.0)]}, "weight of the term 'dist' must be a number >= 0"),
        ({"distillation_terms": []}, "is empty"),
        ({"distillation_terms": ["nope"]}, "Unknown distillation loss 'nope'"),
    ],
)
def test_bad_term_lists_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distiller(**kwargs)


def test_a_requirement_the_distiller_lacks_is_refused():
    class NeedsAttention(objective.DistillationTerm):
        requires = ("teacher_logits", "attention_maps")

        def call(self, y_true, y_pred):
            return ops.zeros_like(y_pred[:, 0])

    with pytest.raises(ValueError, match="requires \\['attention_maps'\\].*may require teacher_logits, labels, inputs"):
        distiller(distillation_terms=[NeedsAttention(name="needs")])
