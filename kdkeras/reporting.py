"""Figures, comparison table and markdown report of a distillation run.

A run folder (`runs/<experiment>/`) holds, for each model name (e.g.
`teacher`, `student`, `distilled`):

- `{name}_metrics.json`: `kdkeras.metrics.classification_metrics` on the test
  split merged with `kdkeras.profiling.describe_model` (write it with
  `save_metrics`);
- `{name}_history.csv`: the training history, as written by
  `keras.callbacks.CSVLogger`;
- `{name}_predictions.npz`: the test labels and probabilities, optionally the
  first test images (write it with `save_predictions`).

`write_report` turns these into `report.md` and its PNG figures. Every number
in the report is recomputed from the saved predictions, so the report can be
checked, or regenerated, without the models.

Figures are drawn on `matplotlib.figure.Figure` objects rendered by the Agg
canvas, never through `pyplot`: nothing opens a window, no figure stays
registered in a global figure manager (a figure is freed once saved), and
importing this module leaves the matplotlib backend of a notebook alone.
"""

import csv
import json
import math
import os
import re

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from kdkeras import __version__
from kdkeras.files import atomic_path, write_text_atomic
from kdkeras.metrics import classification_metrics, predict_labels

_DPI = 150
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_CORRECT = "#1b7f3b"
_WRONG = "#c62828"
_ACCURACY_KEYS = (
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
)
_COUNT_UNITS = ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, ""))
_BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B"))
_AUC_KEY = re.compile(r"^auc(_\d+)?$")
# JSON keeps floats exactly; the tolerance only absorbs summation-order noise
# between the run that wrote metrics.json and the recomputation.
_AGREEMENT_TOLERANCE = 1e-6
# Training command that writes a model's run files, for error messages.
_PRODUCERS = {"teacher": "teacher", "student": "student", "distilled": "distill"}


def plot_history(history, path, title):
    """Plots the training and validation curves of one model.

    One panel per quantity found in the history, epochs on the x axis: the
    loss; the student's own loss against the labels when the history comes
    from a distiller (`student_loss`); the accuracy; the AUC when logged.

    Args:
        history: Path of a history CSV (one row per epoch, one column per
            logged quantity, as written by `keras.callbacks.CSVLogger` or
            `kdkeras.callbacks.RunState`), a dict of per-epoch lists
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
    curves, epochs, _ = _load_history(history)
    panels = [("loss", "Loss")]
    if "student_loss" in curves:
        panels.append(("student_loss", "Student loss (vs labels)"))
    accuracy = _find_key(curves, _ACCURACY_KEYS)
    if accuracy:
        panels.append((accuracy, "Accuracy"))
    auc = next((key for key in curves if _AUC_KEY.match(key)), None)
    if auc:
        panels.append((auc, "AUC"))
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
        for ax, (key, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            ax.plot(epochs, curves[key], color="C0", marker=".", label="train")
            if f"val_{key}" in curves:
                ax.plot(epochs, curves[f"val_{key}"], color="C1", marker=".", label="validation")
            ax.set(title=label, xlabel="Epoch", ylabel=label)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if key == accuracy or key == auc:
                _widen_fraction_axis(ax)
            ax.legend()
        fig.suptitle(f"{title}: training curves", fontweight="bold")
        _save(fig, path)
    return path


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
    if not histories:
        raise ValueError("`histories` is empty; give at least one {model_name: history}.")
    loaded = {name: _load_history(history) for name, history in histories.items()}
    panels = [("loss", "Validation loss (cross-entropy)")]
    if metric != "val_loss":
        panels.append((metric, _pretty_metric(metric)))
    with matplotlib.rc_context(_STYLE):
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
        for ax, (key, label) in zip(axes, panels):
            ax.set(title=label, xlabel="Epoch", ylabel=label.split(" (")[0])
            ax.xaxis.get_major_locator().set_params(integer=True)
            if key != "loss":
                _widen_fraction_axis(ax)
            ax.legend()
        fig.suptitle("Validation curves", fontweight="bold")
        _save(fig, path)
    return path


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
    y_pred = kdkeras.metrics.predict_labels(y_score, "binary-class")
    plot_prediction_grid(x_test, y_test, y_pred, ["normal", "pneumonia"],
                         "student_predictions.png")
    ```
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
    with matplotlib.rc_context({**_STYLE, "axes.grid": False}):
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
                color=_CORRECT if correct else _WRONG,
                fontsize=9,
                fontweight="bold",
            )
        right = int(np.sum(y_pred[:count] == y_true[:count]))
        fig.suptitle(
            f"Test images: predicted (true)\n{right} of {count} correct "
            "(green = correct, red = wrong)",
            fontweight="bold",
        )
        _save(fig, path)
    return path


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
    with matplotlib.rc_context({**_STYLE, "axes.grid": False}):
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
        _save(fig, path)
    return path


def plot_roc_curves(curves, task, path, class_names=None, title="ROC curves, test split"):
    """Draws ROC curves, with the AUC of `kdkeras.metrics` in the legends.

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
        task: One of `kdkeras.metrics.TASKS`.
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
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(4.6 * panels + 0.4, 4.6), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
        for index, (name, (metrics, labels, scores)) in enumerate(scored.items()):
            if binary:
                color = _class_color(index, len(scored))
                _roc_line(axes[0], labels[:, 0] == 1, scores[:, -1], metrics["auc"], name, color)
                continue
            ax = axes[index]
            multi_label = metrics["task"] == "multi-label"
            for k, per_class in enumerate(metrics["per_class"]):
                truth = labels[:, k] == 1 if multi_label else labels[:, 0] == k
                color = _class_color(k, len(metrics["per_class"]))
                _roc_line(ax, truth, scores[:, k], per_class["auc"], per_class["name"], color)
            kind = "per-label" if multi_label else "one-vs-rest"
            ax.set_title(f"{name}: mean {kind} AUC = {_format_metric(metrics['auc'])}")
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
        _save(fig, path)
    return path


def comparison_table(rows):
    """Markdown table comparing models, as in the reference articles.

    Columns: Model | Params | Size | Latency | Loss | ACC | AUC | Balanced ACC.
    Params in k / M / B (total weights); Size on disk in decimal kB / MB / GB;
    Latency as CPU milliseconds per image at batch size 1 (the smallest batch
    measured, named when it is not 1); Loss is the test cross-entropy
    (`cross_entropy`, falling back to `loss`); ACC, AUC and Balanced ACC with
    three decimals, as in the MedMNIST papers. Missing values read "n/a".

    Args:
        rows: List of dicts, each `{"name": model_name, **metrics}` where
            `metrics` is a `metrics.json`-like dict (keys `params`, `size_bytes`,
            `latency`, `cross_entropy` or `loss`, `acc`, `auc`, `balanced_acc`).

    Returns:
        The table as a markdown string (one line per row, trailing newline).

    Example:

    ```python
    comparison_table([{"name": "student", "params": 5954, "size_bytes": 96_712,
                       "latency": {1: {"ms_per_image": 0.82}}, "acc": 0.84}])
    ```
    """
    lines = [
        "| Model | Params | Size | Latency | Loss | ACC | AUC | Balanced ACC |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "name" not in row:
            raise ValueError(f"Each row needs a 'name' key; got keys {sorted(row)}.")
        loss = row.get("cross_entropy", row.get("loss"))
        cells = [
            str(row["name"]).replace("|", "\\|"),
            _format_quantity(row.get("params"), _COUNT_UNITS),
            _format_quantity(row.get("size_bytes"), _BYTE_UNITS),
            _format_latency(row.get("latency")),
            _format_metric(loss),
            _format_metric(row.get("acc")),
            _format_metric(row.get("auc")),
            _format_metric(row.get("balanced_acc")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_predictions(path, y_true, y_score, images=None):
    """Saves a model's test predictions (atomically) for `write_report`.

    Args:
        path: Destination `.npz`, e.g. `runs/quickstart/student_predictions.npz`.
        y_true: Labels, as for `classification_metrics`.
        y_score: Probabilities, one row per sample.
        images: Optional first test images (aligned with the first rows of
            `y_true`) for the prediction grid, pixel values in [0, 255].

    Returns:
        `path`.

    Example:

    ```python
    save_predictions(run_dir / "student_predictions.npz", y_test,
                     logits_to_scores(student.predict(x_test), task),
                     images=x_test[:16])
    ```
    """
    arrays = {"y_true": np.asarray(y_true), "y_score": np.asarray(y_score)}
    if len(arrays["y_true"]) != len(arrays["y_score"]):
        raise ValueError(
            f"`y_true` ({len(arrays['y_true'])} rows) and `y_score` "
            f"({len(arrays['y_score'])} rows) must have one row per test sample."
        )
    if images is not None:
        arrays["images"] = np.asarray(images)
        if len(arrays["images"]) > len(arrays["y_true"]):
            raise ValueError(
                f"`images` has {len(arrays['images'])} rows but there are only "
                f"{len(arrays['y_true'])} labels; pass the first images of the test split."
            )
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_predictions(path):
    """Reads a file written by `save_predictions`.

    Args:
        path: The `.npz` file.

    Returns:
        dict with `y_true`, `y_score` and, if saved, `images`.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If `y_true` or `y_score` is missing.
    """
    with np.load(os.fspath(path)) as data:
        arrays = {key: data[key] for key in data.files}
    for key in ("y_true", "y_score"):
        if key not in arrays:
            raise ValueError(
                f"{path} has no {key!r} array (found: {', '.join(sorted(arrays)) or 'none'}); "
                "write it with `kdkeras.reporting.save_predictions`."
            )
    return arrays


def save_metrics(path, metrics):
    """Writes a metrics dict as indented JSON, atomically.

    numpy scalars and arrays become Python numbers and lists, NaN becomes
    `null` (strict JSON has no NaN) and dict keys become strings (e.g. the
    batch sizes of `latency`).

    Args:
        path: Destination `.json`, e.g. `runs/quickstart/student_metrics.json`.
        metrics: The dict, e.g. `{**classification_metrics(...),
            **describe_model(...)}`.

    Returns:
        `path`.
    """
    write_text_atomic(path, json.dumps(_jsonable(metrics), indent=2) + "\n")
    return path


def write_report(run_dir, models, experiment_name, config, published=None):
    """Writes `report.md` and its figures for the models of one run.

    For each name in `models` it reads `{name}_metrics.json`,
    `{name}_history.csv` and `{name}_predictions.npz` from `run_dir` (see the
    module docstring), recomputes the test metrics from the predictions and
    writes `{name}_curves.png`, `{name}_confusion.png`,
    `{name}_predictions.png` (if images were saved; single-label tasks),
    `val_overlay.png`, `roc.png` and `report.md`. Params, size and latency come
    from the metrics files; every other number from the recomputation, which
    must agree with the stored `acc`, `auc`, `balanced_acc` and `ece`.

    Args:
        run_dir: The run folder.
        models: Model names, in table order, e.g. `["teacher", "student",
            "distilled"]`.
        experiment_name: Title of the report.
        config: The experiment's configuration (JSON-serializable dict), shown
            at the end of the report; None to leave it out.
        published: Optional published results to place ours beside: a markdown
            string inserted as is, or a list of dicts rendered as a table with
            their keys as columns.

    Returns:
        Path of `report.md`.

    Raises:
        FileNotFoundError: If an input file is missing; the message lists every
            missing file and the command that writes it.
        ValueError: If the models disagree on task or test labels, or a stored
            metric disagrees with its recomputation.

    Example:

    ```python
    write_report("runs/quickstart", ["teacher", "student", "distilled"],
                 "PneumoniaMNIST quickstart", config)
    ```
    """
    run_dir = os.fspath(run_dir)
    models = list(models)
    if not models:
        raise ValueError("`models` is empty; name the models to report, e.g. ['teacher'].")
    _check_run_files(run_dir, models)
    stored = {name: _read_metrics(_run_file(run_dir, name, "metrics.json")) for name in models}
    predictions = {
        name: load_predictions(_run_file(run_dir, name, "predictions.npz")) for name in models
    }
    first = models[0]
    task = stored[first]["task"]
    class_names = [entry["name"] for entry in stored[first].get("per_class", [])] or None
    recomputed = {}
    for name in models:
        _check_same_evaluation(run_dir, first, name, stored, predictions)
        recomputed[name] = classification_metrics(
            predictions[name]["y_true"], predictions[name]["y_score"], task, class_names
        )
        _check_agreement(_run_file(run_dir, name, "metrics.json"), stored[name], recomputed[name])
    class_names = [entry["name"] for entry in recomputed[first]["per_class"]]

    for name in models:
        plot_history(
            _run_file(run_dir, name, "history.csv"),
            _run_file(run_dir, name, "curves.png"),
            name.capitalize(),
        )
        plot_confusion_matrix(
            recomputed[name]["confusion_matrix"],
            class_names,
            _run_file(run_dir, name, "confusion.png"),
            f"{name.capitalize()}: confusion matrix, test split (n = {recomputed[name]['n']})",
        )
        if "images" in predictions[name] and task != "multi-label":
            count = len(predictions[name]["images"])
            plot_prediction_grid(
                predictions[name]["images"],
                predictions[name]["y_true"][:count],
                predict_labels(predictions[name]["y_score"][:count], task),
                class_names,
                _run_file(run_dir, name, "predictions.png"),
            )
    plot_validation_overlay(
        {name: _run_file(run_dir, name, "history.csv") for name in models},
        os.path.join(run_dir, "val_overlay.png"),
    )
    plot_roc_curves(
        {name: (predictions[name]["y_true"], predictions[name]["y_score"]) for name in models},
        task,
        os.path.join(run_dir, "roc.png"),
        class_names,
    )
    rows = [
        {
            "name": name,
            **recomputed[name],
            **{key: stored[name].get(key) for key in ("params", "size_bytes", "latency")},
        }
        for name in models
    ]
    text = _report_markdown(
        experiment_name, task, class_names, rows, predictions, config, published
    )
    report = os.path.join(run_dir, "report.md")
    write_text_atomic(report, text)
    return report


def _report_markdown(experiment_name, task, class_names, rows, predictions, config, published):
    n = rows[0]["n"]
    lines = [
        f"# {experiment_name}",
        "",
        f"Task: {task}; classes: {', '.join(class_names)}; test split: {n} images. "
        f"Generated by kdkeras {__version__} from the saved test predictions.",
        "",
        "## Results on the test split",
        "",
        comparison_table(rows),
        "Params: all weights, trainable or not. Size: the saved model file (decimal "
        "units). Latency: median CPU time per image at batch size 1. Loss: test "
        "cross-entropy of the predicted probabilities (comparable across models, "
        "unlike a distiller's training loss). ACC and AUC: MedMNIST definitions "
        "(binary: positive probability > 0.5; multi-class: mean one-vs-rest AUC). "
        "Balanced ACC: mean per-class recall.",
        "",
    ]
    lines += _compression_lines(rows)
    if published is not None:
        lines += ["## Published results", "", _published_markdown(published), ""]
    lines += _latency_lines(rows)
    lines += ["## Per-class metrics", ""]
    for row in rows:
        lines += [
            f"**{row['name']}** (expected calibration error, 15 bins: {row['ece']:.3f})",
            "",
            "| Class | Precision | Recall | F1 | AUC | Support |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {c['name']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
            f"{_format_metric(c['auc'])} | {c['support']} |"
            for c in row["per_class"]
        ]
        lines.append("")
    lines += ["## Training curves", ""]
    lines += [f"![{row['name']} training curves]({row['name']}_curves.png)" for row in rows]
    lines += ["", "Validation curves of all models:", "", "![validation curves](val_overlay.png)"]
    lines += ["", "## Confusion matrices (test split)", ""]
    lines += [f"![{row['name']} confusion matrix]({row['name']}_confusion.png)" for row in rows]
    lines += ["", "## ROC curves (test split)", "", "![ROC curves](roc.png)", ""]
    grids = [row["name"] for row in rows if "images" in predictions[row["name"]]]
    if grids and task != "multi-label":
        lines += ["## Test predictions", "", "Titles read \"predicted (true)\".", ""]
        lines += [f"![{name} predictions]({name}_predictions.png)" for name in grids]
        lines.append("")
    if config is not None:
        lines += [
            "## Configuration",
            "",
            "```json",
            json.dumps(_jsonable(config), indent=2, default=str),
            "```",
            "",
        ]
    return "\n".join(lines)


def _compression_lines(rows):
    reference = rows[0]
    if not reference.get("params"):
        return []
    ratios = [
        f"{row['name']} has {_format_ratio(reference['params'] / row['params'])} "
        "fewer parameters"
        for row in rows[1:]
        if row.get("params")
    ]
    if not ratios:
        return []
    return [f"Compared with {reference['name']}: " + "; ".join(ratios) + ".", ""]


def _latency_lines(rows):
    measured = [row for row in rows if row.get("latency")]
    if not measured:
        return []
    lines = [
        "## CPU latency",
        "",
        "| Model | Batch | ms / image | ms / batch | images / s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in measured:
        for batch, timing in sorted(row["latency"].items(), key=lambda item: int(item[0])):
            lines.append(
                f"| {row['name']} | {batch} | {timing['ms_per_image']:.3g} | "
                f"{timing['ms_per_batch']:.3g} | {timing['images_per_s']:,.0f} |"
            )
    return lines + [""]


def _published_markdown(published):
    if isinstance(published, str):
        return published.strip()
    if isinstance(published, (list, tuple)) and all(isinstance(row, dict) for row in published):
        columns = list(dict.fromkeys(key for row in published for key in row))
        lines = [
            "| " + " | ".join(columns) + " |",
            "| " + " | ".join("---" for _ in columns) + " |",
        ]
        lines += [
            "| " + " | ".join(str(row.get(column, "")) for column in columns) + " |"
            for row in published
        ]
        return "\n".join(lines)
    raise TypeError(
        "`published` must be a markdown string or a list of dicts (one per published "
        f"result), got {type(published).__name__}."
    )


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


def _class_color(index, count):
    # tab10 colours repeat after ten curves; tab20 keeps up to twenty apart.
    return matplotlib.colormaps["tab20" if count > 10 else "tab10"](index % 20)


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


def _save(fig, path):
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI, format="png")


def _load_history(history):
    source = "<dict>"
    if hasattr(history, "history"):
        history = history.history
    if isinstance(history, (str, os.PathLike)):
        source = os.fspath(history)
        history = _read_history_csv(source)
    if not isinstance(history, dict):
        raise TypeError(
            "A history must be a CSVLogger file path, a dict of per-epoch lists or a "
            f"keras History, got {type(history).__name__}."
        )
    curves = {
        key: np.asarray(values, dtype=np.float64).reshape(-1) for key, values in history.items()
    }
    if "loss" not in curves:
        raise ValueError(
            f"History {source} has no 'loss' column (columns: {', '.join(sorted(curves))}); "
            "record training with `keras.callbacks.CSVLogger`."
        )
    lengths = {len(values) for values in curves.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"History {source} has columns of different or zero lengths: {lengths}.")
    if "epoch" not in curves:
        return curves, np.arange(1, lengths.pop() + 1), source
    epochs = curves.pop("epoch")
    # CSVLogger counts epochs from 0, kdkeras' RunState from 1; plots count from 1.
    return curves, epochs + 1 if epochs.min() == 0 else epochs, source


def _read_history_csv(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"History file {path!r} not found.")
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    if not records:
        raise ValueError(f"History file {path!r} has no epochs; was training interrupted?")
    columns = records[0].keys()
    try:
        return {
            column: [float(record[column]) if record[column] else math.nan for record in records]
            for column in columns
        }
    except (TypeError, ValueError) as error:
        raise ValueError(f"History file {path!r} has a non-numeric value: {error}.") from error


def _find_key(curves, candidates):
    return next((key for key in candidates if key in curves), None)


def _resolve_metric(curves, metric):
    if metric in curves:
        return metric
    base = metric[4:] if metric.startswith("val_") else metric
    if base in _ACCURACY_KEYS:
        alias = _find_key(curves, [f"val_{key}" for key in _ACCURACY_KEYS])
        if alias:
            return alias
    return metric


def _pretty_metric(metric):
    base = metric[4:] if metric.startswith("val_") else metric
    if base in _ACCURACY_KEYS:
        return "Validation accuracy"
    return "Validation " + base.replace("_", " ")


def _run_file(run_dir, name, suffix):
    return os.path.join(run_dir, f"{name}_{suffix}")


def _check_run_files(run_dir, models):
    missing = [
        _run_file(run_dir, name, suffix)
        for name in models
        for suffix in ("metrics.json", "history.csv", "predictions.npz")
        if not os.path.isfile(_run_file(run_dir, name, suffix))
    ]
    if missing:
        commands = sorted(
            {
                f"`kdkeras {_PRODUCERS.get(name, name)}`"
                for name in models
                if any(os.path.basename(path).startswith(f"{name}_") for path in missing)
            }
        )
        raise FileNotFoundError(
            "Cannot write the report, missing run files:\n  "
            + "\n  ".join(missing)
            + f"\nThey are written when a model is trained and evaluated: run "
            f"{' and '.join(commands)} for this experiment first (or `make` the matching target)."
        )


def _read_metrics(path):
    with open(path, encoding="utf-8") as f:
        try:
            metrics = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); re-run the evaluation."
            ) from error
    if not isinstance(metrics, dict) or "task" not in metrics:
        raise ValueError(
            f"{path} has no 'task' field; write it with `kdkeras.reporting.save_metrics` "
            "from `kdkeras.metrics.classification_metrics(...)`."
        )
    return metrics


def _check_same_evaluation(run_dir, first, name, stored, predictions):
    if stored[name]["task"] != stored[first]["task"]:
        raise ValueError(
            f"{_run_file(run_dir, name, 'metrics.json')} has task {stored[name]['task']!r} but "
            f"{_run_file(run_dir, first, 'metrics.json')} has {stored[first]['task']!r}; "
            "the models of a report must solve the same task."
        )
    reference = predictions[first]["y_true"]
    labels = predictions[name]["y_true"]
    if labels.shape != reference.shape or not np.array_equal(labels, reference):
        raise ValueError(
            f"{_run_file(run_dir, name, 'predictions.npz')} and "
            f"{_run_file(run_dir, first, 'predictions.npz')} hold different `y_true`: the "
            "models were not evaluated on the same test split; re-evaluate them together."
        )


def _check_agreement(path, stored, recomputed):
    for key in ("acc", "auc", "balanced_acc", "ece"):
        if key not in stored:
            continue
        saved, fresh = stored[key], recomputed[key]
        if (saved is None) != (fresh is None) or (
            saved is not None and abs(saved - fresh) > _AGREEMENT_TOLERANCE
        ):
            raise ValueError(
                f"{path} says {key} = {saved} but its saved predictions give {fresh}: the "
                "metrics file is stale or came from other predictions. Re-run the evaluation "
                "so that both files are written together."
            )


def _jsonable(value):
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value



def _format_quantity(value, units):
    if value is None:
        return "n/a"
    scale, unit = units[-1]
    for larger_scale, larger_unit in units[:-1]:
        # Pick the unit after rounding to 3 significant digits: 999,999 is
        # "1 M", not "1e+03 k".
        if abs(value) >= larger_scale * 0.9995:
            scale, unit = larger_scale, larger_unit
            break
    return f"{value / scale:.3g} {unit}".rstrip()


def _format_latency(latency):
    if not latency:
        return "n/a"
    batch = min(latency, key=int)
    ms = latency[batch]["ms_per_image"]
    if ms >= 1000.0:
        text = f"{ms / 1000.0:.3g} s/img"
    elif ms < 0.01:
        text = f"{ms * 1000.0:.3g} µs/img"
    else:
        text = f"{ms:.3g} ms/img"
    return text if int(batch) == 1 else f"{text} (batch {batch})"


def _format_ratio(ratio):
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _format_metric(value):
    return "n/a" if value is None else f"{value:.3f}"
