"""`kdkeras predict --dicom-sr`: one Comprehensive SR per DICOM study, read back with pydicom."""

import csv
import os
import sys

import numpy as np
import pytest
from PIL import Image

from kdkeras import cli, models, predict, runs
from kdkeras.evaluation import calibration
from kdkeras.export import bundle, dicom_sr

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

CLASSES = ["normal", "pneumonia"]
DATE = "2026-12-07T03:01:11+00:00"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(11)
    folder = tmp_path_factory.mktemp("srrun")
    model = models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[4, 8])
    model.save(folder / "distilled.keras")
    run = runs.RunRecord(phase="distill", overrides={}, limit=None, epochs=1, epochs_run=1, best_epoch=1,
                         stopped_early=False, steps_per_epoch=1, train_images={"labeled": 64, "unlabeled": 0},
                         kdkeras_version="0.1.0", date=DATE)
    runs.save_metrics(folder / "distilled_metrics.json", runs.MetricsRecord(
        task="binary-class", per_class=[{"name": name} for name in CLASSES], run=run))
    calibration.save_calibration(str(folder / "distilled.keras"), 1.7, threshold=0.42,
                                 operating_point={"sensitivity": 0.9}, positive_class="pneumonia")
    return str(folder / "distilled.keras")


def _write_dicom(path, study, series, rows=32):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P1", "19700101", "O"
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20261207", "030000", "A1"
    ds.ReferringPhysicianName, ds.Modality = "", "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, rows, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(rows * rows) % 4096).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.fixture
def studies(tmp_path):
    from pydicom.uid import generate_uid

    folder = tmp_path / "in"
    folder.mkdir()
    study_a, study_b = generate_uid(), generate_uid()
    sources = {
        "a1.dcm": _write_dicom(str(folder / "a1.dcm"), study_a, generate_uid()),
        "a2.dcm": _write_dicom(str(folder / "a2.dcm"), study_a, generate_uid(), rows=40),
        "b1.dcm": _write_dicom(str(folder / "b1.dcm"), study_b, generate_uid()),
    }
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(folder / "plain.png")
    return folder, sources, (study_a, study_b)


def _leaves(item):
    """Every content item under `item`, depth first."""
    for child in getattr(item, "ContentSequence", []):
        yield child
        yield from _leaves(child)


def test_one_unverified_sr_per_study_with_the_csv_numbers(model_path, studies, tmp_path):
    folder, sources, (study_a, study_b) = studies
    result = predict.predict_files(model_path, str(folder))
    written = dicom_sr.write_reports(result, model_path, tmp_path / "sr")
    assert [os.path.basename(p) for p in written] == [f"sr_{study_a}.dcm", f"sr_{study_b}.dcm"]
    rows = {os.path.basename(row["path"]): row for row in result.readable}
    assert set(rows) == {"a1.dcm", "a2.dcm", "b1.dcm", "plain.png"}  # the PNG stays in the CSV only
    uid = bundle.stable_uid(model_path)
    for path, names in zip(written, (["a1.dcm", "a2.dcm"], ["b1.dcm"])):
        sr = pydicom.dcmread(path)
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
        assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "PARTIAL"
        assert sr.StudyInstanceUID == sources[names[0]].StudyInstanceUID and sr.PatientID == "P1"
        # highdicom adds itself as equipment too; kdkeras's entry names the model.
        (equipment,) = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "kdkeras"]
        assert (equipment.Manufacturer, equipment.DeviceUID) == ("kdkeras", uid)
        assert equipment.ManufacturerModelName.endswith("distilled.keras") and "2026.12.07" in equipment.SoftwareVersions
        texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
                 for item in _leaves(sr) if item.ValueType == "TEXT"}
        assert texts["Algorithm Version"] == "2026.12.07" and f"model UID {uid}" in texts["Algorithm Parameters"]
        assert texts["Comment"] == dicom_sr.CAUTION and "Not for diagnostic use" in texts["Comment"]
        findings = [item for item in sr.ContentSequence if item.ValueType == "CONTAINER"]
        assert len(findings) == len(names)
        for finding, name in zip(findings, names):
            row = rows[name]
            values = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in finding.ContentSequence}
            assert values["Predicted class"].ConceptCodeSequence[0].CodeMeaning == row["predicted"]
            number = {key: float(item.MeasuredValueSequence[0].NumericValue) for key, item in values.items()
                      if item.ValueType == "NUM"}
            assert number["Calibrated probability of the predicted class"] == pytest.approx(
                float(row[f"p_{row['predicted']}"]), abs=1e-6)
            assert number["Calibrated probability of pneumonia"] == pytest.approx(float(row["p_pneumonia"]), abs=1e-6)
            assert number["Decision threshold for pneumonia"] == 0.42
            (reference,) = values["Source of Measurement"].ReferencedSOPSequence
            assert reference.ReferencedSOPInstanceUID == sources[name].SOPInstanceUID


def test_the_model_uid_is_stable_and_names_the_file(model_path, tmp_path):
    assert bundle.stable_uid(model_path) == bundle.stable_uid(model_path)
    assert bundle.stable_uid(model_path).startswith("2.25.") and len(bundle.stable_uid(model_path)) <= 64
    other = tmp_path / "other.keras"
    with open(model_path, "rb") as f:
        other.write_bytes(f.read() + b"\0")
    assert bundle.stable_uid(str(other)) != bundle.stable_uid(model_path)


def test_cli_writes_srs_beside_the_csv(model_path, studies, tmp_path, capsys):
    folder, _, (study_a, _) = studies
    out = tmp_path / "predictions.csv"
    code = cli.main(["predict", "--model", model_path, str(folder), "--out", str(out),
                     "--dicom-sr", str(tmp_path / "sr")])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'sr' / f'sr_{study_a}.dcm'}" in printed
    assert sorted(os.listdir(tmp_path / "sr")) == sorted(f for f in os.listdir(tmp_path / "sr") if f.startswith("sr_"))
    assert len(os.listdir(tmp_path / "sr")) == 2
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_missing_highdicom_says_what_to_install(model_path, studies, tmp_path, monkeypatch):
    folder, _, _ = studies
    result = predict.predict_files(model_path, str(folder))
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ImportError, match=r"--dicom-sr needs highdicom and pydicom: pip install 'kdkeras\[dicom\]'"):
        dicom_sr.write_reports(result, model_path, tmp_path / "sr")
    assert not (tmp_path / "sr").exists()


def test_dicom_inside_an_archive_is_named_not_reported(model_path, studies, tmp_path):
    import zipfile

    folder, _, _ = studies
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "b1.dcm", "inner/b1.dcm")
    result = predict.predict_files(model_path, [str(archive), str(folder / "a1.dcm")])
    assert [row["status"] for row in result.rows] == ["ok", "ok"]
    lines = []
    written = dicom_sr.write_reports(result, model_path, tmp_path / "sr", log=lines.append)
    assert len(written) == 1 and len(lines) == 1
    assert lines[0].startswith("[dicom-sr] no SR for ") and "b1.dcm: it was read from an archive" in lines[0]
