"""The pipeline builder: options declared once, one global batch rule, the teacher cache on TPU."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.config import ConfigError
from kdkeras.data import pipeline
from kdkeras.data.errors import DataError
from kdkeras.distribute import strategy as distribute
from kdkeras.registry import LOADERS
from kdkeras.workflow.training import fit_datasets


class TPUStrategyFake:
    """Stands in for a TPUStrategy (`is_tpu_strategy` goes by class name, as Keras does)."""

    num_replicas_in_sync = 2


@pytest.mark.parametrize("name", LOADERS.names())
def test_every_loader_takes_the_builder_options_and_declares_none_itself(name):
    load = LOADERS.lookup(name)
    parameters = inspect.signature(load).parameters
    defaults = pipeline.PipelineOptions()
    for field in dataclasses.fields(pipeline.PipelineOptions):
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[field.name].default == getattr(defaults, field.name)
    # The source behind the loader declares none of them: they are declared once, in the dataclass.
    own = inspect.signature(load.source).parameters
    assert not set(own) & set(pipeline.OPTION_NAMES)
    assert list(parameters)[-len(pipeline.OPTION_NAMES):] == list(pipeline.OPTION_NAMES)


def test_loader_refuses_a_source_that_declares_an_option():
    def source(path, batch_size=32, *, options):
        return None

    with pytest.raises(TypeError, match="batch_size"):
        pipeline.loader(source)


def _source(n_train=5, multi_hot=False):
    rng = np.random.default_rng(0)

    def split(n):
        x = rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
        y = rng.integers(0, 2, (n, 3)).astype(np.float32) if multi_hot else np.arange(n, dtype=np.int32) % 2
        return pipeline.Examples.from_arrays(x, y)

    return pipeline.Source(
        name="toy",
        task="multi-label" if multi_hot else "binary-class",
        class_names=["a", "b", "c"] if multi_hot else ["a", "b"],
        n_channels=1,
        image_size=(4, 4),
        splits={"train": split(n_train), "val": split(3), "test": split(2)},
        label_mode="multi-hot" if multi_hot else "sparse",
        cacheable=False,
    )


def test_build_batches_every_split_and_describes_them():
    options = pipeline.PipelineOptions(batch_size=2, shuffle=False)
    train, val, test, info = pipeline.build(_source(), options)
    assert [len(b[0]) for b in train] == [2, 2, 1]
    assert [len(b[0]) for b in test] == [2]
    assert train.element_spec[0].dtype == tf.float32
    assert info.split_sizes == {"train": 5, "val": 3, "test": 2}
    # Train labels 0, 1, 0, 1, 0: balanced weights n / (k * count).
    assert info.class_counts == [3, 2]
    assert info.class_weights == pytest.approx({0: 5 / 6, 1: 5 / 4})
    assert info.pos_weights is None


def test_build_gives_multi_hot_sources_positive_weights():
    _, _, _, info = pipeline.build(_source(multi_hot=True), pipeline.PipelineOptions(batch_size=2))
    labels = _source(multi_hot=True).splits["train"].labels
    positives = labels.sum(axis=0)
    assert info.class_counts == positives.astype(int).tolist()
    assert info.pos_weights == pytest.approx(((len(labels) - positives) / positives).tolist())
    assert info.class_weights is None


def test_options_refuse_bad_channels_before_any_file_is_read():
    with pytest.raises(DataError, match="channels must be None, 1 or 3, got 2"):
        pipeline.PipelineOptions(channels=2)


def test_global_batch_size_defaults_to_the_builder_default():
    assert pipeline.global_batch_size({"loader": "medmnist"}) == pipeline.PipelineOptions().batch_size == 64
    assert pipeline.global_batch_size({"loader": "medmnist", "batch_size": 8}) == 8


def test_batching_is_the_one_rule_of_the_global_batch():
    default = distribute.batching(10, tf.distribute.get_strategy())
    assert (default.size, default.per_replica, default.drop_remainder) == (10, 10, False)
    assert default.steps(25) == 3
    tpu = distribute.batching(10, TPUStrategyFake())
    assert (tpu.size, tpu.per_replica, tpu.drop_remainder) == (10, 5, True)
    assert tpu.steps(25) == 2
    with pytest.raises(ConfigError, match="multiple of 2"):
        distribute.batching(9, TPUStrategyFake())


def test_teacher_cache_on_tpu_holds_the_last_partial_batch():
    # 10 examples in batches of 4: a TPU drops the last partial batch of every epoch.
    # The cache must be filled from all 10, so that reshuffled epochs reach every example.
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    train = tf.data.Dataset.from_tensor_slices((images, np.zeros(10, np.int32))).batch(4)
    val = tf.data.Dataset.from_tensor_slices((images[:2], np.zeros(2, np.int32))).batch(4)
    teacher = keras.Sequential([keras.Input((1, 1, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    batch = distribute.batching(4, TPUStrategyFake())
    cached, prepared_val = fit_datasets(train, val, TPUStrategyFake(), batch, cache_from=teacher, seed=0, verbose=False)
    assert cached.element_spec[0]["inputs"].shape.as_list() == [4, 1, 1, 1]
    seen = set()
    for _ in range(6):
        epoch = [x["inputs"].numpy().ravel() for x, _ in cached]
        assert [len(b) for b in epoch] == [4, 4]
        seen.update(np.concatenate(epoch).tolist())
    assert seen == set(range(10))
    assert list(prepared_val) == []  # 2 validation images make no full batch of 4
