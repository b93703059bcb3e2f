"""Keras metrics that `fit` logs from logits, with MedMNIST's definitions."""

import keras
from keras import ops

TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label")


@keras.saving.register_keras_serializable(package="kdkeras")
class LogitsAUC(keras.metrics.AUC):
    """ROC AUC from logits, averaged one-vs-rest over classes (or labels).

    Single-label tasks take sparse integer labels and softmax the logits; the
    mean of the per-class one-vs-rest AUCs is MedMNIST's multi-class AUC, and
    for two classes it equals the AUC of the positive class. Multi-label tasks
    take multi-hot labels and sigmoid the logits (mean per-label AUC).

    Args:
        num_classes: Number of logits.
        task: One of "binary-class", "multi-class", "ordinal-regression",
            "multi-label".
        num_thresholds: Thresholds of the streaming approximation; the exact
            test-split AUC comes from `kdkeras.evaluation.metrics`.
        name: Name logged by `fit` (so `val_auc` can be monitored).

    Example:

    ```python
    model.compile(loss=..., metrics=["accuracy", LogitsAUC(num_classes=2)])
    ```
    """

    def __init__(self, num_classes, task="multi-class", num_thresholds=500, name="auc", dtype=None, **kwargs):
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; use one of {', '.join(TASKS)}.")
        super().__init__(
            num_thresholds=num_thresholds,
            multi_label=True,
            num_labels=num_classes,
            name=name,
            dtype=dtype,
            **kwargs,
        )
        self.num_classes = num_classes
        self.task = task

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        if self.task == "multi-label":
            probabilities = ops.sigmoid(y_pred)
            labels = ops.cast(y_true, "float32")
        else:
            probabilities = ops.softmax(y_pred, axis=-1)
            labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        return super().update_state(labels, probabilities, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        for key in ("multi_label", "num_labels", "label_weights", "from_logits", "curve", "summation_method"):
            config.pop(key, None)
        config.update(num_classes=self.num_classes, task=self.task)
        return config


def fit_metrics(num_classes, task):
    """The metrics kdkeras compiles for a task: accuracy and AUC, from logits.

    Args:
        num_classes: Number of logits.
        task: The dataset's task (`DatasetInfo.task`).

    Returns:
        A list of Keras metrics named "accuracy" and "auc".
    """
    if task == "multi-label":
        accuracy = keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")
    else:
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return [accuracy, LogitsAUC(num_classes=num_classes, task=task)]
