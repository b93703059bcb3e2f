"""Thresholds chosen on validation for a target, rates read at them, ROC and PR figures."""

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from kdkeras.evaluation import operating_point as op
from kdkeras.reporting import figures_clinical


def _scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * (2 * y - 1))))
    return y, p


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_sensitivity_target_is_met_on_validation_by_the_most_specific_threshold(target):
    y, p = _scores()
    t = op.choose_threshold(y, p, sensitivity=target)
    at = op.rates_at_threshold(y, p, t)
    assert at["sensitivity"] >= target
    higher = np.unique(p[p > t])
    # Any higher threshold misses the target: t is the most specific one that meets it.
    assert all(op.rates_at_threshold(y, p, h)["sensitivity"] < target for h in higher)


def test_specificity_target_is_met_by_the_most_sensitive_threshold():
    y, p = _scores(seed=1)
    t = op.choose_threshold(y, p, specificity=0.9)
    assert op.rates_at_threshold(y, p, t)["specificity"] >= 0.9
    lower = np.unique(p[p < t])
    assert op.rates_at_threshold(y, p, lower.max())["specificity"] < 0.9


def test_youden_threshold_maximises_j_over_every_candidate():
    y, p = _scores(seed=2)
    t = op.choose_threshold(y, p, youden=True)

    def j(threshold):
        at = op.rates_at_threshold(y, p, threshold)
        return at["sensitivity"] + at["specificity"] - 1

    assert j(t) == pytest.approx(max(j(c) for c in np.unique(p)))


def test_rates_match_sklearn_confusion_matrix():
    y, p = _scores(seed=3)
    at = op.rates_at_threshold(y, p, 0.6)
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.6).astype(int)).ravel()
    assert (at["tn"], at["fp"], at["fn"], at["tp"]) == (tn, fp, fn, tp)
    assert at["sensitivity"] == tp / (tp + fn) and at["specificity"] == tn / (tn + fp)
    assert at["ppv"] == tp / (tp + fp) and at["npv"] == tn / (tn + fn)


def test_unreachable_specificity_predicts_nothing_positive():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.2, 0.1])  # the top score is a negative
    t = op.choose_threshold(y, p, specificity=1.0)
    assert t > 0.9 and op.rates_at_threshold(y, p, t)["tp"] == 0


@pytest.mark.parametrize("bad, match", [
    ({"sensitivity": 1.5}, r"in \(0, 1\]"),
    ({"sensitivity": 0.9, "specificity": 0.9}, "one of"),
    ({"recall": 0.9}, "one of"),
    ({"youden": 1}, "youden = true"),
])
def test_bad_operating_points_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        op.check_operating_point(bad)


def test_one_class_validation_split_is_refused():
    with pytest.raises(ValueError, match="one class only"):
        op.choose_threshold([1, 1], [0.2, 0.7], sensitivity=0.9)


def test_figures_are_written(tmp_path):
    y, p = _scores(seed=4)
    t = op.choose_threshold(y, p, sensitivity=0.95)
    figures_clinical.plot_roc_operating_points({"a": (y, p, t), "b": (y, p ** 2, None)}, str(tmp_path / "roc.png"))
    figures_clinical.plot_precision_recall({"a": (y, p)}, str(tmp_path / "pr.png"))
    assert (tmp_path / "roc.png").stat().st_size > 10_000 and (tmp_path / "pr.png").stat().st_size > 10_000


def test_roc_figure_marks_the_operating_point_at_its_rates():
    y, p = _scores(seed=4)
    t = op.choose_threshold(y, p, sensitivity=0.95)
    (tn, fp), (fn, tp) = confusion_matrix(y, p >= t)
    sensitivity, specificity = tp / (tp + fn), tn / (tn + fp)
    (ax,) = figures_clinical.roc_operating_points_figure({"a": (y, p, t), "b": (y, p ** 2, None)}).get_axes()
    lines = {line.get_label(): line for line in ax.get_lines()}
    point_label = f"  p >= {t:.3f}: sens {sensitivity:.3f}, spec {specificity:.3f}"
    assert list(lines) == [f"a (AUC = {roc_auc_score(y, p):.3f})", point_label,
                           f"b (AUC = {roc_auc_score(y, p):.3f})", "chance"]  # p**2: same ranking
    point = lines[point_label]
    assert point.get_marker() == "o"
    np.testing.assert_allclose(point.get_xydata(), [[1 - specificity, sensitivity]])
    fpr, tpr, _ = roc_curve(y, p)
    np.testing.assert_array_equal(lines[f"a (AUC = {roc_auc_score(y, p):.3f})"].get_xydata(), np.c_[fpr, tpr])
    assert [text.get_text() for text in ax.get_legend().get_texts()] == list(lines)


def test_precision_recall_figure_draws_sklearns_curve_over_the_prevalence():
    y, p = _scores(seed=6)
    (ax,) = figures_clinical.precision_recall_figure({"a": (y, p)}).get_axes()
    curve, prevalence = ax.get_lines()
    precision, recall, _ = precision_recall_curve(y, p)
    np.testing.assert_array_equal(curve.get_xdata(), recall)
    np.testing.assert_array_equal(curve.get_ydata(), precision)
    assert curve.get_label() == f"a (AP = {average_precision_score(y, p):.3f})"
    assert prevalence.get_ydata()[0] == y.mean() and prevalence.get_label() == f"prevalence {y.mean():.3f}"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Recall (sensitivity)", "Precision (positive predictive value)")
