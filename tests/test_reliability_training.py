"""Hostile inputs, round three (issue 26): resume, temperatures, mixup, model size, export.

Each test fails on the code before its fix; the docs/reliability.md rows name them.
"""

import json
import os

import numpy as np
import pytest

from kdkeras import cli
from kdkeras import config as config_lib
from kdkeras.workflow.callbacks import RunState

TINY = """
name = "tiny"
seed = 3

[data]
loader = "medmnist"
flag = "pneumoniamnist"
root = "@bundled"
batch_size = 16
limit = 48

[teacher]
model = "cnn_small"

[student]
model = "cnn_small"
options = { filters = [4, 8] }
epochs = 2
monitor = "val_auc"
"""


def _killed_after_first_epoch(monkeypatch, original):
    def kill(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(RunState, "on_epoch_end", kill)


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, named",
    [
        (["--image-size", "32"], "data.image_size (unset) -> 32"),
        (["--batch-size", "8"], "data.batch_size 16 -> 8"),
        (["--set", "student.monitor=\"val_loss\""], "student.monitor 'val_auc' -> 'val_loss'"),
        (["--set", "student.options={filters=[4, 4]}"], "[4, 8] -> [4, 4]"),
    ],
)
def test_resume_with_changed_settings_is_refused_and_fresh_starts_over(tmp_path, monkeypatch, capsys, change, named):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    common = ["student", "--config", str(config), "--runs-dir", str(tmp_path), "--quiet"]
    original = RunState.on_epoch_end
    _killed_after_first_epoch(monkeypatch, original)
    with pytest.raises(KeyboardInterrupt):
        cli.main(common)
    monkeypatch.setattr(RunState, "on_epoch_end", original)
    state = tmp_path / "tiny" / "state" / "student"
    assert (state / "epoch_0001.json").exists()

    capsys.readouterr()
    assert cli.main([*common, *change]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config error" in err
    assert f"{state} holds the checkpoint of epoch 1, trained with other settings" in err
    assert named.replace("'", "") in err.replace("'", "") and "--fresh" in err
    assert (state / "epoch_0001.json").exists()  # refused: the checkpoint is kept

    assert cli.main([*common, *change, "--fresh"]) == 0
    out = capsys.readouterr().out
    assert "--fresh: discarding the checkpoint" in out and "resuming" not in out
    metrics = json.loads((tmp_path / "tiny" / "student_metrics.json").read_text())
    assert metrics["run"]["epochs_run"] == 2


@pytest.mark.slow
def test_resume_with_more_epochs_still_resumes(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    common = ["student", "--config", str(config), "--runs-dir", str(tmp_path), "--quiet"]
    original = RunState.on_epoch_end
    _killed_after_first_epoch(monkeypatch, original)
    with pytest.raises(KeyboardInterrupt):
        cli.main(common)
    monkeypatch.setattr(RunState, "on_epoch_end", original)
    assert cli.main([*common, "--epochs", "3"]) == 0
    assert "resuming after epoch 1 of 3" in capsys.readouterr().out


def test_a_checkpoint_without_recorded_settings_refuses_another_monitor(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x = np.zeros((4, 2), "float32")
    state = RunState(str(tmp_path / "s"), str(tmp_path / "h.csv"), monitor="val_loss")
    model.fit(x, x, validation_data=(x, x), epochs=1, verbose=0, callbacks=[state])
    (tmp_path / "s").mkdir(exist_ok=True)
    (tmp_path / "s" / "epoch_0001.json").write_text(json.dumps(
        {"epoch": 1, "history": [], "best": 1.0, "best_epoch": 1, "wait": 0, "monitor": "val_auc"}))
    model.save_weights(str(tmp_path / "s" / "epoch_0001.weights.h5"))
    with pytest.raises(config_lib.ConfigError, match=r"monitor 'val_auc' -> 'val_loss'"):
        RunState(str(tmp_path / "s"), str(tmp_path / "h2.csv"), monitor="val_loss").restore(model)
    assert os.path.exists(tmp_path / "s" / "epoch_0001.json")


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, 0.005])
def test_temperatures_where_distillation_vanishes_are_refused(temperature):
    import keras

    import kdkeras
    from kdkeras.distillation import losses

    # Defect 16: T = 1e-30 gave a loss of exactly 0 (distillation off), T = 1e-300 NaN.
    with pytest.raises(ValueError, match=r"`temperature` = .* must be a finite number >= 0.01"):
        losses.KnowledgeDistillation(temperature=temperature)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    distiller = kdkeras.Distiller(teacher=keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), student=student)
    with pytest.raises(ValueError, match=r"must be a finite number >= 0.01"):
        distiller.compile(optimizer="adam", temperature=temperature)
    quickstart = config_lib.load_config("quickstart")
    with pytest.raises(config_lib.ConfigError, match=r"\[distill\] temperature = .* must be a finite number >= 0.01"):
        config_lib.apply_overrides(quickstart, {"distill.temperature": temperature})
    with pytest.raises(config_lib.ConfigError, match=r"\[sweep\] temperatures.*\[0.01, 1000\]"):
        config_lib.apply_overrides(quickstart, {"sweep.temperatures": [2.0, temperature]})


def test_the_smallest_temperature_still_distils():
    from kdkeras.config import bounds
    from kdkeras.distillation import losses

    teacher, student = np.array([[0.3, 0.1]], "float32"), np.array([[0.1, 0.3]], "float32")
    for t_squared in (True, False):
        loss = float(losses.KnowledgeDistillation(temperature=bounds.MIN_TEMPERATURE, t_squared=t_squared)(teacher, student))
        assert np.isfinite(loss) and loss > 1e-3


def test_a_student_too_large_for_the_image_size_fails_at_config_validation(tmp_path, capsys):
    # Defect 18: cnn296k at 28 px passed validation and failed with a traceback after the data loaded.
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    runs = tmp_path / "runs"
    assert cli.main(["student", "--config", str(config), "--runs-dir", str(runs), "--set", "student.model=\"cnn296k\"",
                     "--set", "student.options={}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert ("[student] model = 'cnn296k' needs images of at least 156x156 px, but [data] gives 28x28: set [data] "
            "image_size = 156 (or larger), or pick a student that takes 28 px: cnn_micro, cnn_nano, cnn_small") in err
    assert not runs.exists()
    quickstart = config_lib.load_config("quickstart")
    with pytest.raises(config_lib.ConfigError, match=r"\[distill\] model = 'cnn296k' needs images of at least 156x156"):
        config_lib.apply_overrides(quickstart, {"distill.model": "cnn296k"})
    assert config_lib.apply_overrides(quickstart, {"distill.model": "cnn296k", "data.image_size": 160}).distill.model


@pytest.mark.slow
def test_a_mixed_precision_student_exports_to_every_tflite_format(tmp_path):
    # Defect 12: every TFLite format failed after ~200 lines of MLIR on float16 ops.
    import keras
    import tensorflow as tf

    from kdkeras import models
    from kdkeras.export import deploy, tflite

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        student = models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[4, 8])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "mixed_float16" in {layer.dtype_policy.name for layer in student.layers}
    x = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1] * 4))).batch(4)
    student.save(tmp_path / "student.keras")
    table = deploy.export_student(str(tmp_path / "student.keras"), str(tmp_path / "export"),
                                  formats=["tflite_float32", "tflite_dynamic_int8", "tflite_int8"],
                                  representative_data=data, test_data=data, task="binary-class")
    assert [row["format"] for row in table.rows] == ["keras", "tflite_float32", "tflite_dynamic_int8", "tflite_int8"]
    expected = tf.nn.softmax(tf.cast(student(x), tf.float32)).numpy()
    lite = tflite.TFLiteModel(str(tmp_path / "export" / "model_float32.tflite"))(x)
    np.testing.assert_allclose(lite, expected, atol=2e-3)  # float32 compute against float16: rounding only


def test_a_failed_tflite_conversion_gives_advice_that_is_not_the_failing_format(monkeypatch):
    import tensorflow as tf

    from kdkeras.export import tflite

    class Failing:
        target_spec = type("TargetSpec", (), {})()

        def convert(self):
            raise RuntimeError("loc(fused[...]): 'tf.Conv2D' op is neither a custom op nor a flex op\n" + "MLIR\n" * 200)

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(lambda *a, **k: Failing()))
    for fmt, advice in (("tflite_float32", "export 'saved_model' only"),
                        ("tflite_dynamic_int8", "use 'tflite_float32'"),
                        ("tflite_int8", "use 'tflite_dynamic_int8'")):
        with pytest.raises(ValueError) as error:
            tflite.convert("unused", fmt, None)
        message = str(error.value)
        assert "\n" not in message and "neither a custom op nor a flex op" in message and advice in message
