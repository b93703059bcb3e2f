"""Top-1 agreement and KL(teacher || student) against scipy references."""

import numpy as np
import pytest
from scipy import special, stats

from kdkeras.evaluation.fidelity import fidelity


def test_matches_scipy_entropy_and_argmax_agreement():
    rng = np.random.default_rng(0)
    teacher = rng.normal(0, 2, (50, 4))
    student = teacher + rng.normal(0, 1.5, (50, 4))
    result = fidelity(student, teacher)
    kl = stats.entropy(special.softmax(teacher, axis=1), special.softmax(student, axis=1), axis=1)
    assert result["kl_teacher_student"] == pytest.approx(np.mean(kl), rel=1e-10)
    assert result["top1_agreement"] == np.mean(teacher.argmax(1) == student.argmax(1))
    assert 0 < result["top1_agreement"] < 1 and result["n"] == 50


def test_identical_models_agree_fully():
    logits = np.array([[1.0, -2.0], [0.3, 0.2]])
    assert fidelity(logits, logits) == {"top1_agreement": 1.0, "kl_teacher_student": 0.0, "n": 2}


def test_multilabel_is_compared_label_by_label():
    teacher = np.array([[2.0, -1.0]])
    student = np.array([[0.5, 1.0]])
    pt, ps = special.expit(teacher), special.expit(student)
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    result = fidelity(student, teacher, "multi-label")
    assert result["kl_teacher_student"] == pytest.approx(kl.mean())
    assert result["top1_agreement"] == 0.5


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        fidelity(np.zeros((3, 2)), np.zeros((4, 2)))
