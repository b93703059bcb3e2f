"""The nine sections of a model card (`kdkeras.reporting.model_card`), each from the run files that answer it.

Every builder takes a `RunFacts` and returns its section's fields (and, for
the quantitative analyses, its metric rows). A field the run cannot answer
is `TODO (author)`; a number is copied from its file, never recomputed.
"""

import platform

import keras
import tensorflow as tf

from kdkeras import __version__
from kdkeras.distillation.arguments import DEFAULT_ALPHA
from kdkeras.reporting.model_card import CITATION, SECTIONS, TODO, field, metric_rows

# What a research model is until a clinical study validates it: stated, not left to the author.
RESEARCH_USE = ("Research use only: not validated for clinical use and not for diagnostic use; "
                "every output is UNVERIFIED until a qualified reader confirms it.")


def model_details(facts):
    metrics, config = facts.metrics or {}, facts.config or {}
    run = metrics.get("run") or {}
    phase = facts.phase()
    fields = [
        field("Name", facts.model_file, facts.model_file),
        field("Date", run.get("date"), facts.metrics_file),
        field("Architecture", _architecture(facts), facts.metrics_file),
        field("Parameters", metrics.get("params"), facts.metrics_file),
        field("Size on disk (bytes)", metrics.get("size_bytes"), facts.metrics_file),
        field("Training", _training(config.get(phase) if phase else None, metrics), facts.config_file),
    ]
    if phase == "distill":
        fields.append(field("Distillation", _distillation(config.get("distill") or {}), facts.config_file))
        fields.append(field("Teacher", _teacher(facts), "teacher_metrics.json"))
    fields += [
        # kdkeras's version is the one that trained (metrics file); the rest are this environment's.
        field("Software", f"kdkeras {run.get('kdkeras_version') or __version__}, TensorFlow {tf.__version__}, "
              f"Keras {keras.__version__}, Python {platform.python_version()}", f"{facts.metrics_file}, environment"),
        field("Authors and organisation", None),
        field("Licence of the model", None),
        field("Citation", None),
        field("Contact for questions", None),
    ]
    return fields


def _architecture(facts):
    metrics = facts.metrics or {}
    name = metrics.get("architecture")
    return None if name is None else f"{name} classifier emitting logits ({metrics.get('n_classes')} classes)"


def _training(phase_config, metrics):
    if not phase_config:
        return None
    return (f"{phase_config.get('optimizer')} at learning rate {phase_config.get('learning_rate')}, "
            f"{metrics.get('epochs_run')} of at most {phase_config.get('epochs')} epochs, kept epoch "
            f"{metrics.get('best_epoch')} by {metrics.get('monitor')} on validation")


def _distillation(distill):
    # Unset values train at the library's defaults: say which, not "None".
    alpha = distill.get("alpha")
    temperature = distill.get("temperature")
    return (f"objective {distill.get('objective')}, loss {distill.get('loss')}, "
            f"alpha {DEFAULT_ALPHA if alpha is None else alpha}, "
            f"temperature {'the loss default' if temperature is None else temperature}")


def _teacher(facts):
    teacher = facts.teacher
    if not teacher or teacher.get("acc") is None or teacher.get("auc") is None:
        return None
    return (f"{teacher.get('architecture')} ({teacher.get('params')} parameters), test accuracy "
            f"{teacher.get('acc'):.4f}, ROC AUC {teacher.get('auc'):.4f}")


def intended_use(facts):
    del facts
    return [
        field("Primary intended uses", None),
        field("Primary intended users", None),
        field("Out-of-scope uses", f"{RESEARCH_USE} Other: {TODO}", "kdkeras"),
    ]


def factors(facts):
    metrics = facts.metrics or {}
    per_class = "; ".join(f"{row['name']}: recall {row['recall']:.4f} (n = {row['support']})"
                          for row in metrics.get("per_class") or [])
    return [
        field("Relevant factors (patient groups, sites, devices)", None),
        field("Evaluation factors: per-class recall on test", per_class or None, facts.metrics_file),
    ]


def metrics(facts):
    calibration = facts.calibration or {}
    rule = ", ".join(f"{k} {v}" for k, v in (calibration.get("operating_point") or {}).items())
    threshold = calibration.get("threshold")
    decision = None
    if calibration:
        default = ("the last class when its calibrated probability > 0.5 (no operating point configured)"
                   if (facts.metrics or {}).get("task") == "binary-class" else "argmax of the calibrated probabilities")
        decision = (default if threshold is None else
                    f"{calibration.get('positive_class')} when its calibrated probability >= {threshold:.4f} "
                    f"(operating point {rule or 'default'}, chosen on {calibration.get('fitted_on')})")
    intervals = (facts.metrics or {}).get("intervals") or {}
    variation = None
    if intervals:
        first = next(iter(intervals.values()))
        variation = (f"{first['confidence']:.0%} percentile bootstrap intervals over the test split, "
                     f"{first['resamples']} resamples")
    return [
        field("Performance measures", "accuracy, ROC AUC, balanced accuracy, sensitivity, specificity, "
              "expected calibration error (ECE, 15 bins)", "kdkeras.evaluation.metrics"),
        field("Decision threshold", decision, facts.calibration_file),
        field("Calibration", _calibration(facts), facts.calibration_file),
        field("Variation approaches", variation, facts.metrics_file),
    ]


def _calibration(facts):
    calibration = facts.calibration
    if not calibration:
        return None
    text = (f"temperature scaling, T = {calibration['temperature']:.4f} fitted on {calibration.get('fitted_on')} "
            f"({calibration.get('n')} images)")
    clinical = (facts.clinical or {}).get("calibration") or {}
    if clinical.get("test_before") and clinical.get("test_after"):
        text += (f"; test ECE {clinical['test_before']['ece']:.4f} before, {clinical['test_after']['ece']:.4f} "
                 "after (clinical.json)")
    return text


def evaluation_data(facts):
    metrics, dataset = facts.metrics or {}, facts.dataset or {}
    return [
        field("Dataset", _dataset_name(facts), facts.config_file),
        field("Test split", None if metrics.get("n") is None else f"{metrics['n']} images", facts.metrics_file),
        field("Test class counts", _support(metrics), facts.metrics_file),
        field("Source", dataset.get("source") or None, "dataset loader"),
        field("Preprocessing", _preprocessing(facts), "dataset loader"),
        field("Motivation for this evaluation set", None),
    ]


def _dataset_name(facts):
    data = (facts.config or {}).get("data") or {}
    name, modality = facts.dataset_name(), facts.provenance()["modality"]
    if not name:
        return None
    return f"{name}{', ' + modality if modality else ''} ({data.get('loader', 'unknown')} loader)"


def _support(metrics):
    rows = metrics.get("per_class") or []
    return {row["name"]: row["support"] for row in rows} or None


def _preprocessing(facts):
    dataset = facts.dataset or {}
    size = dataset.get("image_size")
    if not size:
        return None
    return (f"decoded to {dataset.get('n_channels')} channel(s), resized with antialiasing to "
            f"{size[0]}x{size[1]}, rounded to uint8 pixels in [0, 255]; the model scales them itself")


def training_data(facts):
    metrics, dataset = facts.metrics or {}, facts.dataset or {}
    data = (facts.config or {}).get("data") or {}
    images = metrics.get("train_images") or {}
    splits = dataset.get("split_sizes")
    return [
        field("Dataset", _dataset_name(facts), facts.config_file),
        field("Train images", None if not images else f"{images.get('labeled')} labeled, "
              f"{images.get('unlabeled')} unlabeled", facts.metrics_file),
        field("Splits (train / validation / test)", splits, "dataset loader"),
        field("Per-split limit", data.get("limit"), facts.config_file),
        field("Augmentation", (data.get("augment") or "none") if facts.config else None, facts.config_file),
        field("Data licence", facts.provenance()["licence"], "kdkeras.reporting.model_card.PROVENANCE"),
        field("Data citation", facts.provenance()["citation"], "kdkeras.reporting.model_card.PROVENANCE"),
    ]


def quantitative_analyses(facts):
    rows = []
    for name, metrics, source in ((facts.name, facts.metrics, facts.metrics_file),
                                  ("teacher", facts.teacher, "teacher_metrics.json"),
                                  ("student (no distillation)", facts.baseline, "student_metrics.json")):
        if metrics:
            rows += metric_rows(metrics, name, source)
    fields = [field("Headline test metrics with 95% intervals", "in the table below" if rows else None,
                    facts.metrics_file)]
    fields.append(field("Expected calibration error (test, before calibration)",
                        (facts.metrics or {}).get("ece"), facts.metrics_file))
    if facts.export:
        agreement = {row["format"]: row.get("agreement") for row in facts.export["rows"][1:]}
        fields.append(field("Exported files: agreement with the Keras model on test", agreement, "export.json"))
    return fields, {"metrics": rows}


def ethical_considerations(facts):
    del facts
    return [
        field("Data: consent, de-identification, sensitive attributes", None),
        field("Risks and harms, mitigations", None),
    ]


def caveats(facts):
    fields = [field("Validation/test shift at the operating point", shift(facts), "clinical.json")]
    metrics = facts.metrics or {}
    if metrics.get("n") is not None and metrics["n"] < 500:
        fields.append(field("Small test split", f"{metrics['n']} test images: the intervals above are wide",
                            facts.metrics_file))
    fields += [field("Known limitations", RESEARCH_USE, "kdkeras"), field("Recommendations", None)]
    return fields


def shift(facts):
    """Sensitivity and specificity at the operating point on validation against test, or None."""
    val, test = facts.operating_point("val"), facts.operating_point("test")
    if not val or not test:
        return None
    parts = [f"{key} {val[key]:.4f} on validation, {test[key]:.4f} on test ({test[key] - val[key]:+.4f})"
             for key in ("sensitivity", "specificity") if val.get(key) is not None and test.get(key) is not None]
    return "; ".join(parts) or None


def model_card(facts):
    """The model card of `facts` as JSON-ready data: `{"title", "citation", "sections": [...]}`.

    Each section is `{"id", "title", "fields": [{"name", "value", "source"}]}`;
    `quantitative_analyses` also has `"metrics"`, the rows of `metric_rows`
    for the model, its teacher and its baseline.
    """
    builders = {
        "model_details": model_details,
        "intended_use": intended_use,
        "factors": factors,
        "metrics": metrics,
        "evaluation_data": evaluation_data,
        "training_data": training_data,
        "quantitative_analyses": quantitative_analyses,
        "ethical_considerations": ethical_considerations,
        "caveats_and_recommendations": caveats,
    }
    sections = []
    for key, title in SECTIONS:
        built = builders[key](facts)
        fields, extra = built if isinstance(built, tuple) else (built, {})
        sections.append({"id": key, "title": title, "fields": fields, **extra})
    return {"title": f"Model card: {facts.name}", "citation": CITATION, "sections": sections}
