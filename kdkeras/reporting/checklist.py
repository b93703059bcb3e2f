"""TRIPOD+AI and CLAIM reporting checklists, filled where a run folder knows the answer.

`checklist(facts)` goes through the items of two checklists and answers
those a run can (data source and splits, preprocessing, model, training,
metrics with intervals, calibration, threshold choice), each with the run
file the answer came from; the others are left to the author as
`TODO (author)`. The item titles are paraphrased from the published
checklists, which remain the reference:

- TRIPOD+AI: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement:
  updated guidance for reporting clinical prediction models that use
  regression or machine learning methods. BMJ 2024;385:e078378.
  doi:10.1136/bmj-2023-078378 (27 items; item 18 is open science, a-f).
- CLAIM: Mongan J, Moy L, Kahn CE Jr. Checklist for Artificial Intelligence
  in Medical Imaging (CLAIM). Radiol Artif Intell 2020;2(2):e200029.
  doi:10.1148/ryai.2020200029 (42 items; updated by Tejani AS et al., 2024).

`kdkeras checklist --config <experiment>` writes `checklist.md` and
`checklist.json` into the run folder; `kdkeras export` writes them into the bundle.
"""


from kdkeras.reporting import card_sections
from kdkeras.reporting.model_card import TODO, field

TRIPOD_AI_CITATION = ("Collins GS et al. TRIPOD+AI statement. BMJ 2024;385:e078378. "
                      "doi:10.1136/bmj-2023-078378")
CLAIM_CITATION = ("Mongan J, Moy L, Kahn CE Jr. CLAIM. Radiol Artif Intell 2020;2(2):e200029. "
                  "doi:10.1148/ryai.2020200029")

# (item, paraphrased title, answer key or None): the key names what the run answers (see `_answers`).
TRIPOD_AI = (
    ("1", "Title: identifies the study as developing or evaluating a prediction model, its population and outcome", None),
    ("2", "Abstract: structured summary following TRIPOD+AI for Abstracts", None),
    ("3", "Background: healthcare context, rationale, existing models", None),
    ("4", "Objectives: development and/or evaluation of the model", None),
    ("5", "Data: sources of the data, and the dates they cover", "data_source"),
    ("6", "Participants: setting, eligibility criteria, treatments", None),
    ("7", "Data preparation: pre-processing and quality checks, consistency across groups", "preprocessing"),
    ("8", "Outcome: definition of what is predicted, how and when it was assessed", "outcome"),
    ("9", "Predictors: the inputs of the model and how they were measured", "inputs"),
    ("10", "Sample size: how it was arrived at, justification", "sample_size"),
    ("11", "Missing data: how it was handled", None),
    ("12", "Analytical methods: data splits, model type, hyperparameters, performance measures, updating",
     "analysis"),
    ("13", "Class imbalance: methods used to handle it and why", "class_imbalance"),
    ("14", "Fairness: approaches to address model fairness and their rationale", None),
    ("15", "Model output: form of the output and the threshold, with how it was chosen", "output"),
    ("16", "Training versus evaluation: differences in data between development and evaluation", "splits"),
    ("17", "Ethical approval: the committee and consent", None),
    ("18a", "Open science: funding", None),
    ("18b", "Open science: conflicts of interest", None),
    ("18c", "Open science: protocol", None),
    ("18d", "Open science: registration", None),
    ("18e", "Open science: data sharing", "data_licence"),
    ("18f", "Open science: code sharing", "code"),
    ("19", "Patient and public involvement", None),
    ("20", "Participants: flow, characteristics of each data source and split", "splits"),
    ("21", "Model development: participants and outcome events in each analysis", "events"),
    ("22", "Model specification: details of the full model so others can use it", "model"),
    ("23", "Model performance: performance estimates with confidence intervals, including subgroups", "performance"),
    ("24", "Model updating: results of any updating", None),
    ("25", "Interpretation: overall interpretation of the main results, fairness", None),
    ("26", "Limitations: non-representative sample, overfitting, missing data", "limitations"),
    ("27", "Usability in current care: intended use, user inputs, expertise needed; future research", "usability"),
)
CLAIM = (
    ("1", "Title or abstract: identifies the study as AI methodology", None),
    ("2", "Abstract: structured summary of design, methods, results and conclusions", None),
    ("3", "Introduction: scientific and clinical background, intended use and clinical role", None),
    ("4", "Study objectives and hypotheses", None),
    ("5", "Study design: prospective or retrospective", None),
    ("6", "Study goal: model creation, exploratory, feasibility or non-inferiority", None),
    ("7", "Data sources", "data_source"),
    ("8", "Eligibility criteria: how, where and when subjects were identified", None),
    ("9", "Data pre-processing steps", "preprocessing"),
    ("10", "Selection of data subsets", "subset"),
    ("11", "Definitions of data elements, with common data elements", "inputs"),
    ("12", "De-identification methods", None),
    ("13", "How missing data were handled", None),
    ("14", "Definition of the ground truth reference standard", None),
    ("15", "Rationale for choosing the reference standard", None),
    ("16", "Source of ground-truth annotations and the annotators' qualifications", None),
    ("17", "Annotation tools", None),
    ("18", "Measurement of inter- and intrarater variability", None),
    ("19", "Intended sample size and how it was determined", "sample_size"),
    ("20", "How data were assigned to partitions, and their proportions", "splits"),
    ("21", "Level at which partitions are disjoint (e.g. patient, series, image)", None),
    ("22", "Detailed description of the model, with inputs, outputs and intermediate layers", "model"),
    ("23", "Software libraries, frameworks and packages", "software"),
    ("24", "Initialization of model parameters", "initialization"),
    ("25", "Training approach: data augmentation, hyperparameters, number of models trained", "training"),
    ("26", "Method of selecting the final model", "selection"),
    ("27", "Ensembling techniques", "ensembling"),
    ("28", "Metrics of model performance", "metrics"),
    ("29", "Statistical measures of significance and uncertainty (e.g. confidence intervals)", "uncertainty"),
    ("30", "Robustness or sensitivity analysis", None),
    ("31", "Methods for explainability or interpretability, and how they were validated", "explainability"),
    ("32", "Validation or testing on external data", None),
    ("33", "Flow of participants or cases, with inclusion and exclusion", "splits"),
    ("34", "Demographic and clinical characteristics of cases in each partition", None),
    ("35", "Performance metrics of the final model on all data partitions", "performance"),
    ("36", "Estimates of diagnostic accuracy and their precision (e.g. 95% CI)", "diagnostic"),
    ("37", "Failure analysis of incorrectly classified cases", "failures"),
    ("38", "Study limitations, including potential bias and generalizability", "limitations"),
    ("39", "Implications for practice, intended use and clinical role", None),
    ("40", "Registration number and name of registry", None),
    ("41", "Where the full study protocol can be accessed", None),
    ("42", "Sources of funding and other support; role of funders", None),
)


def checklist(facts):
    """Both checklists for `facts` (a `kdkeras.reporting.model_card.RunFacts`) as JSON-ready data.

    Returns:
        `{"tripod_ai": {...}, "claim": {...}}`, each with `citation`, `items`
        (`{"item", "title", "answer", "source", "status"}`, status "answered"
        or "author") and `answered` (the count).
    """
    answers = _answers(facts)
    result = {}
    for key, items, citation in (("tripod_ai", TRIPOD_AI, TRIPOD_AI_CITATION), ("claim", CLAIM, CLAIM_CITATION)):
        rows = []
        for item, title, answer_key in items:
            answer = answers.get(answer_key) if answer_key else None
            value = field(title, *(answer or (None,)))
            status = "author" if value["value"] == TODO else "answered"
            rows.append({"item": item, "title": title, "answer": value["value"], "source": value["source"],
                         "status": status})
        result[key] = {"citation": citation, "items": rows,
                       "answered": sum(row["status"] == "answered" for row in rows)}
    return result


def _answers(facts):
    """`{answer key: (answer, source)}` of everything the run knows; a None answer is left to the author."""
    card = {item["name"]: item for section in _card_sections(facts) for item in section}

    def from_card(name, labelled=False):
        item = card.get(name)
        if item is None or item["value"] == TODO:
            return None
        value = f"{name.lower()}: {_flat(item['value'])}" if labelled else item["value"]
        return value, item["source"]

    metrics = facts.metrics or {}
    distill = ((facts.config or {}).get("distill") or {}) if facts.phase() == "distill" else {}
    return {
        "data_source": _join(from_card("Dataset"), from_card("Source")),
        "preprocessing": from_card("Preprocessing"),
        "outcome": _outcome(facts),
        "inputs": _inputs(facts),
        "sample_size": from_card("Splits (train / validation / test)") or from_card("Train images"),
        "analysis": _join(from_card("Training", True), from_card("Distillation", True),
                          from_card("Performance measures", True)),
        "class_imbalance": _class_imbalance(facts),
        "output": _join(from_card("Decision threshold", True), from_card("Calibration", True)),
        "splits": _join(from_card("Splits (train / validation / test)", True), from_card("Per-split limit", True)),
        "data_licence": _join(from_card("Data licence"), from_card("Data citation")),
        "code": (f"trained with kdkeras; the effective config is {facts.config_file}", facts.config_file)
        if facts.config else None,
        "events": from_card("Test class counts"),
        "model": _join(from_card("Architecture", True), from_card("Parameters", True), from_card("Teacher", True)),
        "performance": _performance(facts),
        "diagnostic": _performance(facts),
        "limitations": from_card("Validation/test shift at the operating point"),
        "usability": from_card("Decision threshold"),
        "subset": from_card("Per-split limit", True),
        "software": from_card("Software"),
        "initialization": _initialization(facts),
        "training": from_card("Training"),
        "selection": (f"the epoch with the best {metrics['monitor']} on validation (epoch {metrics.get('best_epoch')})",
                      facts.metrics_file) if metrics.get("monitor") else None,
        "ensembling": (f"none; the student is distilled from {len(distill.get('teachers') or []) or 1} teacher(s)",
                       facts.config_file) if distill else None,
        "metrics": from_card("Performance measures"),
        "uncertainty": from_card("Variation approaches"),
        "explainability": _gradcam(facts),
        "failures": (f"confusion matrix on test {metrics['confusion_matrix']}", facts.metrics_file)
        if metrics.get("confusion_matrix") else None,
    }


def _card_sections(facts):
    builders = (card_sections.model_details, card_sections.metrics, card_sections.evaluation_data,
                card_sections.training_data, card_sections.caveats)
    return [builder(facts) for builder in builders]


def _join(*answers):
    """Answers joined with "; ", their sources with ", "; None when none is known."""
    known = [a for a in answers if a]
    if not known:
        return None
    sources = ", ".join(dict.fromkeys(s for _, s in known if s))
    return "; ".join(str(_flat(v)) for v, _ in known), sources or None


def _flat(value):
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return value


def _outcome(facts):
    metrics = facts.metrics or {}
    names = [row["name"] for row in metrics.get("per_class") or []]
    if not names:
        return None
    return f"{metrics['task']} classification: {', '.join(names)} (labels of the dataset)", facts.metrics_file


def _inputs(facts):
    dataset = facts.dataset or {}
    if not dataset.get("image_size"):
        return None
    size = dataset["image_size"]
    modality = facts.provenance()["modality"] or "image"
    return f"one {modality} image, {size[0]}x{size[1]}, {dataset['n_channels']} channel(s)", "dataset loader"


def _class_imbalance(facts):
    dataset = facts.dataset or {}
    counts = dataset.get("class_counts")
    if not counts:
        return None
    phase_config = (facts.config or {}).get(facts.phase() or "", {})
    weights = phase_config.get("class_weight") or "none"
    return f"train class counts {counts}; class weights: {weights}", "dataset loader"


def _initialization(facts):
    phase_config = (facts.config or {}).get(facts.phase() or "") or {}
    if not facts.config:
        return None
    weights = phase_config.get("weights") or "random initialization"
    return f"{weights}, seed {facts.config.get('seed')}", facts.config_file


def _performance(facts):
    metrics = facts.metrics or {}
    intervals = metrics.get("intervals") or {}
    parts = [f"{key} {metrics[key]:.4f} (95% CI {intervals[key]['low']:.4f} to {intervals[key]['high']:.4f})"
             for key in ("acc", "auc", "balanced_acc") if metrics.get(key) is not None and key in intervals]
    test = facts.operating_point("test")
    if test:
        parts.append(f"at the operating point: sensitivity {test['sensitivity']:.4f}, "
                     f"specificity {test['specificity']:.4f}")
    return ("test split: " + "; ".join(parts), facts.metrics_file) if parts else None


def _gradcam(facts):
    agreement = (facts.clinical or {}).get("gradcam_agreement")
    if not agreement or agreement.get("pearson") is None:
        return None
    text = (f"Grad-CAM; teacher-student map agreement Pearson r {agreement['pearson']:.4f} over "
            f"{agreement.get('n')} test images (not validated against annotations)")
    return text, "clinical.json"


def checklist_markdown(result):
    """Both checklists in markdown: one table each, answered items with their source, the rest marked."""
    intro = (f"Filled by kdkeras from the run's files; `{TODO}` items are the author's. Titles are paraphrased; "
             "use the published checklists when submitting.")
    lines = ["# Reporting checklists", "", intro, ""]
    for key, title, note in (("tripod_ai", "TRIPOD+AI", " (27 items; item 18 has parts a-f)"), ("claim", "CLAIM", "")):
        part = result[key]
        lines += [f"## {title}: {part['answered']} of {len(part['items'])} entries answered from the run{note}", "",
                  f"{part['citation']}", "", "| Item | Topic | Answer | Source |", "| --- | --- | --- | --- |"]
        for row in part["items"]:
            source = f"`{row['source']}`" if row["source"] else ""
            answer = str(row["answer"]).replace("|", "\\|")
            lines.append(f"| {row['item']} | {row['title']} | {answer} | {source} |")
        lines.append("")
    return "\n".join(lines)
