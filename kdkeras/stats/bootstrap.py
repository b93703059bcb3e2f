"""Stratified bootstrap of one model's test metrics: resample counts, intervals, formatting.

Every resample draws, with replacement, as many examples of each class as the
test set holds, so every resample has every class and AUC is always defined.
Multi-label tasks are stratified on the rarest positive label of each example
(see `strata`). A resample is a row of counts, so no resampled copy of the data
is built.
"""

import numpy as np

from kdkeras import scores
from kdkeras.stats.checks import check_confidence, check_resamples

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
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
    n_resamples = check_resamples(n_resamples)
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
        y_true: Labels, as for `kdkeras.evaluation.metrics.classification_metrics`.
        y_score: Probabilities, as for `classification_metrics`.
        task: One of `kdkeras.evaluation.metrics.TASKS`.
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
        y_true: Labels, as for `kdkeras.evaluation.metrics.classification_metrics`.
        y_score: Probabilities, as for `classification_metrics`.
        task: One of `kdkeras.evaluation.metrics.TASKS`.
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
    confidence = check_confidence(confidence)
    counts = stratified_resample_counts(strata(y_true, task), n_resamples, seed)
    samples = resampled_metrics(y_true, y_score, task, counts, class_names)
    return {
        key: None if values is None else percentile_interval(values, confidence)
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
    confidence = check_confidence(confidence)
    counts = stratified_resample_counts(y, n_resamples, seed).astype(np.float64)
    result = {}
    for key, label, hit in (("sensitivity", 1, positive), ("specificity", 0, ~positive)):
        members = y == label
        result[key] = (
            percentile_interval(counts @ (members & hit) / members.sum(), confidence) if members.any() else None
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


def strata(y_true, task):
    """The stratum of each example: its class, or for multi-label its rarest positive label.

    Multi-label examples are stratified on the rarest label they carry (by
    positive count on the sample), and examples without a label form one more
    stratum. Every label whose positives are not all carried by rarer labels
    keeps a fixed positive count (at least its stratum's size), and the
    unlabeled stratum keeps negatives of every label, so AUC stays defined.
    Stratifying on the whole label set instead would make strata of one or two
    images, which every resample copies unchanged: intervals came out too
    narrow (0.90 coverage at 95% on synthetic data, see tests/stats/test_stats.py).
    """
    if task != "multi-label":
        return y_true
    y_true = np.asarray(y_true)
    rarest_first = np.argsort(y_true.sum(axis=0), kind="stable")
    ranked = y_true[:, rarest_first]
    return np.where(ranked.any(axis=1), rarest_first[np.argmax(ranked, axis=1)], -1)


def percentile_interval(samples, confidence):
    """The percentile interval of bootstrap samples, as `{low, high, confidence, resamples}`."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return {
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "resamples": int(samples.size),
    }


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
        # As kdkeras.evaluation.metrics: a rate whose class is absent is left out of its label's mean.
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
