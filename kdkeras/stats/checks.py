"""Argument checks shared by the statistics: each raises a `ValueError` naming the argument and the fix."""

import numpy as np

from kdkeras import scores


def check_pair(y_true, score_a, score_b, task):
    """`(task, y_true, score_a, score_b)` checked: two models' scores of the same examples."""
    task = scores.check_task(task)
    a = scores.check_scores(score_a, task, "score_a")
    b = scores.check_scores(score_b, task, "score_b")
    if a.shape != b.shape:
        raise ValueError(
            f"`score_a` {a.shape} and `score_b` {b.shape} must have the same shape: two "
            "models scored on the same test examples in the same order."
        )
    return task, scores.check_labels(y_true, a, task), a, b


def check_resamples(n_resamples):
    """The number of bootstrap resamples, a positive int."""
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"`n_resamples` must be a positive integer, got {n_resamples!r}.")
    return int(n_resamples)


def check_confidence(confidence):
    """The coverage of an interval, a float in (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), e.g. 0.95, got {confidence!r}.")
    return float(confidence)


def check_binary_vector(values, name):
    """A 1-D bool array from booleans or 0/1, one per example."""
    values = np.asarray(values)
    if values.ndim != 1 or not np.isin(values, (0, 1)).all():
        raise ValueError(
            f"`{name}` must be a 1-D array of booleans (or 0/1), one per example, got shape "
            f"{values.shape}."
        )
    return values.astype(bool)


def check_score_vector(values, name, n):
    """A float64 array of `n` finite scores."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"`{name}` must be {n} finite scores, one per example (e.g. the positive-class "
            f"column `y_score[:, 1]`), got shape {values.shape}."
        )
    return values


def check_same_length(first, second, first_name, second_name):
    """Checks that two per-example arrays have the same shape."""
    if first.shape != second.shape:
        raise ValueError(
            f"`{first_name}` {first.shape} and `{second_name}` {second.shape} must have the same "
            "shape: the same test examples in the same order."
        )


def check_finite_vector(values, name):
    """A non-empty 1-D float64 array of finite numbers, one per seed."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"`{name}` must be a non-empty 1-D array of finite numbers, one per seed, got "
            f"shape {values.shape}."
        )
    return values
