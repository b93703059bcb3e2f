"""The report's figures, drawn on Agg-rendered `Figure` objects.

Figures are drawn on `matplotlib.figure.Figure` objects rendered by the Agg
canvas, never through `pyplot`: nothing opens a window, no figure stays
registered in a global figure manager (a figure is freed once saved), and
importing this module leaves the matplotlib backend of a notebook alone.
`STYLE` and `save_figure` are shared by every kdkeras figure (the sweep's too).
"""

import math
import re

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kdkeras.files import atomic_path
from kdkeras.reporting.history import find_key, load_history

DPI = 150
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
CORRECT = "#1b7f3b"
WRONG = "#c62828"
ACCURACY_KEYS = (
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
)
_AUC_KEY = re.compile(r"^auc(_\d+)?$")


def plot_history(history, path, title):
    """Plots the training and validation curves of one model.

    One panel per quantity found in the history, epochs on the x axis: the
    loss; the student's own loss against the labels when the history comes
    from a distiller (`student_loss`); the accuracy; the AUC when logged.

    Args:
        history: Path of a history CSV (one row per epoch, one column per
            logged quantity, as written by `keras.callbacks.CSVLogger` or
            `kdkeras.workflow.callbacks.RunState`), a dict of per-epoch lists
            (`History.history`) or a `keras.callbacks.History`. An `epoch`
            column that starts at 0 (CSVLogger) is shifted to count from 1.
        path: Destination `.png`.
        title: Figure title, e.g. `"Student (distilled)"`.

    Returns:
        `path`.

    Example:

    ```python
    plot_history("runs/quickstart/student_history.csv",
                 "runs/quickstart/student_curves.png", "Student")
    ```
    """
    save_figure(history_figure(history, title), path)
    return path


def history_figure(history, title):
    """`plot_history`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_history`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    curves, epochs, _ = load_history(history)
    panels = [("loss", "Loss")]
    if "student_loss" in curves:
        panels.append(("student_loss", "Student loss (vs labels)"))
    accuracy = find_key(curves, ACCURACY_KEYS)
    if accuracy:
        panels.append((accuracy, "Accuracy"))
    auc = next((key for key in curves if _AUC_KEY.match(key)), None)
    if auc:
        panels.append((auc, "AUC"))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
        for ax, (key, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            ax.plot(epochs, curves[key], color="C0", marker=".", label="train")
            if f"val_{key}" in curves:
                ax.plot(epochs, curves[f"val_{key}"], color="C1", marker=".", label="validation")
            ax.set(title=label, xlabel="Epoch", ylabel=label)
            epoch_axis(ax, epochs)
            if key == accuracy or key == auc:
                _widen_fraction_axis(ax)
            ax.legend()
        fig.suptitle(f"{title}: training curves", fontweight="bold")
    return fig


def plot_validation_overlay(histories, path, metric="val_accuracy"):
    """Overlays the validation curves of several models.

    Two panels: the validation loss and `metric`. For a distiller's history the
    loss panel uses `val_student_loss` (the student's loss against the labels),
    because its `val_loss` adds the distillation term and is not comparable
    with a plain model's loss.

    Args:
        histories: `{model_name: history}`, each history as for `plot_history`.
        path: Destination `.png`.
        metric: Validation quantity of the second panel. Accuracy aliases
            (`val_acc`, `val_sparse_categorical_accuracy`, ...) are resolved.

    Returns:
        `path`.

    Raises:
        ValueError: If a history lacks the validation loss or `metric`.

    Example:

    ```python
    plot_validation_overlay(
        {"teacher": "teacher_history.csv", "student": "student_history.csv",
         "distilled": "distilled_history.csv"},
        "val_overlay.png")
    ```
    """
    save_figure(validation_overlay_figure(histories, metric), path)
    return path


def validation_overlay_figure(histories, metric="val_accuracy"):
    """`plot_validation_overlay`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_validation_overlay`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    if not histories:
        raise ValueError("`histories` is empty; give at least one {model_name: history}.")
    loaded = {name: load_history(history) for name, history in histories.items()}
    panels = [("loss", "Validation loss (cross-entropy)")]
    if metric != "val_loss":
        panels.append((metric, _pretty_metric(metric)))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.8 * len(panels), 3.8), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for index, (name, (curves, epochs, source)) in enumerate(loaded.items()):
            for ax, (key, label) in zip(axes, panels):
                if key == "loss":
                    column = "val_student_loss" if "val_student_loss" in curves else "val_loss"
                else:
                    column = _resolve_metric(curves, key)
                if column not in curves:
                    raise ValueError(
                        f"History {source} of model {name!r} has no {column!r} column "
                        f"(columns: {', '.join(sorted(curves))}). Train with validation data, "
                        "or pick another `metric`."
                    )
                ax.plot(epochs, curves[column], color=f"C{index}", marker=".", label=name)
        all_epochs = np.unique(np.concatenate([epochs for _, epochs, _ in loaded.values()]))
        for ax, (key, label) in zip(axes, panels):
            ax.set(title=label, xlabel="Epoch", ylabel=label.split(" (")[0])
            epoch_axis(ax, all_epochs)
            if key != "loss":
                _widen_fraction_axis(ax)
            ax.legend()
        fig.suptitle("Validation curves", fontweight="bold")
    return fig


def plot_prediction_grid(images, y_true, y_pred, class_names, path, n=16):
    """Shows test images titled "predicted (true)": green if right, red if wrong.

    Args:
        images: float array `(N, H, W)`, `(N, H, W, 1)` or `(N, H, W, 3)`,
            pixel values in [0, 255]. The first `n` images are shown.
        y_true: int class indices `(N,)` (or `(N, 1)`).
        y_pred: int predicted class indices, same shape.
        class_names: Names of the classes.
        path: Destination `.png`.
        n: Number of images to show.

    Returns:
        `path`.

    Raises:
        ValueError: On mismatched lengths, labels out of range, a channel
            count other than 1 or 3, or pixel values outside [0, 255].

    Example:

    ```python
    y_pred = kdkeras.evaluation.metrics.predict_labels(y_score, "binary-class")
    plot_prediction_grid(x_test, y_test, y_pred, ["normal", "pneumonia"],
                         "student_predictions.png")
    ```
    """
    save_figure(prediction_grid_figure(images, y_true, y_pred, class_names, n), path)
    return path


def prediction_grid_figure(images, y_true, y_pred, class_names, n=16):
    """`plot_prediction_grid`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_prediction_grid`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    names = [str(name) for name in class_names]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`images` must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got "
            f"{images.shape}."
        )
    if not len(images) == len(y_true) == len(y_pred) or len(images) == 0:
        raise ValueError(
            f"`images`, `y_true` and `y_pred` must have the same non-zero length, got "
            f"{len(images)}, {len(y_true)} and {len(y_pred)}."
        )
    for label_name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if labels.min() < 0 or labels.max() >= len(names):
            raise ValueError(
                f"`{label_name}` holds class indices outside [0, {len(names) - 1}] "
                f"({len(names)} class names); pass one name per class."
            )
    if images.min() < 0.0 or images.max() > 255.0:
        raise ValueError(
            f"`images` must hold pixel values in [0, 255] (the kdkeras image convention), "
            f"got [{images.min():g}, {images.max():g}]."
        )
    count = min(int(n), len(images))
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = Figure(figsize=(1.9 * columns, 2.0 * rows + 0.7), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes:
            ax.set_axis_off()
        for i in range(count):
            image = images[i]
            if image.shape[-1] == 1:
                axes[i].imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=255.0)
            else:
                axes[i].imshow(image / 255.0)
            correct = y_pred[i] == y_true[i]
            axes[i].set_title(
                f"{names[y_pred[i]]}\n({names[y_true[i]]})",
                color=CORRECT if correct else WRONG,
                fontsize=9,
                fontweight="bold",
            )
        right = int(np.sum(y_pred[:count] == y_true[:count]))
        fig.suptitle(
            f"Test images: predicted (true)\n{right} of {count} correct "
            "(green = correct, red = wrong)",
            fontweight="bold",
        )
    return fig


def plot_confusion_matrix(cm, class_names, path, title):
    """Draws a confusion matrix: counts in the cells, colours normalised by row.

    The colour of a cell is its share of the true class (its row), so the
    diagonal reads as each class's recall whatever the class balance. A
    multi-label matrix stack `(L, 2, 2)` (as in `classification_metrics`) is
    drawn as one small matrix per label.

    Args:
        cm: Counts, `(C, C)` with rows the true and columns the predicted class,
            or `(L, 2, 2)` for multi-label.
        class_names: `C` class names, or `L` label names.
        path: Destination `.png`.
        title: Figure title.

    Returns:
        `path`.

    Example:

    ```python
    plot_confusion_matrix(metrics["confusion_matrix"], ["normal", "pneumonia"],
                          "student_confusion.png", "Student")
    ```
    """
    save_figure(confusion_matrix_figure(cm, class_names, title), path)
    return path


def confusion_matrix_figure(cm, class_names, title):
    """`plot_confusion_matrix`'s figure, unsaved: to show in a notebook, or to inspect.

    Arguments (and errors) as for `plot_confusion_matrix`, without `path`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    cm = np.asarray(cm)
    names = [str(name) for name in class_names]
    if cm.ndim == 2 and cm.shape[0] == cm.shape[1] == len(names):
        panels = [(None, cm, names)]
    elif cm.ndim == 3 and cm.shape[1:] == (2, 2) and cm.shape[0] == len(names):
        panels = [(name, matrix, ["absent", "present"]) for name, matrix in zip(names, cm)]
    else:
        raise ValueError(
            f"`cm` must be (C, C) or (L, 2, 2) with one class name per class or label; "
            f"got shape {cm.shape} and {len(names)} names."
        )
    columns = min(len(panels), 5)
    rows = math.ceil(len(panels) / columns)
    side = max(3.6, 0.7 * len(panels[0][2]) + 2.0)
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = Figure(figsize=(side * columns + 1.0, side * rows + 0.4), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes[len(panels):]:
            ax.set_axis_off()
        for ax, (label, matrix, ticks) in zip(axes, panels):
            image = _draw_confusion(ax, matrix, ticks)
            if label is not None:
                ax.set_title(label)
        fig.colorbar(image, ax=list(axes[: len(panels)]), label="Fraction of the true class")
        fig.suptitle(title, fontweight="bold")
    return fig


def epoch_axis(ax, epochs, max_ticks=12):
    """Whole epochs on the x axis: a tick per epoch up to `max_ticks`, integer ticks beyond.

    Matplotlib's integer locator still draws 0.96, 0.98, ... around a single
    epoch; explicit ticks do not.
    """
    if len(epochs) <= max_ticks:
        ax.set_xticks(np.asarray(epochs, dtype=int))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig, path):
    """Renders `fig` with Agg and writes it to `path` as PNG, atomically."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")


def _widen_fraction_axis(ax, span=0.1):
    # Autoscaling blows a 0.004 change of accuracy up to the full panel
    # height; a minimum span keeps flat curves looking flat.
    low, high = ax.get_ylim()
    if high - low >= span:
        return
    low = min(max(0.0, (low + high - span) / 2), 1.0 - span)
    ax.set_ylim(low, low + span)


def _draw_confusion(ax, cm, ticks):
    support = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            f"{count}\n{share[i, j]:.0%}",
            ha="center",
            va="center",
            fontsize=9,
            color="white" if share[i, j] > 0.5 else "black",
        )
    positions = np.arange(len(ticks))
    crowded = len(ticks) > 3
    ax.set_xticks(
        positions, ticks, rotation=45 if crowded else 0, ha="right" if crowded else "center"
    )
    ax.set_yticks(positions, ticks)
    ax.set(xlabel="Predicted class", ylabel="True class")
    return image


def class_color(index, count):
    """A distinct colour for curve `index` of `count`."""
    # tab10 colours repeat after ten curves; tab20 keeps up to twenty apart.
    return matplotlib.colormaps["tab20" if count > 10 else "tab10"](index % 20)


def _resolve_metric(curves, metric):
    if metric in curves:
        return metric
    base = metric[4:] if metric.startswith("val_") else metric
    if base in ACCURACY_KEYS:
        alias = find_key(curves, [f"val_{key}" for key in ACCURACY_KEYS])
        if alias:
            return alias
    return metric


def _pretty_metric(metric):
    base = metric[4:] if metric.startswith("val_") else metric
    if base in ACCURACY_KEYS:
        return "Validation accuracy"
    return "Validation " + base.replace("_", " ")
