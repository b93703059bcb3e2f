"""Summaries over training seeds: mean and spread, and the t-interval of paired differences."""

import math

import numpy as np
from scipy import stats as scipy_stats

from kdkeras.stats.bootstrap import DEFAULT_CONFIDENCE
from kdkeras.stats.checks import check_confidence, check_finite_vector


def mean_std(values):
    """Mean and sample standard deviation (ddof=1) of per-seed values.

    Returns:
        dict with `mean`, `std` (None for a single value) and `n`.
    """
    values = check_finite_vector(values, "values")
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
        single seed), `confidence`, `n`, `n_positive`, the number of seeds
        whose difference is above 0 (a tie is no win), and `p_value`, the
        two-sided paired t-test of mean 0 (see `paired_t_p_value`).

    Example:

    ```python
    paired_t_interval([0.016, 0.015, 0.043, -0.003, 0.008])
    ```
    """
    differences = check_finite_vector(differences, "differences")
    confidence = check_confidence(confidence)
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
        "p_value": paired_t_p_value(summary["mean"], summary["std"], n),
    }


def paired_t_p_value(mean, std, n):
    """Two-sided p-value of the paired t-test that the mean difference is 0.

    `t = mean / (std / sqrt(n))` on `n - 1` degrees of freedom, the test
    whose acceptance region is the paired t-interval (as
    `scipy.stats.ttest_rel` on the two arms, or `ttest_1samp` on the
    differences).

    Args:
        mean: Mean of the per-seed differences.
        std: Their sample standard deviation (ddof=1), None for one seed.
        n: Number of seeds.

    Returns:
        The p-value; 1.0 when every difference is 0; None when no test can be
        made: one seed (no spread to compare with), or differences that are
        all equal and not 0 (zero spread: t is infinite, not evidence).
    """
    if n < 2 or std is None:
        return None
    # Equal differences leave a spread of float rounding only (e.g. 0.86 - 0.80 vs 0.88 - 0.82).
    if std <= 1e-9 * abs(mean) or std == 0.0:
        return 1.0 if mean == 0.0 else None
    t = mean / (std / math.sqrt(n))
    return float(2.0 * scipy_stats.t.sf(abs(t), n - 1))
