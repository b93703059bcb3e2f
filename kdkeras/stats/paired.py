"""Paired comparisons of two models scored on the same test examples.

`mcnemar_exact` (accuracy), `delong_test` (binary AUC; DeLong et al. 1988,
fast algorithm of Sun & Xu 2014), `paired_bootstrap_difference` (any metric,
the same resamples for both models), and `compare_models`, which runs all
three and states a verdict (`kdkeras.stats.verdict`).
"""

import math

import numpy as np
from scipy import stats as scipy_stats

from kdkeras import scores
from kdkeras.stats.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    percentile_interval,
    resampled_metrics,
    strata,
    stratified_resample_counts,
)
from kdkeras.stats.checks import (
    check_binary_vector,
    check_confidence,
    check_pair,
    check_same_length,
    check_score_vector,
)
from kdkeras.stats.verdict import verdict

DEFAULT_ALPHA = 0.05
_COMPARED = ("acc", "auc", "balanced_acc")


def mcnemar_exact(correct_a, correct_b):
    """McNemar's exact test of two models' accuracies on the same examples.

    Only the discordant examples carry information: `b`, those model A gets
    right and model B wrong, and `c`, the reverse. Under equal accuracy `b` is
    Binomial(b + c, 1/2); the two-sided p-value is that of
    `scipy.stats.binomtest`, `2 * P(X <= min(b, c))` capped at 1.

    Args:
        correct_a: Boolean array `(N,)`, whether model A is right on each example.
        correct_b: The same for model B, on the same examples in the same order.

    Returns:
        dict with `b`, `c`, `n` (number of examples) and `p_value` (1.0 when
        the models never disagree).

    Example:

    ```python
    mcnemar_exact([1] * 9 + [0], [0] * 9 + [1])["p_value"]  # 0.021484375
    ```
    """
    correct_a = check_binary_vector(correct_a, "correct_a")
    correct_b = check_binary_vector(correct_b, "correct_b")
    check_same_length(correct_a, correct_b, "correct_a", "correct_b")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p_value = scipy_stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"b": b, "c": c, "n": int(correct_a.size), "p_value": float(p_value)}


def delong_test(y_true, score_a, score_b):
    """DeLong's test of two correlated binary ROC AUCs (scored on the same examples).

    DeLong, DeLong & Clarke-Pearson (1988), computed with the midrank
    algorithm of Sun & Xu (2014) in `O(N log N)`. Each AUC is the mean of its
    structural components (placement values); their covariance across
    positives and across negatives gives the covariance matrix of the two
    AUCs, and `z = (AUC_a - AUC_b) / SE`. Multi-class one-vs-rest macro AUC is
    not covered by this test: compare it with `paired_bootstrap_difference`.

    Args:
        y_true: 0/1 labels `(N,)` (or `(N, 1)`), 1 the positive class; both
            classes must be present.
        score_a: Scores of model A `(N,)`, larger meaning more positive (e.g.
            the positive-class probability).
        score_b: Scores of model B, same examples.

    Returns:
        dict with `auc_a`, `auc_b`, `difference` (`auc_a - auc_b`), `var_a`,
        `var_b`, `covariance`, `variance` and `se` of the difference, `z` and
        the two-sided `p_value`. When the difference and its variance are both
        0 (e.g. identical scores), `z` is 0 and `p_value` 1; when only the
        variance is 0, `z` and `p_value` are None: the test is undefined, and
        `compare_models` then calls no difference significant.

    Example:

    ```python
    result = delong_test(y_test, student_scores[:, 1], distilled_scores[:, 1])
    result["difference"], result["p_value"]
    ```
    """
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim != 1 or not np.isin(y_true, (0, 1)).all():
        raise ValueError(
            f"`y_true` must be 0/1 labels of shape (N,), got shape {y_true.shape}; DeLong's test "
            "compares binary AUCs (for a multi-class task use paired_bootstrap_difference)."
        )
    positive = y_true == 1
    if positive.all() or not positive.any():
        raise ValueError(
            "`y_true` must contain both classes 0 and 1: AUC is undefined without positives "
            "and negatives."
        )
    model_scores = np.stack(
        [
            check_score_vector(score_a, "score_a", y_true.size),
            check_score_vector(score_b, "score_b", y_true.size),
        ]
    )
    positives, negatives = model_scores[:, positive], model_scores[:, ~positive]
    m, n = positives.shape[1], negatives.shape[1]
    # Sun & Xu (2014): placement values from midranks within each class and overall.
    rank_all = scipy_stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    rank_pos = scipy_stats.rankdata(positives, axis=1)
    rank_neg = scipy_stats.rankdata(negatives, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = v10.mean(axis=1)
    covariance = np.cov(v10) / m + np.cov(v01) / n
    difference = float(aucs[0] - aucs[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1])
    se = math.sqrt(max(variance, 0.0))
    z, p_value = _z_test(difference, se)
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": difference,
        "var_a": float(covariance[0, 0]),
        "var_b": float(covariance[1, 1]),
        "covariance": float(covariance[0, 1]),
        "variance": variance,
        "se": se,
        "z": None if z is None else float(z),
        "p_value": p_value,
    }


def _z_test(difference, se):
    """`(z, two-sided p)`; `(0, 1)` for no difference, `(None, None)` for a difference without spread."""
    if se > 0.0:
        return difference / se, float(2.0 * scipy_stats.norm.sf(abs(difference / se)))
    if difference == 0.0:
        return 0.0, 1.0
    # E.g. a perfect model against constant scores: the normal approximation has nothing to
    # scale by, and an infinite z is no evidence.
    return None, None


def paired_bootstrap_difference(
    y_true,
    score_a,
    score_b,
    metric,
    task,
    class_names=None,
    n_resamples=DEFAULT_RESAMPLES,
    confidence=DEFAULT_CONFIDENCE,
    seed=0,
):
    """Paired bootstrap interval of the difference of one metric between two models.

    Both models are evaluated on the same stratified resamples of the test
    examples, so the interval accounts for their correlation.

    Args:
        y_true: Labels, as for `kdkeras.evaluation.metrics.classification_metrics`.
        score_a: Probabilities of model A, as `y_score` there.
        score_b: Probabilities of model B, same examples in the same order.
        metric: A metric name of `resampled_metrics` (`"acc"`, `"auc"`,
            `"balanced_acc"`, `"sensitivity"`, ...).
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        class_names: Optional class names (for `recall[...]` metrics).
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        dict with `metric`, `value_a`, `value_b`, `difference` (`value_a -
        value_b` on the whole test set, the point estimate), and the interval
        of the difference: `low`, `high`, `confidence`, `resamples`. None when
        the metric is undefined on this test set.
    """
    return _paired_differences(
        y_true, score_a, score_b, task, class_names, (metric,), n_resamples, confidence, seed
    )[metric]


def compare_models(
    y_true,
    score_a,
    score_b,
    task,
    name_a="model A",
    name_b="model B",
    class_names=None,
    n_resamples=DEFAULT_RESAMPLES,
    confidence=DEFAULT_CONFIDENCE,
    seed=0,
    alpha=DEFAULT_ALPHA,
):
    """Compares two models on the same test examples and states the verdict.

    - `acc`: paired bootstrap interval of the difference and McNemar's exact
      test (single-label tasks; multi-label accuracy pools several decisions
      per image, so it has the interval only).
    - `auc`: paired bootstrap interval and DeLong's test (binary-class only;
      the one-vs-rest macro AUC of multi-class and the mean AUC of
      multi-label have the interval only).
    - `balanced_acc`: paired bootstrap interval.

    A difference is called significant when its interval excludes 0 and,
    where the metric has a test, the test's p-value is below `alpha`; a
    test that is undefined (DeLong with zero standard error) makes nothing
    significant.

    Args:
        y_true: Labels, as for `kdkeras.evaluation.metrics.classification_metrics`.
        score_a: Probabilities of model A, as `y_score` there.
        score_b: Probabilities of model B, same examples in the same order.
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        name_a: Model A's name in the verdict, e.g. `"the distilled student"`.
        name_b: Model B's name, e.g. `"the student alone"`.
        class_names: Optional class names.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the intervals.
        seed: Seed of the resampling.
        alpha: Significance level of the tests.

    Returns:
        dict with `name_a`, `name_b`, `task`, `n`, `alpha`; per metric
        (`acc`, `auc`, `balanced_acc`) the dict of `paired_bootstrap_difference`
        plus `test` (`"McNemar exact"`, `"DeLong"` or None), `p_value` (None
        without a test) and `significant`, and for ACC `mcnemar`, for AUC
        `delong` (the full test results, or None); a metric undefined on this
        test set is None. `verdict` is one sentence, e.g. "The distilled
        student is better than the student alone by +1.6 ACC points (95% CI
        +0.3 to +2.9, McNemar p = 0.021), with no significant difference in AUC
        (+0.002, 95% CI -0.003 to +0.007, DeLong p = 0.41)."

    Example:

    ```python
    comparison = compare_models(y_test, distilled_scores, student_scores,
                                "binary-class", "the distilled student",
                                "the student alone")
    print(comparison["verdict"])
    ```
    """
    task, y_true, a, b = check_pair(y_true, score_a, score_b, task)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha}.")
    result = {
        "name_a": name_a,
        "name_b": name_b,
        "task": task,
        "n": int(y_true.shape[0]),
        "alpha": alpha,
        **_paired_differences(
            y_true, a, b, task, class_names, _COMPARED, n_resamples, confidence, seed
        ),
    }
    _add_tests(result, y_true, a, b)
    result["verdict"] = verdict(result)
    return result


def _add_tests(result, y_true, a, b):
    """Adds McNemar's test to ACC, DeLong's to binary AUC, and every metric's significance."""
    task, alpha = result["task"], result["alpha"]
    mcnemar = None
    if task != "multi-label":
        mcnemar = mcnemar_exact(
            scores.predict(a, task) == y_true, scores.predict(b, task) == y_true
        )
    _add_test(result["acc"], "McNemar exact", mcnemar, alpha)
    result["acc"]["mcnemar"] = mcnemar
    if result["auc"] is not None:
        delong = delong_test(y_true, a[:, -1], b[:, -1]) if task == "binary-class" else None
        _add_test(result["auc"], "DeLong", delong, alpha)
        result["auc"]["delong"] = delong
    _add_test(result["balanced_acc"], None, None, alpha)


def _paired_differences(
    y_true, score_a, score_b, task, class_names, metrics, n_resamples, confidence, seed
):
    task, y_true, a, b = check_pair(y_true, score_a, score_b, task)
    confidence = check_confidence(confidence)
    counts = stratified_resample_counts(strata(y_true, task), n_resamples, seed)
    whole = np.ones((1, y_true.shape[0]), dtype=np.int32)
    observed_a = resampled_metrics(y_true, a, task, whole, class_names)
    unknown = [metric for metric in metrics if metric not in observed_a]
    if unknown:
        raise ValueError(
            f"Unknown metric {unknown[0]!r} for task {task!r}; use one of "
            f"{', '.join(observed_a)}."
        )
    observed_b = resampled_metrics(y_true, b, task, whole, class_names)
    samples_a = resampled_metrics(y_true, a, task, counts, class_names)
    samples_b = resampled_metrics(y_true, b, task, counts, class_names)
    result = {}
    for metric in metrics:
        if observed_a[metric] is None:
            result[metric] = None
            continue
        value_a, value_b = float(observed_a[metric][0]), float(observed_b[metric][0])
        result[metric] = {
            "metric": metric,
            "value_a": value_a,
            "value_b": value_b,
            "difference": value_a - value_b,
            **percentile_interval(samples_a[metric] - samples_b[metric], confidence),
        }
    return result


def _add_test(entry, name, test, alpha):
    p_value = None if test is None else test["p_value"]
    excludes_zero = entry["low"] > 0.0 or entry["high"] < 0.0
    entry["test"] = None if test is None else name
    entry["p_value"] = p_value
    if test is None:
        entry["significant"] = bool(excludes_zero)
    else:
        entry["significant"] = bool(excludes_zero and p_value is not None and p_value < alpha)
