"""The soft-target KD loss against a float64 reference (DESIGN.md's logits)."""

import keras
import numpy as np
import pytest

from kdkeras import losses

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
