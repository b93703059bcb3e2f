"""Transfer sets: withheld labels, unlabeled images in the Distiller, equal budgets."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import Distiller, cli
from kdkeras import config as config_lib
from kdkeras.config import ConfigError
from kdkeras.data.info import DatasetInfo
from kdkeras.workflow import transfer

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "name": "transfer",
    "seed": 3,
    "deterministic": True,
    "labeled_fraction": 0.1,
    "data": {"limit": 200},
    "teacher": {"options": {"filters": [8, 16]}},
    "student": {"class_weight": "balanced"},
    "distill": {"epochs": 1, "class_weight": "balanced", "transfer_set": "train"},
}


def test_labeled_indices_are_seeded_stratified_and_keep_every_class():
    labels = np.array([0] * 90 + [1] * 10)
    chosen = transfer.labeled_indices(labels, 0.2, seed=1)
    assert len(chosen) == 20
    assert np.bincount(labels[chosen]).tolist() == [18, 2]  # the 90/10 mix, kept
    np.testing.assert_array_equal(chosen, transfer.labeled_indices(labels, 0.2, seed=1))
    assert not np.array_equal(chosen, transfer.labeled_indices(labels, 0.2, seed=2))
    # 1% of 100 is one image, but each class keeps one label.
    assert sorted(labels[transfer.labeled_indices(labels, 0.01, seed=0)]) == [0, 1]
    np.testing.assert_array_equal(transfer.labeled_indices(labels, 1.0), np.arange(100))


def _distiller(alpha=0.3):
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="sgd", metrics=["accuracy"], alpha=alpha, temperature=2.0)
    return distiller, student, teacher


def _kd(z_t, z_s, temperature=2.0):
    p = tf.nn.softmax(z_t / temperature).numpy().astype("float64")
    log_q = tf.nn.log_softmax(z_s / temperature).numpy().astype("float64")
    return temperature**2 * np.mean(np.sum(p * (np.log(p) - log_q), axis=1))


def test_unlabeled_images_reach_only_the_distillation_term():
    distiller, student, teacher = _distiller()
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    y = np.array([2, -1, 0, -1, -1, 1], dtype="int32")
    logs = distiller.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    z_s, z_t = student(x).numpy(), teacher(x).numpy()
    labeled = y >= 0
    log_probs = tf.nn.log_softmax(z_s[labeled]).numpy().astype("float64")
    ce = -np.mean(log_probs[np.arange(labeled.sum()), y[labeled]])
    # The student loss is the mean over the 3 labeled images, not over all 6.
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], _kd(z_t, z_s), rtol=1e-5)
    accuracy = np.mean(np.argmax(z_s[labeled], axis=1) == y[labeled])
    np.testing.assert_allclose(logs["accuracy"], accuracy)


def test_a_batch_without_labels_trains_on_the_teacher_alone():
    distiller, student, teacher = _distiller(alpha=0.5)
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    logs = distiller.evaluate(x, np.full(8, -1, "int32"), batch_size=8, verbose=0, return_dict=True)
    assert logs["student_loss"] == 0.0
    np.testing.assert_allclose(logs["loss"], 0.5 * _kd(teacher(x).numpy(), student(x).numpy()), rtol=1e-5)
    before = [w.copy() for w in teacher.get_weights()]
    distiller.fit(x, np.full(8, -1, "int32"), batch_size=8, epochs=2, verbose=0)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)


def _info(num_classes=2):
    return DatasetInfo(
        name="toy", task="binary-class", class_names=["a", "b"][:num_classes], n_channels=1,
        image_size=(8, 8), split_sizes={"train": 40}, class_counts=[30, 10], class_weights={0: 0.5, 1: 2.0},
        source="", skipped=[], label_mode="sparse",
    )


def _raw_train():
    x = np.arange(40 * 64, dtype="float32").reshape(40, 8, 8, 1) % 255
    y = np.array([0] * 30 + [1] * 10, dtype="int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_fit_plans_give_both_arms_the_same_steps(tiny_experiment):
    config = config_lib.from_dict(tiny_experiment.raw(**TINY))
    config = config_lib.apply_overrides(config, {"labeled_fraction": 0.25})
    info = _info()
    student = transfer.fit_plan(config, "student", _raw_train(), info, 8, info.class_weights)
    distill = transfer.fit_plan(config, "distill", _raw_train(), info, 8, info.class_weights)
    assert (student.labeled, student.unlabeled) == (10, 0)
    assert (distill.labeled, distill.unlabeled) == (10, 30)
    # 40 images in batches of 8: both arms take 5 steps an epoch.
    assert distill.steps_per_epoch is None and sum(1 for _ in distill.train) == 5
    assert student.steps_per_epoch == 5 and student.class_weight == info.class_weights
    labels, weights = [], []
    for _, y, w in distill.train:
        labels.append(y.numpy())
        weights.append(w.numpy())
    labels, weights = np.concatenate(labels), np.concatenate(weights)
    assert np.bincount(labels[labels >= 0]).tolist() == [8, 2]  # round(7.5), round(2.5): to even
    assert (labels == -1).sum() == 30
    np.testing.assert_array_equal(weights, np.select([labels == -1, labels == 0], [1.0, 0.5], 2.0))


def test_npz_transfer_set_is_resized_and_validated(tmp_path):
    path = tmp_path / "unlabeled.npz"
    np.savez(path, images=np.full((5, 16, 16), 200, np.uint8))
    images = transfer.load_transfer_images(str(path), _info())
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images, 200.0)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, train_images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match=r"transfer_set = .*wrong\.npz.*not `images`"):
        transfer.load_transfer_images(str(wrong), _info())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"labeled_fraction": 0.0}, "labeled_fraction = 0.0 must be in"),
        ({"labeled_fraction": 1.0}, "labeled_fraction = 1 withholds none"),
        ({"distill.loss": "decoupled_kd"}, "'decoupled_kd' does"),
    ],
)
def test_transfer_keys_are_validated(settings, message, tiny_experiment):
    config = config_lib.from_dict(tiny_experiment.raw(**TINY))
    with pytest.raises(ConfigError, match=message):
        config_lib.apply_overrides(config, settings)


@pytest.mark.slow
def test_student_and_distill_phases_report_equal_budgets(tmp_path, capsys, tiny_experiment):
    path = tiny_experiment(tmp_path, **TINY)
    runs = str(tmp_path / "runs")
    for phase in ("teacher", "student", "distill"):
        assert cli.main([phase, "--config", str(path), "--runs-dir", runs, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train set: 20 labeled + 180 unlabeled images" in out
    assert "train set: 20 labeled + 0 unlabeled images, 7 steps per epoch" in out
    metrics = {}
    for name in ("student", "distilled"):
        with open(os.path.join(runs, "transfer", f"{name}_metrics.json")) as f:
            metrics[name] = json.load(f)
    run = {name: metrics[name]["run"] for name in metrics}  # the file keeps what ran under `run`
    assert run["student"]["steps_per_epoch"] == run["distilled"]["steps_per_epoch"] == math.ceil(200 / 32)
    assert run["distilled"]["train_images"] == {"labeled": 20, "unlabeled": 180}
    assert run["student"]["train_images"] == {"labeled": 20, "unlabeled": 0}
