"""Uncertainty of test-split metrics, and paired comparisons of two models.

One run's test metrics are estimates from a finite test set; two models scored
on the same images differ partly by chance. This module puts numbers on both
(conventions in DESIGN.md, "Statistics conventions"):

- `bootstrap_intervals`: percentile confidence intervals of ACC, AUC, balanced
  accuracy and per-class rates, by a seeded *stratified* bootstrap over test
  examples: every resample draws, with replacement, as many examples of each
  class as the test set holds, so every resample has every class and AUC is
  always defined. Multi-label tasks are stratified on the set of labels of
  each example (its row of `y_true`), which keeps every label's positive count.
- Paired comparisons on the same test images: `mcnemar_exact` (accuracy),
  `delong_test` (binary AUC; DeLong et al. 1988, fast algorithm of Sun & Xu
  2014), `paired_bootstrap_difference` (any metric, the same resamples for both
  models), and `compare_models`, which runs all three and states a verdict.
- Over training seeds: `mean_std` and `paired_t_interval`.

Metric definitions and the decision rule are those of `kdkeras.metrics`
(MedMNIST's `Evaluator`). Everything returned is plain Python (float, int,
str, dict, None), ready for `json.dump`.
"""

import math

import numpy as np
from scipy import stats as scipy_stats

from kdkeras import scores

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
_COMPARED = ("acc", "auc", "balanced_acc")
# Resamples are evaluated in blocks of about this many (resample, example)
# cells, so 2,000 resamples of ChestMNIST's 22,433 test images fit in memory.
_BLOCK_CELLS = 2**22


def stratified_resample_counts(strata, n_resamples=DEFAULT_RESAMPLES, seed=0):
    """Draws a seeded stratified bootstrap, as counts of each example.

    Resample `b` draws, with replacement and uniformly, `n_k` examples among
    the `n_k` examples of each stratum `k`, so every resample keeps the
    stratum sizes of the sample. Draws are vectorised index draws from
    `numpy.random.default_rng(seed)`.

    Args:
        strata: 1-D array, the stratum (class) of each example.
        n_resamples: Number of resamples `B`.
        seed: Seed of the generator; the same seed gives the same resamples.

    Returns:
        int32 array `(B, N)`: entry `[b, i]` is how many times resample `b`
        drew example `i`.

    Example:

    ```python
    counts = stratified_resample_counts([0, 0, 1, 1, 1], n_resamples=3)
    counts[:, :2].sum(axis=1)  # array([2, 2, 2]): class 0 keeps 2 examples
    ```
    """
    strata = np.asarray(strata)
    if strata.ndim != 1 or strata.size == 0:
        raise ValueError(f"`strata` must be a non-empty 1-D array, got shape {strata.shape}.")
    n_resamples = _check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    _, stratum = np.unique(strata, return_inverse=True)
    counts = np.zeros((n_resamples, strata.size), dtype=np.int32)
    for k in range(stratum.max() + 1):
        members = np.flatnonzero(stratum == k)
        size = members.size
        rows = max(1, _BLOCK_CELLS // size)
        for start in range(0, n_resamples, rows):
            block = min(rows, n_resamples - start)
            draws = rng.integers(0, size, size=(block, size))
            # One bincount for the whole block: resample r's draws are offset by r * size.
            flat = (draws + size * np.arange(block)[:, None]).ravel()
            counts[start : start + block, members] = np.bincount(
                flat, minlength=block * size
            ).reshape(block, size)
    return counts


def resampled_metrics(y_true, y_score, task, counts, class_names=None):
    """Evaluates the metrics of one model on every resample of a bootstrap.

    A resample is given by its counts (see `stratified_resample_counts`), so
    no resampled copy of the data is built: ACC and rates are count-weighted
    means, and AUC is the count-weighted Mann-Whitney U statistic on the
    original example's score order (ties count 1/2, as in
    `sklearn.metrics.roc_auc_score`).

    Args:
        y_true: Labels, as for `kdkeras.metrics.classification_metrics`.
        y_score: Probabilities, as for `classification_metrics`.
        task: One of `kdkeras.metrics.TASKS`.
        counts: int array `(B, N)`; a row of ones is the original sample.
        class_names: Optional class (label) names, used in metric keys.

    Returns:
        dict metric name -> float64 array `(B,)`, or None where the metric is
        undefined on the sample (a class absent from `y_true`). Keys: `acc`,
        `auc`, `balanced_acc`; binary-class also `sensitivity` (recall of the
        last class) and `specificity` (recall of the first); multi-class and
        ordinal-regression also `recall[<class name>]` per class. A resample
        without some class (only when `counts` is not stratified) gives NaN for
        the metrics that need it.
    """
    task = scores.check_task(task)
    y_score = scores.check_scores(y_score, task)
    y_true = scores.check_labels(y_true, y_score, task)
    names = scores.check_class_names(class_names, y_score.shape[1])
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != y_true.shape[0]:
        raise ValueError(
            f"`counts` must have shape (B, {y_true.shape[0]}), one row per resample and one "
            f"column per example, got {counts.shape}."
        )
    evaluate = _multi_label_samples if task == "multi-label" else _single_label_samples
    rows = max(1, _BLOCK_CELLS // y_true.shape[0])
    blocks = [
        evaluate(y_true, y_score, task, names, counts[start : start + rows].astype(np.float64))
        for start in range(0, counts.shape[0], rows)
    ]
    return {
        key: None if blocks[0][key] is None else np.concatenate([b[key] for b in blocks])
        for key in blocks[0]
    }


def bootstrap_intervals(
    y_true,
    y_score,
    task,
    class_names=None,
    n_resamples=DEFAULT_RESAMPLES,
    confidence=DEFAULT_CONFIDENCE,
    seed=0,
):
    """Percentile confidence intervals of one model's metrics, by stratified bootstrap.

    The same predictions and seed always give the same intervals.

    Args:
        y_true: Labels, as for `kdkeras.metrics.classification_metrics`.
        y_score: Probabilities, as for `classification_metrics`.
        task: One of `kdkeras.metrics.TASKS`.
        class_names: Optional class (label) names, used in the `recall[...]` keys.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the intervals, e.g. 0.95.
        seed: Seed of the resampling.

    Returns:
        dict metric name -> `{"low", "high", "confidence", "resamples"}`, or
        None where the metric is undefined (e.g. AUC when the test split lacks
        a class). Metric names as in `resampled_metrics`.

    Example:

    ```python
    intervals = bootstrap_intervals(y_test, y_score, "binary-class")
    format_interval(metrics["acc"], intervals["acc"])  # '0.913 (0.890-0.934)'
    ```
    """
    task = scores.check_task(task)
    y_true = scores.check_labels(y_true, scores.check_scores(y_score, task), task)
    confidence = _check_confidence(confidence)
    counts = stratified_resample_counts(_strata(y_true, task), n_resamples, seed)
    samples = resampled_metrics(y_true, y_score, task, counts, class_names)
    return {
        key: None if values is None else _percentile_interval(values, confidence)
        for key, values in samples.items()
    }


def decision_intervals(y_true, positive, n_resamples=DEFAULT_RESAMPLES, confidence=DEFAULT_CONFIDENCE, seed=0):
    """Intervals of the sensitivity and specificity of fixed binary decisions.

    For a decision rule chosen elsewhere (an operating point fitted on the
    validation split), by the same stratified bootstrap as
    `bootstrap_intervals`: every resample keeps the number of positives and
    negatives, so sensitivity resamples only the positives' decisions.

    Args:
        y_true: 0/1 labels `(N,)`.
        positive: bool decisions `(N,)`, True for "positive".
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the intervals.
        seed: Seed of the resamples.

    Returns:
        `{"sensitivity": interval, "specificity": interval}`, an interval being
        `{"low", "high", "confidence", "resamples"}`, or None when the test
        split has no example of that class.
    """
    y = np.asarray(y_true).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if y.shape != positive.shape:
        raise ValueError(f"`y_true` has {y.size} examples but `positive` has {positive.size} decisions.")
    confidence = _check_confidence(confidence)
    counts = stratified_resample_counts(y, n_resamples, seed).astype(np.float64)
    result = {}
    for key, label, hit in (("sensitivity", 1, positive), ("specificity", 0, ~positive)):
        members = y == label
        result[key] = (
            _percentile_interval(counts @ (members & hit) / members.sum(), confidence) if members.any() else None
        )
    return result


def format_interval(value, interval, digits=3):
    """Formats a value with its interval, e.g. `"0.913 (0.890-0.934)"`.

    Args:
        value: The point estimate, or None (formatted as `"n/a"`).
        interval: A dict with `low` and `high` (as returned here), or None
            (the value is formatted alone).
        digits: Decimal places.

    Returns:
        The text. Bounds below zero are joined by " to " rather than a dash.
    """
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    if interval is None:
        return text
    low, high = interval["low"], interval["high"]
    separator = "-" if low >= 0 else " to "
    return f"{text} ({low:.{digits}f}{separator}{high:.{digits}f})"


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
    correct_a = _check_binary_vector(correct_a, "correct_a")
    correct_b = _check_binary_vector(correct_b, "correct_b")
    _check_same_length(correct_a, correct_b, "correct_a", "correct_b")
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
        0 (e.g. identical scores), `z` is 0 and `p_value` 1.

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
            _check_score_vector(score_a, "score_a", y_true.size),
            _check_score_vector(score_b, "score_b", y_true.size),
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
    if se == 0.0:
        z = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    else:
        z = difference / se
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": difference,
        "var_a": float(covariance[0, 0]),
        "var_b": float(covariance[1, 1]),
        "covariance": float(covariance[0, 1]),
        "variance": variance,
        "se": se,
        "z": float(z),
        "p_value": float(2.0 * scipy_stats.norm.sf(abs(z))),
    }


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
        y_true: Labels, as for `kdkeras.metrics.classification_metrics`.
        score_a: Probabilities of model A, as `y_score` there.
        score_b: Probabilities of model B, same examples in the same order.
        metric: A metric name of `resampled_metrics` (`"acc"`, `"auc"`,
            `"balanced_acc"`, `"sensitivity"`, ...).
        task: One of `kdkeras.metrics.TASKS`.
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
    where the metric has a test, the test's p-value is below `alpha`.

    Args:
        y_true: Labels, as for `kdkeras.metrics.classification_metrics`.
        score_a: Probabilities of model A, as `y_score` there.
        score_b: Probabilities of model B, same examples in the same order.
        task: One of `kdkeras.metrics.TASKS`.
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
    task, y_true, a, b = _check_pair(y_true, score_a, score_b, task)
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
    mcnemar = None
    if task != "multi-label":
        mcnemar = mcnemar_exact(
            scores.predict(a, task) == y_true, scores.predict(b, task) == y_true
        )
    delong = None
    if task == "binary-class" and result["auc"] is not None:
        delong = delong_test(y_true, a[:, -1], b[:, -1])
    _add_test(result["acc"], "McNemar exact", mcnemar, alpha)
    result["acc"]["mcnemar"] = mcnemar
    if result["auc"] is not None:
        _add_test(result["auc"], "DeLong", delong, alpha)
        result["auc"]["delong"] = delong
    _add_test(result["balanced_acc"], None, None, alpha)
    result["verdict"] = _verdict(result)
    return result


def mean_std(values):
    """Mean and sample standard deviation (ddof=1) of per-seed values.

    Returns:
        dict with `mean`, `std` (None for a single value) and `n`.
    """
    values = _check_finite_vector(values, "values")
    std = float(np.std(values, ddof=1)) if values.size > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "n": int(values.size)}


def paired_t_interval(differences, confidence=DEFAULT_CONFIDENCE):
    """Student-t confidence interval of the mean of paired per-seed differences.

    For a model pair trained with the same seeds (e.g. distilled minus student
    alone, one difference per seed): `mean +- t_{(1+c)/2, n-1} * std / sqrt(n)`.

    Args:
        differences: One difference per seed.
        confidence: Coverage of the interval.

    Returns:
        dict with `mean`, `std` (sample, ddof=1), `low`, `high` (None for a
        single seed), `confidence`, `n` and `n_positive`, the number of seeds
        whose difference is above 0.

    Example:

    ```python
    paired_t_interval([0.016, 0.015, 0.043, -0.003, 0.008])
    ```
    """
    differences = _check_finite_vector(differences, "differences")
    confidence = _check_confidence(confidence)
    summary = mean_std(differences)
    n = summary["n"]
    low = high = None
    if n > 1:
        half_width = scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1) * summary["std"]
        half_width /= math.sqrt(n)
        low, high = summary["mean"] - half_width, summary["mean"] + half_width
    return {
        "mean": summary["mean"],
        "std": summary["std"],
        "low": None if low is None else float(low),
        "high": None if high is None else float(high),
        "confidence": confidence,
        "n": n,
        "n_positive": int(np.sum(differences > 0)),
    }


def _paired_differences(
    y_true, score_a, score_b, task, class_names, metrics, n_resamples, confidence, seed
):
    task, y_true, a, b = _check_pair(y_true, score_a, score_b, task)
    confidence = _check_confidence(confidence)
    counts = stratified_resample_counts(_strata(y_true, task), n_resamples, seed)
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
            **_percentile_interval(samples_a[metric] - samples_b[metric], confidence),
        }
    return result


def _single_label_samples(y_true, y_score, task, names, weights):
    n_classes = y_score.shape[1]
    one_hot = np.eye(n_classes)[y_true]
    correct = (scores.predict(y_score, task) == y_true).astype(np.float64)
    support = one_hot.sum(axis=0)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (weights @ (one_hot * correct[:, None])) / (weights @ one_hot)
        # Like balanced_accuracy_score: the mean over the classes in the resample.
        balanced = np.nanmean(recall, axis=1)
    # Binary AUC is that of the last column; multi-class, the mean one-vs-rest AUC.
    # Each needs its class and some other class.
    auc_classes = [n_classes - 1] if task == "binary-class" else range(n_classes)
    if all(0 < support[k] < len(y_true) for k in auc_classes):
        auc = np.mean(
            [_weighted_auc(weights, y_true == k, y_score[:, k]) for k in auc_classes], axis=0
        )
    else:
        auc = None
    samples = {
        "acc": (weights @ correct) / weights.sum(axis=1),
        "auc": auc,
        "balanced_acc": balanced,
    }
    rates = [recall[:, k] if present[k] else None for k in range(n_classes)]
    if task == "binary-class":
        samples["sensitivity"], samples["specificity"] = rates[1], rates[0]
    else:
        samples.update({f"recall[{name}]": rate for name, rate in zip(names, rates)})
    return samples


def _multi_label_samples(y_true, y_score, task, names, weights):
    y_pred = scores.predict(y_score, task)
    positive = y_true.astype(np.float64)
    hit = (y_pred == y_true).astype(np.float64)
    aucs = [
        _weighted_auc(weights, y_true[:, k] == 1, y_score[:, k])
        if 0 < y_true[:, k].sum() < y_true.shape[0]
        else None
        for k in range(y_true.shape[1])
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (weights @ (hit * positive)) / (weights @ positive)
        specificity = (weights @ (hit * (1.0 - positive))) / (weights @ (1.0 - positive))
        # As kdkeras.metrics: a rate whose class is absent is left out of its label's mean.
        balanced = np.nanmean(np.stack([sensitivity, specificity]), axis=0).mean(axis=1)
    return {
        "acc": (weights @ hit.mean(axis=1)) / weights.sum(axis=1),
        "auc": None if any(auc is None for auc in aucs) else np.mean(aucs, axis=0),
        "balanced_acc": balanced,
    }


def _weighted_auc(weights, is_positive, score):
    """ROC AUC of each weighted resample: Mann-Whitney U / (positives * negatives).

    Examples are visited once in score order; tied scores form one group, in
    which a positive beats half of the negatives. With integer weights every
    sum is exact in float64.
    """
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    # Examples along the first axis: the group sums and running sums are contiguous.
    sorted_weights = weights.T[order]
    sorted_positive = is_positive[order, None]
    positives = np.add.reduceat(sorted_weights * sorted_positive, group_starts, axis=0)
    negatives = np.add.reduceat(sorted_weights * ~sorted_positive, group_starts, axis=0)
    negatives_below = np.cumsum(negatives, axis=0) - negatives
    u = np.sum(positives * (negatives_below + 0.5 * negatives), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (positives.sum(axis=0) * negatives.sum(axis=0))


def _strata(y_true, task):
    if task != "multi-label":
        return y_true
    # The label set of each example: resamples keep every combination's count.
    return np.unique(y_true, axis=0, return_inverse=True)[1].reshape(-1)


def _percentile_interval(samples, confidence):
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return {
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "resamples": int(samples.size),
    }


def _add_test(entry, name, test, alpha):
    p_value = None if test is None else test["p_value"]
    excludes_zero = entry["low"] > 0.0 or entry["high"] < 0.0
    entry["test"] = None if test is None else name
    entry["p_value"] = p_value
    entry["significant"] = bool(excludes_zero and (p_value is None or p_value < alpha))


def _verdict(result):
    name_a, name_b, alpha = result["name_a"], result["name_b"], result["alpha"]
    better, worse, unclear = [], [], []
    for metric in ("acc", "auc"):
        entry = result[metric]
        if entry is None:
            continue
        if entry["significant"]:
            (better if entry["difference"] > 0 else worse).append(_by_clause(metric, entry, alpha))
        else:
            unclear.append(_no_difference_clause(metric, entry, alpha))
    subject = name_a[:1].upper() + name_a[1:]
    if not better and not worse:
        unclear = " or ".join(unclear)
        return f"No significant difference in {unclear} between {name_a} and {name_b}."
    if better and worse:
        sentence = f"{subject} is better than {name_b} {better[0]} but worse {worse[0]}"
    elif better:
        sentence = f"{subject} is better than {name_b} {' and '.join(better)}"
    else:
        sentence = f"{subject} is worse than {name_b} {' and '.join(worse)}"
    if unclear:
        sentence += f", with no significant difference in {unclear[0]}"
    return sentence + "."


def _by_clause(metric, entry, alpha):
    # "by +1.6 ACC points (95% CI +0.3 to +2.9, McNemar p = 0.021)"; a loss is
    # stated as its size ("worse by 1.6 ACC points"), its interval keeps the sign.
    size = _signed(entry["difference"], metric)
    if entry["difference"] < 0:
        size = size[1:]
    unit = "ACC points" if metric == "acc" else metric.upper()
    return f"by {size} {unit} ({_evidence(entry, alpha)})"


def _no_difference_clause(metric, entry, alpha):
    # "ACC (-0.3 points, 95% CI -1.9 to +1.3, McNemar p = 0.81)"
    unit = " points" if metric == "acc" else ""
    size = _signed(entry["difference"], metric)
    return f"{metric.upper()} ({size}{unit}, {_evidence(entry, alpha)})"


def _evidence(entry, alpha):
    ci = (
        f"{100 * entry['confidence']:g}% CI {_signed(entry['low'], entry['metric'])} to "
        f"{_signed(entry['high'], entry['metric'])}"
    )
    if entry["p_value"] is None:
        return ci
    test = entry["test"].split()[0]
    return f"{ci}, {test} p {_format_p(entry['p_value'], alpha)}"


def _signed(difference, metric):
    # ACC differences in percentage points, AUC differences on their own scale.
    if metric == "acc":
        return f"{100.0 * difference:+.1f}"
    return f"{difference:+.3f}"


def _format_p(p_value, alpha):
    if p_value < 0.001:
        return "< 0.001"
    # Two significant digits, more if rounding would carry p across alpha.
    for digits in range(2, 7):
        text = f"{p_value:.{digits}g}"
        if (float(text) < alpha) == (p_value < alpha):
            break
    if "." not in text:
        text += ".0"
    return f"= {text}"


def _check_pair(y_true, score_a, score_b, task):
    task = scores.check_task(task)
    a = scores.check_scores(score_a, task, "score_a")
    b = scores.check_scores(score_b, task, "score_b")
    if a.shape != b.shape:
        raise ValueError(
            f"`score_a` {a.shape} and `score_b` {b.shape} must have the same shape: two "
            "models scored on the same test examples in the same order."
        )
    return task, scores.check_labels(y_true, a, task), a, b


def _check_resamples(n_resamples):
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"`n_resamples` must be a positive integer, got {n_resamples!r}.")
    return int(n_resamples)


def _check_confidence(confidence):
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), e.g. 0.95, got {confidence!r}.")
    return float(confidence)


def _check_binary_vector(values, name):
    values = np.asarray(values)
    if values.ndim != 1 or not np.isin(values, (0, 1)).all():
        raise ValueError(
            f"`{name}` must be a 1-D array of booleans (or 0/1), one per example, got shape "
            f"{values.shape}."
        )
    return values.astype(bool)


def _check_score_vector(values, name, n):
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"`{name}` must be {n} finite scores, one per example (e.g. the positive-class "
            f"column `y_score[:, 1]`), got shape {values.shape}."
        )
    return values


def _check_same_length(first, second, first_name, second_name):
    if first.shape != second.shape:
        raise ValueError(
            f"`{first_name}` {first.shape} and `{second_name}` {second.shape} must have the same "
            "shape: the same test examples in the same order."
        )


def _check_finite_vector(values, name):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"`{name}` must be a non-empty 1-D array of finite numbers, one per seed, got "
            f"shape {values.shape}."
        )
    return values
