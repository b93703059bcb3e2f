"""Temperature scaling, the calibration file beside a model, reliability diagrams."""

import json

import numpy as np
import pytest
from scipy import special
from sklearn.metrics import log_loss

from kdkeras.evaluation import calibration
from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores
from kdkeras.files import ModelFileError
from kdkeras.reporting import figures_clinical


def _overconfident(n, seed, sharpen=4.0, classes=3):
    """Labels drawn from softmax(z): z is calibrated, `sharpen * z` is over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, classes))
    p = special.softmax(z, axis=1)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return sharpen * z, y


def test_nll_matches_sklearn_log_loss():
    logits, y = _overconfident(200, 0)
    for t in (1.0, 2.5):
        expected = log_loss(y, special.softmax(logits / t, axis=1), labels=[0, 1, 2])
        assert calibration.nll(logits, y, "multi-class", t) == pytest.approx(expected, rel=1e-9)


def test_binary_single_logit_and_multilabel_nll_are_bernoulli():
    z = np.array([[2.0], [-1.0], [0.5]])
    y = np.array([1, 0, 0])
    p = 1 / (1 + np.exp(-z[:, 0] / 2.0))
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert calibration.nll(z, y, "binary-class", 2.0) == pytest.approx(expected, rel=1e-12)
    assert calibration.nll(z.reshape(1, 3), y.reshape(1, 3), "multi-label", 2.0) == pytest.approx(expected)


def test_temperature_scaling_lowers_nll_and_keeps_accuracy_on_an_overconfident_model():
    val_logits, y_val = _overconfident(2000, 1)
    test_logits, y_test = _overconfident(2000, 2)
    t = calibration.fit_temperature(val_logits, y_val, "multi-class")
    assert t == pytest.approx(4.0, rel=0.1)  # the sharpening undone
    before = calibration.calibration_summary(test_logits, y_test, "multi-class")
    after = calibration.calibration_summary(test_logits, y_test, "multi-class", t)
    assert after["nll"] < before["nll"] - 0.1
    assert after["ece"] < before["ece"] / 2
    raw = classification_metrics(y_test, logits_to_scores(test_logits, "multi-class"), "multi-class")
    scaled = classification_metrics(y_test, logits_to_scores(test_logits / t, "multi-class"), "multi-class")
    assert scaled["acc"] == raw["acc"]


def test_fitted_temperature_is_the_minimum_of_a_fine_grid():
    logits, y = _overconfident(500, 3, sharpen=0.5, classes=2)  # under-confident: T < 1
    t = calibration.fit_temperature(logits, y, "binary-class")
    grid = np.exp(np.linspace(-3, 3, 6001))
    best = grid[np.argmin([calibration.nll(logits, y, "binary-class", g) for g in grid])]
    assert t < 1.0
    assert t == pytest.approx(best, rel=2e-3)


def test_fit_temperature_rejects_non_finite_logits():
    with pytest.raises(ValueError, match="finite validation logits"):
        calibration.fit_temperature(np.array([[np.nan, 1.0]]), [0])


def test_calibration_file_round_trip_and_damage(tmp_path):
    model = tmp_path / "distilled.keras"
    path = calibration.save_calibration(model, 1.7, threshold=0.25, operating_point={"sensitivity": 0.95},
                                        positive_class="pneumonia", n=100)
    assert path == str(tmp_path / "distilled_calibration.json")
    loaded = calibration.load_calibration(model)
    assert loaded["temperature"] == 1.7 and loaded["threshold"] == 0.25
    assert loaded["operating_point"] == {"sensitivity": 0.95} and loaded["positive_class"] == "pneumonia"
    assert calibration.load_calibration(tmp_path / "student.keras") is None
    (tmp_path / "distilled_calibration.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ModelFileError, match=r"distilled_calibration.json: temperature = -1.0 must be a number in"):
        calibration.load_calibration(model)
    (tmp_path / "distilled_calibration.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="delete it"):
        calibration.load_calibration(model)


def test_reliability_bins_reproduce_the_ece_of_kdkeras_metrics():
    logits, y = _overconfident(700, 4)
    scores = logits_to_scores(logits, "multi-class")
    confidence, accuracy, count = calibration.reliability_bins(y, scores, "multi-class")
    shown = count > 0
    ece = np.sum(count[shown] / count.sum() * np.abs(accuracy[shown] - confidence[shown]))
    assert ece == pytest.approx(classification_metrics(y, scores, "multi-class")["ece"], rel=1e-12)


def test_reliability_diagram_is_written(tmp_path):
    logits, y = _overconfident(300, 5, classes=2)
    raw = logits_to_scores(logits, "binary-class")
    scaled = logits_to_scores(logits / 4, "binary-class")
    path = figures_clinical.plot_reliability_diagram(
        {"raw": (y, raw), "T = 4": (y, scaled)}, "binary-class", str(tmp_path / "rel.png"))
    assert (tmp_path / "rel.png").stat().st_size > 10_000 and path.endswith("rel.png")


def test_reliability_diagram_draws_the_bins_and_the_ece():
    logits, y = _overconfident(300, 5, classes=2)
    raw = logits_to_scores(logits, "binary-class")
    scaled = logits_to_scores(logits / 4, "binary-class")
    fig = figures_clinical.reliability_diagram_figure({"raw": (y, raw), "T = 4": (y, scaled)}, "binary-class")
    top, bottom = fig.axes
    for line, scores in zip(top.get_lines()[1:], (raw, scaled)):
        confidence, accuracy, count = calibration.reliability_bins(y, scores, "binary-class")
        np.testing.assert_allclose(line.get_xdata(), confidence[count > 0])
        np.testing.assert_allclose(line.get_ydata(), accuracy[count > 0])
    legend = [text.get_text() for text in top.get_legend().get_texts()]
    ece = classification_metrics(y, raw, "binary-class")["ece"]
    assert legend == ["perfect calibration", f"raw (ECE = {ece:.3f})",
                      f"T = 4 (ECE = {classification_metrics(y, scaled, 'binary-class')['ece']:.3f})"]
    shares = [patch.get_height() for patch in bottom.patches[:calibration.ECE_BINS]]
    assert sum(shares) == pytest.approx(1.0)  # the lower panel: each bin's share of the examples
    assert top.get_ylabel() == "Accuracy in the bin"



@pytest.mark.parametrize("temperature", [1e39, 1e-300, 200.0, 0.005])
def test_calibration_temperatures_outside_the_fitted_range_are_refused(tmp_path, temperature):
    # Issue 26 defect 6: T = 1e39 made every prediction 0.5/0.5 and export reported success.
    model = tmp_path / "distilled.keras"
    (tmp_path / "distilled_calibration.json").write_text(json.dumps({"temperature": temperature}))
    with pytest.raises(ModelFileError, match=r"distilled_calibration.json: temperature = .* must be a number in "
                                             r"\[0.006738, 148.4\].*run `kdkeras report`"):
        calibration.load_calibration(model)
    with pytest.raises(ValueError, match=r"must be a number in \[0.006738, 148.4\]"):
        calibration.save_calibration(model, temperature)
    low, high = calibration.TEMPERATURE_RANGE
    for t in (low, high):  # what fit_temperature can return is readable
        calibration.save_calibration(model, t)
        assert calibration.load_calibration(model)["temperature"] == pytest.approx(t)


def test_fit_warnings_name_small_classes_and_a_temperature_at_its_bound():
    y = np.array([0] * 40 + [1] * 12)
    with pytest.warns(calibration.CalibrationWarning, match=r"fewer than 30 of a class \(pneumonia 12\)"):
        found = calibration.fit_warnings(y, "binary-class", ["normal", "pneumonia"], temperature=1.3)
    assert len(found) == 1
    separable = np.where(y[:, None] == 1, [[-2.0, 2.0]], [[2.0, -2.0]])
    t = calibration.fit_temperature(separable, y, "binary-class")
    assert t == pytest.approx(calibration.TEMPERATURE_RANGE[0], rel=1e-3)
    with pytest.warns(calibration.CalibrationWarning):
        found = calibration.fit_warnings(np.r_[y, [1] * 30], "binary-class", ["normal", "pneumonia"], temperature=t)
    assert len(found) == 1 and "at the bound of its search" in found[0]
    assert calibration.fit_warnings(np.r_[y, [1] * 30], "binary-class", temperature=1.5) == []


def test_report_saves_and_shows_the_warnings_of_a_small_validation_split(tmp_path):
    # Issue 25 item 4: a 22-image validation split fitted T = 148.4 and a threshold without a word.
    from kdkeras.reporting.clinical import clinical_section

    rng = np.random.default_rng(0)
    y_val, y_test = np.array([0] * 14 + [1] * 8), (rng.random(60) < 0.5).astype(int)
    val = {"student": rng.normal(size=(22, 2))}
    test = {"student": rng.normal(size=(60, 2))}
    with pytest.warns(calibration.CalibrationWarning):
        result = clinical_section(
            str(tmp_path / "figures"), task="binary-class", class_names=["normal", "pneumonia"], y_val=y_val,
            y_test=y_test, val_logits=val, test_logits=test, model_paths={"student": str(tmp_path / "student.keras")},
            operating_point={"sensitivity": 0.95},
        )
    stored = calibration.load_calibration(tmp_path / "student.keras")
    assert any("fewer than 30 of a class (normal 14, pneumonia 8)" in w for w in stored["warnings"])
    text = "\n".join(result.markdown)
    assert "> **Warning (student):** fitted on 22 validation images with fewer than 30" in text
