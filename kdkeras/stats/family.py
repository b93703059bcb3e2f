"""Families of comparisons: Holm-Bonferroni adjusted p-values and the verdict of each comparison.

A benchmark section that states several "better"/"worse" verdicts makes
several tests; at 0.05 each, some would come out "better" by chance alone.
`holm` adjusts the p-values of one family (Holm 1979) so that the chance of
any false "better" in the family stays below alpha, and `family_rows` turns a
named family of per-seed paired differences into table rows whose verdict
reads the adjusted p. The unadjusted t-interval stays beside it, labelled.

Seeds vary the training only: every seed is scored on the same test images, so
an interval over seeds is conditional on that one test set and leaves out the
test set's own sampling error (`CONDITIONAL_NOTE`).
"""

import numpy as np

from kdkeras.stats.paired import DEFAULT_ALPHA
from kdkeras.stats.seeds import paired_t_interval, paired_t_p_value

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
SIGNIFICANT, UNTESTED = "significant difference", "not tested"
CONDITIONAL_NOTE = (
    "Intervals and p-values over seeds are conditional on the one official test split: "
    "every seed is scored on the same test images, so they leave out the test set's own "
    "sampling error (the bootstrap intervals of a single run show that part)."
)


def holm(p_values):
    """Holm-Bonferroni adjusted p-values of one family of tests.

    The i-th smallest of `m` p-values is multiplied by `m - i` (i from 0),
    capped at 1, and made non-decreasing in that order (Holm 1979; as
    `statsmodels.stats.multitest.multipletests(method="holm")`). A test is
    rejected at level alpha exactly when its adjusted p is below alpha.

    Args:
        p_values: The family's p-values, each in [0, 1]. None (a test that
            could not be made, e.g. over one seed) counts as a test with
            p = 1, so the family keeps its planned size, and stays None.

    Returns:
        list of adjusted p-values (float, or None where the input was None),
        in the input's order.

    Example:

    ```python
    holm([0.01, 0.04, 0.03])  # [0.03, 0.06, 0.06]
    ```
    """
    given = list(p_values)
    p = np.array([1.0 if v is None else v for v in given], dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError(f"`p_values` must be a flat list of numbers in [0, 1] (or None), got {given!r}.")
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return [None if v is None else float(a) for v, a in zip(given, adjusted)]


def decide(mean, p_adjusted, alpha=DEFAULT_ALPHA):
    """"better" / "worse" only when the adjusted p is below alpha; else "no significant difference".

    A comparison without a p-value (one seed, or zero spread) is "not tested";
    one given as a p-value alone (no mean, so no sign) is a "significant difference".
    """
    if p_adjusted is None:
        return UNTESTED
    if p_adjusted >= alpha:
        return NO_DIFFERENCE
    if mean is None:
        return SIGNIFICANT
    return BETTER if mean > 0.0 else WORSE


def interval_p_value(interval):
    """The two-sided p-value of a `paired_t_interval` result (also one saved without `p_value`)."""
    if "p_value" in interval:
        return interval["p_value"]
    return paired_t_p_value(mean=interval["mean"], std=interval["std"], n=interval["n"])


def family_rows(comparisons, alpha=DEFAULT_ALPHA):
    """Holm-adjusted verdicts of one named family of comparisons.

    Args:
        comparisons: list of `(label, evidence)`; evidence is one of a list of
            paired per-seed differences (a t-interval and its p are computed),
            a `paired_t_interval` result (e.g. read from a benchmark's JSON),
            or a p-value (float, or None for a test that could not be made).
        alpha: Family-wise error rate.

    Returns:
        list of dicts, one per comparison in order: `label`, `mean`, `low`,
        `high` (the unadjusted 95% t-interval; None without seeds or with
        one), `n`, `n_positive`, `p_value` (unadjusted), `p_adjusted` (Holm,
        over this family) and `verdict` (see `decide`).

    Example:

    ```python
    rows = family_rows([("1% labels, ACC", [0.05, 0.07, 0.04]), ("1% labels, AUC", [0.06, 0.02, 0.09])])
    rows[0]["p_adjusted"], rows[0]["verdict"]
    ```
    """
    rows = []
    for label, evidence in comparisons:
        if evidence is None or isinstance(evidence, (float, int, np.floating)):
            interval = {"p_value": None if evidence is None else float(evidence)}
        elif isinstance(evidence, dict):
            interval = dict(evidence, p_value=interval_p_value(evidence))
        else:
            interval = paired_t_interval(evidence)
        rows.append({"label": label, **{key: interval.get(key) for key in (
            "mean", "low", "high", "n", "n_positive", "p_value")}})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_adjusted"] = adjusted
        row["verdict"] = decide(row["mean"], adjusted, alpha)
    return rows


def format_p(p_value):
    """`"p = 0.012"`, `"p < 0.001"` or `"no test"`."""
    if p_value is None:
        return "no test"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def format_row_cell(row, scale=1, digits=4):
    """A `family_rows` row as one table cell.

    `"+4.0 (+1.2 to +6.8; 5/5; Holm-adjusted p = 0.031): better"`, or `"+4.0 (one seed)"`
    when there is no interval to test; `scale` and `digits` print an ACC row in points
    (100, 1).
    """
    mean = f"{row['mean'] * scale:+.{digits}f}"
    if row["low"] is None:
        return f"{mean} (one seed)"
    return (f"{mean} ({row['low'] * scale:+.{digits}f} to {row['high'] * scale:+.{digits}f}; "
            f"{row['n_positive']}/{row['n']}; Holm-adjusted {format_p(row['p_adjusted'])}): {row['verdict']}")


def family_title(name, rows):
    """`"Family: <name> (m = 6 comparisons, Holm-adjusted at 0.05)"`, for the line above a table."""
    return f"Family: {name} ({len(rows)} comparisons; verdicts read the Holm-adjusted p at {DEFAULT_ALPHA:g})"
