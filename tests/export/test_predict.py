"""Predicting on new files: formats, unreadable files, DICOM, run-folder metadata, the CLI."""

import csv
import json
import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import special

from kdkeras import cli, models, predict, predict_inputs
from kdkeras.data.dicom import read_dicom
from kdkeras.evaluation import calibration

pydicom = pytest.importorskip("pydicom")

CLASSES = ["normal", "pneumonia"]
SIZE = 28


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A tiny saved model with the metrics file a phase writes beside it."""
    import keras

    keras.utils.set_random_seed(7)
    folder = tmp_path_factory.mktemp("run")
    model = models.get_model("cnn_small", input_shape=(SIZE, SIZE, 1), num_classes=2, filters=[4, 8])
    model.save(folder / "distilled.keras")
    metrics = {"task": "binary-class", "per_class": [{"name": name} for name in CLASSES]}
    (folder / "distilled_metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def model_path(run_folder, tmp_path):
    # A per-test copy, so a calibration file written by one test stays there.
    import shutil

    for name in ("distilled.keras", "distilled_metrics.json"):
        shutil.copy(run_folder / name, tmp_path / name)
    return str(tmp_path / "distilled.keras")


@pytest.fixture
def mixed_folder(tmp_path):
    """A corrupt file, a 16-bit PNG, an RGBA PNG and a grayscale JPEG, all at the model's size."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    gray16 = rng.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16)
    Image.fromarray(gray16).save(folder / "b_16bit.png")
    rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "c_rgba.png")
    gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    Image.fromarray(gray, "L").save(folder / "d_gray.jpg", quality=95)
    (folder / "a_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not an image: a skipped row")
    expected = {
        "b_16bit.png": np.round(gray16 / 257.0),
        # BT.601 luminance of the RGB channels, the alpha channel dropped.
        "c_rgba.png": np.round(rgba[..., :3].astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])),
        # TensorFlow's JPEG decoder, which the training pipelines use (its IDCT differs from PIL's by a few levels).
        "d_gray.jpg": tf.io.decode_jpeg((folder / "d_gray.jpg").read_bytes()).numpy()[..., 0],
    }
    return folder, expected


def _model_probabilities(model_path, pixels, temperature=1.0):
    from kdkeras.files import load_model

    logits = np.asarray(load_model(model_path)(np.asarray(pixels, "float32")[None, ..., None]), "float64")
    return special.softmax(logits / temperature, axis=1)[0]


def test_folder_with_unreadable_and_odd_files_gives_rows_for_the_readable_ones(model_path, mixed_folder):
    folder, expected = mixed_folder
    result = predict.predict_files(model_path, [str(folder)])
    by_name = {os.path.basename(row["path"]): row for row in result.rows}
    assert sorted(by_name) == ["a_corrupt.png", "b_16bit.png", "c_rgba.png", "d_gray.jpg", "notes.txt"]
    assert by_name["a_corrupt.png"]["status"] == "unreadable" and by_name["a_corrupt.png"]["error"]
    assert [os.path.basename(p) for p, _ in result.unreadable] == ["a_corrupt.png"]
    assert [(os.path.basename(p), r) for p, r in result.skipped] == [("notes.txt", predict_inputs._NOT_AN_IMAGE)]
    for name, pixels in expected.items():
        row = by_name[name]
        assert row["status"] == "ok" and row["error"] == ""
        got = np.array([float(row["p_normal"]), float(row["p_pneumonia"])])
        # The pixels the training pipeline would feed, through the model, give the row's probabilities.
        np.testing.assert_allclose(got, _model_probabilities(model_path, pixels), atol=2e-6)
        assert row["predicted"] == CLASSES[int(got[1] > 0.5)]


def test_read_image_resizes_and_converts_to_the_model_input(model_path, tmp_path):
    big = np.full((100, 60, 3), 200, np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    meta = predict.model_metadata(models.get_model("cnn_small", input_shape=(SIZE, SIZE, 1), num_classes=2))
    pixels = predict.read_image(str(tmp_path / "big.png"), meta)
    assert pixels.shape == (SIZE, SIZE, 1) and pixels.dtype == np.uint8
    assert np.all(pixels == 200)


def test_calibration_file_sets_temperature_and_threshold(model_path, mixed_folder):
    folder, expected = mixed_folder
    calibration.save_calibration(model_path, 3.0, threshold=0.0, operating_point={"sensitivity": 1.0})
    result = predict.predict_files(model_path, [str(folder / "b_16bit.png")])
    row = result.rows[0]
    got = np.array([float(row["p_normal"]), float(row["p_pneumonia"])])
    np.testing.assert_allclose(got, _model_probabilities(model_path, expected["b_16bit.png"], 3.0), atol=2e-6)
    assert row["predicted"] == "pneumonia"  # every image is positive at threshold 0
    assert result.metadata.temperature == 3.0 and result.metadata.threshold == 0.0


def test_archives_missing_paths_and_empty_inputs(model_path, mixed_folder, tmp_path):
    folder, _ = mixed_folder
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(folder / "c_rgba.png", "inner/c_rgba.png")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    result = predict.predict_files(model_path, [str(archive), str(broken), str(tmp_path / "missing.png")])
    status = {row["path"]: row["status"] for row in result.rows}
    assert status == {
        os.path.join(str(archive), "inner", "c_rgba.png"): "ok",
        str(broken): "unreadable",
        str(tmp_path / "missing.png"): "unreadable",
    }
    assert not os.path.exists(tmp_path / "scans")  # extracted in a temporary folder only
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No files in"):
        predict.predict_files(model_path, [str(empty)])


def _write_dicom(path, stored, photometric, slope=None, intercept=None, center=None, width=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _stored(shape=(16, 16)):
    return np.linspace(200, 800, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


def _window_reference(stored, slope, intercept, center, width):
    # DICOM PS3.3 C.11.2.1.2.1, LINEAR: the window maps to the full displayed range.
    value = stored.astype(np.float64) * slope + intercept
    return 255.0 * np.clip((value - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("width", [1000, 4000])  # clips both ends / holds the whole image
def test_dicom_rescale_window_and_monochrome1_inversion(tmp_path, photometric, width):
    stored = _stored()
    path = _write_dicom(str(tmp_path / "x.dcm"), stored, photometric, slope=2, intercept=-1024,
                        center=0, width=width)
    pixels = read_dicom(path)
    expected = _window_reference(stored, 2, -1024, 0, width)
    if photometric == "MONOCHROME1":
        expected = 255.0 - expected
    assert pixels.shape == (16, 16, 1) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[..., 0], expected, atol=1e-3)
    clipped = np.mean((expected == 0) | (expected == 255))
    assert (0 < clipped < 1) if width == 1000 else (clipped == 0 and np.ptp(expected) < 100)


def test_dicom_without_window_spans_its_own_range(tmp_path):
    stored = _stored()
    pixels = read_dicom(_write_dicom(str(tmp_path / "y.dcm"), stored, "MONOCHROME1"))[..., 0]
    expected = 255.0 * (1.0 - (stored - 200.0) / 600.0)
    np.testing.assert_allclose(pixels, expected, atol=1e-3)


def test_dicom_files_in_a_folder_are_predicted(model_path, tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    _write_dicom(str(folder / "a.dcm"), _stored(), "MONOCHROME2", 2, -1024, 0, 1000)
    _write_dicom(str(folder / "b.dcm"), _stored((40, 30)), "MONOCHROME1")
    (folder / "c.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    rows = predict.predict_files(model_path, str(folder)).rows
    assert [(os.path.basename(r["path"]), r["status"]) for r in rows] == [
        ("a.dcm", "ok"), ("b.dcm", "ok"), ("c.dcm", "unreadable")]


def test_cli_predict_end_to_end(model_path, mixed_folder, tmp_path, capsys):
    folder, _ = mixed_folder
    out = tmp_path / "out" / "predictions.csv"
    maps = tmp_path / "maps"
    status = cli.main(["predict", "--model", model_path, str(folder), "--out", str(out), "--gradcam", str(maps)])
    assert status == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "status", "predicted", "p_normal", "p_pneumonia", "gradcam", "error"]
    assert [r["status"] for r in rows] == ["unreadable", "ok", "ok", "ok", "skipped"]
    overlays = [r["gradcam"] for r in rows if r["status"] == "ok"]
    assert all(os.path.getsize(p) > 5_000 for p in overlays) and len(set(overlays)) == 3
    captured = capsys.readouterr()
    assert "5 file(s) seen, 3 image(s) classified" in captured.out and "1 unreadable, 1 skipped" in captured.out
    assert "a_corrupt.png" in captured.err and "notes.txt" in captured.err
    assert "strict=False" not in captured.err  # issue 25: predict names its own behaviour
    assert cli.main(["predict", "--model", model_path, str(folder / "a_corrupt.png"),
                     "--out", str(tmp_path / "none.csv")]) == 1
