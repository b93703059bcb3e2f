"""Hostile inputs, round three (issue 26): transfer sets, report run files, predict.

Each test names the defect of issue 26 it covers; each failed on the code before its fix.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from kdkeras.config import ConfigError
from kdkeras.data.info import DatasetInfo
from kdkeras.workflow import transfer


def _info(size=8):
    return DatasetInfo(
        name="toy", task="binary-class", class_names=["a", "b"], n_channels=1,
        image_size=(size, size), split_sizes={"train": 40}, class_counts=[30, 10],
        class_weights={0: 0.5, 1: 2.0}, source="", skipped=[], label_mode="sparse",
    )


# Defect 1: a folder as transfer set crashed on the (headers, skipped) pair.
def test_folder_transfer_set_of_pngs_is_read_at_the_data_size(tmp_path):
    folder = tmp_path / "unlabeled"
    (folder / "sub").mkdir(parents=True)
    for k in range(16):
        Image.fromarray(np.full((28, 28), 10 * k, np.uint8)).save(folder / ("sub" if k % 2 else "") / f"{k:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        images = transfer.load_transfer_images(str(folder), _info(28))
    assert images.shape == (16, 28, 28, 1) and images.dtype == np.float32
    assert sorted(np.unique(images).tolist()) == [10.0 * k for k in range(16)]


def test_folder_transfer_set_of_only_unreadable_files_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="none of its 1 image files is readable"):
        transfer.load_transfer_images(str(tmp_path), _info())


# Defect 10: npz faults gave tracebacks; 0 images were accepted.
def _npz_faults(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((4, 8, 8), np.uint8))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "text.npz"
    text.write_text("images = 1, 2, 3\n")
    objects = tmp_path / "objects.npz"
    np.savez(objects, images=np.array([np.zeros((8, 8)), None], dtype=object))
    zero_channels = tmp_path / "zero_channels.npz"
    np.savez(zero_channels, images=np.zeros((4, 8, 8, 0), np.uint8))
    empty = tmp_path / "empty.npz"
    np.savez(empty, images=np.zeros((0, 8, 8), np.uint8))
    return {
        truncated: "is not a readable npz file",
        text: "is not a readable npz file",
        objects: "is not a readable npz file .*allow_pickle",
        zero_channels: r"must be uint8 \(n, H, W\[, C\]\) with C = 1 to 4, got uint8 \(4, 8, 8, 0\)",
        empty: "holds 0 images",
    }


def test_damaged_npz_transfer_sets_are_refused_naming_the_file(tmp_path):
    for path, message in _npz_faults(tmp_path).items():
        with pytest.raises(ConfigError, match=f"transfer_set = '{path}'.*{message}"):
            transfer.load_transfer_images(str(path), _info())


# Defect 7: an operating point on a one-class validation split crashed the report.
@pytest.mark.parametrize("val_class, missing", [(0, "sensitivity"), (1, "specificity")])
def test_operating_point_on_a_one_class_validation_split_falls_back_and_says_so(tmp_path, val_class, missing):
    from kdkeras.reporting.clinical import clinical_section

    rng = np.random.default_rng(0)
    y_test = np.array([0, 1] * 20)
    logits = {name: rng.normal(size=(40, 2)) for name in ("teacher", "student")}
    val = {name: rng.normal(size=(12, 2)) for name in ("teacher", "student")}
    result = clinical_section(
        str(tmp_path), task="binary-class", class_names=["normal", "pneumonia"],
        y_val=np.full(12, val_class), y_test=y_test, val_logits=val, test_logits=logits,
        operating_point={"sensitivity": 0.95},
    )
    point = result.metrics["student"]["operating_point"]
    assert point["threshold"] == 0.5 and point["rule"] == {"threshold": 0.5}
    assert point["not_applied"]["rule"] == {"sensitivity": 0.95}
    p = 1 / (1 + np.exp(-(np.diff(logits["student"], axis=1)[:, 0]
                           / result.metrics["student"]["calibration"]["temperature"])))
    assert point["test"]["tp"] == int(np.sum((p >= 0.5) & (y_test == 1)))
    text = "\n".join(result.markdown)
    assert (f"was not applied**, because the validation split holds only class {val_class} (12 images), "
            f"so it has no {missing}") in text
    assert os.path.exists(tmp_path / "roc_operating_point.png")


def _student_run(folder):
    from kdkeras import runs
    from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores

    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 20)
    logits = rng.normal(size=(40, 2)) + np.eye(2)[labels]
    scores = logits_to_scores(logits, "binary-class")
    runs.save_metrics(folder / "student_metrics.json",
                      classification_metrics(labels, scores, "binary-class", ["normal", "pneumonia"]))
    runs.save_predictions(folder / "student_predictions.npz", labels, scores)
    (folder / "student_history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.6,0.7,0.6,0.69\n1,0.7,0.6,0.65,0.65\n")


# Defect 9: damaged run files gave tracebacks (BadZipFile without the file's name).
@pytest.mark.parametrize("file, content, message", [
    ("student_metrics.json", b'{"task": "binary-cl', "is not valid JSON"),
    ("student_metrics.json", b"", "is not valid JSON"),
    ("student_metrics.json", b"{}", "has no 'task' field"),
    ("student_metrics.json", b"[]", "has no 'task' field"),
    ("student_history.csv", b"", "holds no epoch"),
    ("student_history.csv", b"epoch,loss,val_loss\n", "holds no epoch"),
    ("student_predictions.npz", None, "BadZipFile"),
])
def test_report_on_damaged_run_files_names_the_file_and_the_phase(tmp_path, file, content, message):
    from kdkeras import reporting
    from kdkeras.data.errors import DataError

    _student_run(tmp_path)
    target = tmp_path / file
    target.write_bytes(content if content is not None else target.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{target}.*{message}.*Re-run `kdkeras student`"):
        reporting.write_report(str(tmp_path), ["student"], "x", None)
    assert not os.path.exists(tmp_path / "report.md")
    _student_run(tmp_path)
    assert os.path.exists(reporting.write_report(str(tmp_path), ["student"], "x", None))


CONFIG = """
name = "recorded"

[data]
loader = "medmnist"
flag = "pneumoniamnist"
root = "@bundled"
batch_size = 32

[teacher]
model = "cnn_small"
epochs = 1

[student]
model = "cnn_small"
epochs = 1
"""


# Defect 22: `make all LIMIT=600` ended in a traceback: `report` reloaded the full test split.
def test_report_reloads_the_data_the_run_recorded_not_todays_command_line(tmp_path, monkeypatch, capsys):
    from kdkeras import cli
    from kdkeras import config as config_lib
    from kdkeras.workflow import training

    experiment = tmp_path / "recorded.toml"
    experiment.write_text(CONFIG)
    run = tmp_path / "runs" / "recorded"
    run.mkdir(parents=True)
    _student_run(run)
    ran = config_lib.apply_overrides(config_lib.load_config(str(experiment)), {"data.limit": 600})
    (run / "student_config.toml").write_text("# what ran\n" + config_lib.dump_toml(ran))
    seen = []
    monkeypatch.setattr(training, "write_report", lambda config, runs_dir: seen.append(config) or "report.md")
    assert cli.main(["report", "--config", str(experiment), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert seen[0].data["limit"] == 600 and seen[0].name == "recorded"
    assert f"[data] as the run recorded it in {run / 'student_config.toml'} (limit = 600)" in capsys.readouterr().out
    (run / "student_config.toml").write_text("[data\nlimit = ")
    assert cli.main(["report", "--config", str(experiment), "--runs-dir", str(tmp_path / "runs")]) == 1
    assert "student_config.toml is not readable TOML" in capsys.readouterr().err


# ---- predict: defects 3, 4, 5, 8, 15, 20, 21 ----

SIZE = 28


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny saved classifier with the metrics file a phase writes beside it."""
    import keras

    from kdkeras import models

    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("model")
    model = models.get_model("cnn_small", input_shape=(SIZE, SIZE, 1), num_classes=2, filters=[4, 8])
    model.save(folder / "distilled.keras")
    metrics = {"task": "binary-class", "per_class": [{"name": "normal"}, {"name": "pneumonia"}]}
    (folder / "distilled_metrics.json").write_text(json.dumps(metrics))
    return str(folder / "distilled.keras")


def _png(path, value=100):
    Image.fromarray(np.full((SIZE, SIZE), value, np.uint8)).save(path, format="PNG")
    return path


def _dicom(path, rows=16, columns=16, pixels=None):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "DX", rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels is None:
        pixels = np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) % 4096
    ds.PixelData = np.asarray(pixels, "<u2").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


# Defect 3: extensionless DICOMs, .tif, archives in folders and zips in zips were dropped without a row.
def test_predict_gives_every_file_it_sees_a_row(model_file, tmp_path):
    import zipfile

    from kdkeras import predict

    dicomdir = tmp_path / "DICOM" / "PAT1"
    dicomdir.mkdir(parents=True)
    _dicom(str(dicomdir / "IM000001"))
    _dicom(str(dicomdir / "IM000002"))
    only = predict.predict_files(model_file, str(tmp_path / "DICOM"))
    assert [(os.path.basename(r["path"]), r["status"]) for r in only.rows] == [("IM000001", "ok"), ("IM000002", "ok")]

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(folder / "scan.tif")
    with zipfile.ZipFile(folder / "inner.zip", "w") as z:
        z.write(_png(tmp_path / "a.png"), "a.png")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.write(folder / "inner.zip", "sub/inner.zip")
    result = predict.predict_files(model_file, [str(folder), str(outer)])
    status = {row["path"]: (row["status"], row["error"]) for row in result.rows}
    assert status[os.path.join(str(folder), "inner.zip", "a.png")] == ("ok", "")
    assert status[os.path.join(str(outer), "sub", "inner.zip", "a.png")] == ("ok", "")
    assert status[str(folder / "scan.tif")][0] == "unreadable"
    assert "format TIFF is not readable by TensorFlow" in status[str(folder / "scan.tif")][1]
    assert len(status) == 3


# Defect 4: a DICOM declaring 10000 x 10000 pixels was decoded (3.6 GB); PNG/JPEG are refused up front.
def test_dicom_pixel_count_is_checked_from_the_header_before_decoding(model_file, tmp_path, monkeypatch):
    from kdkeras import predict
    from kdkeras.data import dicom
    from kdkeras.data.errors import DataError

    bomb = _dicom(str(tmp_path / "bomb.dcm"), rows=10000, columns=10000, pixels=np.zeros(8))
    import pydicom

    decoded = []
    pixel_array = pydicom.dataset.Dataset.pixel_array
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda ds: decoded.append(ds) or pixel_array.fget(ds)))
    with pytest.raises(DataError, match=r"bomb\.dcm: its header declares 10000x10000 pixels .* over PIL\.Image\.MAX_IMAGE_PIXELS"):
        dicom.read_dicom(bomb)
    row, = predict.predict_files(model_file, bomb).rows
    assert row["status"] == "unreadable" and "100,000,000 values" in row["error"]
    assert not decoded


# Defect 8: Keras files that are not kdkeras image classifiers crashed, or were softmaxed twice.
def _odd_models():
    import keras

    image = keras.Input((SIZE, SIZE, 1))
    vector = keras.Input((10,))
    volume = keras.Input((8, 8, 8, 1))
    conv = keras.layers.Conv2D(2, 3, padding="same")(image)
    return {
        "vector": (keras.Model(vector, keras.layers.Dense(2)(vector)), r"takes inputs of shape \(None, 10\);"),
        "two_inputs": (keras.Model([image, vector], keras.layers.Dense(2)(vector)), "takes inputs of shape"),
        "volume": (keras.Model(volume, keras.layers.Dense(2)(keras.layers.Flatten()(volume))),
                   r"\(None, 8, 8, 8, 1\)"),
        "segmentation": (keras.Model(image, conv), r"outputs \(None, 28, 28, 2\).*not segmentation"),
        "sigmoid": (keras.Model(image, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(image))),
                    "outputs 1 value per image"),
    }


def test_predict_refuses_models_that_are_not_image_classifiers(tmp_path):
    from kdkeras import predict
    from kdkeras.data.errors import DataError

    image = _png(tmp_path / "x.png")
    for model, message in _odd_models().values():
        with pytest.raises(DataError, match=message):
            predict.predict_files(model, str(image))


def test_a_model_ending_in_softmax_is_not_softmaxed_twice(tmp_path):
    import keras

    from kdkeras import predict

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs / 255.0))
    model = keras.Model(inputs, outputs)
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    row, = predict.predict_files(model, str(tmp_path / "x.png")).rows
    expected = np.asarray(model(pixels[None, ..., None].astype("float32")))[0]
    np.testing.assert_allclose([float(row["p_0"]), float(row["p_1"])], expected, atol=2e-6)


# Defect 5: a tf.data pipeline was traced per file (428 ms each), and a stopped run wrote nothing.
def test_predict_runs_one_pipeline_and_a_stopped_run_keeps_its_rows(model_file, tmp_path, monkeypatch):
    import csv

    import tensorflow as tf

    from kdkeras import predict

    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(40):
        _png(folder / f"{k:03d}.png", value=k)
    # A header PIL reads, pixels TensorFlow cannot: it fails inside the pipeline, mid-batch.
    (folder / "020_truncated.png").write_bytes((folder / "020.png").read_bytes()[:60])
    pipelines = []
    original = tf.data.Dataset.from_tensor_slices
    monkeypatch.setattr(tf.data.Dataset, "from_tensor_slices", lambda *a, **k: pipelines.append(1) or original(*a, **k))
    out = tmp_path / "out.csv"
    result = predict.predict_files(model_file, str(folder), batch_size=16, out=str(out))
    assert len(pipelines) == 1 and len(result.readable) == 40
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [r["path"] for r in result.rows] and len(rows) == 41
    assert [r["status"] for r in rows] == ["ok"] * 21 + ["unreadable"] + ["ok"] * 19
    assert rows[21]["path"].endswith("020_truncated.png") and "TensorFlow cannot decode it" in rows[21]["error"]

    def stop_after_first_batch(done):
        raise KeyboardInterrupt

    with pytest.raises(predict.PredictionStopped, match=rf"{out} holds the first 16 row\(s\)"):
        predict.predict_files(model_file, str(folder), batch_size=16, out=str(out), on_batch=stop_after_first_batch)
    with open(out, newline="") as f:
        partial = list(csv.DictReader(f))
    assert partial == rows[:16]
    assert sorted(os.listdir(tmp_path)) == ["many", "out.csv"]  # no temporary file left


# Defect 15: --out was checked after every image had been processed.
def test_predict_checks_out_before_reading_any_image(model_file, tmp_path, monkeypatch, capsys):
    from kdkeras import cli, predict_inputs

    image = str(_png(tmp_path / "x.png"))
    (tmp_path / "afile").write_text("x")
    screened = []
    monkeypatch.setattr(predict_inputs, "screen_file", lambda *a: screened.append(a))
    monkeypatch.chdir(tmp_path)  # `--out ""` once wrote a temporary file into the parent folder
    cases = {
        "": "--out is empty: give the CSV to write",
        str(tmp_path): f"--out {tmp_path} is a folder: give a file in it",
        str(tmp_path / "afile" / "p.csv"): f"{tmp_path / 'afile'} is a file, not a folder",
    }
    for out, message in cases.items():
        assert cli.main(["predict", "--model", model_file, image, "--out", out]) == 1
        assert message in capsys.readouterr().err
    assert not screened and sorted(os.listdir(tmp_path)) == ["afile", "x.png"]
    assert not [n for n in os.listdir(tmp_path.parent) if n.startswith(".tmp-")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_refuses_a_read_only_out_folder(model_file, tmp_path):
    from kdkeras import predict
    from kdkeras.data.errors import DataError

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(DataError, match="is not writable"):
        predict.predict_files(model_file, str(_png(tmp_path / "x.png")), out=str(locked / "p.csv"))


# Defect 21: messages that gave a fix the user cannot apply.
def test_predict_messages_name_what_happened(model_file, tmp_path):
    from kdkeras import predict

    good = _dicom(str(tmp_path / "good.dcm"))
    no_preamble = tmp_path / "no_preamble.dcm"
    no_preamble.write_bytes(open(good, "rb").read()[132:])  # older files start with their elements
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    rows = {os.path.basename(r["path"]): r for r in predict.predict_files(model_file, str(tmp_path)).rows}
    assert rows["no_preamble.dcm"]["status"] == "ok"
    assert rows["corrupt.dcm"]["status"] == "unreadable"
    assert "report or a structured document" not in rows["corrupt.dcm"]["error"]
    assert "force=True" not in " ".join(r["error"] for r in rows.values())
    assert rows["broken.png"]["status"] == "unreadable" and "strict=False" not in rows["broken.png"]["error"]
    assert rows["broken.png"]["error"].startswith("UnidentifiedImageError: cannot identify image file")
    assert "no pixel data element: the file is damaged or truncated" in rows["corrupt.dcm"]["error"]


# Defect 20: SIGTERM during predict of an archive left the extracted images in /tmp.
@pytest.mark.slow
def test_sigterm_during_predict_of_an_archive_removes_the_extracted_folder(model_file, tmp_path):
    import csv
    import signal
    import subprocess
    import sys
    import time
    import zipfile

    archive = tmp_path / "patients.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for k in range(400):
            z.write(_png(tmp_path / "p.png", value=k % 256), f"patient{k:03d}.png")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out" / "predictions.csv"
    env = {**os.environ, "TMPDIR": str(scratch)}
    process = subprocess.Popen(
        [sys.executable, "-m", "kdkeras", "predict", "--model", model_file, str(archive), "--out", str(out),
         "--batch-size", "1", "--gradcam", str(tmp_path / "maps")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(os.listdir(tmp_path / "maps") if (tmp_path / "maps").exists() else []) < 3:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    assert [n for n in os.listdir(scratch) if n.startswith("kdkeras-predict-")]  # extracted, at work
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert not [n for n in os.listdir(scratch) if n.startswith("kdkeras-predict-")]
    assert "kdkeras: predict stopped:" in err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert 1 <= len(rows) < 400 and all(r["status"] == "ok" for r in rows)
    assert os.listdir(out.parent) == ["predictions.csv"]
