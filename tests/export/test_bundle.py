"""The export bundle of a real tiny run: every file validated against the run it came from.

A module fixture runs the workflow end to end on a tiny config (teacher,
student, distill, report: the quickstart's phases at toy size), then
`kdkeras export` with every format, ONNX included. The tests check each file
of the bundle: `metadata.json` against its JSON Schema and the run's files,
the model card's sections and numbers against the metrics files, the
checklists' counts and sources, and the ONNX and TFLite outputs against the
Keras model's calibrated probabilities on the whole test split.

Tolerances: float32 formats (SavedModel, TFLite float32, ONNX) 1e-5 in
probability; int8 formats 0.05 (as tests/export/test_export.py).
"""

import hashlib
import json
import os

import numpy as np
import pytest
from scipy.special import softmax

from kdkeras import cli, export
from kdkeras.config import load_config
from kdkeras.export import bundle
from kdkeras.files import load_model
from kdkeras.reporting import checklist, model_card
from kdkeras.workflow import training

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # trains three tiny phases and exports five formats

TINY = """
name = "tiny"
description = "tiny bundle run"
seed = 3

[data]
loader = "medmnist"
flag = "pneumoniamnist"
root = "@bundled"
batch_size = 32
limit = 96

[teacher]
model = "cnn_small"
options = { filters = [8, 16] }
epochs = 2

[student]
model = "cnn_small"
options = { filters = [4, 8] }
epochs = 1

[distill]
epochs = 2
alpha = 0.2
temperature = 3.0
"""
FLOAT_TOLERANCE = 1e-5
INT8_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    config = root / "tiny.toml"
    config.write_text(TINY)
    common = ["--config", str(config), "--runs-dir", str(root / "runs")]
    for phase in ("teacher", "student", "distill"):
        assert cli.main([phase, *common, "--quiet"]) == 0
    assert cli.main(["report", *common]) == 0
    assert cli.main(["export", *common, "--formats", *export.FORMATS, "--representative-images", "64"]) == 0
    folder = root / "runs" / "tiny"
    return config, folder, folder / "export"


def _json(path):
    return json.loads(path.read_text())


def test_the_bundle_holds_every_file(run):
    _, _, out = run
    expected = {*export.FILENAMES.values(), export.TABLE_JSON, export.TABLE_MD, export.CALIBRATION,
                *export.BUNDLE_FILES}
    assert set(os.listdir(out)) == expected


def test_metadata_follows_its_schema_and_the_run(run):
    _, folder, out = run
    metadata = _json(out / export.METADATA)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(metadata, export.METADATA_SCHEMA)
    image = metadata["network_data_format"]["inputs"]["image"]
    assert (image["spatial_shape"], image["num_channels"], image["value_range"]) == ([28, 28], 1, [0, 255])
    assert image["modality"] == "chest X-ray" and metadata["data_license"] == "CC BY 4.0"
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert pred["channel_def"] == {"0": "normal", "1": "pneumonia"} and pred["value_range"] == [0, 1]
    stored = _json(folder / "distilled_calibration.json")
    assert metadata["calibration"]["calibrated"] is True
    assert metadata["calibration"]["temperature"] == stored["temperature"]
    assert metadata["calibration"]["threshold"] == stored["threshold"]
    assert metadata["model_uid"] == bundle.stable_uid(str(folder / "distilled.keras"))
    date = _json(folder / "distilled_metrics.json")["run"]["date"]
    assert metadata["version"] == date[:10].replace("-", ".")
    assert any("InputPreprocessing mode 'unit'" in step for step in metadata["preprocessing"])
    assert metadata["authors"] == model_card.TODO
    for name, entry in metadata["files"].items():
        if os.path.isfile(out / name):
            assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert entry["size_bytes"] == _json(out / export.TABLE_JSON)["rows"][
            [r["path"] for r in _json(out / export.TABLE_JSON)["rows"]].index(name)]["size_bytes"]
    assert set(metadata["files"]) == set(export.FILENAMES.values())


def test_schema_rejects_a_broken_metadata_file(run):
    _, _, out = run
    jsonschema = pytest.importorskip("jsonschema")
    metadata = _json(out / export.METADATA)
    del metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    with pytest.raises(jsonschema.ValidationError, match="'spatial_shape' is a required property"):
        jsonschema.validate(metadata, export.METADATA_SCHEMA)


def test_model_card_has_every_section_and_the_run_numbers(run):
    _, folder, out = run
    card = _json(out / "model_card.json")
    assert [s["id"] for s in card["sections"]] == [key for key, _ in model_card.SECTIONS]
    markdown = (out / "model_card.md").read_text()
    for _, title in model_card.SECTIONS:
        assert f"## {title}" in markdown
    rows = next(s for s in card["sections"] if s["id"] == "quantitative_analyses")["metrics"]
    for model, name in (("distilled", "distilled"), ("teacher", "teacher"), ("student (no distillation)", "student")):
        metrics = _json(folder / f"{name}_metrics.json")
        for key in ("acc", "auc", "balanced_acc"):
            (row,) = [r for r in rows if r["model"] == model and r["metric"] == key]
            interval = metrics["intervals"][key]
            assert (row["value"], row["low"], row["high"]) == (metrics[key], interval["low"], interval["high"])
            assert f"| {model} | {dict(model_card.CARD_METRICS)[key]} | {metrics[key]:.4f} | " \
                   f"{interval['low']:.4f} to {interval['high']:.4f} |" in markdown
    fields = {f["name"]: f for s in card["sections"] for f in s["fields"]}
    assert all(f["source"] for f in fields.values() if f["value"] != model_card.TODO)  # every answer says whence
    assert fields["Primary intended uses"]["value"] == model_card.TODO
    assert fields["Risks and harms, mitigations"]["value"] == model_card.TODO
    temperature = _json(folder / "distilled_calibration.json")["temperature"]
    assert f"T = {temperature:.4f} fitted on validation" in fields["Calibration"]["value"]
    assert fields["Distillation"]["value"] == "objective hinton, loss knowledge_distillation, alpha 0.2, temperature 3.0"
    clinical = _json(folder / "clinical.json")["distilled"]["operating_point"]
    val, test = clinical["val"]["sensitivity"], clinical["test"]["sensitivity"]
    assert fields["Validation/test shift at the operating point"]["value"].startswith(
        f"sensitivity {val:.4f} on validation, {test:.4f} on test ({test - val:+.4f})")
    assert fields["Validation/test shift at the operating point"]["source"] == "clinical.json"


def test_checklists_answer_what_the_run_knows(run):
    _, folder, out = run
    result = _json(out / "checklist.json")
    tripod, claim = result["tripod_ai"], result["claim"]
    assert len({row["item"].rstrip("abcdef") for row in tripod["items"]}) == 27 and len(claim["items"]) == 42
    by_item = {row["item"]: row for row in tripod["items"]}
    metrics = _json(folder / "distilled_metrics.json")
    assert f"acc {metrics['acc']:.4f} (95% CI" in by_item["23"]["answer"]
    assert by_item["23"]["source"] == "distilled_metrics.json" and by_item["23"]["status"] == "answered"
    assert by_item["17"]["answer"] == model_card.TODO and by_item["17"]["source"] is None
    for part in (tripod, claim):
        answered = [row for row in part["items"] if row["status"] == "answered"]
        assert part["answered"] == len(answered) and all(row["source"] for row in answered)
    assert 10 <= tripod["answered"] < 27 and 15 <= claim["answered"] < 42
    markdown = (out / "checklist.md").read_text()
    assert (f"## TRIPOD+AI: {tripod['answered']} of 32 entries answered from the run (27 items; item 18 has "
            "parts a-f)") in markdown and f"## CLAIM: {claim['answered']} of 42 entries answered" in markdown
    assert checklist.TRIPOD_AI_CITATION in markdown and checklist.CLAIM_CITATION in markdown


def test_checklist_command_writes_it_beside_the_model(run, capsys):
    config, folder, out = run
    assert cli.main(["checklist", "--config", str(config), "--runs-dir", str(folder.parent)]) == 0
    assert f"wrote {folder / 'checklist.md'}" in capsys.readouterr().out
    assert _json(folder / "checklist.json") == _json(out / "checklist.json")


def test_onnx_and_tflite_equal_the_keras_model_on_the_test_split(run):
    config, folder, out = run
    _, _, test, _ = training.load_data(load_config(str(config)))
    images = np.concatenate([batch[0].numpy() for batch in test])
    assert len(images) == 96
    temperature = _json(folder / "distilled_calibration.json")["temperature"]
    expected = softmax(load_model(str(folder / "distilled.keras"))(images).numpy().astype(np.float64) / temperature,
                       axis=1)
    for runner, tolerance in ((export.ONNXModel(str(out / "model.onnx")), FLOAT_TOLERANCE),
                              (export.TFLiteModel(str(out / "model_float32.tflite")), FLOAT_TOLERANCE),
                              (export.TFLiteModel(str(out / "model_int8.tflite")), INT8_TOLERANCE)):
        np.testing.assert_allclose(runner(images), expected, atol=tolerance)
    table = _json(out / export.TABLE_JSON)
    onnx_row = next(row for row in table["rows"] if row["format"] == "onnx")
    assert onnx_row["agreement"] == 1.0 and onnx_row["max_abs_diff"] < FLOAT_TOLERANCE
    assert onnx_row["acc"] == table["rows"][0]["acc"]
    assert "| onnx | `model.onnx` |" in (out / export.TABLE_MD).read_text()
