"""Tests of kdkeras.evaluation.metrics: hand-computed cases and agreement with medmnist."""

import importlib.util
import json
import math
import os
import sys
import types

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores, predict_labels


def _load_module(name, path, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def medmnist_modules(monkeypatch, tmp_path):
    """medmnist's real `info` and `evaluator` modules, loaded without torch.

    `import medmnist` imports torch, so a stub package stands in for it and the
    two files are executed directly. `info` creates `~/.medmnist`, hence HOME.
    """
    spec = importlib.util.find_spec("medmnist")
    if spec is None:
        pytest.skip("medmnist is not installed (`pip install --no-deps medmnist`)")
    folder = spec.submodule_search_locations[0]
    monkeypatch.setenv("HOME", str(tmp_path))
    package = types.ModuleType("medmnist")
    package.__path__ = [folder]
    monkeypatch.setitem(sys.modules, "medmnist", package)
    info = _load_module("medmnist.info", os.path.join(folder, "info.py"), monkeypatch)
    with monkeypatch.context() as scoped:
        if importlib.util.find_spec("pandas") is None:
            # evaluator.py imports pandas only for its CSV export, unused here;
            # the stub is removed at once because sklearn probes sys.modules.
            scoped.setitem(sys.modules, "pandas", types.ModuleType("pandas"))
        evaluator = _load_module(
            "medmnist.evaluator", os.path.join(folder, "evaluator.py"), monkeypatch
        )
    assert "torch" not in sys.modules
    return info, evaluator


def test_binary_hand_computed():
    y_true = np.array([[0], [0], [1], [1]])
    positive = np.array([0.1, 0.65, 0.35, 0.85])
    y_score = np.stack([1 - positive, positive], axis=1)
    metrics = classification_metrics(y_true, y_score, "binary-class", ["normal", "pneumonia"])

    assert metrics["n"] == 4
    assert metrics["acc"] == 0.5
    # Positive scores {0.35, 0.85} beat negative {0.1, 0.65} in 3 of 4 pairs.
    assert metrics["auc"] == 0.75
    assert metrics["balanced_acc"] == 0.5
    assert metrics["confusion_matrix"] == [[1, 1], [1, 1]]
    # Confidences 0.9 (right), 0.65 and 0.65 (wrong, same bin), 0.85 (right).
    assert metrics["ece"] == pytest.approx(0.25 * 0.1 + 0.5 * 0.65 + 0.25 * 0.15, abs=1e-12)
    expected_ce = -(math.log(0.9) + 2 * math.log(0.35) + math.log(0.85)) / 4
    assert metrics["cross_entropy"] == pytest.approx(expected_ce, abs=1e-12)
    assert metrics["per_class"][0] == {
        "name": "normal",
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
        "auc": 0.75,
    }
    assert "loss" not in metrics


def test_binary_accepts_positive_column_and_loss():
    positive = np.array([0.1, 0.65, 0.35, 0.85])
    metrics = classification_metrics([0, 0, 1, 1], positive, "binary-class", loss=np.float32(0.5))
    assert (metrics["acc"], metrics["auc"], metrics["loss"]) == (0.5, 0.75, 0.5)
    assert [c["name"] for c in metrics["per_class"]] == ["0", "1"]


def test_binary_threshold_is_strict():
    # medmnist predicts positive only when the last column is > 0.5.
    assert predict_labels([[0.5, 0.5], [0.4, 0.6]], "binary-class").tolist() == [0, 1]


def test_perfect_confident_predictions():
    metrics = classification_metrics([0, 1, 2], np.eye(3), "multi-class")
    assert (metrics["acc"], metrics["auc"], metrics["balanced_acc"]) == (1.0, 1.0, 1.0)
    assert metrics["ece"] == 0.0
    assert metrics["cross_entropy"] == pytest.approx(0.0, abs=1e-12)


def test_multi_class_hand_computed():
    y_true = np.array([0, 1, 2, 2])
    y_score = np.array(
        [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]
    )
    metrics = classification_metrics(y_true, y_score, "multi-class")
    assert metrics["acc"] == 0.75
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert metrics["balanced_acc"] == pytest.approx((1 + 1 + 0.5) / 3)
    # One-vs-rest: class 0 perfectly ranked; class 1: 0.5 beats 0.2 and 0.2,
    # loses to 0.6; class 2: 3 of 4 pairs won and one tie (0.3 vs 0.3) worth 1/2.
    assert metrics["auc"] == pytest.approx((1.0 + 2 / 3 + 3.5 / 4) / 3)
    assert [c["precision"] for c in metrics["per_class"]] == [1.0, 0.5, 1.0]


def test_multi_label_hand_computed():
    y_true = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    y_score = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.1]])
    metrics = classification_metrics(y_true, y_score, "multi-label", ["effusion", "mass"])
    assert metrics["acc"] == 0.875
    assert metrics["auc"] == 1.0
    # Label "mass": sensitivity 1/2, specificity 2/2.
    assert metrics["balanced_acc"] == pytest.approx((1.0 + 0.75) / 2)
    assert metrics["confusion_matrix"] == [[[2, 0], [0, 2]], [[2, 0], [1, 1]]]
    assert metrics["per_class"][1]["recall"] == 0.5
    assert metrics["per_class"][1]["support"] == 2


def test_auc_is_none_when_a_class_is_absent():
    metrics = classification_metrics([1, 1], [[0.2, 0.8], [0.6, 0.4]], "binary-class")
    assert metrics["auc"] is None
    assert metrics["acc"] == 0.5
    # Class 0 is absent, so balanced accuracy is the recall of class 1 alone.
    assert metrics["balanced_acc"] == 0.5


@pytest.mark.parametrize("task", ["multi-class", "ordinal-regression"])
def test_single_label_agrees_with_sklearn(task):
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 200)
    y_score = logits_to_scores(rng.normal(size=(200, 5)) + 2 * np.eye(5)[y_true], task)
    metrics = classification_metrics(y_true, y_score, task)
    y_pred = y_score.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, zero_division=0
    )
    assert metrics["balanced_acc"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert [c["precision"] for c in metrics["per_class"]] == pytest.approx(precision)
    assert [c["recall"] for c in metrics["per_class"]] == pytest.approx(recall)
    assert [c["f1"] for c in metrics["per_class"]] == pytest.approx(f1)
    assert [c["support"] for c in metrics["per_class"]] == support.tolist()


@pytest.mark.parametrize(
    "medmnist_task, n_columns",
    [
        ("binary-class", 2),
        ("multi-class", 9),
        ("ordinal-regression", 5),
        ("multi-label, binary-class", 14),
    ],
)
def test_agrees_with_medmnist_evaluator(medmnist_modules, medmnist_task, n_columns):
    _, evaluator = medmnist_modules
    rng = np.random.default_rng(7)
    n = 300
    logits = rng.normal(size=(n, n_columns))
    if medmnist_task == "multi-label, binary-class":
        y_true = (rng.random((n, n_columns)) < 0.3).astype(np.int64)
        logits += 1.5 * y_true
        y_score = logits_to_scores(logits, "multi-label")
    else:
        y_true = rng.integers(0, n_columns, (n, 1))
        logits += 1.5 * np.eye(n_columns)[y_true[:, 0]]
        y_score = logits_to_scores(logits, "multi-class")

    metrics = classification_metrics(y_true, y_score, medmnist_task)

    assert metrics["auc"] == pytest.approx(
        evaluator.getAUC(y_true, y_score, medmnist_task), abs=1e-12
    )
    assert metrics["acc"] == pytest.approx(
        evaluator.getACC(y_true, y_score, medmnist_task), abs=1e-12
    )
    assert 0.5 < metrics["auc"] < 1.0


def test_accepts_every_medmnist_task(medmnist_modules):
    info, _ = medmnist_modules
    tasks = {entry["task"] for entry in info.INFO.values()}
    assert "binary-class" in tasks
    for task in tasks:
        y_true = [[1, 0], [0, 1]] if task.startswith("multi-label") else [0, 1]
        assert classification_metrics(y_true, [[0.9, 0.1], [0.2, 0.8]], task)["acc"] == 1.0


def test_logits_to_scores_values_and_stability():
    softmax = logits_to_scores([[0.0, math.log(3.0)], [1000.0, -1000.0]], "multi-class")
    np.testing.assert_allclose(softmax, [[0.25, 0.75], [1.0, 0.0]], atol=1e-15)
    sigmoid = logits_to_scores([[0.0, 1000.0, -1000.0]], "multi-label")
    np.testing.assert_allclose(sigmoid, [[0.5, 1.0, 0.0]], atol=1e-15)
    one_logit = logits_to_scores([[0.0], [math.log(3.0)]], "binary-class")
    np.testing.assert_allclose(one_logit, [[0.5, 0.5], [0.25, 0.75]], atol=1e-15)


def test_unknown_task():
    with pytest.raises(ValueError, match=r"Unknown `task` 'multiclass'; use one of binary-class"):
        classification_metrics([0, 1], [[0.9, 0.1], [0.1, 0.9]], "multiclass")


def test_logits_instead_of_probabilities():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*logits_to_scores"):
        classification_metrics([0, 1], [[2.0, -1.0], [0.3, 1.2]], "binary-class")


def test_rows_must_sum_to_one():
    with pytest.raises(ValueError, match="rows must sum to 1 .*'multi-label'"):
        classification_metrics([0, 2], [[0.9, 0.8, 0.1], [0.1, 0.1, 0.9]], "multi-class")


def test_label_count_mismatch():
    with pytest.raises(ValueError, match=r"`y_true` must be class indices of shape \(2,\)"):
        classification_metrics([0, 1, 1], [[0.9, 0.1], [0.1, 0.9]], "binary-class")


def test_label_out_of_range():
    with pytest.raises(ValueError, match=r"integer class indices in \[0, 1\].*\[0, 2\]"):
        classification_metrics([0, 2], [[0.9, 0.1], [0.1, 0.9]], "binary-class")


def test_binary_needs_two_columns():
    with pytest.raises(ValueError, match="binary-class task needs 2"):
        classification_metrics([0, 1], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], "binary-class")


def test_multi_label_shape_mismatch():
    with pytest.raises(ValueError, match=r"multi-hot with the shape of `y_score` \(2, 2\)"):
        classification_metrics([0, 1], [[0.9, 0.1], [0.1, 0.9]], "multi-label")


def test_class_names_length():
    with pytest.raises(ValueError, match="`class_names` has 3 names but `y_score` has 2"):
        classification_metrics([0, 1], [[0.9, 0.1], [0.1, 0.9]], "binary-class", ["a", "b", "c"])


def test_intervals_bracket_the_metrics_and_repeat_exactly():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 2, 400)
    positive = np.clip(0.3 + 0.4 * y_true + rng.normal(0, 0.2, 400), 0, 1)
    metrics = classification_metrics(y_true, positive, "binary-class", ["normal", "pneumonia"])
    intervals = metrics["intervals"]
    assert set(intervals) == {"acc", "auc", "balanced_acc", "sensitivity", "specificity"}
    for name in ("acc", "auc", "balanced_acc"):
        assert intervals[name]["low"] < metrics[name] < intervals[name]["high"]
        assert intervals[name]["high"] - intervals[name]["low"] < 0.2
    assert intervals["sensitivity"]["low"] < metrics["per_class"][1]["recall"]
    assert intervals["specificity"]["high"] > metrics["per_class"][0]["recall"]
    assert intervals["acc"]["confidence"] == 0.95 and intervals["acc"]["resamples"] == 2000
    # Same predictions, same intervals: the bootstrap seed is fixed.
    again = classification_metrics(y_true, positive, "binary-class", ["normal", "pneumonia"])
    assert again["intervals"] == intervals
    assert json.loads(json.dumps(metrics))["intervals"] == intervals


def test_intervals_per_class_recall_and_options():
    y_true = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    y_score = np.eye(3)[[0, 1, 2, 1, 1, 2, 2, 1]]
    metrics = classification_metrics(
        y_true, y_score, "multi-class", ["a", "b", "c"], n_resamples=500, confidence=0.9
    )
    intervals = metrics["intervals"]
    assert set(intervals) == {"acc", "auc", "balanced_acc", "recall[a]", "recall[b]", "recall[c]"}
    # Class b is always right: its recall is 1 in every resample.
    assert intervals["recall[b]"] == {"low": 1.0, "high": 1.0, "confidence": 0.9, "resamples": 500}


def test_intervals_none_when_a_class_is_absent():
    intervals = classification_metrics([1, 1], [[0.2, 0.8], [0.6, 0.4]], "binary-class")[
        "intervals"
    ]
    assert intervals["auc"] is None and intervals["specificity"] is None
    assert intervals["acc"]["low"] == 0.0 and intervals["acc"]["high"] == 1.0
