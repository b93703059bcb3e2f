"""The Distiller contract of DESIGN.md, checked against hand-computed numbers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras

Z_STUDENT = np.array([[2, 1, 0.1, -1], [0.5, 2.5, -0.3, 0]], "float32")
Z_TEACHER = np.array([[3, 0.5, 0.2, -2], [0, 3, 1, -1]], "float32")
X = np.eye(2, dtype="float32")  # row i of X selects row i of the logits below
Y = np.array([0, 1])


def fixed_logits_model(logits, name, **dense_kwargs):
    """A model whose output for one-hot row i is `logits[i]`."""
    inputs = keras.Input((len(logits),))
    outputs = keras.layers.Dense(logits.shape[1], use_bias=False, name="logits", **dense_kwargs)(inputs)
    model = keras.Model(inputs, outputs, name=name)
    model.get_layer("logits").set_weights([logits])
    return model


def student_cross_entropy(weights=(1.0, 1.0)):
    log_p = Z_STUDENT - np.log(np.exp(Z_STUDENT.astype("float64")).sum(-1, keepdims=True))
    per_example = -log_p[np.arange(2), Y]
    return float((per_example * np.asarray(weights)).sum() / 2)


def make_distiller(alpha=0.1, temperature=4.0, optimizer=None, **compile_kwargs):
    distiller = kdkeras.Distiller(
        student=fixed_logits_model(Z_STUDENT, "student"),
        teacher=fixed_logits_model(Z_TEACHER, "teacher"),
    )
    distiller.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        metrics=["accuracy"],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        alpha=alpha,
        temperature=temperature,
        **compile_kwargs,
    )
    return distiller


@pytest.mark.parametrize("temperature, expected", [(1.0, 0.114751), (4.0, 0.306221)])
def test_evaluate_reports_reference_losses(temperature, expected):
    alpha = 0.3
    logs = make_distiller(alpha, temperature).evaluate(X, Y, return_dict=True, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(expected, abs=1e-5)
    assert logs["student_loss"] == pytest.approx(student_cross_entropy(), abs=1e-5)
    assert logs["loss"] == pytest.approx(alpha * student_cross_entropy() + (1 - alpha) * expected, abs=1e-5)
    assert logs["accuracy"] == 1.0


def test_same_value_as_keras_distillation_with_kl_divergence_instance():
    ours = make_distiller(alpha=0.0, temperature=4.0).evaluate(X, Y, return_dict=True, verbose=0)
    theirs = keras.distillation.Distiller(
        teacher=fixed_logits_model(Z_TEACHER, "keras_teacher"),
        student=fixed_logits_model(Z_STUDENT, "keras_student"),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=4.0, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=0.0,
    )
    theirs.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reference = theirs.evaluate(X, Y, return_dict=True, verbose=0)
    assert ours["distillation_loss"] == pytest.approx(reference["distillation_loss"], abs=1e-5)
    assert ours["loss"] == pytest.approx(reference["loss"], abs=1e-5)


@pytest.mark.parametrize("temperature, expected", [(1.0, 0.114751), (4.0, 0.306221)])
def test_keras_kl_divergence_means_the_keras_io_formula(temperature, expected):
    # At T=4 the T^2 factor and the softening both show (at T=1 neither would).
    distiller = make_distiller(alpha=0.0, temperature=None)
    distiller.compile(
        optimizer="sgd", distillation_loss_fn=keras.losses.KLDivergence(), alpha=0.0, temperature=temperature
    )
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(expected, abs=1e-5)


def test_class_weight_and_sample_weight_reweight_student_loss():
    distiller = make_distiller(alpha=0.5)
    weighted = distiller.evaluate(X, Y, sample_weight=np.array([2.0, 0.5]), return_dict=True, verbose=0)
    assert weighted["student_loss"] == pytest.approx(student_cross_entropy((2.0, 0.5)), abs=1e-5)
    kd = kdkeras.distillation.losses.knowledge_distillation(Z_TEACHER, Z_STUDENT, 4.0).numpy()
    assert weighted["distillation_loss"] == pytest.approx((kd * [2.0, 0.5]).sum() / 2, abs=1e-5)

    # class_weight is turned into per-example weights by Keras; check it via the first fit step.
    distiller = make_distiller(alpha=0.5)
    logs = distiller.fit(X, Y, class_weight={0: 0.0, 1: 3.0}, epochs=1, verbose=0, shuffle=False).history
    assert logs["student_loss"][0] == pytest.approx(student_cross_entropy((0.0, 3.0)), abs=1e-5)


def test_fit_trains_student_only_and_logs_every_loss():
    teacher = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(3)],
        name="teacher",
    )
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)], name="student")
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 64)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(x, y, validation_data=(x, y), epochs=2, batch_size=16, verbose=0)
    assert set(history.history) == {
        "loss", "student_loss", "distillation_loss", "accuracy",
        "val_loss", "val_student_loss", "val_distillation_loss", "val_accuracy",
    }  # fmt: skip
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)  # BatchNorm statistics included
    assert all(not np.array_equal(b, a) for b, a in zip(student_before, student.get_weights()))
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6)
    assert teacher.trainable is False
    assert distiller.optimizer.iterations.numpy() == 8


@pytest.mark.parametrize("with_features", [False, True], ids=["logits", "features"])
def test_teacher_runs_in_inference_mode_during_fit(with_features):
    # Dropout shows the mode (BatchNorm would not: Keras skips its update when
    # trainable=False). With the learning rate at 0 the training step's logged
    # losses must equal evaluate's, where every model runs in inference mode.
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, name="t_hidden")(inputs)
    dropped = keras.layers.Dropout(0.9, seed=1)(hidden)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(dropped), name="teacher")
    s_inputs = keras.Input((6,))
    s_hidden = keras.layers.Dense(4, name="s_hidden")(s_inputs)
    student = keras.Model(s_inputs, keras.layers.Dense(3)(s_hidden), name="student")
    matches = [kdkeras.distillation.features.FeatureMatch("s_hidden", "t_hidden", "hint")] if with_features else None
    distiller = kdkeras.Distiller(student=student, teacher=teacher, features=matches)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.0, temperature=2.0)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 32)
    reference = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    trained = distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history
    assert trained["distillation_loss"][0] == pytest.approx(reference["distillation_loss"], rel=1e-5)
    if with_features:
        # The Dropout sits after t_hidden, so the teacher's features alone cannot show the mode.
        assert trained["feature_loss"][0] == pytest.approx(reference["feature_loss"], rel=1e-5)


def test_student_regularization_losses_count():
    l2 = 0.05
    distiller = kdkeras.Distiller(
        student=fixed_logits_model(Z_STUDENT, "student", kernel_regularizer=keras.regularizers.L2(l2)),
        teacher=fixed_logits_model(Z_TEACHER, "teacher", kernel_regularizer=keras.regularizers.L2(1.0)),
    )
    distiller.compile(optimizer="sgd", alpha=0.5, temperature=4.0)
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    penalty = l2 * float((Z_STUDENT**2).sum())  # the teacher's own penalty must not count
    assert logs["loss"] == pytest.approx(0.5 * logs["student_loss"] + 0.5 * 0.306221 + penalty, abs=1e-4)


def test_save_load_round_trip_resumes_training(tmp_path):
    # Adam has per-variable slots (SGD has none): a restore without them steps differently.
    distiller = make_distiller(alpha=0.2, temperature=2.0, optimizer=keras.optimizers.Adam(0.05))
    distiller.fit(X, Y, epochs=2, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, kdkeras.Distiller)
    assert (restored.alpha, restored.temperature) == (0.2, 2.0)
    assert restored.teacher.trainable is False
    assert restored.optimizer.iterations.numpy() == 2
    before = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    after = restored.evaluate(X, Y, return_dict=True, verbose=0)
    assert after == pytest.approx(before, abs=1e-6)
    restored.fit(X, Y, epochs=1, verbose=0)
    distiller.fit(X, Y, epochs=1, verbose=0)
    np.testing.assert_allclose(restored.student.get_weights()[0], distiller.student.get_weights()[0], rtol=1e-6)

    student_path = str(tmp_path / "student.keras")
    restored.student.save(student_path)
    deployable = keras.models.load_model(student_path)
    assert not isinstance(deployable, kdkeras.Distiller)
    np.testing.assert_allclose(deployable.predict(X, verbose=0), restored.predict(X, verbose=0), rtol=1e-6)


def test_jit_compile_gives_the_same_losses():
    eager_graph = make_distiller(alpha=0.4).evaluate(X, Y, return_dict=True, verbose=0)
    distiller = make_distiller(alpha=0.4, jit_compile=True)
    assert distiller.jit_compile is True
    assert distiller.evaluate(X, Y, return_dict=True, verbose=0) == pytest.approx(eager_graph, abs=1e-5)
    history = distiller.fit(X, Y, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))


def test_mixed_float16_trains_with_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16), keras.layers.Dense(3, dtype="float32")])
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])  # float16 logits
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 32)
    history = distiller.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][1] < history["loss"][0]
    assert student.layers[0].compute_dtype == "float16"


def test_validation_errors():
    student = fixed_logits_model(Z_STUDENT, "student")
    teacher = fixed_logits_model(Z_TEACHER, "teacher")
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    for alpha in (-0.1, 1.5, "0.5"):  # None is the default: 0.1, or student_loss_weight
        with pytest.raises(ValueError, match=r"`alpha` must be a number in \[0, 1\]"):
            distiller.compile(alpha=alpha)
    for temperature in (0, -2.0):
        with pytest.raises(ValueError, match="`temperature` must be > 0"):
            distiller.compile(temperature=temperature)
    with pytest.raises(ValueError, match="disagrees with the temperature 2.0"):
        distiller.compile(distillation_loss_fn=kdkeras.distillation.losses.KnowledgeDistillation(2.0), temperature=4.0)
    with pytest.raises(ValueError, match=r"from_logits=False.*SparseCategoricalCrossentropy\(from_logits=True\)"):
        distiller.compile(student_loss_fn=keras.losses.SparseCategoricalCrossentropy())
    wide_teacher = fixed_logits_model(np.zeros((2, 5), "float32"), "wide")
    with pytest.raises(ValueError, match="teacher outputs 5 logits but the student outputs 4.*num_classes=5"):
        kdkeras.Distiller(student=student, teacher=wide_teacher)
    unbuilt = keras.Sequential([keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="teacher 'sequential.*' is not built"):
        kdkeras.Distiller(student=student, teacher=unbuilt)
    with pytest.raises(TypeError, match="`teacher` must be a keras.Model"):
        kdkeras.Distiller(student=student, teacher=keras.layers.Dense(4))
    uncompiled = kdkeras.Distiller(student=student, teacher=teacher)
    # Keras answers `fit` before any step runs; kdkeras's own check guards the
    # steps and the several-teacher combination, which need the temperature.
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before"):
        uncompiled.fit(X, Y, verbose=0)
    for call in (lambda: uncompiled.train_step((X, Y)), lambda: uncompiled.test_step((X, Y))):
        with pytest.raises(RuntimeError, match=r"The Distiller is not compiled\. Call `distiller\.compile"):
            call()
    two_teachers = kdkeras.Distiller(student=student, teacher=[teacher, fixed_logits_model(Z_TEACHER, "t2")])
    with pytest.raises(RuntimeError, match=r"The Distiller is not compiled"):
        two_teachers.teacher_logits(X)


def test_string_student_loss_is_built_from_logits():
    distiller = make_distiller()
    distiller.compile(student_loss_fn="sparse_categorical_crossentropy", alpha=1.0)
    logs = distiller.evaluate(X, Y, return_dict=True, verbose=0)
    assert logs["student_loss"] == pytest.approx(student_cross_entropy(), abs=1e-5)


@pytest.mark.slow
def test_real_pneumoniamnist_distillation_beats_majority_rate(pneumonia_npz):
    """A briefly trained teacher distilled into a tiny student on real X-rays."""
    with np.load(pneumonia_npz, allow_pickle=False) as data:
        x_train = data["train_images"][..., None].astype("float32") / 255.0
        y_train = data["train_labels"].ravel()
        x_val = data["val_images"][..., None].astype("float32") / 255.0
        y_val = data["val_labels"].ravel()
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).cache().shuffle(4708, seed=0).batch(64)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256).cache()

    def cnn(widths, name):
        layers = [keras.Input((28, 28, 1))]
        for width in widths:
            layers += [keras.layers.Conv2D(width, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
        layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
        return keras.Sequential(layers, name=name)

    teacher = cnn((16, 32, 64), "teacher")
    teacher.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(train, epochs=3, verbose=0)
    student = cnn((8, 16, 32), "student")
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"], alpha=0.1, temperature=4.0)
    history = distiller.fit(train, validation_data=val, epochs=6, verbose=0).history
    majority_rate = 389 / 524
    assert history["val_accuracy"][-1] > majority_rate
