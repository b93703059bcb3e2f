"""The clinical read-out: every figure written and linked, numbers fitted on validation only."""

import os
import re

import numpy as np
import pytest

from kdkeras import models
from kdkeras.evaluation import calibration, explain
from kdkeras.evaluation.fidelity import fidelity
from kdkeras.reporting.clinical import clinical_section
from kdkeras.stats import format_interval

CLASSES = ["normal", "pneumonia"]


def _logits(y, strength, noise, seed):
    rng = np.random.default_rng(seed)
    margin = strength * (2 * y - 1) + rng.normal(0, noise, len(y))
    return np.stack([-margin / 2, margin / 2], axis=1)


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    out = tmp_path_factory.mktemp("clinical")
    rng = np.random.default_rng(0)
    y_val = (rng.random(300) < 0.6).astype(int)
    y_test = (rng.random(200) < 0.6).astype(int)
    val = {name: _logits(y_val, 3.0 * k, 2.0 * k, k) for k, name in enumerate(["teacher", "student", "distilled"], 1)}
    test = {name: _logits(y_test, 3.0 * k, 2.0 * k, 10 + k) for k, name in enumerate(val, 1)}
    nets = {name: models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[4, 8])
            for name in val}
    split = rng.uniform(0, 255, (200, 28, 28, 1)).astype("float32")
    batches = [(split[i:i + 64], y_test[i:i + 64]) for i in range(0, 200, 64)]
    paths = {name: str(out / f"{name}.keras") for name in val}
    result = clinical_section(
        str(out / "figures"), task="binary-class", class_names=CLASSES, y_val=y_val, y_test=y_test,
        val_logits=val, test_logits=test, images=split[:6], models=nets, model_paths=paths,
        operating_point={"sensitivity": 0.95}, test_data=batches, report_dir=str(out),
    )
    return result, out, y_val, y_test, val, test, nets, split


def test_every_figure_is_written_and_linked(section):
    result, out, *_ = section
    names = sorted(os.path.basename(p) for p in result.figures)
    assert names == sorted([
        "teacher_reliability.png", "student_reliability.png", "distilled_reliability.png",
        "roc_operating_point.png", "precision_recall.png", "student_gradcam.png", "distilled_gradcam.png",
    ])
    text = "\n".join(result.markdown)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(os.path.basename(link) for link in links) == names
    assert all(os.path.getsize(out / link) > 5_000 for link in links)  # relative to report_dir


def test_numbers_are_fitted_on_validation_and_read_on_test(section):
    result, out, y_val, y_test, val, test, *_ = section
    for name in ("teacher", "student", "distilled"):
        m = result.metrics[name]
        t = calibration.fit_temperature(val[name], y_val, "binary-class")
        assert m["calibration"]["temperature"] == pytest.approx(t)
        assert m["calibration"]["test_after"]["nll"] == pytest.approx(
            calibration.nll(test[name], y_test, "binary-class", t))
        point = m["operating_point"]
        assert point["rule"] == {"sensitivity": 0.95}
        assert point["val"]["sensitivity"] >= 0.95
        assert point["test"]["tp"] + point["test"]["fn"] == int(y_test.sum())
        stored = calibration.load_calibration(out / f"{name}.keras")
        assert stored["threshold"] == pytest.approx(point["threshold"]) and stored["temperature"] == pytest.approx(t)
    assert "fidelity" not in result.metrics["teacher"]
    assert result.metrics["student"]["fidelity"] == fidelity(test["student"], test["teacher"])


def test_gradcam_agreement_covers_the_whole_test_split(section):
    result, _, _, y_test, _, _, nets, split = section
    expected = explain.gradcam_agreement(nets["teacher"], {"distilled": nets["distilled"]}, [(split, y_test)])
    agreement = result.metrics["distilled"]["gradcam_agreement"]
    assert agreement["images"] == 200 and agreement["n"] == expected["distilled"]["n"]
    assert agreement["pearson"] == pytest.approx(expected["distilled"]["pearson"], abs=1e-6)
    assert agreement["interval"]["low"] == pytest.approx(expected["distilled"]["interval"]["low"], abs=1e-6)
    assert "gradcam_agreement" not in result.metrics["teacher"]
    row = next(line for line in result.markdown if line.startswith("| distilled |") and "of 200" in line)
    assert format_interval(agreement["pearson"], agreement["interval"]) in row


def test_gradcam_agreement_refuses_a_test_split_that_is_not_the_runs(section, tmp_path):
    _, _, y_val, y_test, val, test, nets, split = section
    common = dict(task="binary-class", class_names=CLASSES, y_val=y_val, y_test=y_test, val_logits=val,
                  test_logits=test, models=nets)
    with pytest.raises(ValueError, match="differs from the saved test labels at images 0-199"):
        clinical_section(str(tmp_path), **common, test_data=[(split, 1 - y_test)])
    with pytest.raises(ValueError, match="has 100 images but the run saved 200 test labels"):
        clinical_section(str(tmp_path), **common, test_data=[(split[:100], y_test[:100])])
    without = clinical_section(str(tmp_path), **common)
    assert "gradcam_agreement" not in without.metrics["distilled"]
    assert any(line.startswith("Grad-CAM agreement not computed: it needs") for line in without.markdown)


def test_markdown_tables_have_one_row_per_model(section):
    result, *_ = section
    text = "\n".join(result.markdown)
    assert "not computed" not in text
    for heading in ("### Fidelity to the teacher", "### Calibration", "### Operating point", "### Where the models look"):
        assert heading in text
    assert "a sensitivity of 0.95" in text
    assert len([line for line in result.markdown if line.startswith("| distilled |")]) == 3


def test_multiclass_without_models_has_no_binary_or_gradcam_parts(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    logits = {"teacher": rng.normal(0, 1, (90, 3)), "student": rng.normal(0, 1, (90, 3))}
    result = clinical_section(str(tmp_path), task="multi-class", class_names=["a", "b", "c"], y_val=y, y_test=y,
                              val_logits=logits, test_logits=logits)
    assert sorted(os.path.basename(p) for p in result.figures) == ["student_reliability.png", "teacher_reliability.png"]
    assert "operating_point" not in result.metrics["student"] and "Operating point" not in "\n".join(result.markdown)
    with pytest.raises(ValueError, match="operating_point"):
        clinical_section(str(tmp_path), task="multi-class", class_names=["a", "b", "c"], y_val=y, y_test=y,
                         val_logits=logits, test_logits=logits, operating_point={"recall": 0.9})
