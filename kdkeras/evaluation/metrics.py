"""Test-split metrics of a classifier, computed from its predicted probabilities.

ACC and AUC follow the MedMNIST `Evaluator` (`medmnist/evaluator.py`, `getACC`
and `getAUC`) exactly, so numbers can be placed beside the MedMNIST v2 paper:

- binary-class: the last probability column is the positive class; a sample
  is predicted positive when that probability is > 0.5; AUC is the ROC AUC of
  that column.
- multi-class and ordinal-regression: the predicted class is the argmax; AUC
  is the unweighted mean of the one-vs-rest ROC AUCs of every column.
- multi-label: every label is a separate binary decision (probability > 0.5);
  ACC and AUC are the unweighted means over labels of each label's accuracy
  and ROC AUC.

Everything returned is plain Python (float, int, str, list, dict, None), so
the result can be written with `json.dump` as is.
"""

import numpy as np
from sklearn.metrics import roc_auc_score

from kdkeras import scores, stats
from kdkeras.scores import TASKS  # noqa: F401 (public: `kdkeras.evaluation.metrics.TASKS`)

ECE_BINS = 15
# Fixed, so that a model's metrics file is a function of its predictions alone.
INTERVAL_SEED = 0
# Same floor as Keras' cross-entropy on probabilities, so a confident miss
# costs a large but finite loss.
_EPSILON = 1e-7


def classification_metrics(
    y_true,
    y_score,
    task,
    class_names=None,
    loss=None,
    n_resamples=stats.DEFAULT_RESAMPLES,
    confidence=stats.DEFAULT_CONFIDENCE,
):
    """Computes the test-split metrics of one model as a JSON-friendly dict.

    Args:
        y_true: Ground truth. Integer class indices of shape `(N,)` or `(N, 1)`
            for binary-class, multi-class and ordinal-regression tasks; multi-hot
            0/1 array of shape `(N, L)` for multi-label tasks.
        y_score: Predicted probabilities, shape `(N, C)`: softmax outputs for
            single-label tasks (binary-class also accepts `(N,)` or `(N, 1)`
            probabilities of the positive class), sigmoid outputs `(N, L)` for
            multi-label. Use `logits_to_scores` to get them from logits.
        task: One of `"binary-class"`, `"multi-class"`, `"ordinal-regression"`
            (scored as multi-class), `"multi-label"` (medmnist's
            `"multi-label, binary-class"` is accepted too).
        class_names: Optional names of the classes (labels for multi-label),
            one per column of `y_score`. Defaults to `"0"`, `"1"`, ...
        loss: Optional loss value (e.g. from `model.evaluate`) stored as `loss`.
        n_resamples: Bootstrap resamples of the `intervals`.
        confidence: Coverage of the `intervals`.

    Returns:
        A dict with `task`, `n` (number of samples), `n_classes`, `acc`, `auc`,
        `balanced_acc`, `per_class`, `confusion_matrix`, `ece`,
        `cross_entropy`, `intervals` (bootstrap, seed 0) and, when given,
        `loss`: the fields of the metrics file of the same names, each
        defined in the Attributes of `kdkeras.runs.MetricsRecord`. `auc` is
        None where it is undefined (a class or label without positive or
        negative samples; medmnist raises).

    Raises:
        ValueError: On an unknown task, mismatched shapes, labels out of range,
            or scores that are not probabilities.

    Example:

    ```python
    y_score = logits_to_scores(model.predict(x_test), "binary-class")
    metrics = classification_metrics(y_test, y_score, "binary-class",
                                      class_names=["normal", "pneumonia"])
    metrics["acc"], metrics["auc"]
    ```
    """
    task = scores.check_task(task)
    y_score = scores.check_scores(y_score, task)
    y_true = scores.check_labels(y_true, y_score, task)
    n_classes = y_score.shape[1]
    names = scores.check_class_names(class_names, n_classes)
    if task == "multi-label":
        result = _multi_label_metrics(y_true, y_score, names)
    else:
        result = _single_label_metrics(y_true, y_score, task, names)
    result = {"task": task, "n": int(y_true.shape[0]), "n_classes": n_classes, **result}
    result["intervals"] = stats.bootstrap_intervals(
        y_true, y_score, task, names, n_resamples, confidence, seed=INTERVAL_SEED
    )
    if loss is not None:
        result["loss"] = float(loss)
    return result


def summary(result):
    """`ACC 0.9134 (0.8910-0.9343), AUC ..., balanced ACC ...` for a `classification_metrics` dict.

    Each metric carries its 95% bootstrap interval when the dict has them.
    AUC reads `n/a` when it is undefined (a class or label absent from the
    test split, as in a `--limit` smoke run).
    """
    intervals = result.get("intervals") or {}
    parts = []
    for key, title in (("acc", "ACC"), ("auc", "AUC"), ("balanced_acc", "balanced ACC")):
        if result.get(key) is None:
            parts.append(f"{title} n/a (a class is missing from the test split)")
        else:
            parts.append(f"{title} {stats.format_interval(result[key], intervals.get(key), digits=4)}")
    return ", ".join(parts) + (" (95% intervals)" if intervals else "")


def logits_to_scores(logits, task):
    """Turns model logits into the probabilities `classification_metrics` expects.

    Softmax over the last axis for single-label tasks, element-wise sigmoid for
    multi-label; both computed in float64 without overflow for large logits.
    For a binary-class model with a single logit column, that column is read
    as the positive class's logit and two columns `[1 - p, p]` are returned.

    Args:
        logits: Array of shape `(N, C)`.
        task: One of `TASKS`.

    Returns:
        float64 array of shape `(N, C)` (`(N, 2)` for a one-logit binary model).

    Example:

    ```python
    logits_to_scores(np.array([[2.0, 0.0]]), "multi-class")
    # array([[0.8808, 0.1192]])
    ```
    """
    task = scores.check_task(task)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(
            f"`logits` must have shape (N, C), got {logits.shape}. Pass the model's "
            "raw output on a batch, with one column per class (label)."
        )
    if not np.all(np.isfinite(logits)):
        raise ValueError("`logits` contains NaN or infinite values; check the model's output.")
    if task == "multi-label":
        return _sigmoid(logits)
    if logits.shape[1] == 1:
        if task != "binary-class":
            raise ValueError(
                f"`logits` has one column but task {task!r} needs one per class."
            )
        positive = _sigmoid(logits)
        return np.concatenate([1.0 - positive, positive], axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_labels(y_score, task):
    """Predicted classes (labels) with the same decision rule as `acc`.

    Args:
        y_score: Probabilities, as for `classification_metrics`.
        task: One of `TASKS`.

    Returns:
        int64 array: class indices of shape `(N,)` for single-label tasks
        (binary-class: last column > 0.5), 0/1 array `(N, L)` for multi-label.

    Example:

    ```python
    predict_labels(np.array([[0.3, 0.7], [0.5, 0.5]]), "binary-class")
    # array([1, 0])
    ```
    """
    task = scores.check_task(task)
    return scores.predict(scores.check_scores(y_score, task), task)


def _single_label_metrics(y_true, y_score, task, names):
    n_classes = y_score.shape[1]
    y_pred = scores.predict(y_score, task)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    true_positives = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    class_aucs = [_auc(y_true == k, y_score[:, k]) for k in range(n_classes)]
    if task == "binary-class":
        auc = class_aucs[-1]
    else:
        auc = None if None in class_aucs else float(np.mean(class_aucs))
    confidence = y_score[np.arange(len(y_pred)), y_pred]
    return {
        "acc": float(np.mean(y_pred == y_true)),
        "auc": auc,
        "balanced_acc": float(np.mean(recall[support > 0])),
        "per_class": _per_class(names, precision, recall, f1, support, class_aucs),
        "confusion_matrix": cm.tolist(),
        "ece": _ece(confidence, y_pred == y_true),
        "cross_entropy": float(
            -np.mean(np.log(np.clip(y_score[np.arange(len(y_true)), y_true], _EPSILON, 1.0)))
        ),
    }


def _multi_label_metrics(y_true, y_score, names):
    y_pred = scores.predict(y_score, "multi-label")
    tp = np.sum((y_pred == 1) & (y_true == 1), axis=0)
    fp = np.sum((y_pred == 1) & (y_true == 0), axis=0)
    fn = np.sum((y_pred == 0) & (y_true == 1), axis=0)
    tn = np.sum((y_pred == 0) & (y_true == 0), axis=0)
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    specificity = _safe_divide(tn, tn + fp)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    label_aucs = [_auc(y_true[:, k] == 1, y_score[:, k]) for k in range(y_true.shape[1])]
    probability = np.clip(y_score, _EPSILON, 1.0 - _EPSILON)
    cross_entropy = -(y_true * np.log(probability) + (1 - y_true) * np.log(1.0 - probability))
    return {
        "acc": float(np.mean(y_pred == y_true)),
        "auc": None if None in label_aucs else float(np.mean(label_aucs)),
        "balanced_acc": _multi_label_balanced_acc(tp + fn, tn + fp, recall, specificity),
        "per_class": _per_class(names, precision, recall, f1, tp + fn, label_aucs),
        "confusion_matrix": [
            [[int(tn[k]), int(fp[k])], [int(fn[k]), int(tp[k])]] for k in range(len(names))
        ],
        "ece": _ece(np.maximum(y_score, 1.0 - y_score).ravel(), (y_pred == y_true).ravel()),
        "cross_entropy": float(np.mean(cross_entropy)),
    }


def _multi_label_balanced_acc(positives, negatives, recall, specificity):
    # Like balanced_accuracy_score on each label: a rate whose class is absent
    # from y_true is left out of that label's mean rather than counted as 0.
    rates = np.stack(
        [np.where(positives > 0, recall, np.nan), np.where(negatives > 0, specificity, np.nan)]
    )
    return float(np.mean(np.nanmean(rates, axis=0)))


def _per_class(names, precision, recall, f1, support, aucs):
    return [
        {
            "name": name,
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "auc": aucs[k],
        }
        for k, name in enumerate(names)
    ]


def _auc(is_positive, score):
    if is_positive.all() or not is_positive.any():
        return None
    return float(roc_auc_score(is_positive.astype(np.int64), score))


def _ece(confidence, correct):
    # Right-closed bins: a confidence of exactly 1.0 falls in the last bin.
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    total = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        if in_bin.any():
            gap = abs(np.mean(correct[in_bin]) - np.mean(confidence[in_bin]))
            total += np.sum(in_bin) / len(confidence) * gap
    return float(total)


def _safe_divide(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))
