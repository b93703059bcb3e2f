"""Every registry entry, one contract: it serializes, it runs in mixed precision, `kdkeras list` shows it.

Parametrized over the registries themselves (`kdkeras.registry`), so a new
term, feature loss, model, augmentation, optimizer or loader is checked the
moment it is registered, without a hand-kept list here.
"""

import inspect

import keras
import numpy as np
import pytest

from kdkeras import cli, registry
from kdkeras.distillation.objective import targets

# The teachers are ImageNet-sized (VGG16, ResNet-50): building them takes seconds each.
_SLOW_MODELS = {name for name in registry.MODELS.names() if registry.MODELS.metadata(name)["role"] == "teacher"}


def entries(kind):
    return [
        pytest.param(name, marks=pytest.mark.slow) if kind is registry.MODELS and name in _SLOW_MODELS else name
        for name in kind.names()
    ]


def _batch(dtype="float32", classes=4, size=8):
    rng = np.random.default_rng(0)
    return {
        "teacher_logits": keras.ops.convert_to_tensor(rng.normal(0, 2, (size, classes)), dtype),
        "student_logits": keras.ops.convert_to_tensor(rng.normal(0, 2, (size, classes)), dtype),
        "labels": keras.ops.convert_to_tensor(rng.integers(0, classes, size), "int32"),
        "inputs": keras.ops.convert_to_tensor(rng.uniform(0, 255, (size, 8, 8, 1)), dtype),
    }


def _value(term, batch):
    return float(term(targets(term, batch), batch["student_logits"]))


@pytest.mark.parametrize("kind", list(registry.registries()), ids=str)
def test_kdkeras_list_shows_every_entry(kind, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.split(f"\n{kind}:\n" if not out.startswith(f"{kind}:") else f"{kind}:\n", 1)[1].splitlines()
    section = "\n".join(line for line in lines[: next((i for i, row in enumerate(lines) if not row.startswith("  ")), None)])
    for name in registry.registries()[kind].names():
        assert f"  {name} " in section, f"`kdkeras list` leaves out the {kind} {name!r}"


@pytest.mark.parametrize("name", entries(registry.DISTILLATION_TERMS))
def test_distillation_term_round_trips_and_runs_in_mixed_precision(name):
    term = registry.DISTILLATION_TERMS.get(name)
    batch = _batch()
    value = _value(term, batch)
    assert np.isfinite(value) and value > 0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(restored) is type(term) and restored.get_config() == term.get_config()
    assert _value(restored, batch) == pytest.approx(value, rel=1e-6)
    # Under mixed_float16 the student's logits arrive in float16; the term still computes in float32.
    keras.config.set_dtype_policy("mixed_float16")
    half = _batch("float16")
    mixed = term(targets(term, half), half["student_logits"])
    assert mixed.dtype == "float32" and float(mixed) == pytest.approx(value, rel=2e-2, abs=1e-3)


@pytest.mark.parametrize("name", entries(registry.FEATURE_LOSSES))
def test_feature_loss_round_trips_and_runs_in_mixed_precision(name):
    loss = registry.FEATURE_LOSSES.get(name)
    rng = np.random.default_rng(1)
    teacher, student = (rng.normal(0, 1, (4, 6, 6, 3)).astype("float32") for _ in range(2))
    value = float(loss(teacher, student))
    assert np.isfinite(value) and value > 0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored.get_config() == loss.get_config() and float(restored(teacher, student)) == pytest.approx(value)
    mixed = loss(teacher.astype("float16"), student.astype("float16"))
    assert float(mixed) == pytest.approx(value, rel=2e-2)


@pytest.mark.parametrize("name", entries(registry.MODELS))
def test_model_round_trips_and_keeps_float32_logits_in_mixed_precision(name):
    size = max(registry.MODELS.metadata(name)["min_input_size"], 32)
    model = registry.MODELS.get(name, input_shape=(size, size, 3), num_classes=3)
    images = np.random.default_rng(2).uniform(0, 255, (2, size, size, 3)).astype("float32")
    logits = model(images, training=False)
    assert logits.shape == (2, 3) and model.layers[-1].name == "logits"
    restored = keras.Model.from_config(model.get_config())
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored(images, training=False), logits, rtol=1e-5, atol=1e-5)
    keras.config.set_dtype_policy("mixed_float16")
    mixed = registry.MODELS.get(name, input_shape=(size, size, 3), num_classes=3)
    assert mixed(images, training=False).dtype == "float32", "logits must leave the model in float32"


@pytest.mark.parametrize("name", entries(registry.AUGMENTATIONS))
def test_augmentation_round_trips_and_runs_in_mixed_precision(name):
    layer = registry.AUGMENTATIONS.get(name, seed=3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    keras.config.set_dtype_policy("mixed_float16")
    images = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    out = registry.AUGMENTATIONS.get(name, seed=3)(images, training=True)
    assert out.shape == images.shape and np.isfinite(keras.ops.convert_to_numpy(out)).all()


@pytest.mark.parametrize("name", entries(registry.OPTIMIZERS))
def test_optimizer_round_trips(name):
    optimizer = registry.OPTIMIZERS.get(name, learning_rate=0.01, weight_decay=1e-4)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer) and restored.get_config() == optimizer.get_config()
    keras.config.set_dtype_policy("mixed_float16")
    variable = keras.Variable(np.ones(3, "float32"))
    keras.optimizers.LossScaleOptimizer(registry.OPTIMIZERS.get(name, learning_rate=0.01)).apply(
        [keras.ops.ones(3, "float32")], [variable]
    )
    assert float(keras.ops.max(variable)) < 1.0


@pytest.mark.parametrize("name", entries(registry.LOADERS))
def test_loader_declares_its_arguments_and_local_paths(name):
    loader = registry.LOADERS.lookup(name)
    parameters = inspect.signature(loader).parameters
    # Every loader takes the pipeline's options (kdkeras.data.pipeline.loader), so configs can rely on them.
    assert {"image_size", "channels", "batch_size", "augment", "seed", "limit"} <= set(parameters)
    metadata = registry.LOADERS.metadata(name)
    assert set(metadata["local_paths"]) <= set(parameters), "local_paths must name the loader's arguments"
    assert metadata["resolve"] is None or callable(metadata["resolve"])
