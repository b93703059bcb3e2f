"""The clinical section's figures: reliability diagrams, ROC and precision-recall curves, Grad-CAM.

`kdkeras.evaluation` computes the numbers (calibration bins, operating points,
Grad-CAM maps); this module only draws them, in the style of
`kdkeras.reporting.figures`, and writes each `.png` atomically.
"""

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from kdkeras.evaluation.calibration import reliability_bins
from kdkeras.evaluation.metrics import ECE_BINS, classification_metrics
from kdkeras.evaluation.operating_point import check_binary_scores, rates_at_threshold
from kdkeras.reporting.figures import CORRECT, STYLE, WRONG, class_color, save_figure

_CMAP = "jet"
_OVERLAY_ALPHA = 0.4


def plot_reliability_diagram(curves, task, path, title="Reliability diagram, test split"):
    """Accuracy against confidence per bin, one line per model, with the ECE in the legend.

    A calibrated model lies on the diagonal; below it, the model is
    over-confident. The lower panel shows how many examples fall in each bin,
    so a point far from the diagonal can be weighed by its support.

    Args:
        curves: `{label: (y_true, y_score)}`, probabilities as for
            `kdkeras.evaluation.metrics.classification_metrics`; e.g. a model before and
            after temperature scaling.
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        path: Destination `.png`.
        title: Figure title.

    Returns:
        `path`.

    Example:

    ```python
    plot_reliability_diagram({"distilled": (y, p), "distilled, T = 1.8": (y, p_cal)},
                             "binary-class", "reliability.png")
    ```
    """
    save_figure(reliability_diagram_figure(curves, task, title), path)
    return path


def reliability_diagram_figure(curves, task, title="Reliability diagram, test split"):
    """`plot_reliability_diagram`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_reliability_diagram`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    if not curves:
        raise ValueError("`curves` is empty; give at least one {label: (y_true, y_score)}.")
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.4, 6.0), layout="constrained")
        top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
        top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
        width = 1.0 / ECE_BINS / len(curves)
        for index, (label, (y_true, y_score)) in enumerate(curves.items()):
            ece = classification_metrics(y_true, y_score, task)["ece"]
            confidence, accuracy, count = reliability_bins(y_true, y_score, task)
            color = class_color(index, len(curves))
            shown = count > 0
            top.plot(confidence[shown], accuracy[shown], marker="o", markersize=4, linewidth=1.6,
                     color=color, label=f"{label} (ECE = {ece:.3f})")
            offset = (index - (len(curves) - 1) / 2) * width
            bottom.bar(centers + offset, count / count.sum(), width=width, color=color)
        top.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Accuracy in the bin")
        top.legend(loc="upper left")
        bottom.set(xlabel="Confidence (probability of the predicted class)", ylabel="Share")
        fig.suptitle(title, fontweight="bold")
    return fig


def plot_roc_operating_points(curves, path, title="ROC curves and operating points, test split"):
    """Binary ROC curves with each model's operating point marked.

    Args:
        curves: `{label: (y_true, p_positive, threshold)}`; `threshold` may be
            None (no point is marked).
        path: Destination `.png`.
        title: Figure title.

    Returns:
        `path`.
    """
    save_figure(roc_operating_points_figure(curves, title), path)
    return path


def roc_operating_points_figure(curves, title="ROC curves and operating points, test split"):
    """`plot_roc_operating_points`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_roc_operating_points`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.0, 5.0), layout="constrained")
        ax = fig.subplots()
        for index, (label, (y_true, p, threshold)) in enumerate(curves.items()):
            y, p = check_binary_scores(y_true, p)
            color = class_color(index, len(curves))
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, color=color, linewidth=1.6, label=f"{label} (AUC = {roc_auc_score(y, p):.3f})")
            if threshold is not None:
                at = rates_at_threshold(y, p, threshold)
                ax.plot(1.0 - at["specificity"], at["sensitivity"], marker="o", markersize=8,
                        markeredgecolor="black", color=color, linestyle="none",
                        label=f"  p >= {threshold:.3f}: sens {at['sensitivity']:.3f}, "
                              f"spec {at['specificity']:.3f}")
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
               xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)")
        ax.legend(loc="lower right", fontsize=8)
        fig.suptitle(title, fontweight="bold")
    return fig


def plot_precision_recall(curves, path, title="Precision-recall curves, test split"):
    """Binary precision-recall curves with average precision in the legend.

    The dashed line is the prevalence, the precision of a random ranking:
    on a rare condition it shows what ROC curves hide.

    Args:
        curves: `{label: (y_true, p_positive)}`.
        path: Destination `.png`.
        title: Figure title.

    Returns:
        `path`.
    """
    save_figure(precision_recall_figure(curves, title), path)
    return path


def precision_recall_figure(curves, title="Precision-recall curves, test split"):
    """`plot_precision_recall`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_precision_recall`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.0, 5.0), layout="constrained")
        ax = fig.subplots()
        prevalence = None
        for index, (label, (y_true, p)) in enumerate(curves.items()):
            y, p = check_binary_scores(y_true, p)
            precision, recall, _ = precision_recall_curve(y, p)
            ap = average_precision_score(y, p)
            ax.step(recall, precision, where="post", linewidth=1.6, color=class_color(index, len(curves)),
                    label=f"{label} (AP = {ap:.3f})")
            prevalence = float(np.mean(y))
        ax.axhline(prevalence, color="0.6", linestyle="--", linewidth=1, label=f"prevalence {prevalence:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
               xlabel="Recall (sensitivity)", ylabel="Precision (positive predictive value)")
        ax.legend(loc="lower left")
        fig.suptitle(title, fontweight="bold")
    return fig


def overlay(image, heatmap):
    """Blends a [0, 1] heatmap (jet colours) over an image; returns RGB floats in [0, 1].

    Args:
        image: `(H, W)`, `(H, W, 1)` or `(H, W, 3)`, pixels in [0, 255].
        heatmap: `(H, W)` in [0, 1].
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colors = matplotlib.colormaps[_CMAP](np.clip(heatmap, 0.0, 1.0))[..., :3]
    return np.clip((1 - _OVERLAY_ALPHA) * rgb / 255.0 + _OVERLAY_ALPHA * colors, 0.0, 1.0)


def save_overlay(image, heatmap, path, title=None):
    """Writes one image with its Grad-CAM overlay beside it as a `.png` (atomically)."""
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = Figure(figsize=(5.2, 2.9), layout="constrained")
        left, right = fig.subplots(1, 2)
        _show_image(left, image)
        left.set_title("image")
        right.imshow(overlay(image, heatmap))
        right.set_title("Grad-CAM")
        for ax in (left, right):
            ax.set_axis_off()
        if title:
            fig.suptitle(title, fontsize=9)
        save_figure(fig, path)
    return path


def plot_gradcam_grid(images, teacher_maps, student_maps, y_true, y_pred, class_names, path,
                      n=8, student_label="student", title=None):
    """Image, teacher map and student map side by side, correct and wrong cases.

    Rows are taken half from the student's correct predictions and half from
    its errors (as many as exist), in input order. Row labels give the
    student's prediction and the truth, green when right and red when wrong,
    as in the prediction grid of the report.

    Args:
        images: `(N, H, W, C)` pixels in [0, 255].
        teacher_maps: `(N, H, W)` Grad-CAM maps of the teacher, in [0, 1].
        student_maps: `(N, H, W)` maps of the student.
        y_true: True class indices `(N,)`.
        y_pred: The student's predicted classes `(N,)`.
        class_names: Names of the classes.
        path: Destination `.png`.
        n: Rows at most.
        student_label: Column title of the student's maps.
        title: Figure title; a default one names what is mapped.

    Returns:
        `path`.
    """
    images = np.asarray(images, dtype=np.float32)
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if not len(images) == len(teacher_maps) == len(student_maps) == len(y_true) == len(y_pred) > 0:
        raise ValueError(
            "images, maps, y_true and y_pred must have the same non-zero length, got "
            f"{len(images)}, {len(teacher_maps)}, {len(student_maps)}, {len(y_true)}, {len(y_pred)}."
        )
    correct = np.flatnonzero(y_true == y_pred)
    wrong = np.flatnonzero(y_true != y_pred)
    wrong_rows = wrong[: max(n // 2, n - len(correct))]
    rows = np.concatenate([correct[: n - len(wrong_rows)], wrong_rows]).astype(int)
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = Figure(figsize=(6.0, 1.9 * len(rows) + 0.8), layout="constrained")
        axes = fig.subplots(len(rows), 3, squeeze=False)
        for r, i in enumerate(rows):
            _show_image(axes[r, 0], images[i])
            axes[r, 1].imshow(overlay(images[i], teacher_maps[i]))
            axes[r, 2].imshow(overlay(images[i], student_maps[i]))
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
            right = y_pred[i] == y_true[i]
            axes[r, 0].set_ylabel(
                f"{class_names[y_pred[i]]}\n({class_names[y_true[i]]})",
                color=CORRECT if right else WRONG, fontsize=9, fontweight="bold",
            )
        for ax, label in zip(axes[0], ("image", "teacher", student_label)):
            ax.set_title(label)
        fig.suptitle(
            title or f"Grad-CAM of the true class: {student_label}'s prediction (truth)\n"
            "green = correct, red = wrong",
            fontweight="bold",
        )
        save_figure(fig, path)
    return path


def _show_image(ax, image):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=255.0)
    else:
        ax.imshow(np.clip(image / 255.0, 0.0, 1.0))
