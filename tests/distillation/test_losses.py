"""The soft-target KD loss against a float64 reference (DESIGN.md's logits)."""

import keras
import numpy as np
import pytest

from kdkeras.distillation import losses

Z_STUDENT = np.array([[2, 1, 0.1, -1], [0.5, 2.5, -0.3, 0]], "float32")
Z_TEACHER = np.array([[3, 0.5, 0.2, -2], [0, 3, 1, -1]], "float32")


def reference_kd(z_teacher, z_student, temperature):
    """Per-example T^2 * KL(p_t || p_s), in float64 from the definition."""
    t = np.asarray(z_teacher, "float64") / temperature
    s = np.asarray(z_student, "float64") / temperature
    p_t = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    p_s = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    return temperature**2 * (p_t * np.log(p_t / p_s)).sum(-1)


@pytest.mark.parametrize("temperature, expected", [(1.0, 0.114751), (4.0, 0.306221)])
def test_design_reference_values(temperature, expected):
    kd = losses.KnowledgeDistillation(temperature=temperature)
    assert float(kd(Z_TEACHER, Z_STUDENT)) == pytest.approx(expected, abs=1e-5)
    assert reference_kd(Z_TEACHER, Z_STUDENT, temperature).mean() == pytest.approx(expected, abs=1e-6)


def test_per_example_values_and_sample_weight():
    per_example = losses.knowledge_distillation(Z_TEACHER, Z_STUDENT, temperature=2.0)
    np.testing.assert_allclose(per_example, reference_kd(Z_TEACHER, Z_STUDENT, 2.0), rtol=1e-5)
    weighted = losses.KnowledgeDistillation(2.0)(Z_TEACHER, Z_STUDENT, sample_weight=[1.0, 0.0])
    assert float(weighted) == pytest.approx(reference_kd(Z_TEACHER, Z_STUDENT, 2.0)[0] / 2, rel=1e-5)


def test_zero_when_student_matches_teacher_and_stable_for_large_logits():
    assert float(losses.KnowledgeDistillation(3.0)(Z_TEACHER, Z_TEACHER)) == pytest.approx(0, abs=1e-7)
    big = np.array([[1000.0, -1000.0, 0.0]], "float32")
    value = float(losses.KnowledgeDistillation(1.0)(big, big[:, ::-1]))
    assert np.isfinite(value) and value > 100


def test_float16_logits_are_computed_in_float32():
    value = losses.KnowledgeDistillation(4.0)(Z_TEACHER.astype("float16"), Z_STUDENT.astype("float16"))
    assert value.dtype == "float32"
    assert float(value) == pytest.approx(0.306221, abs=2e-3)


def test_dense_outputs_are_averaged_per_pixel():
    teacher = np.stack([Z_TEACHER, Z_TEACHER[::-1]])[None]  # (1, 2, 2, 4): a 2x2 "image"
    student = np.stack([Z_STUDENT, Z_STUDENT[::-1]])[None]
    value = float(losses.KnowledgeDistillation(4.0)(teacher, student))
    assert value == pytest.approx(0.306221, abs=1e-5)


def test_matches_keras_distillation_with_kl_divergence_instance():
    ours = float(losses.KnowledgeDistillation(4.0)(Z_TEACHER, Z_STUDENT))
    theirs = keras.distillation.LogitsDistillation(temperature=4.0, loss=keras.losses.KLDivergence())
    value = float(theirs.compute_loss(Z_TEACHER, Z_STUDENT))
    assert ours == pytest.approx(value, abs=1e-5)


def test_serialization_round_trip():
    kd = losses.KnowledgeDistillation(temperature=6.0, name="kd6")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(kd))
    assert isinstance(restored, losses.KnowledgeDistillation)
    assert restored.temperature == 6.0 and restored.name == "kd6"


@pytest.mark.parametrize("bad", [0, -1.0, "4", True, None])
def test_rejects_bad_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        losses.KnowledgeDistillation(temperature=bad)


def test_get_resolves_identifiers():
    assert isinstance(losses.get(None, temperature=2.0), losses.KnowledgeDistillation)
    assert losses.get("kl_divergence", temperature=6.0).temperature == 6.0
    assert losses.get(keras.losses.KLDivergence(), temperature=3.0).temperature == 3.0
    custom = losses.get(lambda t, s: keras.ops.mean(keras.ops.square(t - s), axis=-1))
    assert float(custom(Z_TEACHER, Z_STUDENT)) == pytest.approx(((Z_TEACHER - Z_STUDENT) ** 2).mean(), rel=1e-6)
    with pytest.raises(ValueError, match="Unknown distillation loss 'nope'"):
        losses.get("nope")
    with pytest.raises(ValueError, match="callable"):
        losses.get(42)


def reference_dkd(z_teacher, z_student, labels, temperature):
    """Per-example (TCKD, NCKD) in float64, from Zhao et al.'s definitions."""
    t = np.asarray(z_teacher, "float64") / temperature
    s = np.asarray(z_student, "float64") / temperature
    p_t = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    p_s = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    tckd, nckd = [], []
    for i, label in enumerate(labels):
        b_t = np.array([p_t[i, label], 1 - p_t[i, label]])
        b_s = np.array([p_s[i, label], 1 - p_s[i, label]])
        tckd.append((b_t * np.log(b_t / b_s)).sum())
        others = np.arange(p_t.shape[1]) != label
        q_t = p_t[i, others] / p_t[i, others].sum()
        q_s = p_s[i, others] / p_s[i, others].sum()
        nckd.append((q_t * np.log(q_t / q_s)).sum())
    return temperature**2 * np.array(tckd), temperature**2 * np.array(nckd)


def test_dkd_issue_reference_values():
    tckd, nckd = losses.decoupled_kd_terms(Z_TEACHER, Z_STUDENT, [0, 1], temperature=4.0)
    assert float(np.mean(tckd)) == pytest.approx(0.133333, abs=1e-5)
    assert float(np.mean(nckd)) == pytest.approx(0.294079, abs=1e-5)
    dkd = losses.DecoupledKD(tckd_weight=1.0, nckd_weight=8.0, temperature=4.0)
    value = dkd({"teacher_logits": Z_TEACHER, "labels": np.array([0, 1])}, Z_STUDENT)
    assert float(value) == pytest.approx(2.485962, abs=2e-5)
    ref_tckd, ref_nckd = reference_dkd(Z_TEACHER, Z_STUDENT, [0, 1], 4.0)
    assert (ref_tckd.mean(), ref_nckd.mean()) == pytest.approx((0.133333, 0.294079), abs=1e-6)


@pytest.mark.parametrize("labels", [[2, 3], [1, 0], [3, 2]])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_decomposes_into_tckd_and_weighted_nckd(labels, temperature):
    tckd, nckd = losses.decoupled_kd_terms(Z_TEACHER, Z_STUDENT, labels, temperature)
    p_t = np.exp(Z_TEACHER / temperature) / np.exp(Z_TEACHER / temperature).sum(-1, keepdims=True)
    p_target = p_t[np.arange(2), labels]
    kd = losses.knowledge_distillation(Z_TEACHER, Z_STUDENT, temperature)
    np.testing.assert_allclose(np.asarray(tckd) + (1 - p_target) * np.asarray(nckd), kd, rtol=1e-5)
    np.testing.assert_allclose(tckd, reference_dkd(Z_TEACHER, Z_STUDENT, labels, temperature)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nckd, reference_dkd(Z_TEACHER, Z_STUDENT, labels, temperature)[1], rtol=1e-4, atol=1e-5)


def test_dkd_accepts_one_hot_and_column_labels():
    sparse = losses.decoupled_kd_terms(Z_TEACHER, Z_STUDENT, [0, 1])
    one_hot = losses.decoupled_kd_terms(Z_TEACHER, Z_STUDENT, np.eye(4)[[0, 1]])
    column = losses.decoupled_kd_terms(Z_TEACHER, Z_STUDENT, np.array([[0], [1]]))
    for other in (one_hot, column):
        np.testing.assert_allclose(other, sparse, rtol=1e-6)


def test_dkd_on_two_classes_is_alpha_times_kd_and_warns():
    teacher, student = Z_TEACHER[:, :2], Z_STUDENT[:, :2]
    dkd = losses.DecoupledKD(tckd_weight=0.5, nckd_weight=8.0, temperature=2.0)
    with pytest.warns(UserWarning, match="NCKD is 0"):
        value = dkd({"teacher_logits": teacher, "labels": np.array([0, 1])}, student)
    kd = losses.KnowledgeDistillation(2.0)(teacher, student)
    assert float(value) == pytest.approx(0.5 * float(kd), rel=1e-5)


def test_dkd_needs_labels_and_valid_weights():
    with pytest.raises(ValueError, match="needs the labels"):
        losses.DecoupledKD()(Z_TEACHER, Z_STUDENT)
    with pytest.raises(ValueError, match="`nckd_weight` weighs NCKD"):
        losses.DecoupledKD(nckd_weight=-1)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(losses.DecoupledKD(tckd_weight=2.0, nckd_weight=4.0, temperature=3.0))
    )
    assert (restored.tckd_weight, restored.nckd_weight, restored.temperature) == (2.0, 4.0, 3.0)


def reference_multilabel_kd(z_teacher, z_student, temperature):
    p_t = 1 / (1 + np.exp(-np.asarray(z_teacher, "float64") / temperature))
    p_s = 1 / (1 + np.exp(-np.asarray(z_student, "float64") / temperature))
    kl = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
    return temperature**2 * kl.mean(-1)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_multilabel_kd_against_per_label_binary_kl(temperature):
    per_example = losses.multilabel_kd(Z_TEACHER, Z_STUDENT, temperature)
    np.testing.assert_allclose(per_example, reference_multilabel_kd(Z_TEACHER, Z_STUDENT, temperature), rtol=1e-5)
    value = losses.MultiLabelKD(temperature)(Z_TEACHER, Z_STUDENT, sample_weight=[1.0, 3.0])
    expected = (reference_multilabel_kd(Z_TEACHER, Z_STUDENT, temperature) * [1, 3]).sum() / 2
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_multilabel_kd_labels_are_independent():
    """Raising one label's teacher logit changes only that label's term (no softmax coupling)."""
    base = losses.multilabel_kd(Z_TEACHER[:1, :1], Z_STUDENT[:1, :1], 2.0)
    rest = losses.multilabel_kd(Z_TEACHER[:1, 1:], Z_STUDENT[:1, 1:], 2.0)
    full = losses.multilabel_kd(Z_TEACHER[:1], Z_STUDENT[:1], 2.0)
    assert float(full[0]) == pytest.approx((float(base[0]) + 3 * float(rest[0])) / 4, rel=1e-5)


def test_get_builds_named_losses_with_options():
    dkd = losses.get("decoupled_kd", temperature=2.0, tckd_weight=1.0, nckd_weight=4.0)
    assert isinstance(dkd, losses.DecoupledKD) and (dkd.temperature, dkd.nckd_weight) == (2.0, 4.0)
    assert isinstance(losses.get("multilabel_kd", temperature=3.0), losses.MultiLabelKD)
    with pytest.raises(ValueError, match="Bad options"):
        losses.get("knowledge_distillation", beta=4.0)
    with pytest.raises(ValueError, match="apply to a loss given by name"):
        losses.get(losses.KnowledgeDistillation(), beta=4.0)
