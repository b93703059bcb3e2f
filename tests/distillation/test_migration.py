"""Code written for keras.distillation, the keras.io example or seed 002 trains what it says.

Every argument kdkeras would not honour is refused with the kdkeras spelling;
keras.distillation's constructor arguments that kdkeras can express are
mapped and train to the same weights; seed 002's `alpha * CE + KL` objective
is reproduced exactly.
"""

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import config as config_lib
from kdkeras.distillation.losses import KnowledgeDistillation

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 6)).astype("float32")
Y = RNG.integers(0, 3, size=64)


def dense_model(name, seed, hidden=8):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden_out = keras.layers.Dense(hidden, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden_out), name=name)


def teacher_and_student():
    return dense_model("teacher", seed=1, hidden=16), dense_model("student", seed=2)


@pytest.mark.parametrize(
    "kwargs, spelling",
    [
        ({"loss": "binary_crossentropy"}, "student_loss_fn="),
        ({"loss_weights": [0.5, 0.5]}, "alpha="),
        ({"student_loss_weight": 0.5}, "alpha="),
        ({"distillation_losses": []}, "distillation_loss_fn="),
        ({"lossfn": "mse"}, "student_loss_fn, distillation_loss_fn, distillation_terms, alpha"),
    ],
)
def test_compile_refuses_arguments_it_would_not_honour(kwargs, spelling):
    teacher, student = teacher_and_student()
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    with pytest.raises(TypeError, match=f"does not take `{next(iter(kwargs))}=`.*{spelling}"):
        distiller.compile(optimizer="sgd", **kwargs)


def test_compile_still_passes_keras_options():
    teacher, student = teacher_and_student()
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="sgd", jit_compile=False, steps_per_execution=2, run_eagerly=True)
    assert distiller.run_eagerly and distiller.steps_per_execution == 2


def test_keras_distillation_arguments_train_like_keras_distillation():
    temperature, weight = 3.0, 0.3
    models = []
    for cls, compile_kwargs in (
        (keras.distillation.Distiller, {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}),
        (kdkeras.Distiller, {"student_loss_fn": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}),
    ):
        teacher, student = teacher_and_student()
        distiller = cls(
            teacher=teacher,
            student=student,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=temperature, loss=keras.losses.KLDivergence()
            ),
            student_loss_weight=weight,
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), **compile_kwargs)
        distiller.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        models.append(student)
    theirs, ours = (m.get_weights() for m in models)
    initial = dense_model("student", seed=2).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(ours, initial)) > 1e-2  # it trained
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_keras_distillation_defaults_are_keras_distillations():
    teacher, student = teacher_and_student()
    distiller = kdkeras.Distiller(
        teacher=teacher, student=student,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=2.0, loss=keras.losses.KLDivergence()),
    )
    distiller.compile(optimizer="sgd")
    assert distiller.alpha == 0.5 and distiller.temperature == 2.0  # student_loss_weight defaults to 0.5
    assert isinstance(distiller.distillation_loss_fn, KnowledgeDistillation)
    distiller.compile(optimizer="sgd", alpha=0.2)  # an explicit compile argument wins
    assert distiller.alpha == 0.2


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"distillation_losses": keras.distillation.LogitsDistillation(temperature=2.0)},
         r"clipped to \[1e-7, 1\].*KnowledgeDistillation\(temperature=T\), alpha=0.5\)"),
        ({"distillation_losses": keras.distillation.LogitsDistillation(loss="mse")},
         r"distillation_loss_fn=lambda t, s: fn\(t / T, s / T\)"),
        ({"distillation_losses": [keras.distillation.LogitsDistillation(loss=keras.losses.KLDivergence())],
          "distillation_loss_weights": [0.5], "student_loss_weight": 0.2},
         r"distillation_weight=\(1 - 0.2\) \* w"),
        ({"distillation_losses": keras.distillation.FeatureDistillation(loss="mse")},
         r"FeatureMatch\(student_layer=\.\.\., teacher_layer=\.\.\., loss='hint'"),
        ({"student_loss_weight": 0.3}, r"compile\(alpha=0.3"),
    ],
)
def test_keras_distillation_arguments_kdkeras_cannot_reproduce_say_what_to_write(kwargs, says):
    teacher, student = teacher_and_student()
    with pytest.raises(TypeError, match=says):
        kdkeras.Distiller(teacher=teacher, student=student, **kwargs)


def test_swapped_teacher_and_student_of_a_keras_distillation_call_warn():
    teacher, student = teacher_and_student()
    kd = keras.distillation.LogitsDistillation(loss=keras.losses.KLDivergence())
    with pytest.warns(UserWarning, match=r"takes \(student, teacher\), keras.distillation.Distiller \(teacher"):
        kdkeras.Distiller(teacher, student, distillation_losses=kd)  # keras.distillation's positional order


def seed002_objective(y, z_teacher, z_student, alpha, temperature):
    """Seed 002's train_step in float64: alpha * CE(y, z_s) + KLDivergence()(softmax(z_t/T), softmax(z_s/T))."""
    z_teacher, z_student = (np.asarray(z, "float64") for z in (z_teacher, z_student))

    def log_softmax(z):
        return z - np.logaddexp.reduce(z, axis=-1, keepdims=True)

    ce = -log_softmax(z_student)[np.arange(len(y)), y].mean()
    p_teacher = np.exp(log_softmax(z_teacher / temperature))
    kl = (p_teacher * (np.log(p_teacher) - log_softmax(z_student / temperature))).sum(-1).mean()
    return alpha * ce + kl, ce, kl


@pytest.mark.parametrize("temperature", [2.0, 6.0])
def test_seed002_objective_is_reproduced(temperature):
    teacher, student = teacher_and_student()
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer="adam",
        alpha=0.5,
        distillation_weight=1.0,
        distillation_loss_fn=KnowledgeDistillation(temperature, t_squared=False),
    )
    logs = distiller.evaluate(X, Y, batch_size=64, return_dict=True, verbose=0)
    total, ce, kl = seed002_objective(Y, teacher.predict(X, verbose=0), student.predict(X, verbose=0), 0.5, temperature)
    assert logs["student_loss"] == pytest.approx(ce, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(kl, rel=1e-4)
    assert logs["loss"] == pytest.approx(total, rel=1e-5)
    hinton = 0.5 * ce + 0.5 * temperature**2 * kl  # what the kdkeras default would optimise instead
    assert abs(logs["loss"] - hinton) > 1e-3


def test_distillation_weight_survives_save_and_load(tmp_path):
    teacher, student = teacher_and_student()
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="adam", alpha=0.5, distillation_weight=1.0,
                      distillation_loss_fn=KnowledgeDistillation(2.0, t_squared=False))
    distiller.fit(X, Y, epochs=1, verbose=0)
    distiller.save(tmp_path / "d.keras")
    again = keras.models.load_model(tmp_path / "d.keras")
    assert again.distillation_weight == 1.0 and again.distillation_loss_fn.t_squared is False
    before = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    after = again.evaluate(X, Y, return_dict=True, verbose=0)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-6)


def test_seed002_experiments_use_the_seed_objective():
    for name, temperature in (("seed002_xray3_vgg16_cnn296k_t2", 2.0), ("seed002_xray3_vgg16_cnn296k_t6", 6.0)):
        config = config_lib.load_config(name)
        assert config.distill.objective == "additive" and config.distill.loss_options == {"t_squared": False}
        assert (config.distill.alpha, config.distill.temperature) == (0.5, temperature)
        assert config.distill.learning_rate == 1e-4 and config.distill.optimizer == "adam"
