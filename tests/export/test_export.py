"""kdkeras.export: SavedModel and TFLite files of a tiny trained student, and their table."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from kdkeras import cli, export
from kdkeras.data import bundled_npz, load_medmnist
from kdkeras.evaluation import calibration, profiling
from kdkeras.models import InputPreprocessing

# The exported files divide the logits by the temperature of the model's calibration file.
TEMPERATURE = 2.5

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "data": {"batch_size": 64, "limit": 128},
    "teacher": {"options": None, "epochs": None},
    "student": {"options": None, "epochs": None},
}


def _tiny_student():
    # No BatchNorm and no global pooling: in a few epochs it learns to tell both classes apart.
    inputs = keras.Input((28, 28, 1), name="image")
    x = InputPreprocessing("unit", name="preprocessing")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="tiny_student")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    train, _, test, info = load_medmnist("pneumoniamnist", path=bundled_npz(), batch_size=64, limit=1024)
    model = _tiny_student()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(train, epochs=4, verbose=0)
    out = tmp_path_factory.mktemp("export")
    path = str(out.parent / "student.keras")
    model.save(path)
    calibration.save_calibration(path, TEMPERATURE, threshold=0.3, operating_point={"sensitivity": 0.95},
                                 positive_class="pneumonia")
    table = export.export_student(
        path, out, representative_data=train, test_data=test, task=info.task,
        class_names=info.class_names, representative_images=100, latency_repeats=5,
    )
    return model, out, table, test


def calibrated(model, images, temperature=TEMPERATURE):
    """The reference: the Keras model's softmax(logits / T), in float64."""
    logits = model(images, training=False).numpy().astype(np.float64) / temperature
    return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))


def test_every_format_is_written_and_measured(exported):
    _, out, table, _ = exported
    assert [row["format"] for row in table.rows] == ["keras", *export.DEFAULT_FORMATS]
    assert sorted(os.listdir(out)) == sorted([*(export.FILENAMES[f] for f in export.DEFAULT_FORMATS), "export.json",
                                              "export.md", export.CALIBRATION, *export.BUNDLE_FILES])
    assert os.path.isfile(out / "saved_model" / "saved_model.pb")
    for row in table.rows[1:]:
        assert row["size_bytes"] == profiling.file_size_bytes(out / row["path"]) > 0
    assert all(row["ms_per_image"] > 0 for row in table.rows)
    assert table.row("tflite_int8")["size_bytes"] < table.row("tflite_float32")["size_bytes"]
    assert table.test_images == 624 and table.representative_images == 100
    assert json.loads((out / "export.json").read_text()) == json.loads(json.dumps(table.to_dict()))
    markdown = (out / "export.md").read_text()
    assert markdown == table.to_markdown()
    assert ("| Format | File | Size | Latency (batch 1) | ACC | AUC | Balanced ACC | Agreement with Keras "
            "| Max abs. diff. from Keras |") in markdown
    assert f"TFLite interpreter {export.tflite.INTERPRETER} with" in markdown
    assert "| tflite_int8 | `model_int8.tflite` |" in markdown and "calibrated on 100 train images" in markdown
    assert ("probabilities = softmax(logits / T) with T = 2.5 (fitted on validation, from "
            "`student_calibration.json`)") in markdown
    assert "Decision: `pneumonia` when its probability is >= 0.3000 (operating point: sensitivity 0.95" in markdown
    assert (table.calibration["temperature"], table.calibration["threshold"]) == (TEMPERATURE, 0.3)


def test_float_formats_match_keras_and_int8_is_close(exported):
    _, _, table, _ = exported
    keras_row = table.row("keras")
    assert keras_row["auc"] > 0.85 and keras_row["balanced_acc"] > 0.6  # it tells both classes apart
    assert keras_row["max_abs_diff"] == 0.0
    for fmt in ("saved_model", "tflite_float32"):
        assert table.row(fmt)["agreement"] == 1.0 and table.row(fmt)["max_abs_diff"] < 1e-5
        assert table.row(fmt)["acc"] == keras_row["acc"]
        assert table.row(fmt)["auc"] == pytest.approx(keras_row["auc"], abs=1e-4)
    for fmt in ("tflite_dynamic_int8", "tflite_int8"):
        assert table.row(fmt)["agreement"] >= 0.97 and 0 < table.row(fmt)["max_abs_diff"] <= 0.05
        assert abs(table.row(fmt)["acc"] - keras_row["acc"]) <= 0.01
        assert abs(table.row(fmt)["auc"] - keras_row["auc"]) <= 0.01


def test_exported_files_return_the_calibrated_probabilities_of_the_keras_model(exported):
    model, out, _, test = exported
    images = next(iter(test))[0].numpy()[:32]
    expected = calibrated(model, images)
    assert np.max(expected) < 0.999 and np.min(np.max(expected, axis=1)) < 0.9  # T = 2.5 moves them
    loaded = tf.saved_model.load(str(out / "saved_model"))
    assert {"serving_default", export.SERVE, export.PROBABILITIES} <= set(loaded.signatures)
    served = loaded.serve(tf.constant(images))
    np.testing.assert_allclose(served["logits"], model(images, training=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"],
                               expected, atol=1e-5)
    lite = export.TFLiteModel(str(out / "model_float32.tflite"))
    assert lite.input_dtype == np.float32 and lite.input_shape == (28, 28, 1)
    np.testing.assert_allclose(lite(images), expected, atol=1e-5)
    np.testing.assert_allclose(export.TFLiteModel(str(out / "model_dynamic_int8.tflite"))(images), expected, atol=0.05)
    integer = export.TFLiteModel(str(out / "model_int8.tflite"), num_threads=1)
    assert integer.input_dtype == np.int8
    np.testing.assert_allclose(integer(images), expected, atol=0.05)


def test_tflite_model_checks_shapes_and_files(exported):
    _, out, _, _ = exported
    lite = export.TFLiteModel(str(out / "model_float32.tflite"))
    with pytest.raises(ValueError, match=r"takes images of shape \(28, 28, 1\), got \(32, 32, 1\)"):
        lite(np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(FileNotFoundError, match="missing.tflite' not found"):
        export.TFLiteModel(str(out / "missing.tflite"))


def test_a_failed_export_leaves_previous_files_untouched(exported, monkeypatch):
    model, out, _, test = exported
    before = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)}
    convert = export.tflite.convert

    def fail_on_int8(saved_model, fmt, calibration):
        if fmt == "tflite_int8":
            raise ValueError("TFLite conversion to tflite_int8 failed: simulated")
        return convert(saved_model, fmt, calibration)

    monkeypatch.setattr(export.tflite, "convert", fail_on_int8)
    with pytest.raises(ValueError, match="simulated"):
        export.export_student(model, out, representative_data=test, latency_repeats=1)
    assert {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)} == before


def test_folder_replaces_folder_whole(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "b").write_text("new")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "a").write_text("old")
    export.deploy._move_into_place(str(tmp_path / "new"), str(tmp_path / "dst"))
    assert os.listdir(tmp_path / "dst") == ["b"] and sorted(os.listdir(tmp_path)) == ["dst"]


def test_bad_arguments_name_the_fix(exported, tmp_path):
    model, _, _, _ = exported
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) 'coreml', 'tf'; use one or more of saved_model"):
        export.export_student(model, tmp_path, formats=("coreml", "tflite_int8", "tf"))
    with pytest.raises(ValueError, match="No export format given"):
        export.export_student(model, tmp_path, formats=())
    with pytest.raises(ValueError, match="representative_images must be >= 1, got 0"):
        export.export_student(model, tmp_path, representative_images=0)
    with pytest.raises(ValueError, match="latency_warmup and latency_repeats must be >= 1, got 5 and 0"):
        export.export_student(model, tmp_path, latency_repeats=0)
    with pytest.raises(ValueError, match="'tflite_int8' needs `representative_data`"):
        export.export_student(model, tmp_path, formats=("tflite_int8",))
    with pytest.raises(ValueError, match=r"yields images of shape \(32, 32, 1\) but the model takes \(28, 28, 1\)"):
        export.export_student(model, tmp_path, representative_data=np.zeros((4, 32, 32, 1)))
    with pytest.raises(FileNotFoundError, match="nope.keras not found: pass the path of a saved .keras model"):
        export.export_student(tmp_path / "nope.keras", tmp_path)
    (tmp_path / "weights.h5").write_text("")
    with pytest.raises(ValueError, match="expected a Keras 3 `.keras` file"):
        export.export_student(tmp_path / "weights.h5", tmp_path)
    assert os.listdir(tmp_path) == ["weights.h5"]


def test_cli_exports_a_saved_model(exported, tmp_path, capsys, tiny_experiment):
    model, _, _, _ = exported
    config = tiny_experiment(tmp_path, **TINY)
    model_path = tmp_path / "student.keras"
    model.save(model_path)
    out = tmp_path / "lite"
    common = ["export", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]
    assert cli.main([*common, "--model", str(model_path), "--formats", "tflite_float32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| tflite_float32 | `model_float32.tflite` |" in printed and "metrics on 128 test images" in printed
    assert (f"[export] no `{tmp_path}/student_calibration.json` beside the model: the exported probabilities "
            "use T = 1.0 (uncalibrated)") in printed
    assert sorted(os.listdir(out)) == sorted(["export.json", "export.md", "model_float32.tflite", *export.BUNDLE_FILES])
    assert cli.main([*common, "--model", str(model_path), "--formats", "coreml"]) == 2
    assert "kdkeras: export: Unknown export format(s) 'coreml'; use one or more of saved_model" in capsys.readouterr().err


def test_cli_missing_model_says_what_to_run(tmp_path, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    assert cli.main(["export", "--config", str(config), "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/tiny/distilled.keras not found" in err and "Run `make distill`" in err


def test_cli_help_lists_every_format(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"any of {' '.join(export.FORMATS)}" in text


def int8_interpreter(out):
    interpreter = tf.lite.Interpreter(model_path=str(out / "model_int8.tflite"), num_threads=1)
    (given,), (returned,) = interpreter.get_input_details(), interpreter.get_output_details()
    return interpreter, given, returned


def test_full_integer_file_takes_and_returns_int8(exported):
    model, out, _, test = exported
    interpreter, given, returned = int8_interpreter(out)
    assert given["dtype"] == np.int8 and returned["dtype"] == np.int8
    # Fed pixels quantized with its own input parameters, it gives the calibrated probabilities
    # after dequantizing its int8 output, whose quantization spans [0, 1].
    images = next(iter(test))[0].numpy()[:4]
    scale, zero_point = given["quantization"]
    quantized = np.clip(np.round(images / scale) + zero_point, -128, 127).astype(np.int8)
    interpreter.resize_tensor_input(given["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], quantized)
    interpreter.invoke()
    out_scale, out_zero = returned["quantization"]
    assert out_scale * (-128 - out_zero) == pytest.approx(0.0, abs=1e-6) and out_scale * (127 - out_zero) <= 1.0
    probabilities = (interpreter.get_tensor(returned["index"]).astype(np.float32) - out_zero) * out_scale
    np.testing.assert_allclose(probabilities, calibrated(model, images), atol=0.05)


def test_full_integer_input_scale_comes_from_the_calibration_images(exported):
    # What README and export.py state: the brightest calibration pixel maps to int8 127.
    _, out, table, _ = exported
    _, given, _ = int8_interpreter(out)
    scale, zero_point = given["quantization"]
    assert zero_point == -128 and 0 < scale <= 1.0
    brightest = scale * (127 - zero_point)
    assert 200 < brightest <= 255 and table.representative_images == 100


def test_export_ships_the_calibration_beside_the_files(exported):
    _, out, _, _ = exported
    shipped = json.loads((out / export.CALIBRATION).read_text())
    assert (shipped["temperature"], shipped["threshold"]) == (TEMPERATURE, 0.3)
    assert json.loads((out / export.TABLE_JSON).read_text())["calibration"]["source"] == "student_calibration.json"


def test_a_model_without_calibration_exports_uncalibrated_and_says_so(exported, tmp_path):
    model, _, _, test = exported
    path = str(tmp_path / "bare.keras")
    model.save(path)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / export.CALIBRATION).write_text("{}")  # a previous export's, now stale
    table = export.export_student(path, tmp_path / "bare", formats=("tflite_float32",), latency_repeats=1)
    assert not (tmp_path / "bare" / export.CALIBRATION).exists()
    assert table.calibration["temperature"] == 1.0 and table.calibration["source"] is None
    note = f"no `{tmp_path}/bare_calibration.json` beside the model: the exported probabilities use T = 1.0"
    assert table.calibration["note"].startswith(note) and note in (tmp_path / "bare" / export.TABLE_MD).read_text()
    images = next(iter(test))[0].numpy()[:8]
    lite = export.TFLiteModel(str(tmp_path / "bare" / "model_float32.tflite"))
    np.testing.assert_allclose(lite(images), calibrated(model, images, temperature=1.0), atol=1e-5)


def test_onnx_returns_the_calibrated_probabilities_and_metadata_follows_its_schema(exported, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    model, out, _, test = exported
    table = export.export_student(out.parent / "student.keras", tmp_path, formats=("onnx",), test_data=test,
                                  task="binary-class", latency_repeats=1)
    images = next(iter(test))[0].numpy()[:32]
    onnx_model = export.ONNXModel(str(tmp_path / "model.onnx"))
    np.testing.assert_allclose(onnx_model(images), calibrated(model, images), atol=1e-5)
    assert table.row("onnx")["agreement"] == 1.0 and table.row("onnx")["max_abs_diff"] < 1e-5
    metadata = json.loads((tmp_path / export.METADATA).read_text())
    if importlib.util.find_spec("jsonschema"):
        import jsonschema

        jsonschema.validate(metadata, export.METADATA_SCHEMA)
    else:  # the schema's top-level contract, checked by hand
        assert set(export.METADATA_SCHEMA["required"]) <= set(metadata)
    assert metadata["calibration"]["temperature"] == TEMPERATURE and metadata["calibration"]["threshold"] == 0.3
    assert list(metadata["files"]) == ["model.onnx"]
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [28, 28]


def test_onnx_without_its_extra_says_what_to_install(exported, tmp_path, monkeypatch):
    import sys

    model, _, _, _ = exported
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ImportError, match=r"Format 'onnx' needs the tf2onnx package: pip install 'kdkeras\[onnx\]'"):
        export.export_student(model, tmp_path, formats=("tflite_float32", "onnx"))
    assert os.listdir(tmp_path) == []


def test_a_damaged_run_file_fails_the_export_before_anything_is_written(exported, tmp_path):
    model, _, _, _ = exported
    model.save(tmp_path / "student.keras")
    (tmp_path / "student_metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"student_metrics.json cannot be read .*; re-run the phase that writes it"):
        export.export_student(tmp_path / "student.keras", tmp_path / "export", formats=("tflite_float32",))
    assert not (tmp_path / "export").exists()


def test_cli_checklist_without_a_run_says_what_to_run(tmp_path, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    assert cli.main(["checklist", "--config", str(config), "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/tiny/distilled_metrics.json not found: the checklist reads the model's test metrics" in err
    assert "Run `kdkeras distill --config" in err and os.listdir(tmp_path) == ["tiny.toml"]


@pytest.mark.parametrize("litert", [True, False])
def test_tflite_files_run_on_litert_and_on_tf_lite_alike(exported, monkeypatch, litert):
    if litert:
        pytest.importorskip("ai_edge_litert")
    else:  # without the extra, TensorFlow's own interpreter runs the same file
        monkeypatch.setattr(export.tflite, "_LiteRTInterpreter", None)
    model, out, _, test = exported
    images = next(iter(test))[0].numpy()[:16]
    lite = export.TFLiteModel(str(out / "model_float32.tflite"))
    expected_type = "ai_edge_litert" if litert else "tensorflow"
    assert type(lite._interpreter).__module__.startswith(expected_type)
    np.testing.assert_allclose(lite(images), calibrated(model, images), atol=1e-5)
