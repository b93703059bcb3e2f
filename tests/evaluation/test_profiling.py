"""Tests of kdkeras.evaluation.profiling on a tiny model."""

import os

import keras
import pytest

from kdkeras.evaluation import profiling
from kdkeras.evaluation.profiling import count_params, describe_model, file_size_bytes, measure_latency


@keras.saving.register_keras_serializable(package="kdkeras_tests")
class TrainingFlagProbe(keras.layers.Layer):
    """Identity layer that records the `training` flag of each trace."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, inputs, training=None):
        self.seen.append(training)
        return inputs


def _tiny_model():
    # conv 3*3*1*2 + 2 = 20; BatchNorm 2 gamma + 2 beta trainable, 2 mean +
    # 2 variance not; dense 2*2 + 2 = 6. Total 34, trainable 30.
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.Conv2D(2, 3),
            keras.layers.BatchNormalization(),
            TrainingFlagProbe(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ],
        name="tiny",
    )


def test_count_params():
    assert count_params(_tiny_model()) == 34


def test_count_params_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
    with pytest.raises(ValueError, match="'unbuilt' is not built.*model.build"):
        count_params(model)


def test_file_size_of_keras_file_and_folder(tmp_path):
    path = tmp_path / "tiny.keras"
    _tiny_model().save(path)
    assert file_size_bytes(path) == os.path.getsize(path) > 1000

    folder = tmp_path / "saved_model"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x" * 10)
    (folder / "variables" / "variables.data").write_bytes(b"y" * 25)
    assert file_size_bytes(folder) == 35


def test_file_size_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.keras' not found: save the model"):
        file_size_bytes(tmp_path / "nowhere.keras")


def test_measure_latency_structure_and_inference_mode():
    model = _tiny_model()
    probe = model.layers[3]
    probe.seen.clear()  # drop the symbolic call made when the model was built
    latency = measure_latency(model, (8, 8, 1), batch_sizes=(1, 4), warmup=1, repeats=3)

    assert list(latency) == [1, 4]
    for batch, timing in latency.items():
        assert sorted(timing) == ["images_per_s", "ms_per_batch", "ms_per_image"]
        assert timing["ms_per_batch"] > 0
        assert timing["ms_per_image"] == pytest.approx(timing["ms_per_batch"] / batch)
        assert timing["images_per_s"] == pytest.approx(1000.0 * batch / timing["ms_per_batch"])
    # One trace per batch shape, both in inference mode.
    assert probe.seen == [False, False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (8, None, 1)}, r"`input_shape` must be a non-empty sequence"),
        ({"input_shape": (8, 8, 1), "batch_sizes": (0,)}, r"`batch_sizes` must be"),
        ({"input_shape": (8, 8, 1), "repeats": 0}, r"`warmup` and `repeats` must be >= 1"),
    ],
)
def test_measure_latency_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latency(_tiny_model(), **kwargs)


def test_describe_model(tmp_path):
    model = _tiny_model()
    path = tmp_path / "tiny.keras"
    model.save(path)
    info = describe_model(model, path, batch_sizes=(2,), warmup=1, repeats=2)

    assert {key: info[key] for key in ("params", "trainable_params", "non_trainable_params")} == {
        "params": 34,
        "trainable_params": 30,
        "non_trainable_params": 4,
    }
    assert info["size_bytes"] == os.path.getsize(path)
    assert list(info["latency"]) == [2]


def test_describe_model_needs_an_input_shape():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model(keras.ops.zeros((1, 3)))
    with pytest.raises(ValueError, match="input shape of model 'subclassed'.*pass `input_shape`"):
        describe_model(model, repeats=1, warmup=1)
    info = describe_model(model, input_shape=(3,), batch_sizes=(1,), warmup=1, repeats=1)
    assert (info["params"], info["size_bytes"], list(info["latency"])) == (8, None, [1])


def test_measure_latencies_interleaves_rounds_and_keeps_each_models_median(monkeypatch):
    calls = []
    times = {"a": iter([3.0, 1.0, 2.0]), "b": iter([10.0, 30.0, 20.0])}

    def fake(model, input_shape, batch_sizes, warmup, repeats):
        calls.append((model.name, input_shape, warmup))
        return {2: {"ms_per_batch": next(times[model.name])}}

    monkeypatch.setattr(profiling, "measure_latency", fake)
    a, b = _tiny_model(), keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    a.name, b.name = "a", "b"
    latencies = profiling.measure_latencies({"a": a, "b": b}, batch_sizes=(2,), rounds=3, warmup=5)
    assert calls == [("a", (8, 8, 1), 5), ("b", (4, 4, 3), 5), ("a", (8, 8, 1), 1), ("b", (4, 4, 3), 1),
                     ("a", (8, 8, 1), 1), ("b", (4, 4, 3), 1)]
    assert latencies["a"][2] == pytest.approx({"ms_per_image": 1.0, "ms_per_batch": 2.0, "images_per_s": 1000.0})
    assert latencies["b"][2]["ms_per_batch"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="`rounds` must be >= 1, got 0"):
        profiling.measure_latencies({"a": a}, rounds=0)
