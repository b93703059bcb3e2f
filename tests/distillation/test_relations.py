"""DIST (Huang et al., NeurIPS 2022) against a float64 transcription of the official code."""

import keras
import numpy as np
import pytest

from kdkeras.distillation import losses, relations
from kdkeras.registry import DISTILLATION_TERMS

RNG = np.random.default_rng(3)
Z_TEACHER = RNG.normal(scale=3.0, size=(8, 5)).astype("float32")
Z_STUDENT = RNG.normal(scale=2.0, size=(8, 5)).astype("float32")


# hunto/image_classification_sota, lib/models/losses/dist_kd.py, transcribed line by line
# (torch's dim=1 is numpy's axis=1, `.transpose(0, 1)` is `.T`), in float64.
def cosine_similarity(a, b, eps=1e-8):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def pearson_correlation(a, b, eps=1e-8):
    return cosine_similarity(a - a.mean(1)[:, None], b - b.mean(1)[:, None], eps)


def inter_class_relation(y_s, y_t):
    return 1 - pearson_correlation(y_s, y_t).mean()


def intra_class_relation(y_s, y_t):
    return inter_class_relation(y_s.T, y_t.T)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def official_dist(z_s, z_t, beta=1.0, gamma=1.0, tau=1.0):
    """`DIST(beta, gamma)(z_s, z_t)`; `tau` as OpenMMLab mmrazor's `DISTLoss` (tau=1: the official code)."""
    y_s = softmax(np.asarray(z_s, "float64") / tau)
    y_t = softmax(np.asarray(z_t, "float64") / tau)
    return beta * tau**2 * inter_class_relation(y_s, y_t) + gamma * tau**2 * intra_class_relation(y_s, y_t)


@pytest.mark.parametrize("beta, gamma, temperature", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (1.0, 1.0, 4.0)])
def test_dist_matches_the_official_code(beta, gamma, temperature):
    value = relations.DIST(beta=beta, gamma=gamma, temperature=temperature)(Z_TEACHER, Z_STUDENT)
    assert float(value) == pytest.approx(official_dist(Z_STUDENT, Z_TEACHER, beta, gamma, temperature), abs=1e-6)


def test_relations_separately_and_zero_for_a_perfect_student():
    inter, intra = relations.dist_relations(Z_TEACHER, Z_STUDENT)
    y_s, y_t = softmax(Z_STUDENT.astype("float64")), softmax(Z_TEACHER.astype("float64"))
    np.testing.assert_allclose(inter, 1 - pearson_correlation(y_s, y_t), atol=1e-6)
    assert float(intra) == pytest.approx(intra_class_relation(y_s, y_t), abs=1e-6)
    # Relations ignore a shift of the logits, which KD would not: only the ranking shape counts.
    assert float(relations.DIST()(Z_TEACHER, Z_TEACHER + 5.0)) == pytest.approx(0.0, abs=1e-5)


def test_dense_outputs_are_rows_as_in_the_official_segmentation_code():
    teacher, student = Z_TEACHER.reshape(2, 2, 2, 5), Z_STUDENT.reshape(2, 2, 2, 5)
    value = relations.DIST()(teacher, student)
    assert float(value) == pytest.approx(official_dist(Z_STUDENT, Z_TEACHER), abs=1e-6)
    assert tuple(relations.dist_relations(teacher, student)[0].shape) == (2, 2, 2)


def test_sample_weights_weigh_inter_terms_and_scale_the_batch_term():
    weights = np.linspace(0.0, 2.0, 8)
    value = relations.DIST()(Z_TEACHER, Z_STUDENT, sample_weight=weights)
    y_s, y_t = softmax(Z_STUDENT.astype("float64")), softmax(Z_TEACHER.astype("float64"))
    inter = 1 - pearson_correlation(y_s, y_t)
    expected = (weights * inter).sum() / 8 + weights.mean() * intra_class_relation(y_s, y_t)
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_registered_by_name_and_serializable():
    assert "dist" in DISTILLATION_TERMS.names()
    built = losses.get("dist", temperature=2.0, beta=0.5)
    assert isinstance(built, relations.DIST) and (built.temperature, built.beta, built.gamma) == (2.0, 0.5, 1.0)
    assert built.batch_level and built.requires == ("teacher_logits",)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(built))
    assert (type(restored), restored.temperature, restored.beta) == (relations.DIST, 2.0, 0.5)
    with pytest.raises(ValueError, match="`gamma` weighs DIST's intra-class relation"):
        relations.DIST(gamma=-1.0)
