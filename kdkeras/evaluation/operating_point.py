"""Operating points of a binary classifier: a threshold chosen on validation, read on test.

A screening test is used at a threshold picked for a target, such as a
sensitivity of 0.95, not at 0.5. The threshold is chosen on the validation
split (never on the test split) and the test sensitivity and specificity are
then read at it. Decision rule: positive when the probability of the positive
class (the last class) is `>= threshold`, the convention of
`sklearn.metrics.roc_curve`.

The config's `[evaluate] operating_point` is one of `{sensitivity = 0.95}`,
`{specificity = 0.9}` or `{youden = true}`; `choose_threshold(y, p,
**operating_point)` reads it as is.
"""

import numpy as np
from sklearn.metrics import roc_curve

from kdkeras import stats
from kdkeras.registry import CHECKS

RULES = ("sensitivity", "specificity", "youden")


@CHECKS.register("operating_point")
def check_operating_point(operating_point):
    """Validates an operating-point table; returns it as a dict.

    Args:
        operating_point: `{}` (the default 0.5 rule), `{"sensitivity": s}`,
            `{"specificity": s}` with `0 < s <= 1`, or `{"youden": True}`.

    Raises:
        ValueError: Naming the key and the allowed forms.
    """
    operating_point = dict(operating_point or {})
    if not operating_point:
        return operating_point
    forms = "{sensitivity = 0.95}, {specificity = 0.9} or {youden = true}"
    if len(operating_point) != 1 or next(iter(operating_point)) not in RULES:
        raise ValueError(f"operating_point = {operating_point!r} must be one of {forms}.")
    (rule, value), = operating_point.items()
    if rule == "youden":
        if value is not True:
            raise ValueError(f"operating_point = {operating_point!r}: write {{youden = true}}.")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"operating_point = {operating_point!r}: the target {rule} must be a number in (0, 1], "
            f"e.g. {{{rule} = 0.95}}."
        )
    return operating_point


def choose_threshold(y_true, p_positive, *, sensitivity=None, specificity=None, youden=False):
    """The threshold on validation data that meets one target.

    - `sensitivity=s`: the highest threshold whose sensitivity is >= s (so
      the most specific one that meets the target).
    - `specificity=s`: the lowest threshold whose specificity is >= s (the
      most sensitive one that meets it).
    - `youden=True`: the threshold maximising sensitivity + specificity - 1.

    Thresholds are validation scores themselves, so the target is met
    exactly on the validation data.

    Args:
        y_true: Validation labels, 0 or 1 (1 = positive = the last class).
        p_positive: Validation probabilities of the positive class.
        sensitivity: Target sensitivity in (0, 1].
        specificity: Target specificity in (0, 1].
        youden: Use Youden's J instead of a target.

    Returns:
        The threshold, a float: predict positive when `p >= threshold`.

    Raises:
        ValueError: Not exactly one rule, or a split without both classes.

    Example:

    ```python
    t = choose_threshold(y_val, p_val, sensitivity=0.95)
    at = rates_at_threshold(y_test, p_test, t)  # test sensitivity and specificity
    ```
    """
    given = {"sensitivity": sensitivity, "specificity": specificity, "youden": youden or None}
    rule = check_operating_point({k: v for k, v in given.items() if v is not None})
    if not rule:
        raise ValueError("choose_threshold needs one of sensitivity=, specificity= or youden=True.")
    y, p = check_binary_scores(y_true, p_positive)
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # roc_curve orders thresholds from +inf down; tpr and fpr grow along them.
    if sensitivity is not None:
        index = int(np.argmax(tpr >= sensitivity - 1e-12))
    elif specificity is not None:
        index = int(np.flatnonzero(1.0 - fpr >= specificity - 1e-12)[-1])
    else:
        index = int(np.argmax(tpr - fpr))
    if not np.isfinite(thresholds[index]):
        # roc_curve's first threshold, +inf, calls nothing positive; so does
        # the next float above the highest score, which JSON can store.
        return float(np.nextafter(p.max(), np.inf))
    return float(thresholds[index])


def one_class_reason(y_true, split="validation"):
    """Why no threshold can be chosen on (or ROC curve drawn from) `y_true`, or None.

    A split whose labels hold one class has no sensitivity or no
    specificity: `choose_threshold` and the ROC figures refuse it.

    Returns:
        A sentence naming the split and its one class, or None when both
        classes are present.
    """
    y = np.asarray(y_true).reshape(-1)
    if len(y) and y.min() != y.max():
        return None
    which = "no images" if not len(y) else f"only class {int(y[0])} ({len(y)} images)"
    return f"the {split} split holds {which}, so it has no {'sensitivity' if not len(y) or y[0] == 0 else 'specificity'}"


def rates_at_threshold(y_true, p_positive, threshold):
    """Confusion counts and rates of the rule `p >= threshold`.

    Returns:
        Dict with `threshold`, `tp`, `fn`, `tn`, `fp`, `sensitivity`,
        `specificity`, `ppv` (precision), `npv` (a rate whose denominator is
        0 is None) and `intervals`, the 95% stratified bootstrap intervals of
        sensitivity and specificity (`kdkeras.stats.decision_intervals`).
    """
    y, p = check_binary_scores(y_true, p_positive, need_both=False)
    positive = p >= threshold
    tp = int(np.sum(positive & (y == 1)))
    fn = int(np.sum(~positive & (y == 1)))
    tn = int(np.sum(~positive & (y == 0)))
    fp = int(np.sum(positive & (y == 0)))

    def rate(numerator, denominator):
        return numerator / denominator if denominator else None

    return {
        "threshold": float(threshold),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "sensitivity": rate(tp, tp + fn),
        "specificity": rate(tn, tn + fp),
        "ppv": rate(tp, tp + fp),
        "npv": rate(tn, tn + fn),
        "intervals": stats.decision_intervals(y, positive),
    }


def check_binary_scores(y_true, p_positive, need_both=True):
    """Binary labels as int64 and positive-class probabilities as float64, both flat.

    Raises:
        ValueError: for unequal or zero lengths, labels other than 0 and 1, or
            (with `need_both`) labels of one class only.
    """
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(p_positive, dtype=np.float64).reshape(-1)
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"labels and probabilities must have the same non-zero length, got {len(y)} and {len(p)}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1 (1 = the positive class, the last one).")
    if need_both and (y.min() == y.max()):
        raise ValueError(
            "the labels hold one class only: an operating point needs positive and negative "
            "validation examples."
        )
    return y.astype(np.int64), p
