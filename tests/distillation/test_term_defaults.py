"""Each distillation term keeps its own defaults, whichever way it is asked for.

The three spellings a user has: `compile(distillation_loss_fn=name)`,
`compile(distillation_terms=[name])` and a config's `[distill] loss = name`
(through `kdkeras.workflow.phases.build_distiller`). DIST's own temperature is 1;
before this test it trained at 4 when named in compile or in a config.
"""

import types

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras.config.schema import DistillConfig
from kdkeras.distillation import losses as kd_losses
from kdkeras.distillation.objective import DistillationTerm
from kdkeras.registry import DISTILLATION_TERMS
from kdkeras.workflow import phases

NATIVE_TEMPERATURE = {"knowledge_distillation": 4.0, "decoupled_kd": 4.0, "multilabel_kd": 4.0, "dist": 1.0,
                      "kd_ls": 2.0}


def tiny(width=3):
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Dense(width)(keras.layers.Flatten()(inputs)))


def spellings(name):
    info = types.SimpleNamespace(task="multi-label" if name == "multilabel_kd" else "multi-class",
                                 num_classes=3, name="tiny")
    terms = []
    for kwargs in ({"distillation_loss_fn": name}, {"distillation_terms": [name]}):
        distiller = kdkeras.Distiller(student=tiny(), teacher=tiny())
        distiller.compile(optimizer="adam", **kwargs)
        terms.append(distiller.distillation_terms[0][0])
    configured = phases.build_distiller(tiny(), [tiny()], DistillConfig(loss=name), info, steps_per_epoch=1)
    terms.append(configured.distillation_terms[0][0])
    return terms


@pytest.mark.parametrize("name", DISTILLATION_TERMS.names())
def test_every_spelling_builds_the_same_term(name):
    built = spellings(name)
    configs = [term.get_config() for term in built]
    assert all(type(term) is type(built[0]) for term in built)
    assert configs[1:] == configs[:1] * 2
    assert built[0].temperature == NATIVE_TEMPERATURE[name]


def test_every_registered_term_has_a_stated_native_temperature():
    # A new term must say here which temperature it trains at by default.
    assert sorted(NATIVE_TEMPERATURE) == sorted(DISTILLATION_TERMS.names())


def test_a_given_temperature_wins_in_every_spelling():
    distiller = kdkeras.Distiller(student=tiny(), teacher=tiny())
    distiller.compile(optimizer="adam", distillation_loss_fn="dist", temperature=3.0)
    assert distiller.temperature == 3.0
    configured = phases.build_distiller(
        tiny(), [tiny()], DistillConfig(loss="dist", temperature=3.0),
        types.SimpleNamespace(task="multi-class", num_classes=3, name="tiny"), steps_per_epoch=1,
    )
    assert configured.distillation_terms[0][0].temperature == 3.0


def test_the_kd_temperature_literal_lives_once():
    assert kd_losses.DEFAULT_TEMPERATURE == 4.0
    assert kd_losses.get(None).temperature == kd_losses.DEFAULT_TEMPERATURE
    assert kd_losses.get(keras.losses.KLDivergence()).temperature == kd_losses.DEFAULT_TEMPERATURE


def test_unset_config_temperature_round_trips_through_toml(tmp_path):
    from kdkeras import config as config_lib

    config = config_lib.apply_overrides(config_lib.load_config("quickstart"), {"distill.loss": "dist"})
    raw = config.to_dict()
    raw["distill"].pop("temperature")
    unset = config_lib.from_dict(raw, source="test")
    assert unset.distill.temperature is None
    path = tmp_path / "saved.toml"
    config_lib.save_config(unset, path)
    assert "temperature" not in path.read_text().split("[distill]")[1].split("[")[0]
    assert config_lib.load_config(str(path)).distill.temperature is None



def test_alpha_has_one_default_for_compile_and_config(tmp_path):
    from kdkeras import config as config_lib
    from kdkeras.distillation.arguments import DEFAULT_ALPHA
    from kdkeras.reporting.card_sections import _distillation

    distiller = kdkeras.Distiller(student=tiny(), teacher=tiny())
    distiller.compile(optimizer="adam")
    info = types.SimpleNamespace(task="multi-class", num_classes=3, name="tiny")
    configured = phases.build_distiller(tiny(), [tiny()], DistillConfig(), info, steps_per_epoch=1)
    assert distiller.alpha == configured.alpha == DEFAULT_ALPHA == 0.1
    assert phases.build_distiller(tiny(), [tiny()], DistillConfig(alpha=0.7), info, steps_per_epoch=1).alpha == 0.7
    # Unset in a saved config stays unset, and the model card names the value it trained at.
    raw = config_lib.load_config("quickstart").to_dict()
    raw["distill"].pop("alpha")
    path = tmp_path / "saved.toml"
    config_lib.save_config(config_lib.from_dict(raw, source="test"), path)
    assert config_lib.load_config(str(path)).distill.alpha is None
    assert "alpha 0.1, temperature the loss default" in _distillation({"alpha": None, "temperature": None})
    with pytest.raises(config_lib.ConfigError, match=r"alpha must be of type float, got 'high'"):
        config_lib.apply_overrides(config_lib.load_config("quickstart"), {"distill.alpha": "high"})
    with pytest.raises(config_lib.ConfigError, match=r"\[distill\] alpha = 1.5 must be in \[0, 1\]"):
        config_lib.apply_overrides(config_lib.load_config("quickstart"), {"distill.alpha": 1.5})

def test_logit_standardization_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 3, (5, 4)), rng.normal(0, 1, (5, 4))

    def z(v):  # the official code: torch.std is unbiased
        return (v - v.mean(-1, keepdims=True)) / (v.std(-1, ddof=1, keepdims=True) + 1e-7)

    def log_softmax(v):
        v = v - v.max(-1, keepdims=True)
        return v - np.log(np.exp(v).sum(-1, keepdims=True))

    t = 2.0
    p = np.exp(log_softmax(z(teacher) / t))
    expected = t**2 * np.mean(np.sum(p * (np.log(p) - log_softmax(z(student) / t)), axis=-1))
    term = DISTILLATION_TERMS.get("kd_ls")
    assert term.temperature == t
    assert float(term(teacher.astype("float32"), student.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    plain = kd_losses.KnowledgeDistillation(temperature=t, standardize=True)
    assert float(plain(teacher.astype("float32"), student.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    # Scaling the teacher's logits changes plain KD, not the standardized one.
    scaled = float(term((10 * teacher).astype("float32"), student.astype("float32")))
    assert scaled == pytest.approx(expected, rel=1e-4)


def test_standardized_binary_logits_keep_only_the_preferred_class():
    from kdkeras.distillation.objective import standardize_logits

    z = standardize_logits(np.array([[3.0, -1.0], [0.1, 0.0], [-5.0, 5.0]], "float32")).numpy()
    np.testing.assert_allclose(np.abs(z), 2**-0.5, rtol=1e-5)
    assert np.sign(z[:, 0]).tolist() == [1.0, 1.0, -1.0]


def test_standardize_round_trips_and_is_refused_for_sigmoid_terms():
    term = kd_losses.DecoupledKD(standardize=True)
    assert kd_losses.DecoupledKD.from_config(term.get_config()).standardize is True

    class PerLabel(DistillationTerm):
        activation = "sigmoid"

    with pytest.raises(ValueError, match="softmax"):
        PerLabel(standardize=True)
    with pytest.raises(ValueError, match="True or False"):
        kd_losses.KnowledgeDistillation(standardize="yes")


def test_the_distill_phase_reuses_the_term_validation_built():
    import dataclasses

    from kdkeras import config as config_lib

    config = config_lib.load_config("quickstart")
    term = config.distillation_term
    assert type(term) is kd_losses.KnowledgeDistillation and term.temperature == config.distill.temperature
    changed = config_lib.apply_overrides(config, {"distill.loss": "dist", "distill.temperature": 2.0})
    assert type(changed.distillation_term).__name__ == "DIST" and changed.distillation_term.temperature == 2.0
    # Checked without the registries nothing is built; a copy or a hand-built config builds its own.
    assert config_lib.load_config("quickstart", registries=False).distillation_term is None
    assert dataclasses.replace(config).distillation_term is None and "distillation_term" not in config.to_dict()
    info = types.SimpleNamespace(task="multi-class", num_classes=3, name="tiny")
    built = phases.build_distiller(tiny(), [tiny()], changed.distill, info, 1, changed.distillation_term)
    assert built.distillation_terms[0][0] is changed.distillation_term
