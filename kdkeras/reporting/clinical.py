"""The clinical read-out of a run: fidelity, calibration, operating point, Grad-CAM.

`clinical_section` takes the validation and test logits of the teacher and
the students, fits what is fitted on validation only (temperature,
threshold), reads the test split at it, writes the figures and returns the
report's markdown and the numbers for the metrics JSON. Given the models and
the whole test split, it also measures how closely each student's Grad-CAM
maps follow the teacher's over every test image.
"""

import dataclasses
import os

import numpy as np
from sklearn.metrics import average_precision_score

from kdkeras.evaluation import calibration, explain
from kdkeras.evaluation import operating_point as op
from kdkeras.evaluation.fidelity import fidelity
from kdkeras.evaluation.metrics import logits_to_scores, predict_labels
from kdkeras.reporting import figures_clinical
from kdkeras.runs import RunFolder
from kdkeras.stats import format_interval

_DEFAULT_THRESHOLD = 0.5


@dataclasses.dataclass
class ClinicalSection:
    """What `clinical_section` produced.

    Attributes:
        markdown: Lines of the report section (no trailing newlines).
        metrics: `{model name: {...}}`, JSON-ready: `calibration`,
            `operating_point` and `average_precision` (binary tasks),
            `fidelity` and `gradcam_agreement` (models other than the teacher).
        figures: Paths of the written figures.
    """

    markdown: list
    metrics: dict
    figures: list


def clinical_section(out_dir, *, task, class_names, y_val, y_test, val_logits, test_logits,
                     teacher="teacher", images=None, models=None, model_paths=None,
                     operating_point=None, gradcam_layers=None, gradcam_images=16, test_data=None,
                     report_dir=None):
    """Computes and draws the clinical read-out of teacher and students.

    Args:
        out_dir: Folder of the figures (created if needed).
        task: One of `kdkeras.evaluation.metrics.TASKS`.
        class_names: Names of the classes (binary: the last is the positive one).
        y_val: Validation labels: class indices `(N_val,)`, multi-hot for multi-label.
        y_test: Test labels `(N_test,)`.
        val_logits: `{model name: logits (N_val, C)}`, e.g. keys `"teacher"`,
            `"student"`, `"distilled"`; the order of the dict is the order of
            the tables.
        test_logits: `{model name: logits (N_test, C)}`, the same keys.
        teacher: The key of the teacher, the reference of fidelity and of
            the Grad-CAM comparison.
        images: Optional test images `(N_img, H, W, C)` in [0, 255]: the first
            `N_img` test examples, in the order of `y_test`.
        models: Optional `{model name: keras.Model}`; with `images`, the
            teacher's and each student's Grad-CAM maps are drawn side by side
            on up to `gradcam_images` images; with `test_data`, their
            agreement is measured over the whole test split.
        model_paths: Optional `{model name: .keras path}`; each model's
            temperature and threshold are saved beside it
            (`kdkeras.evaluation.calibration.save_calibration`), for `kdkeras predict`.
        operating_point: The `[evaluate] operating_point` table: `{}` keeps
            the 0.5 threshold; `{"sensitivity": 0.95}`, `{"specificity": s}`
            or `{"youden": True}` choose one on validation (binary tasks).
        gradcam_layers: Optional `{model name: layer name}`; default the last
            spatial layer of each model.
        gradcam_images: Images whose maps are drawn, at most.
        test_data: Optional batches of `(images, labels)` of the whole test
            split, in the order of `y_test` (e.g. the test `tf.data.Dataset`
            of `kdkeras.workflow.training.load_data`): the teacher-student Grad-CAM
            agreement is computed over it (`kdkeras.evaluation.explain.gradcam_agreement`).
            Without it the agreement is not computed, and the markdown says so.
        report_dir: Folder of the markdown file, for relative figure links;
            default `out_dir`.

    Returns:
        A `ClinicalSection`.
    """
    rule = op.check_operating_point(operating_point)
    names = list(test_logits)
    binary = task == "binary-class"
    report_dir = report_dir or out_dir
    os.makedirs(out_dir, exist_ok=True)
    metrics = {name: {} for name in names}
    calibrated, figures = _calibrate(metrics, names, task, y_val, y_test, val_logits, test_logits, out_dir)
    for name in names:  # too few validation images, or T at a bound: logged, saved, shown
        fitted = metrics[name]["calibration"]
        fitted["warnings"] = calibration.fit_warnings(y_val, task, class_names, fitted["temperature"])
    thresholds, not_applied = {}, None
    if binary:
        thresholds, op_figures, not_applied = _operating_points(
            metrics, names, rule, y_val, y_test, calibrated, out_dir)
        figures.extend(op_figures)
        if not_applied:
            rule = {}  # the default threshold was used, and is what the calibration file records
    if teacher in names:
        for name in names:
            if name != teacher:
                metrics[name]["fidelity"] = fidelity(test_logits[name], test_logits[teacher], task)
    models, gradcam_layers = models or {}, gradcam_layers or {}
    gradcam_figures = _gradcam_grids(out_dir, names, teacher, task, class_names, y_test, images, models,
                                     gradcam_layers, gradcam_images, thresholds, calibrated)
    figures.extend(gradcam_figures)
    gradcam_missing = _gradcam_agreement(metrics, names, teacher, task, y_test, test_data, models, gradcam_layers)
    for name, path in (model_paths or {}).items():
        if name in metrics:
            calibration.save_calibration(
                path, metrics[name]["calibration"]["temperature"], thresholds.get(name) if rule else None,
                operating_point=rule, positive_class=class_names[-1] if binary else None,
                n=len(val_logits[name]), warnings=metrics[name]["calibration"]["warnings"],
            )
    markdown = _markdown(metrics, names, teacher, rule, class_names, binary, figures, gradcam_figures,
                         gradcam_missing, report_dir, not_applied)
    return ClinicalSection(markdown, metrics, figures)


def _calibrate(metrics, names, task, y_val, y_test, val_logits, test_logits, out_dir):
    """Fits each model's temperature on validation; returns its calibrated scores and reliability figures."""
    calibrated, figures = {}, []
    for name in names:
        temperature = calibration.fit_temperature(val_logits[name], y_val, task)
        metrics[name]["calibration"] = {
            "temperature": temperature,
            "fitted_on_n": int(len(val_logits[name])),
            "test_before": calibration.calibration_summary(test_logits[name], y_test, task),
            "test_after": calibration.calibration_summary(test_logits[name], y_test, task, temperature),
        }
        raw = logits_to_scores(test_logits[name], task)
        calibrated[name] = {
            "val": logits_to_scores(np.asarray(val_logits[name]) / temperature, task),
            "test": logits_to_scores(np.asarray(test_logits[name]) / temperature, task),
        }
        figures.append(figures_clinical.plot_reliability_diagram(
            {f"{name}, raw": (y_test, raw), f"{name}, T = {temperature:.2f}": (y_test, calibrated[name]["test"])},
            task, RunFolder(out_dir).figure("reliability", name),
            title=f"{name}: reliability, test split",
        ))
    return calibrated, figures


def _operating_points(metrics, names, rule, y_val, y_test, calibrated, out_dir):
    """Each model's threshold, chosen on validation, read on test; returns thresholds, figures and
    the reason the rule was not applied (a one-class validation split), or None."""
    not_applied = op.one_class_reason(y_val) if rule else None
    thresholds = {}
    for name in names:
        p_val, p_test = calibrated[name]["val"][:, -1], calibrated[name]["test"][:, -1]
        threshold = op.choose_threshold(y_val, p_val, **rule) if rule and not not_applied else _DEFAULT_THRESHOLD
        thresholds[name] = threshold
        metrics[name]["operating_point"] = {
            "rule": rule if rule and not not_applied else {"threshold": _DEFAULT_THRESHOLD},
            "threshold": threshold,
            "val": op.rates_at_threshold(y_val, p_val, threshold),
            "test": op.rates_at_threshold(y_test, p_test, threshold),
        }
        if not_applied:
            metrics[name]["operating_point"]["not_applied"] = {"rule": rule, "reason": not_applied}
        metrics[name]["average_precision"] = _average_precision(y_test, p_test)
    if op.one_class_reason(y_test, "test"):
        return thresholds, [], not_applied  # ROC and precision-recall curves need both classes
    figures = [
        figures_clinical.plot_roc_operating_points(
            {n: (y_test, calibrated[n]["test"][:, -1], thresholds[n]) for n in names},
            RunFolder(out_dir).figure("roc_operating_point"),
        ),
        figures_clinical.plot_precision_recall(
            {n: (y_test, calibrated[n]["test"][:, -1]) for n in names},
            RunFolder(out_dir).figure("precision_recall"),
        ),
    ]
    return thresholds, figures, not_applied


def _average_precision(y, p):
    return float(average_precision_score(y, p)) if 0 < np.sum(y) < len(y) else None


def _gradcam_grids(out_dir, names, teacher, task, class_names, y_test, images, models, layers, limit,
                   thresholds, calibrated):
    if images is None or teacher not in models or task.startswith("multi-label"):
        return []
    images = np.asarray(images, dtype=np.float32)[:limit]
    n = len(images)
    truth = np.asarray(y_test).reshape(-1)[:n]
    teacher_maps = explain.gradcam(models[teacher], images, class_index=truth, layer=layers.get(teacher))
    written = []
    for name in names:
        if name == teacher or name not in models:
            continue
        maps = explain.gradcam(models[name], images, class_index=truth, layer=layers.get(name))
        scores = calibrated[name]["test"][:n]
        if name in thresholds:
            predicted = (scores[:, -1] >= thresholds[name]).astype(np.int64)
        else:
            predicted = predict_labels(scores, task)
        written.append(figures_clinical.plot_gradcam_grid(
            images, teacher_maps, maps, truth, predicted, class_names,
            RunFolder(out_dir).figure("gradcam", name), student_label=name,
        ))
    return written


def _gradcam_agreement(metrics, names, teacher, task, y_test, test_data, models, layers):
    """Fills `gradcam_agreement` over the whole test split; returns why not, or None."""
    students = {name: models[name] for name in names if name != teacher and name in models}
    if task.startswith("multi-label"):
        return "a multi-label task has no single true class to map"
    if test_data is None or teacher not in models or not students:
        return ("it needs the saved models and the whole test split (`kdkeras report` loads both; "
                "from Python, `clinical_section(..., models=..., test_data=...)`)")
    agreement = explain.gradcam_agreement(
        models[teacher], students, _in_order_of(test_data, y_test),
        layers={None: layers.get(teacher), **{name: layers.get(name) for name in students}},
    )
    for name, summary in agreement.items():
        metrics[name]["gradcam_agreement"] = summary
    return None


def _in_order_of(batches, y_test):
    """Yields `batches`, checking that their labels are `y_test`, in order and complete."""
    y_test = np.asarray(y_test).reshape(len(y_test), -1)
    seen = 0
    for images, labels, *_ in batches:
        labels = np.asarray(labels).reshape(len(labels), -1)
        if not np.array_equal(labels, y_test[seen:seen + len(labels)]):
            raise ValueError(
                f"The test data given for Grad-CAM differs from the saved test labels at images "
                f"{seen}-{seen + len(labels) - 1}: pass the run's own test split, unshuffled "
                "(kdkeras.workflow.training.load_data(config)[2])."
            )
        seen += len(labels)
        yield images, labels
    if seen != len(y_test):
        raise ValueError(
            f"The test data given for Grad-CAM has {seen} images but the run saved {len(y_test)} "
            "test labels: pass the run's whole test split (kdkeras.workflow.training.load_data(config)[2])."
        )


def _markdown(metrics, names, teacher, rule, class_names, binary, figures, gradcam_figures, gradcam_missing,
              report_dir, not_applied=None):
    def link(path, alt):
        return f"![{alt}]({os.path.relpath(path, report_dir)})"

    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["## Clinical read-out", ""]
    lines += _fidelity_lines(metrics, names, teacher, gradcam_missing)
    lines += [
        "### Calibration",
        "",
        "Temperature scaling fitted on the validation split (one scalar T; logits / T keeps every "
        "prediction); ECE (15 bins) and negative log-likelihood on the test split.",
        "",
        "| Model | T | ECE raw | ECE calibrated | NLL raw | NLL calibrated |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        c = metrics[name]["calibration"]
        lines.append(
            f"| {name} | {c['temperature']:.3f} | {c['test_before']['ece']:.4f} | {c['test_after']['ece']:.4f} "
            f"| {c['test_before']['nll']:.4f} | {c['test_after']['nll']:.4f} |"
        )
    lines.append("")
    lines += [f"> **Warning ({name}):** {message}."
              for name in names for message in metrics[name]["calibration"]["warnings"]]
    lines += [link(p, f"{os.path.basename(p)}") for p in figures if p.endswith("_reliability.png")]
    lines.append("")
    if binary:
        chosen = (f"chosen on the validation split for {_describe(rule)}" if rule
                  else "the default threshold 0.5 (set `[evaluate] operating_point` to choose one)")
        if not_applied:
            chosen = (f"the default threshold 0.5: **the `[evaluate] operating_point` was not applied**, "
                      f"because {not_applied} (evaluate on a validation split with both classes)")
        lines += [
            "### Operating point",
            "",
            f"Positive class `{class_names[-1]}` when its calibrated probability is >= the threshold, "
            f"{chosen}; sensitivity and specificity read on the test split at that threshold, with 95% "
            "stratified bootstrap intervals.",
            "",
            "| Model | Threshold | Val sensitivity | Val specificity | Test sensitivity | Test specificity "
            "| Test PPV | Test NPV | Test AP |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in names:
            o = metrics[name]["operating_point"]
            v, t = o["val"], o["test"]
            lines.append(
                f"| {name} | {o['threshold']:.4f} | {number(v['sensitivity'])} | {number(v['specificity'])} "
                f"| {format_interval(t['sensitivity'], t['intervals']['sensitivity'])} ({t['tp']}/{t['tp'] + t['fn']}) "
                f"| {format_interval(t['specificity'], t['intervals']['specificity'])} ({t['tn']}/{t['tn'] + t['fp']}) "
                f"| {number(t['ppv'])} "
                f"| {number(t['npv'])} | {number(metrics[name]['average_precision'])} |"
            )
        lines += ["", *(link(p, os.path.basename(p)) for p in figures
                        if p.endswith(("roc_operating_point.png", "precision_recall.png"))), ""]
    if gradcam_figures:
        lines += [
            "### Where the models look",
            "",
            "Grad-CAM (Selvaraju et al. 2017) of the true class on the first test images: the image, "
            "the teacher's map and the student's, for correct and wrong predictions of the student.",
            "",
            *(link(p, os.path.basename(p)) for p in gradcam_figures),
            "",
        ]
    return lines


def _fidelity_lines(metrics, names, teacher, gradcam_missing):
    students = [n for n in names if n != teacher and "fidelity" in metrics[n]]
    if not students:
        return []
    lines = [
        "### Fidelity to the teacher (test split)",
        "",
        "Top-1 agreement with the teacher and KL(teacher || model) of their predictive "
        "distributions (Stanton et al. 2021). Grad-CAM agreement: the mean over test images of the "
        "Pearson correlation between the teacher's and the model's maps of the true class, with a "
        "95% bootstrap interval over images; n counts the images where neither map is flat.",
        "",
        "| Model | Top-1 agreement | KL(teacher ‖ model) | Grad-CAM agreement | n |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in students:
        f = metrics[name]["fidelity"]
        cam = metrics[name].get("gradcam_agreement")
        cells = (["n/a", "n/a"] if cam is None else
                 [format_interval(cam["pearson"], cam["interval"]), f"{cam['n']} of {cam['images']}"])
        lines.append(f"| {name} | {f['top1_agreement']:.3f} | {f['kl_teacher_student']:.4f} | "
                     f"{cells[0]} | {cells[1]} |")
    if gradcam_missing:
        lines += ["", f"Grad-CAM agreement not computed: {gradcam_missing}."]
    return lines + [""]


def _describe(rule):
    (key, value), = rule.items()
    return "Youden's J" if key == "youden" else f"a {key} of {value:g}"
