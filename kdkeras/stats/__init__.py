"""Uncertainty of test-split metrics, and paired comparisons of two models.

One run's test metrics are estimates from a finite test set; two models scored
on the same images differ partly by chance. This package puts numbers on both
(conventions in DESIGN.md, "Statistics conventions"):

- `bootstrap`: `bootstrap_intervals`, percentile confidence intervals of ACC,
  AUC, balanced accuracy and per-class rates, by a seeded *stratified*
  bootstrap over test examples: every resample draws, with replacement, as
  many examples of each class as the test set holds, so every resample has
  every class and AUC is always defined. Multi-label tasks are stratified on
  the rarest positive label of each example (`bootstrap.strata`).
- `paired`: comparisons on the same test images: `mcnemar_exact` (accuracy),
  `delong_test` (binary AUC; DeLong et al. 1988, fast algorithm of Sun & Xu
  2014), `paired_bootstrap_difference` (any metric, the same resamples for both
  models), and `compare_models`, which runs all three and states a verdict
  (`verdict`).
- `seeds`: over training seeds, `mean_std`, `paired_t_interval` and its
  `paired_t_p_value`.
- `family`: many comparisons at once: `holm` (Holm-Bonferroni adjusted
  p-values) and `family_rows`, a named family's rows with adjusted verdicts.

Metric definitions and the decision rule are those of `kdkeras.evaluation.metrics`
(MedMNIST's `Evaluator`). Everything returned is plain Python (float, int,
str, dict, None), ready for `json.dump`.
"""

from kdkeras.stats.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    bootstrap_intervals,
    decision_intervals,
    format_interval,
    resampled_metrics,
    stratified_resample_counts,
)
from kdkeras.stats.family import CONDITIONAL_NOTE, family_rows, holm
from kdkeras.stats.paired import DEFAULT_ALPHA, compare_models, delong_test, mcnemar_exact, paired_bootstrap_difference
from kdkeras.stats.seeds import mean_std, paired_t_interval, paired_t_p_value

__all__ = [
    "CONDITIONAL_NOTE",
    "DEFAULT_ALPHA",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "bootstrap_intervals",
    "compare_models",
    "decision_intervals",
    "delong_test",
    "family_rows",
    "format_interval",
    "holm",
    "mcnemar_exact",
    "mean_std",
    "paired_bootstrap_difference",
    "paired_t_interval",
    "paired_t_p_value",
    "resampled_metrics",
    "stratified_resample_counts",
]
