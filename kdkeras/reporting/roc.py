"""ROC curves of several models on one test split, with MedMNIST's AUC in the legends."""

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from kdkeras.evaluation.metrics import classification_metrics
from kdkeras.formatting import format_metric
from kdkeras.reporting.figures import STYLE, class_color, save_figure


def plot_roc_curves(curves, task, path, class_names=None, title="ROC curves, test split"):
    """Draws ROC curves, with the AUC of `kdkeras.evaluation.metrics` in the legends.

    - binary-class: one panel, one curve per model (the positive class's
      probability, i.e. the last column, as scored by MedMNIST).
    - multi-class, ordinal-regression, multi-label: one panel per model with
      the one-vs-rest curve of every class (label); the panel title gives the
      mean of those AUCs, MedMNIST's AUC.
    A class whose AUC is undefined (absent, or present in every sample) has no
    curve and shows "AUC n/a".

    Args:
        curves: `{model_name: (y_true, y_score)}` with probabilities, as for
            `classification_metrics`.
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        path: Destination `.png`.
        class_names: Names of the classes (labels); default "0", "1", ...
        title: Figure title.

    Returns:
        `path`.

    Example:

    ```python
    plot_roc_curves({"teacher": (y_test, teacher_scores),
                     "distilled": (y_test, distilled_scores)},
                    "binary-class", "roc.png")
    ```
    """
    save_figure(roc_curves_figure(curves, task, class_names, title), path)
    return path


def roc_curves_figure(curves, task, class_names=None, title="ROC curves, test split"):
    """`plot_roc_curves`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_roc_curves`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    if not curves:
        raise ValueError("`curves` is empty; give at least one {model_name: (y_true, y_score)}.")
    scored = {}
    for name, (y_true, y_score) in curves.items():
        metrics = classification_metrics(y_true, y_score, task, class_names)
        labels = np.asarray(y_true)
        scores = np.asarray(y_score, dtype=np.float64)
        if metrics["task"] == "binary-class":
            scores = scores.reshape(len(labels), -1)
        scored[name] = (metrics, labels.reshape(len(labels), -1), scores)
    binary = next(iter(scored.values()))[0]["task"] == "binary-class"
    panels = 1 if binary else len(scored)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.6 * panels + 0.4, 4.6), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
        for index, (name, (metrics, labels, scores)) in enumerate(scored.items()):
            if binary:
                color = class_color(index, len(scored))
                _roc_line(axes[0], labels[:, 0] == 1, scores[:, -1], metrics["auc"], name, color)
                continue
            ax = axes[index]
            multi_label = metrics["task"] == "multi-label"
            for k, per_class in enumerate(metrics["per_class"]):
                truth = labels[:, k] == 1 if multi_label else labels[:, 0] == k
                color = class_color(k, len(metrics["per_class"]))
                _roc_line(ax, truth, scores[:, k], per_class["auc"], per_class["name"], color)
            kind = "per-label" if multi_label else "one-vs-rest"
            ax.set_title(f"{name}: mean {kind} AUC = {format_metric(metrics['auc'])}")
        for ax in axes:
            ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
            ax.set(
                xlim=(0, 1),
                ylim=(0, 1.01),
                aspect="equal",
                xlabel="False positive rate (1 - specificity)",
                ylabel="True positive rate (sensitivity)",
            )
            ax.legend(loc="lower right")
        fig.suptitle(title, fontweight="bold")
    return fig


def _roc_line(ax, is_positive, score, auc, label, color):
    if auc is None:
        ax.plot([], [], color=color, label=f"{label} (AUC n/a)")
        return
    false_positive, true_positive, _ = roc_curve(is_positive.astype(np.int64), score)
    ax.plot(
        false_positive,
        true_positive,
        color=color,
        linewidth=1.6,
        label=f"{label} (AUC = {auc:.3f})",
    )
