"""`write_report`: the figures and `report.md` of a run folder, recomputed from its predictions."""

import csv
import os
import tomllib

from kdkeras import runs as runs_lib
from kdkeras import stats
from kdkeras.data.errors import DataError
from kdkeras.evaluation import profiling
from kdkeras.evaluation.metrics import classification_metrics, predict_labels
from kdkeras.files import load_model, write_text_atomic
from kdkeras.reporting.figures import (
    plot_confusion_matrix,
    plot_history,
    plot_prediction_grid,
    plot_validation_overlay,
)
from kdkeras.reporting.roc import plot_roc_curves
from kdkeras.reporting.tables import report_markdown

# How each model reads in a verdict sentence.
_SPOKEN = {"teacher": "the teacher", "student": "the student alone", "distilled": "the distilled student"}
# The pairs a report tests, when both models ran: distillation against its baseline and its teacher.
_PAIRS = (("distilled", "student"), ("distilled", "teacher"), ("student", "teacher"))

# JSON keeps floats exactly; the tolerance only absorbs summation-order noise
# between the run that wrote metrics.json and the recomputation.
_AGREEMENT_TOLERANCE = 1e-6


def write_report(run_dir, models, experiment_name, config, published=None, test_data=None):
    """Writes `report.md` and its figures for the models of one run.

    For each name in `models` it reads the metrics, history and predictions
    files of `run_dir` (see `kdkeras.runs`), recomputes the test metrics from
    the predictions and writes `{name}_curves.png`, `{name}_confusion.png`,
    `{name}_predictions.png` (if images were saved; single-label tasks),
    `val_overlay.png`, `roc.png` and `report.md`. Params, size, latency and
    the record of what ran come from the metrics files; every other number
    from the recomputation, which must agree with the stored `acc`, `auc`,
    `balanced_acc` and `ece`.

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
        test_data: Optional batches of `(images, labels)` of the whole test
            split the models were evaluated on (in the saved order): the
            clinical read-out measures the teacher-student Grad-CAM agreement
            over it. Without it the report says the agreement was not computed.

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
    run = runs_lib.RunFolder(run_dir)
    models = list(models)
    if not models:
        raise ValueError("`models` is empty; name the models to report, e.g. ['teacher'].")
    _check_run_files(run, models)
    stored, predictions, recomputed = _recompute(run, models)
    task = stored[models[0]]["task"]
    class_names = runs_lib.class_names(recomputed[models[0]])
    _plot_figures(run, models, task, class_names, recomputed, predictions)
    loaded, latencies = _timed_together(run, models)
    rows = [
        {
            "name": name,
            **recomputed[name],
            **{key: stored[name].get(key) for key in ("params", "size_bytes")},
            "latency": latencies.get(name, stored[name].get("latency")),
            "run": stored[name].run,
        }
        for name in models
    ]
    comparisons = [
        stats.compare_models(
            predictions[a]["y_true"], predictions[a]["y_score"], predictions[b]["y_score"], task,
            _SPOKEN.get(a, a), _SPOKEN.get(b, b), class_names,
        )
        for a, b in _PAIRS
        if a in models and b in models and not (a == "student" and "distilled" in models)
    ]
    clinical = _clinical(run, models, task, class_names, predictions, config, test_data, loaded)
    text = report_markdown(
        experiment_name, task, class_names, rows, predictions, config, published, comparisons,
        clinical.markdown if clinical else None,
    )
    write_text_atomic(run.report, text)
    return run.report


def recorded_data(run_dir, models):
    """The `[data]` table the first of `models` ran with, as its `{name}_config.toml` records it.

    A report reloads the test split its models were evaluated on: the
    settings of that run (`limit`, `image_size`...), not today's command line.

    Args:
        run_dir: The run folder.
        models: Model names in report order; the first with a recorded config is read.

    Returns:
        `(path, data)`: the file read and its `[data]` table, or `(None, None)`
        when no phase recorded its config (a folder written by hand).

    Raises:
        DataError: A recorded config that is not readable TOML.
    """
    run = runs_lib.RunFolder(run_dir)
    for name in models:
        path = run.phase_config(name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                return path, tomllib.load(f).get("data", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise DataError(
                f"{path} is not readable TOML ({e}) [damaged run file of {name!r}]. Re-run "
                f"`kdkeras {runs_lib.PHASE_OF.get(name, 'evaluate')}` for this experiment to write it again."
            ) from e
    return None, None


def _timed_together(run, models):
    """`(loaded, latencies)`: the models whose `.keras` file exists, and, when every model's does,
    their latencies timed together (written to `latency.json`); otherwise `{}`, and no
    `latency.json`.

    Each stored latency was measured when its model finished training, under whatever else ran
    then; timed together, in interleaved rounds, the models' latencies compare.
    """
    loaded = {name: load_model(run.model(name)) for name in models if os.path.exists(run.model(name))}
    if len(loaded) < len(models):
        if os.path.exists(run.latency):  # an earlier report's timings are not this report's
            os.remove(run.latency)
        return loaded, {}
    latencies = profiling.measure_latencies(loaded)
    runs_lib.save_report_json(run.latency, latencies)
    return loaded, latencies


def _clinical(run, models, task, class_names, predictions, config, test_data, loaded):
    """The clinical read-out, when every model saved its test and validation logits.

    `loaded` holds the models whose `.keras` file exists, by name (for Grad-CAM).
    """
    from kdkeras.reporting.clinical import clinical_section

    if not all({"logits", "val_logits"} <= set(predictions[name]) for name in models):
        return None
    paths = {name: run.model(name) for name in models}
    evaluate = (config or {}).get("evaluate", {})
    first = predictions[models[0]]
    section = clinical_section(
        run.path,
        task=task,
        class_names=class_names,
        y_val=first["val_true"],
        y_test=first["y_true"],
        val_logits={name: predictions[name]["val_logits"] for name in models},
        test_logits={name: predictions[name]["logits"] for name in models},
        teacher="teacher" if "teacher" in models else models[0],
        images=first.get("images"),
        models=loaded,
        model_paths={name: paths[name] for name in loaded},
        operating_point=evaluate.get("operating_point") or None,
        gradcam_layers=evaluate.get("gradcam_layers") or None,
        test_data=test_data,
        report_dir=run.path,
    )
    runs_lib.save_report_json(run.clinical, section.metrics)
    return section


def _recompute(run, models):
    """`(stored, predictions, recomputed)` per model: the metrics files, the saved predictions and
    the metrics recomputed from those, checked to agree with the files."""
    stored = {name: _read_run_file(run, name, run.metrics, run.read_metrics) for name in models}
    predictions = {name: _read_run_file(run, name, run.predictions, run.read_predictions) for name in models}
    for name in models:
        _read_run_file(run, name, run.history, lambda n: _read_history(run.history(n)))
    first = models[0]
    task = stored[first]["task"]
    class_names = [entry["name"] for entry in stored[first].get("per_class", [])] or None
    recomputed = {}
    for name in models:
        _check_same_evaluation(run, first, name, stored, predictions)
        recomputed[name] = classification_metrics(
            predictions[name]["y_true"], predictions[name]["y_score"], task, class_names
        )
        _check_agreement(run.metrics(name), stored[name], recomputed[name])
    return stored, predictions, recomputed


def _plot_figures(run, models, task, class_names, recomputed, predictions):
    """Every model's curves, confusion matrix and prediction grid, then the shared overlays."""
    for name in models:
        plot_history(run.history(name), run.figure("curves", name), name.capitalize())
        plot_confusion_matrix(
            recomputed[name]["confusion_matrix"],
            class_names,
            run.figure("confusion", name),
            f"{name.capitalize()}: confusion matrix, test split (n = {recomputed[name]['n']})",
        )
        if "images" in predictions[name] and task != "multi-label":
            count = len(predictions[name]["images"])
            plot_prediction_grid(
                predictions[name]["images"],
                predictions[name]["y_true"][:count],
                predict_labels(predictions[name]["y_score"][:count], task),
                class_names,
                run.figure("predictions", name),
            )
    plot_validation_overlay({name: run.history(name) for name in models}, run.figure("val_overlay"))
    plot_roc_curves(
        {name: (predictions[name]["y_true"], predictions[name]["y_score"]) for name in models},
        task,
        run.figure("roc"),
        class_names,
    )


def _read_run_file(run, name, path_of, read):
    """`read(name)`; any fault of the file becomes one line naming it and the phase that rewrites it."""
    path = path_of(name)
    try:
        return read(name)
    except Exception as e:  # json, zipfile, numpy and csv raise many types on damaged files
        reason = str(e) if isinstance(e, ValueError) and path in str(e) else f"{path}: {type(e).__name__}: {e}"
        phase = runs_lib.PHASE_OF.get(name, "evaluate")
        raise DataError(
            f"{reason} [damaged run file of {name!r}]. Re-run `kdkeras {phase}` for this experiment "
            "to write it again."
        ) from e


def _read_history(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no epoch (empty or header only)")
    return rows


def _check_run_files(run, models):
    missing = run.missing(models)
    if missing:
        commands = sorted({
            f"`kdkeras {runs_lib.PHASE_OF.get(name, 'evaluate')}`"
            for name in models
            if set(missing) & {run.metrics(name), run.history(name), run.predictions(name)}
        })
        raise FileNotFoundError(
            "Cannot write the report, missing run files:\n  "
            + "\n  ".join(missing)
            + f"\nThey are written when a model is trained and evaluated: run "
            f"{' and '.join(commands)} for this experiment first (or `make` the matching target)."
        )


def _check_same_evaluation(run, first, name, stored, predictions):
    if stored[name]["task"] != stored[first]["task"]:
        raise ValueError(
            f"{run.metrics(name)} has task {stored[name]['task']!r} but "
            f"{run.metrics(first)} has {stored[first]['task']!r}; "
            "the models of a report must solve the same task."
        )
    reference = predictions[first]["y_true"]
    labels = predictions[name]["y_true"]
    if labels.shape != reference.shape or not (labels == reference).all():
        raise ValueError(
            f"{run.predictions(name)} and {run.predictions(first)} hold different `y_true`: the "
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
