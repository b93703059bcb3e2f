"""Tests of kdkeras.stats against independent references and published values."""

import json
import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from kdkeras import stats
from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores

# Subarachnoid hemorrhage data (Turck et al. 2010, Intensive Care Medicine 36:107-115),
# the `aSAH` data set of the R package pROC: outcome (1 = "Poor"), WFNS grade and S100B
# of 113 patients. pROC's own tests (tests/testthat/test-roc.test.R, test-var.R,
# test-cov.R) publish its DeLong results on them, used below as worked values.
ASAH_POOR = (
    "00001101001011001011101000000000100110110000000001100010001010011101101111000110"
    "100000010000000000001111110001000"
)
ASAH_WFNS = (
    "11113254125255125225211112121134214541425511241125521251222151125214524414121421"
    "232421451154221113125225552445111"
)
ASAH_S100B = [
    0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71, 0.04,
    0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11, 0.13,
    0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46, 0.16,
    0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.1, 0.14,
    0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3, 0.03, 0.09, 0.04, 0.23, 0.7, 0.09, 0.27,
    0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08, 0.11, 0.33, 0.11, 0.28, 0.07,
    0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14, 0.1, 0.07, 0.04,
    0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5, 0.48,
]  # fmt: skip


def _binary_scores(n_negative, n_positive, separation, seed):
    """Binormal scores (N(0, 1) negatives, N(d, 1) positives) as probabilities.

    The probability is Phi(score), a monotone map, so the AUC is that of the
    normal scores: Phi(d / sqrt(2)).
    """
    rng = np.random.default_rng(seed)
    y_true = np.r_[np.zeros(n_negative, int), np.ones(n_positive, int)]
    positive = norm.cdf(rng.normal(size=y_true.size) + separation * y_true - separation / 2)
    return y_true, np.stack([1.0 - positive, positive], axis=1)


def _delong_1988(y_true, score_a, score_b):
    """DeLong, DeLong & Clarke-Pearson (1988), section 3, transcribed in O(m n) loops.

    psi(X, Y) = 1 if Y < X, 1/2 if Y = X, 0 if Y > X; V10(X_i) and V01(Y_j) are the
    structural components; S10 and S01 their covariance matrices (denominators m - 1
    and n - 1); var(theta_a - theta_b) = L (S10 / m + S01 / n) L', L = (1, -1).
    """
    xs = [[s for s, y in zip(scores, y_true) if y == 1] for scores in (score_a, score_b)]
    ys = [[s for s, y in zip(scores, y_true) if y == 0] for scores in (score_a, score_b)]
    m, n = len(xs[0]), len(ys[0])

    def psi(x, y):
        return 1.0 if y < x else 0.5 if y == x else 0.0

    v10 = [[sum(psi(x, y) for y in ys[r]) / n for x in xs[r]] for r in range(2)]
    v01 = [[sum(psi(x, y) for x in xs[r]) / m for y in ys[r]] for r in range(2)]
    theta = [sum(v) / m for v in v10]

    def covariance(v, r, s, size):
        mean_r, mean_s = sum(v[r]) / size, sum(v[s]) / size
        return sum((v[r][i] - mean_r) * (v[s][i] - mean_s) for i in range(size)) / (size - 1)

    s = [[covariance(v10, r, c, m) / m + covariance(v01, r, c, n) / n for c in range(2)]
         for r in range(2)]  # fmt: skip
    variance = s[0][0] + s[1][1] - 2.0 * s[0][1]
    z = (theta[0] - theta[1]) / math.sqrt(variance)
    return {
        "auc_a": theta[0],
        "auc_b": theta[1],
        "var_a": s[0][0],
        "var_b": s[1][1],
        "covariance": s[0][1],
        "variance": variance,
        "z": z,
        "p_value": math.erfc(abs(z) / math.sqrt(2.0)),
    }


def test_resampled_auc_and_rates_equal_sklearn_on_every_resample():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 150)
    # Rounded to create ties, which count 1/2 in the AUC.
    positive = np.round(np.clip(0.35 + 0.3 * y_true + rng.normal(0, 0.2, 150), 0, 1), 1)
    y_score = np.stack([1.0 - positive, positive], axis=1)
    counts = np.vstack(
        [np.ones(150, np.int32), stats.stratified_resample_counts(y_true, 5, seed=1)]
    )
    samples = stats.resampled_metrics(y_true, y_score, "binary-class", counts)
    for b, row in enumerate(counts):
        index = np.repeat(np.arange(150), row)
        y, predicted = y_true[index], (positive[index] > 0.5).astype(int)
        assert samples["auc"][b] == pytest.approx(roc_auc_score(y, positive[index]), abs=1e-12)
        assert samples["acc"][b] == pytest.approx(np.mean(predicted == y), abs=1e-12)
        assert samples["balanced_acc"][b] == pytest.approx(
            balanced_accuracy_score(y, predicted), abs=1e-12
        )
        assert samples["sensitivity"][b] == pytest.approx(recall_score(y, predicted), abs=1e-12)
        assert samples["specificity"][b] == pytest.approx(
            recall_score(y, predicted, pos_label=0), abs=1e-12
        )


def test_resampled_multi_class_auc_equals_sklearn_one_vs_rest():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 120)
    logits = np.round(rng.normal(size=(120, 4)) + 1.5 * np.eye(4)[y_true], 1)
    y_score = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    counts = stats.stratified_resample_counts(y_true, 3, seed=2)
    samples = stats.resampled_metrics(
        y_true, y_score, "multi-class", counts, class_names=["a", "b", "c", "d"]
    )
    for b, row in enumerate(counts):
        index = np.repeat(np.arange(120), row)
        expected = roc_auc_score(y_true[index], y_score[index], multi_class="ovr", average="macro")
        assert samples["auc"][b] == pytest.approx(expected, abs=1e-12)
        recall = recall_score(y_true[index], y_score[index].argmax(axis=1), average=None)
        got = [samples[f"recall[{name}]"][b] for name in "abcd"]
        assert got == pytest.approx(recall, abs=1e-12)


def test_stratified_resamples_keep_class_counts_and_repeat_with_the_seed():
    strata = np.array([2, 0, 2, 1, 2, 0, 2, 2, 1, 2])
    counts = stats.stratified_resample_counts(strata, 500, seed=3)
    assert counts.shape == (500, 10)
    for k, size in zip((0, 1, 2), (2, 2, 6)):
        assert (counts[:, strata == k].sum(axis=1) == size).all()
    # A bootstrap, not the identity: each example is drawn 0 to n_k times, once on average.
    assert counts[:, strata == 2].max() > 1
    assert counts.mean(axis=0) == pytest.approx(np.ones(10), abs=0.15)
    np.testing.assert_array_equal(counts, stats.stratified_resample_counts(strata, 500, seed=3))
    assert not np.array_equal(counts, stats.stratified_resample_counts(strata, 500, seed=4))


def test_multi_label_resamples_keep_every_label_count():
    rng = np.random.default_rng(4)
    y_true = (rng.random((80, 3)) < 0.3).astype(int)
    y_score = np.clip(0.2 + 0.5 * y_true + rng.normal(0, 0.2, (80, 3)), 0, 1)
    intervals = stats.bootstrap_intervals(y_true, y_score, "multi-label", n_resamples=300)
    assert set(intervals) == {"acc", "auc", "balanced_acc"}
    strata = np.unique(y_true, axis=0, return_inverse=True)[1].reshape(-1)
    counts = stats.stratified_resample_counts(strata, 300, seed=0)
    assert ((counts @ y_true) == y_true.sum(axis=0)).all()


def test_interval_covers_the_true_auc_and_has_the_delong_width():
    # d = 1: true AUC = Phi(1 / sqrt(2)) = 0.7602.
    true_auc = norm.cdf(1.0 / math.sqrt(2.0))
    y_true, y_score = _binary_scores(2000, 2000, 1.0, seed=5)
    interval = stats.bootstrap_intervals(y_true, y_score, "binary-class")["auc"]
    assert interval["low"] < true_auc < interval["high"]
    # The width agrees with DeLong's asymptotic standard error.
    se = math.sqrt(stats.delong_test(y_true, y_score[:, 1], y_score[:, 1] ** 2)["var_a"])
    width = interval["high"] - interval["low"]
    assert width == pytest.approx(2 * norm.ppf(0.975) * se, rel=0.1)


def test_interval_width_shrinks_as_one_over_root_n():
    def widths(n):
        y_true, y_score = _binary_scores(n, n, 1.0, seed=6)
        intervals = stats.bootstrap_intervals(y_true, y_score, "binary-class", n_resamples=1000)
        return np.array([intervals[m]["high"] - intervals[m]["low"] for m in ("acc", "auc")])

    # Four times the examples, half the width (1 / sqrt(4)).
    np.testing.assert_allclose(widths(200) / widths(800), [2.0, 2.0], rtol=0.2)


def test_accuracy_interval_matches_the_stratified_binomial_error():
    y_true, y_score = _binary_scores(1500, 2500, 1.5, seed=7)
    interval = stats.bootstrap_intervals(y_true, y_score, "binary-class")["acc"]
    # Stratified resampling: var(ACC) = sum_k (n_k / n)^2 r_k (1 - r_k) / n_k, r_k the recall.
    correct = (y_score[:, 1] > 0.5) == y_true
    n = y_true.size
    variance = sum(
        (np.sum(y_true == k) / n) ** 2 * np.var(correct[y_true == k]) / np.sum(y_true == k)
        for k in (0, 1)
    )
    width = interval["high"] - interval["low"]
    assert width == pytest.approx(2 * norm.ppf(0.975) * math.sqrt(variance), rel=0.1)


def test_intervals_are_none_where_a_metric_is_undefined():
    intervals = stats.bootstrap_intervals([1, 1, 1], [0.8, 0.3, 0.9], "binary-class")
    assert intervals["auc"] is None
    assert intervals["specificity"] is None
    assert intervals["sensitivity"]["low"] <= 2 / 3 <= intervals["sensitivity"]["high"]
    multi = stats.bootstrap_intervals(
        [0, 0, 2], np.eye(3)[[0, 1, 2]], "multi-class", class_names=["a", "b", "c"]
    )
    assert multi["auc"] is None and multi["recall[b]"] is None
    assert multi["recall[c]"] == {"low": 1.0, "high": 1.0, "confidence": 0.95, "resamples": 2000}


def test_delong_matches_the_1988_definition_with_ties():
    rng = np.random.default_rng(8)
    y_true = rng.integers(0, 2, 70)
    score_a = np.round(0.6 * y_true + rng.normal(0, 0.4, 70), 1)
    score_b = np.round(0.3 * y_true + 0.5 * score_a + rng.normal(0, 0.4, 70), 1)
    result = stats.delong_test(y_true, score_a, score_b)
    expected = _delong_1988(y_true, score_a, score_b)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert result["auc_a"] == pytest.approx(roc_auc_score(y_true, score_a), abs=1e-12)
    assert result["se"] == pytest.approx(math.sqrt(expected["variance"]), rel=1e-9)


def test_delong_reproduces_proc_published_values():
    y_true = np.array([int(c) for c in ASAH_POOR])
    wfns = np.array([float(c) for c in ASAH_WFNS])
    s100b = np.array(ASAH_S100B)
    result = stats.delong_test(y_true, wfns, s100b)
    # pROC: roc.test(r.wfns, r.s100b); var(r.wfns); var(r.s100b); cov(r.s100b, r.wfns).
    assert result["z"] == pytest.approx(2.20898359144091, abs=1e-6)
    assert result["p_value"] == pytest.approx(0.0271757822291882, abs=1e-6)
    assert result["var_a"] == pytest.approx(0.00146991470882363, abs=1e-9)
    assert result["var_b"] == pytest.approx(0.00266868245717244, abs=1e-9)
    assert result["covariance"] == pytest.approx(0.00119615567376754, abs=1e-9)
    # pROC's 95% interval of the difference: difference -+ 1.96 SE.
    half_width = norm.ppf(0.975) * result["se"]
    assert result["difference"] - half_width == pytest.approx(0.0104061769564846, abs=1e-6)
    assert result["difference"] + half_width == pytest.approx(0.174214419249478, abs=1e-6)


def test_delong_identical_models_and_bad_labels():
    result = stats.delong_test([0, 1, 0, 1], [0.1, 0.4, 0.35, 0.8], [0.1, 0.4, 0.35, 0.8])
    assert (result["difference"], result["z"], result["p_value"]) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        stats.delong_test([1, 1], [0.2, 0.3], [0.3, 0.4])
    with pytest.raises(ValueError, match="0/1 labels.*paired_bootstrap_difference"):
        stats.delong_test([0, 1, 2], [0.2, 0.3, 0.1], [0.3, 0.4, 0.2])
    with pytest.raises(ValueError, match="`score_b` must be 3 finite scores"):
        stats.delong_test([0, 1, 1], [0.2, 0.3, 0.1], [[0.3, 0.7]] * 3)


def test_mcnemar_exact_hand_computed():
    # A right / B wrong on 1 example, the reverse on 9, both right on 5, both wrong on 2.
    correct_a = [1] + [0] * 9 + [1] * 5 + [0] * 2
    correct_b = [0] + [1] * 9 + [1] * 5 + [0] * 2
    result = stats.mcnemar_exact(correct_a, correct_b)
    # Two-sided: 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024.
    assert result == {"b": 1, "c": 9, "n": 17, "p_value": 0.021484375}
    assert 2 * sum(math.comb(10, k) for k in range(2)) / 2**10 == 0.021484375
    assert stats.mcnemar_exact(correct_b, correct_a)["b"] == 9
    assert stats.mcnemar_exact([1, 0, 1, 0], [0, 1, 1, 0])["p_value"] == 1.0
    assert stats.mcnemar_exact([1, 1], [1, 1]) == {"b": 0, "c": 0, "n": 2, "p_value": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        stats.mcnemar_exact([1, 0], [1, 0, 1])


def test_paired_t_interval_hand_computed():
    differences = [0.016, 0.015, 0.043, -0.003, 0.008]
    result = stats.paired_t_interval(differences)
    # mean 0.0158; squared deviations sum to 0.0011548; t(0.975, df 4) = 2.7764451051977987.
    std = math.sqrt(0.0011548 / 4)
    half_width = 2.7764451051977987 * std / math.sqrt(5)
    assert result["mean"] == pytest.approx(0.0158, abs=1e-15)
    assert result["std"] == pytest.approx(std, rel=1e-12)
    assert result["low"] == pytest.approx(0.0158 - half_width, rel=1e-12)
    assert result["high"] == pytest.approx(0.0158 + half_width, rel=1e-12)
    assert (result["n"], result["n_positive"], result["confidence"]) == (5, 4, 0.95)
    assert stats.paired_t_interval([0.01])["low"] is None


def test_mean_std():
    assert stats.mean_std([0.90, 0.92, 0.94]) == pytest.approx(
        {"mean": 0.92, "std": 0.02, "n": 3}, rel=1e-12
    )
    assert stats.mean_std([0.9]) == {"mean": 0.9, "std": None, "n": 1}
    with pytest.raises(ValueError, match="one per seed"):
        stats.mean_std([])


def test_paired_bootstrap_uses_the_same_resamples_for_both_models():
    y_true, y_score = _binary_scores(150, 100, 1.0, seed=9)
    same = stats.paired_bootstrap_difference(y_true, y_score, y_score, "auc", "binary-class")
    # Different resamples for the two models would give a nonzero spread.
    assert (same["difference"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    noisy = np.clip(y_score[:, 1] + np.random.default_rng(1).normal(0, 0.2, 250), 0, 1)
    result = stats.paired_bootstrap_difference(y_true, y_score, noisy, "acc", "binary-class")
    assert result["value_a"] == np.mean((y_score[:, 1] > 0.5) == y_true)
    assert result["value_b"] == np.mean((noisy > 0.5) == y_true)
    assert result["difference"] == pytest.approx(result["value_a"] - result["value_b"])
    assert result["low"] < result["difference"] < result["high"]
    with pytest.raises(ValueError, match="Unknown metric 'f1'.*acc, auc, balanced_acc"):
        stats.paired_bootstrap_difference(y_true, y_score, y_score, "f1", "binary-class")


def _better_pair(seed=10):
    """A calibrated model and a noisier copy, on 624 test images."""
    y_true, y_score = _binary_scores(234, 390, 2.5, seed=seed)
    noise = np.random.default_rng(seed).normal(0, 0.25, y_true.size)
    worse = np.clip(y_score[:, 1] + noise, 0, 1)
    return y_true, y_score, np.stack([1 - worse, worse], axis=1)


def test_verdict_better():
    y_true, good, bad = _better_pair()
    result = stats.compare_models(
        y_true, good, bad, "binary-class", "the distilled student", "the student alone"
    )
    assert result["acc"]["significant"] and result["auc"]["significant"]
    assert result["verdict"].startswith("The distilled student is better than the student alone")
    points = 100 * result["acc"]["difference"]
    assert f"by +{points:.1f} ACC points (95% CI +" in result["verdict"]
    assert f"McNemar p {'< 0.001' if result['acc']['p_value'] < 0.001 else '='}" in (
        result["verdict"]
    )
    assert f"and by +{result['auc']['difference']:.3f} AUC (95% CI +" in result["verdict"]
    assert result["verdict"].endswith(")."), result["verdict"]
    json.dumps(result)


def test_verdict_worse():
    y_true, good, bad = _better_pair()
    result = stats.compare_models(y_true, bad, good, "binary-class", "the student", "the teacher")
    points = -100 * result["acc"]["difference"]
    assert result["verdict"].startswith(
        f"The student is worse than the teacher by {points:.1f} ACC points (95% CI -"
    )
    assert "DeLong p" in result["verdict"]


def test_verdict_no_significant_difference_exact_wording():
    y_true, good, _ = _better_pair()
    result = stats.compare_models(y_true, good, good, "binary-class", "model A", "model B")
    assert result["verdict"] == (
        "No significant difference in ACC (+0.0 points, 95% CI +0.0 to +0.0, McNemar p = 1.0) "
        "or AUC (+0.000, 95% CI +0.000 to +0.000, DeLong p = 1.0) between model A and model B."
    )


def test_verdict_needs_both_the_interval_and_the_test():
    y_true, good, bad = _better_pair()
    # The intervals exclude 0, but no p-value is below a tiny alpha.
    result = stats.compare_models(y_true, good, bad, "binary-class", "A", "B", alpha=1e-30)
    assert result["acc"]["low"] > 0 and result["auc"]["low"] > 0
    assert result["verdict"].startswith("No significant difference in ACC (+")


def test_verdict_better_accuracy_same_auc():
    # Cubing the probabilities keeps their order (same AUC) but under-calls positives.
    y_true, good, _ = _better_pair()
    cubed = good[:, 1] ** 3
    result = stats.compare_models(
        y_true, good, np.stack([1 - cubed, cubed], axis=1), "binary-class", "A", "B"
    )
    assert result["auc"]["difference"] == 0.0
    assert result["verdict"].startswith("A is better than B by +")
    assert result["verdict"].endswith(
        ", with no significant difference in AUC "
        "(+0.000, 95% CI +0.000 to +0.000, DeLong p = 1.0)."
    )


def test_compare_multi_class_has_no_delong():
    rng = np.random.default_rng(11)
    y_true = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + 2 * np.eye(3)[y_true]
    score = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = stats.compare_models(
        y_true, score, score[:, [1, 0, 2]], "multi-class", n_resamples=300
    )
    assert result["auc"]["delong"] is None and result["auc"]["test"] is None
    assert result["acc"]["mcnemar"]["n"] == 90
    assert "McNemar p" in result["verdict"] and "DeLong" not in result["verdict"]


def test_compare_models_rejects_mismatched_models():
    with pytest.raises(ValueError, match=r"`score_a` \(2, 2\) and `score_b` \(3, 2\)"):
        stats.compare_models([0, 1], [[0.6, 0.4]] * 2, [[0.6, 0.4]] * 3, "binary-class")
    with pytest.raises(ValueError, match="`score_b` must hold probabilities"):
        stats.compare_models([0, 1], [[0.6, 0.4]] * 2, [[2.0, -1.0]] * 2, "binary-class")


def test_format_interval():
    interval = {"low": 0.8904, "high": 0.9336, "confidence": 0.95, "resamples": 2000}
    assert stats.format_interval(0.9131, interval) == "0.913 (0.890-0.934)"
    assert stats.format_interval(0.004, {"low": -0.003, "high": 0.011}) == (
        "0.004 (-0.003 to 0.011)"
    )
    assert stats.format_interval(0.9131, None) == "0.913"
    assert stats.format_interval(None, None) == "n/a"


def test_bad_arguments():
    with pytest.raises(ValueError, match="`n_resamples` must be a positive integer"):
        stats.stratified_resample_counts([0, 1], 0)
    with pytest.raises(ValueError, match=r"`confidence` must be in \(0, 1\)"):
        stats.bootstrap_intervals([0, 1], [0.2, 0.7], "binary-class", confidence=95)
    with pytest.raises(ValueError, match=r"`counts` must have shape \(B, 2\)"):
        stats.resampled_metrics([0, 1], [0.2, 0.7], "binary-class", np.ones((3, 4)))


def test_paired_difference_is_none_where_the_metric_is_undefined():
    y_score = [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]
    auc = stats.paired_bootstrap_difference([1, 1, 1], y_score, y_score, "auc", "binary-class")
    assert auc is None
    result = stats.compare_models([1, 1, 1], y_score, y_score, "binary-class", "A", "B")
    assert result["auc"] is None and result["acc"]["p_value"] == 1.0
    assert result["verdict"] == (
        "No significant difference in ACC (+0.0 points, 95% CI +0.0 to +0.0, McNemar p = 1.0) "
        "between A and B."
    )


@pytest.mark.parametrize("task", ["binary-class", "multi-class", "multi-label"])
def test_whole_sample_equals_classification_metrics(task):
    rng = np.random.default_rng(12)
    n, columns = 200, 2 if task == "binary-class" else 4
    if task == "multi-label":
        y_true = (rng.random((n, columns)) < 0.4).astype(int)
        noise = rng.normal(0, 0.25, (n, columns))
        y_score = np.round(np.clip(0.3 + 0.4 * y_true + noise, 0, 1), 2)
    else:
        y_true = rng.integers(0, columns, n)
        y_score = logits_to_scores(np.round(rng.normal(size=(n, columns)), 1)
                                   + np.eye(columns)[y_true], task)  # fmt: skip
    expected = classification_metrics(y_true, y_score, task)
    whole = stats.resampled_metrics(y_true, y_score, task, np.ones((1, n), np.int32))
    for key in ("acc", "auc", "balanced_acc"):
        assert whole[key][0] == pytest.approx(expected[key], abs=1e-12), key
    if task == "multi-class":
        recalls = [whole[f"recall[{k}]"][0] for k in range(columns)]
        assert recalls == pytest.approx([c["recall"] for c in expected["per_class"]], abs=1e-12)


def test_decision_intervals_resample_each_class_apart():
    y = np.array([1] * 400 + [0] * 600)
    # Sensitivity 0.9 and specificity 0.8 by construction.
    positive = np.concatenate([np.arange(400) < 360, np.arange(600) >= 480])
    intervals = stats.decision_intervals(y, positive, seed=1)
    sens, spec = intervals["sensitivity"], intervals["specificity"]
    assert sens["low"] < 0.9 < sens["high"] and spec["low"] < 0.8 < spec["high"]
    # Binomial standard errors: sqrt(p (1 - p) / n); the 95% width is about 3.92 of them.
    assert (sens["high"] - sens["low"]) == pytest.approx(3.92 * np.sqrt(0.9 * 0.1 / 400), rel=0.15)
    assert (spec["high"] - spec["low"]) == pytest.approx(3.92 * np.sqrt(0.8 * 0.2 / 600), rel=0.15)
    assert stats.decision_intervals(np.zeros(5, int), np.ones(5, bool))["sensitivity"] is None
    with pytest.raises(ValueError, match="5 examples but `positive` has 4"):
        stats.decision_intervals(np.zeros(5, int), np.ones(4, bool))


def test_paired_t_p_value_is_the_paired_t_test():
    from scipy.stats import ttest_rel

    distilled = [0.929, 0.905, 0.929, 0.920, 0.910]
    alone = [0.859, 0.905, 0.907, 0.921, 0.933]
    result = stats.paired_t_interval(np.subtract(distilled, alone))
    assert result["p_value"] == pytest.approx(ttest_rel(distilled, alone).pvalue, rel=1e-12)
    # The test whose acceptance region is the interval: p < 0.05 exactly when it excludes 0.
    assert (result["p_value"] < 0.05) == (result["low"] > 0 or result["high"] < 0)
    assert stats.paired_t_interval([0.01])["p_value"] is None  # one seed: no test
    assert stats.paired_t_p_value(0.0, 0.0, 3) == 1.0
    assert stats.paired_t_p_value(0.02, 0.0, 3) is None  # zero spread: t is infinite, not evidence
    assert stats.paired_t_interval([0.86 - 0.80, 0.88 - 0.82, 0.90 - 0.84])["p_value"] is None  # rounding only


def test_a_tie_is_not_a_win():
    result = stats.paired_t_interval([0.016, 0.0, 0.043, -0.003, 0.0])
    assert (result["n"], result["n_positive"]) == (5, 2)


def test_holm_hand_computed():
    # Sorted 0.01 < 0.03 < 0.04: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04).
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], abs=1e-15)
    # Monotone in the sorted order, capped at 1; ties keep equal adjusted values.
    assert stats.holm([0.5, 0.001, 0.4, 0.001]) == pytest.approx([0.8, 0.004, 0.8, 0.004], abs=1e-15)
    # None (no test possible) counts as p = 1 in the family and stays None.
    assert stats.holm([0.01, None, 0.2]) == pytest.approx([0.03, None, 0.4], abs=1e-15)
    assert stats.holm([]) == []
    with pytest.raises(ValueError, match=r"numbers in \[0, 1\]"):
        stats.holm([0.2, 1.5])


def test_holm_equals_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(13).uniform(0, 0.2, 12) ** 2
    expected = multitest.multipletests(p, method="holm")[1]
    np.testing.assert_allclose(stats.holm(p), expected, rtol=0, atol=1e-15)


def test_family_verdicts_read_the_holm_adjusted_p():
    # The transfer benchmark of 2026-12-03 (BENCHMARKS.md): its six gains' unadjusted
    # p-values, recovered from their 95% t-intervals over 5 seeds, and Holm over the six.
    t = 2.7764451051977987
    gains = {"1% ACC": (5.6, 2.8), "1% AUC": (0.062, 0.025), "5% ACC": (9.5, 0.9),
             "5% AUC": (0.035, -0.013), "20% ACC": (2.6, 0.5), "20% AUC": (0.006, -0.004)}
    intervals = {label: {"mean": mean, "std": (mean - low) / t * math.sqrt(5), "n": 5, "low": low,
                         "high": 2 * mean - low, "n_positive": 5} for label, (mean, low) in gains.items()}
    rows = stats.family_rows(list(intervals.items()))
    adjusted = {row["label"]: row["p_adjusted"] for row in rows}
    assert adjusted == pytest.approx({"1% ACC": 0.031, "1% AUC": 0.048, "5% ACC": 0.112, "5% AUC": 0.226,
                                      "20% ACC": 0.105, "20% AUC": 0.226}, abs=0.0015)
    verdicts = {row["label"]: row["verdict"] for row in rows}
    # 5% and 20% ACC have unadjusted intervals above 0 but are not better once adjusted.
    assert intervals["5% ACC"]["low"] > 0 and rows[2]["p_value"] < 0.05
    assert verdicts == {"1% ACC": "better", "1% AUC": "better", "5% ACC": "no significant difference",
                        "5% AUC": "no significant difference", "20% ACC": "no significant difference",
                        "20% AUC": "no significant difference"}


def test_family_of_differences_p_values_and_untested_rows():
    rows = stats.family_rows([("gain", [0.05, 0.07, 0.04, 0.06]), ("loss", [-0.05, -0.07, -0.04, -0.06]),
                              ("p only", 0.001), ("one seed", [0.3])])
    assert [row["verdict"] for row in rows] == ["better", "worse", "significant difference", "not tested"]
    p = stats.paired_t_interval([0.05, 0.07, 0.04, 0.06])["p_value"]
    # Sorted p: 0.001, p, p (tie), None as 1: 4 * 0.001, then 3 * p for both ties.
    assert [row["p_adjusted"] for row in rows] == pytest.approx([3 * p, 3 * p, 0.004, None])
    assert rows[0]["low"] > 0 and rows[3]["low"] is None


def test_a_family_row_prints_as_one_table_cell():
    gain, one_seed = stats.family_rows([("gain", [0.05, 0.07, 0.04, 0.06]), ("one seed", [0.3])])
    t = stats.paired_t_interval([0.05, 0.07, 0.04, 0.06])
    assert stats.family.format_row_cell(gain, 100, 1) == (
        f"+5.5 ({100 * t['low']:+.1f} to {100 * t['high']:+.1f}; 4/4; Holm-adjusted "
        f"p = {2 * t['p_value']:.3f}): better")
    assert stats.family.format_row_cell(one_seed) == "+0.3000 (one seed)"


def test_delong_zero_standard_error_is_no_test_and_no_verdict():
    # A perfect model against constant scores: AUC 1 against 0.5, and every placement value
    # constant, so DeLong's variance is 0. That is no evidence, not "p < 0.001".
    y_true = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    result = stats.delong_test(y_true, perfect, np.full(6, 0.5))
    assert (result["difference"], result["se"]) == (0.5, 0.0)
    assert result["p_value"] is None and result["z"] is None
    compared = stats.compare_models(
        y_true, np.stack([1 - perfect, perfect], 1), np.full((6, 2), 0.5), "binary-class", "A", "B",
        n_resamples=200,
    )
    assert compared["auc"]["low"] == compared["auc"]["high"] == 0.5  # the interval alone excludes 0
    assert not compared["auc"]["significant"]
    assert "DeLong test undefined (zero standard error)" in compared["verdict"]
    assert "AUC (+0.500" in compared["verdict"] and "p < 0.001" not in compared["verdict"]


def test_binary_bootstrap_is_stratified():
    # A model that calls every image negative is right on exactly the 300 negatives: a
    # resample that keeps the class counts has ACC 0.75 and sensitivity 0, always.
    y_true = np.r_[np.zeros(300, int), np.ones(100, int)]
    always_negative = np.tile([0.9, 0.1], (400, 1))
    intervals = stats.bootstrap_intervals(y_true, always_negative, "binary-class", n_resamples=500)
    assert (intervals["acc"]["low"], intervals["acc"]["high"]) == (0.75, 0.75)
    assert (intervals["balanced_acc"]["low"], intervals["balanced_acc"]["high"]) == (0.5, 0.5)
    decisions = stats.decision_intervals(y_true, np.zeros(400, bool), n_resamples=500)
    assert decisions["sensitivity"]["high"] == 0.0 and decisions["specificity"]["low"] == 1.0
    paired = stats.paired_bootstrap_difference(
        y_true, always_negative, np.tile([0.1, 0.9], (400, 1)), "acc", "binary-class", n_resamples=500
    )
    assert (paired["low"], paired["high"]) == (0.5, 0.5)


def test_intervals_are_percentile_intervals_of_the_resamples():
    # A skewed bootstrap distribution (AUC near 1), where the basic interval
    # (2 * estimate - upper quantile, 2 * estimate - lower) is far from the percentile one.
    y_true, y_score = _binary_scores(60, 40, 3.0, seed=14)
    interval = stats.bootstrap_intervals(y_true, y_score, "binary-class", n_resamples=1000, seed=2)["auc"]
    counts = stats.stratified_resample_counts(y_true, 1000, seed=2)
    samples = stats.resampled_metrics(y_true, y_score, "binary-class", counts)["auc"]
    low, high = np.percentile(samples, [2.5, 97.5])
    assert (interval["low"], interval["high"]) == (low, high)
    estimate = roc_auc_score(y_true, y_score[:, 1])
    assert abs((2 * estimate - high) - low) > 0.005  # the basic interval would fail the line above
    paired = stats.paired_bootstrap_difference(
        y_true, y_score, np.full((100, 2), 0.5), "auc", "binary-class", n_resamples=1000, seed=2
    )
    assert (paired["low"], paired["high"]) == pytest.approx((low - 0.5, high - 0.5), abs=1e-12)


def test_multi_label_strata_are_the_rarest_label():
    y_true = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 1, 0]])
    # Positive counts 4, 4, 2: label 2 is the rarest, then 0 before 1 (stable order).
    np.testing.assert_array_equal(stats.bootstrap.strata(y_true, "multi-label"), [-1, 0, 0, 2, 2, 0, 1])


def _multi_label_data(seed, n=400, prevalence=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6), separation=1.5):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, len(prevalence))) < np.array(prevalence)).astype(int)
    return y_true, norm.cdf(rng.normal(size=y_true.shape) + separation * y_true - separation / 2)


@pytest.mark.slow
def test_multi_label_auc_interval_covers_at_its_level():
    # Six labels, 64 label sets on 400 images: stratifying on the label set made strata of
    # one or two images and covered 0.90. Every label's true AUC is Phi(1.5 / sqrt 2).
    true_auc = norm.cdf(1.5 / math.sqrt(2.0))
    covered = []
    for seed in range(300):
        y_true, y_score = _multi_label_data(seed)
        interval = stats.bootstrap_intervals(y_true, y_score, "multi-label", n_resamples=1000, seed=seed)["auc"]
        covered.append(interval["low"] < true_auc < interval["high"])
    assert np.mean(covered) >= 0.93
