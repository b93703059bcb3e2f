"""Predicted scores of a classifier: its task, the input checks and the decision rule.

`kdkeras.evaluation.metrics` (point estimates) and `kdkeras.stats` (intervals and paired
tests) read predictions the same way through this module: the same task names,
the same validation of labels and probabilities, and the same decision rule
(binary-class: last column > 0.5; single-label: argmax; multi-label: each
label > 0.5), which follows the MedMNIST `Evaluator`.
"""

import numpy as np

TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label")

# medmnist's INFO calls the multi-label task by this longer name.
_TASK_ALIASES = {"multi-label, binary-class": "multi-label"}
THRESHOLD = 0.5


def predict(y_score, task):
    """The decision rule of `acc`, on scores already checked by `check_scores`.

    Returns:
        int64 class indices `(N,)` for single-label tasks, 0/1 array `(N, L)`
        for multi-label.
    """
    if task == "multi-label":
        return (y_score > THRESHOLD).astype(np.int64)
    if task == "binary-class":
        return (y_score[:, -1] > THRESHOLD).astype(np.int64)
    return np.argmax(y_score, axis=1).astype(np.int64)


def check_task(task):
    """Returns the canonical task name; raises ValueError naming the valid ones."""
    task = _TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise ValueError(f"Unknown `task` {task!r}; use one of {', '.join(TASKS)}.")
    return task


def check_scores(y_score, task, name="y_score"):
    """Checks predicted probabilities and returns them as float64 `(N, C)`.

    A binary-class `(N,)` or `(N, 1)` array of positive-class probabilities is
    expanded to the two columns `[1 - p, p]`.

    Args:
        y_score: Predicted probabilities (see `kdkeras.evaluation.metrics.classification_metrics`).
        task: A name returned by `check_task`.
        name: The argument's name, used in error messages.

    Raises:
        ValueError: On a wrong shape, or values that are not probabilities.
    """
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "binary-class" and (y_score.ndim == 1 or y_score.shape[1:] == (1,)):
        positive = y_score.reshape(-1, 1)
        y_score = np.concatenate([1.0 - positive, positive], axis=1)
    if y_score.ndim != 2 or y_score.shape[0] == 0:
        raise ValueError(
            f"`{name}` must have shape (N, C) with N > 0, got {y_score.shape}: "
            "one row per sample, one probability column per class (label)."
        )
    if task == "binary-class" and y_score.shape[1] != 2:
        raise ValueError(
            f"`{name}` has {y_score.shape[1]} columns but a binary-class task needs 2 "
            "(or one column of positive-class probabilities)."
        )
    if task in ("multi-class", "ordinal-regression") and y_score.shape[1] < 2:
        raise ValueError(f"`{name}` needs one column per class (2 or more) for task {task!r}.")
    if not np.all(np.isfinite(y_score)) or y_score.min() < 0.0 or y_score.max() > 1.0:
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1]; got values outside it (logits?). "
            "Convert logits with `kdkeras.evaluation.metrics.logits_to_scores(logits, task)`."
        )
    # Row sums are checked loosely: float16 softmax outputs are off by ~1e-3.
    if task != "multi-label" and not np.allclose(y_score.sum(axis=1), 1.0, atol=1e-2):
        raise ValueError(
            f"`{name}` rows must sum to 1 for task {task!r} (softmax outputs); for "
            "independent sigmoid outputs use task 'multi-label'. Convert logits with "
            "`kdkeras.evaluation.metrics.logits_to_scores(logits, task)`."
        )
    return y_score


def check_labels(y_true, y_score, task):
    """Checks labels against checked scores; returns int64 `(N,)` or multi-hot `(N, L)`."""
    y_true = np.asarray(y_true)
    n, n_columns = y_score.shape
    if task == "multi-label":
        if y_true.shape != y_score.shape:
            raise ValueError(
                f"Multi-label `y_true` must be multi-hot with the shape of `y_score` "
                f"{y_score.shape}, got {y_true.shape}."
            )
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError("Multi-label `y_true` must hold only 0 and 1 (multi-hot).")
        return y_true.astype(np.int64)
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim != 1 or y_true.shape[0] != n:
        raise ValueError(
            f"`y_true` must be class indices of shape ({n},) or ({n}, 1) to match "
            f"`y_score` {y_score.shape}, got {y_true.shape}. One-hot labels: pass "
            "`labels.argmax(axis=1)`."
        )
    if not np.all(np.mod(y_true, 1) == 0) or y_true.min() < 0 or y_true.max() >= n_columns:
        raise ValueError(
            f"`y_true` must hold integer class indices in [0, {n_columns - 1}] "
            f"(`y_score` has {n_columns} columns), got values in "
            f"[{y_true.min()}, {y_true.max()}]."
        )
    return y_true.astype(np.int64)


def check_class_names(class_names, n_classes):
    """Returns one string name per class (label), `"0"`, `"1"`, ... by default."""
    if class_names is None:
        return [str(k) for k in range(n_classes)]
    names = [str(name) for name in class_names]
    if len(names) != n_classes:
        raise ValueError(
            f"`class_names` has {len(names)} names but `y_score` has {n_classes} "
            "columns; give one name per class (label)."
        )
    return names
