"""The model card of a trained model (Mitchell et al., FAT* 2019), filled from its run folder.

`RunFacts.read` collects what a run folder knows about one saved model (see
`kdkeras.runs`): its metrics file (test numbers with bootstrap 95%
intervals, the record of what ran), its calibration file, the report's
`clinical.json` (calibration before/after, operating point on validation and
test), its phase config (distillation setup), the teacher's and the
student baseline's metrics, and the dataset description. `model_card`
turns them into the nine sections of Mitchell et al.; every field names the
file its answer came from, and a field the run cannot know says
`TODO (author)`. `model_card_markdown` renders it.

Reference: M. Mitchell et al., "Model Cards for Model Reporting", FAT* 2019,
https://doi.org/10.1145/3287560.3287596.
"""

import dataclasses
import json
import os
import tomllib

from kdkeras import runs as runs_lib

TODO = "TODO (author)"
CITATION = ("Mitchell M, Wu S, Zaldivar A, et al. Model Cards for Model Reporting. FAT* 2019. "
            "doi:10.1145/3287560.3287596")
SECTIONS = (
    ("model_details", "Model details"),
    ("intended_use", "Intended use"),
    ("factors", "Factors"),
    ("metrics", "Metrics"),
    ("evaluation_data", "Evaluation data"),
    ("training_data", "Training data"),
    ("quantitative_analyses", "Quantitative analyses"),
    ("ethical_considerations", "Ethical considerations"),
    ("caveats_and_recommendations", "Caveats and recommendations"),
)
# Metrics of a metrics file the card reports, in order, with their printed names.
CARD_METRICS = (("acc", "Accuracy"), ("auc", "ROC AUC"), ("balanced_acc", "Balanced accuracy"),
                ("sensitivity", "Sensitivity"), ("specificity", "Specificity"))

# Modality and licence of the datasets the loaders read, by dataset name (MedMNIST flag or loader).
_MEDMNIST = ("CC BY 4.0", "MedMNIST v2 (Yang J et al., Sci Data 2023, doi:10.1038/s41597-022-01721-8)")
PROVENANCE = {
    "pneumoniamnist": ("chest X-ray", *_MEDMNIST),
    "chestmnist": ("chest X-ray", *_MEDMNIST),
    "breastmnist": ("breast ultrasound", *_MEDMNIST),
    "dermamnist": ("dermatoscopy", *_MEDMNIST),
    "retinamnist": ("fundus photography", *_MEDMNIST),
    "octmnist": ("retinal OCT", *_MEDMNIST),
    "bloodmnist": ("blood cell microscopy", *_MEDMNIST),
    "pathmnist": ("histopathology", *_MEDMNIST),
    "tissuemnist": ("kidney cortex microscopy", *_MEDMNIST),
    "organamnist": ("abdominal CT", *_MEDMNIST),
    "organcmnist": ("abdominal CT", *_MEDMNIST),
    "organsmnist": ("abdominal CT", *_MEDMNIST),
}


@dataclasses.dataclass
class RunFacts:
    """What a run folder knows about one saved model; None where a file is missing.

    Attributes:
        name: The model's stem, e.g. "distilled".
        model_file: The `.keras` file's name.
        metrics: Its `<stem>_metrics.json` (a `kdkeras.runs.MetricsRecord`; a dict
            with its keys works too).
        calibration: Its `<stem>_calibration.json`.
        clinical: Its entry of the report's `clinical.json`.
        config: Its `<stem>_config.toml` (the effective config of the phase).
        teacher: `teacher_metrics.json` (a record, as `metrics`), for a distilled student.
        baseline: `student_metrics.json` (the student trained alone), for a distilled student.
        dataset: The `DatasetInfo` fields, as a dict.
        export: The export table (`ExportTable.to_dict()`), when exported.
    """

    name: str
    model_file: str
    metrics: dict = None
    calibration: dict = None
    clinical: dict = None
    config: dict = None
    teacher: dict = None
    baseline: dict = None
    dataset: dict = None
    export: dict = None

    @classmethod
    def read(cls, model_path, dataset_info=None, export=None):
        """The facts about `model_path` (`runs/<exp>/<stem>.keras`) from the files beside it."""
        model_path = os.fspath(model_path)
        run = runs_lib.RunFolder(os.path.dirname(model_path) or ".")
        name = os.path.splitext(os.path.basename(model_path))[0]
        clinical = _read(run.clinical, json.load)
        distilled = name == runs_lib.MODEL_NAMES["distill"]
        return cls(
            name=name,
            model_file=os.path.basename(model_path),
            metrics=_read(run.metrics(name), _metrics),
            calibration=_read(run.file(name, "calibration.json"), json.load),
            clinical=(clinical or {}).get(name),
            config=_read(run.phase_config(name), tomllib.load, "rb"),
            teacher=_read(run.metrics("teacher"), _metrics) if distilled else None,
            baseline=_read(run.metrics("student"), _metrics) if distilled else None,
            dataset=None if dataset_info is None else runs_lib.jsonable(dataclasses.asdict(dataset_info)),
            export=export,
        )

    @property
    def metrics_file(self):
        return f"{self.name}_metrics.json"

    @property
    def config_file(self):
        return f"{self.name}_config.toml"

    @property
    def calibration_file(self):
        return f"{self.name}_calibration.json"

    def phase(self):
        """The phase that trained the model, or None for a model of no phase."""
        return runs_lib.PHASE_OF.get(self.name)

    def dataset_name(self):
        """The dataset's name: the loader's, else the config's MedMNIST flag or loader; None if unknown."""
        data = (self.config or {}).get("data") or {}
        return (self.dataset or {}).get("name") or data.get("flag") or data.get("loader") or None

    def provenance(self):
        """`{"modality", "licence", "citation"}` of a dataset kdkeras knows, each None otherwise."""
        known = PROVENANCE.get(str(self.dataset_name()).lower())
        return dict(zip(("modality", "licence", "citation"), known or (None, None, None)))

    def operating_point(self, split):
        """The report's operating point on "val" or "test" (`clinical.json`), or None."""
        return ((self.clinical or {}).get("operating_point") or {}).get(split)


def _metrics(file):
    # The record reads the run facts that earlier files also kept at the top level.
    return runs_lib.MetricsRecord.from_json(json.load(file), source="it")


def _read(path, loader, mode="r"):
    """A run file's content, or None when it is absent.

    Raises:
        ValueError: The file exists but cannot be parsed; the message names it.
    """
    if not os.path.isfile(path):
        return None
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        try:
            return loader(f)
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path} cannot be read ({e}); re-run the phase that writes it.") from e


def field(name, value, source=None):
    """One field of a card or checklist: `value` from `source`, or `TODO (author)` when `value` is None."""
    if value is None or value == "":
        return {"name": name, "value": TODO, "source": None}
    return {"name": name, "value": value, "source": source}


def metric_rows(metrics, model, source):
    """`[{model, metric, value, low, high}]` of a metrics file's headline numbers with their 95% intervals."""
    rows = []
    intervals = metrics.get("intervals") or {}
    for key, _ in CARD_METRICS:
        value = metrics.get(key)
        if value is None and key in intervals:
            value = _sensitivity_specificity(metrics, key)
        if value is None:
            continue
        interval = intervals.get(key) or {}
        rows.append({"model": model, "metric": key, "value": value, "low": interval.get("low"),
                     "high": interval.get("high"), "source": source})
    return rows


def _sensitivity_specificity(metrics, key):
    """Sensitivity / specificity of a binary metrics file at its default rule, from its confusion matrix."""
    matrix = metrics.get("confusion_matrix")
    if metrics.get("task") != "binary-class" or not matrix:
        return None
    (tn, fp), (fn, tp) = matrix
    counts = (tp, fn) if key == "sensitivity" else (tn, fp)
    return counts[0] / sum(counts) if sum(counts) else None


def model_card_markdown(card):
    """The card in markdown: one heading per section, one bullet per field with its source."""
    intro = (f"Sections of {card['citation']}. Each answer names the run file it came from; `{TODO}` marks "
             "what only the author can say.")
    lines = [f"# {card['title']}", "", intro, ""]
    for section in card["sections"]:
        lines += [f"## {section['title']}", ""]
        for item in section["fields"]:
            source = f" *(from `{item['source']}`)*" if item["source"] else ""
            lines.append(f"- **{item['name']}**: {_text(item['value'])}{source}")
        if section.get("metrics"):
            lines += ["", "| Model | Metric | Value | 95% interval | Source |", "| --- | --- | ---: | --- | --- |"]
            names = dict(CARD_METRICS)
            for row in section["metrics"]:
                interval = "" if row["low"] is None else f"{row['low']:.4f} to {row['high']:.4f}"
                lines.append(f"| {row['model']} | {names[row['metric']]} | {row['value']:.4f} | {interval} "
                             f"| `{row['source']}` |")
        lines.append("")
    return "\n".join(lines)


def _text(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "; ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)
