"""The export folder as a deliverable: `metadata.json`, the model card and the reporting checklists.

`write_bundle` runs at the end of every `export_student` and writes, beside
the model files,

| file | what |
| --- | --- |
| `metadata.json` | MONAI-bundle-style description (`configs/metadata.json` keys): version, task, description, authors, `network_data_format` (input type, modality, channels, spatial shape, dtype, value range, the exact preprocessing; output classes, calibration, threshold), software versions, data source and licence, every file with its SHA-256 |
| `model_card.md`, `model_card.json` | the Mitchell et al. model card (`kdkeras.reporting.model_card`) |
| `checklist.md`, `checklist.json` | TRIPOD+AI and CLAIM items (`kdkeras.reporting.checklist`) |

Everything is read from the run folder of the exported `.keras` file; what it
cannot know is `TODO (author)`. `METADATA_SCHEMA` is the JSON Schema
`metadata.json` follows.
"""

import dataclasses
import hashlib
import json
import os
import platform
import uuid

import keras
import numpy as np
import tensorflow as tf

from kdkeras import __version__
from kdkeras import runs as runs_lib
from kdkeras.files import write_text_atomic
from kdkeras.reporting import card_sections
from kdkeras.reporting import checklist as checklist_lib
from kdkeras.reporting import model_card as card_lib

METADATA = "metadata.json"
MODEL_CARD_MD = "model_card.md"
MODEL_CARD_JSON = "model_card.json"
CHECKLIST_MD = "checklist.md"
CHECKLIST_JSON = "checklist.json"
BUNDLE_FILES = (METADATA, MODEL_CARD_MD, MODEL_CARD_JSON, CHECKLIST_MD, CHECKLIST_JSON)

_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "channel_def"],
    "properties": {
        "type": {"type": "string"}, "format": {"type": "string"}, "modality": {"type": "string"},
        "num_channels": {"type": "integer", "minimum": 1},
        "spatial_shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "dtype": {"enum": ["float32", "int8", "uint8"]},
        "value_range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "channel_def": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
METADATA_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "kdkeras export bundle metadata (MONAI bundle metadata.json keys)",
    "type": "object",
    "required": ["version", "model_uid", "task", "description", "authors", "copyright", "license",
                 "required_packages_version", "data_source", "data_license", "network_data_format",
                 "preprocessing", "calibration", "files"],
    "properties": {
        "version": {"type": "string", "minLength": 1},
        "model_uid": {"type": "string", "pattern": r"^2\.25\.[0-9]+$"},
        "task": {"type": "string"},
        "description": {"type": "string"},
        "authors": {"type": "string"},
        "copyright": {"type": "string"},
        "license": {"type": "string"},
        "required_packages_version": {"type": "object", "additionalProperties": {"type": "string"}},
        "data_source": {"type": "string"},
        "data_license": {"type": "string"},
        "network_data_format": {
            "type": "object", "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "required": ["image"], "properties": {"image": _TENSOR}},
                "outputs": {"type": "object", "required": ["pred"], "properties": {"pred": _TENSOR}},
            },
        },
        "preprocessing": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "calibration": {
            "type": "object", "required": ["calibrated", "temperature", "threshold", "positive_class"],
            "properties": {"calibrated": {"type": "boolean"}, "temperature": {"type": "number", "exclusiveMinimum": 0},
                           "threshold": {"type": ["number", "null"]}, "positive_class": {"type": ["string", "null"]}},
        },
        "files": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["format", "sha256", "size_bytes"],
            "properties": {"format": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "size_bytes": {"type": "integer", "minimum": 1}}}},
    },
}


def run_facts(source_path, model, dataset_info=None):
    """What the run folder of `source_path` says about the model (`RunFacts`); little for an in-memory model.

    Raises:
        ValueError: A run file exists but cannot be parsed; the message names it.
    """
    if source_path:
        return card_lib.RunFacts.read(source_path, dataset_info)
    return card_lib.RunFacts(name=model.name, model_file="(in memory)")


def write_bundle(out_dir, table, facts, model, source_path, class_names=None):
    """Writes `metadata.json`, the model card and the checklists of an export into `out_dir`.

    Args:
        out_dir: The export folder, holding the files of `table`.
        table: The `ExportTable` of the export.
        facts: The `run_facts` of the exported model.
        model: The exported Keras model (its preprocessing layer is described).
        source_path: The exported `.keras` file, or None for an in-memory model.
        class_names: The output classes' names, when no run file gives them.

    Returns:
        The metadata dict.
    """
    facts = dataclasses.replace(facts, export=table.to_dict())
    metadata = bundle_metadata(out_dir, table, facts, model, source_path, class_names)
    card = card_sections.model_card(facts)
    items = checklist_lib.checklist(facts)
    write_text_atomic(os.path.join(out_dir, METADATA), json.dumps(runs_lib.jsonable(metadata), indent=2) + "\n")
    write_text_atomic(os.path.join(out_dir, MODEL_CARD_JSON), json.dumps(runs_lib.jsonable(card), indent=2) + "\n")
    write_text_atomic(os.path.join(out_dir, MODEL_CARD_MD), card_lib.model_card_markdown(card))
    write_text_atomic(os.path.join(out_dir, CHECKLIST_JSON), json.dumps(runs_lib.jsonable(items), indent=2) + "\n")
    write_text_atomic(os.path.join(out_dir, CHECKLIST_MD), checklist_lib.checklist_markdown(items))
    return metadata


def bundle_metadata(out_dir, table, facts, model, source_path, class_names=None):
    """The `metadata.json` dict (see `METADATA_SCHEMA`)."""
    calibration = table.calibration or {}
    names = _class_names(facts, model, class_names)
    height, width, channels = table.input_shape
    provenance = facts.provenance()
    files = _files(out_dir, table)
    primary = source_path or next(os.path.join(out_dir, f) for f in files)
    identity = model_identity(primary)
    return {
        "version": identity["version"],
        "model_uid": identity["uid"],
        "model_name": identity["name"],
        "task": f"{table.task} classification of {provenance['modality'] or 'images'}",
        "description": (f"kdkeras {facts.name} model {facts.model_file}: {(facts.metrics or {}).get('architecture') or model.name}, "
                        f"exported with calibrated probabilities. {card_lib.TODO}: what it is for."),
        "authors": card_lib.TODO,
        "copyright": card_lib.TODO,
        "license": card_lib.TODO,
        "intended_use": f"{card_lib.TODO}. Research use only; not for diagnostic use.",
        "required_packages_version": {"kdkeras": __version__, "tensorflow": tf.__version__,
                                      "keras": keras.__version__, "numpy": np.__version__,
                                      "python": platform.python_version()},
        "optional_packages_version": _optional_versions(),
        "data_source": " ".join(filter(None, (facts.dataset_name(), (facts.dataset or {}).get("source"),
                                              provenance["citation"]))) or card_lib.TODO,
        "data_license": provenance["licence"] or card_lib.TODO,
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": provenance["modality"] or card_lib.TODO,
                "num_channels": channels, "spatial_shape": [height, width], "dtype": "float32",
                "value_range": [0, 255], "is_patch_data": False,
                "channel_def": {str(c): "gray" if channels == 1 else "RGB"[c] for c in range(channels)}}},
            "outputs": {"pred": {
                "type": "probabilities", "format": "classes", "num_channels": len(names),
                "spatial_shape": [len(names)], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {str(i): name for i, name in enumerate(names)}}},
        },
        "preprocessing": preprocessing_steps(model, channels, (height, width)),
        "calibration": {
            "calibrated": calibration.get("source") is not None,
            "temperature": calibration.get("temperature", 1.0),
            "rule": "softmax(logits / temperature)" if table.task != "multi-label" else "sigmoid(logits / temperature)",
            "threshold": calibration.get("threshold"),
            "positive_class": calibration.get("positive_class"),
            "operating_point": calibration.get("operating_point") or {},
            "fitted_on": "validation" if calibration.get("source") else None,
        },
        "files": files,
    }


def preprocessing_steps(model, channels, size):
    """What a caller does to an image before the model, and what the model does itself, in order."""
    steps = [
        ("decode the image (PNG/JPEG/BMP/GIF via kdkeras.data.images.decode_image_file; DICOM via "
         "kdkeras.data.dicom.read_dicom: modality LUT, VOI window, MONOCHROME1 inverted)"),
        "16-bit PNG: divide by 257; drop alpha",
        ("gray to RGB by repetition, or RGB to gray by ITU-R BT.601 luminance"
         f" (0.299 R + 0.587 G + 0.114 B), to {channels} channel(s)"),
        f"resize to {size[0]}x{size[1]} (height x width) with antialiasing (bilinear), round to uint8",
        f"feed float32 pixels in [0, 255], shape (batch, {size[0]}, {size[1]}, {channels}); no scaling by the caller",
    ]
    layer = next((layer for layer in model.layers if type(layer).__name__ == "InputPreprocessing"), None)
    if layer is not None:
        repeat = ", then gray repeated to RGB" if layer.channels == 3 else ""
        steps.append(f"inside the graph: InputPreprocessing mode '{layer.mode}'{repeat} "
                     "(kdkeras.models.InputPreprocessing)")
    steps.append("outputs are probabilities after temperature scaling (see calibration); decide with the threshold")
    return steps


def model_identity(model_path, name=None):
    """`{"name", "version", "uid", "kdkeras_version"}` of a saved model, as the bundle and DICOM SRs state them.

    The version is the date its phase finished (`YYYY.MM.DD`, from its metrics
    file; "unversioned" without one) and the UID `stable_uid` of the file.
    """
    model_path = os.fspath(model_path)
    metrics_path = runs_lib.metrics_beside(model_path)
    run = runs_lib.read_metrics(metrics_path).run if os.path.isfile(metrics_path) else None
    folder = os.path.basename(os.path.dirname(os.path.abspath(model_path)))
    return {
        "name": name or f"{folder}/{os.path.basename(model_path)}",
        "version": run.date[:10].replace("-", ".") if run else "unversioned",
        "uid": stable_uid(model_path),
        "kdkeras_version": run.kdkeras_version if run else __version__,
    }


def stable_uid(path):
    """A DICOM UID of a file's bytes: `2.25.<integer of a UUID from its SHA-256>` (ISO/IEC 9834-8).

    The same model file always gets the same UID, so a result can name the exact model that made it.
    """
    return "2.25." + str(uuid.UUID(bytes=bytes.fromhex(sha256(path))[:16], version=5).int)


def sha256(path):
    """SHA-256 of a file, or of a folder's files (sorted relative paths and contents) in hex."""
    digest = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    for item in paths:
        if item != path:
            digest.update(os.path.relpath(item, path).encode())
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _files(out_dir, table):
    files = {}
    for row in table.rows[1:]:
        path = os.path.join(out_dir, row["path"])
        files[row["path"]] = {"format": row["format"], "sha256": sha256(path), "size_bytes": int(row["size_bytes"])}
    return files


def _class_names(facts, model, given):
    if facts.metrics and facts.metrics.get("per_class"):
        return runs_lib.class_names(facts.metrics)
    if facts.dataset and facts.dataset.get("class_names"):
        return list(facts.dataset["class_names"])
    if given:
        return list(given)
    # Unnamed: one per output column of the exported files.
    return [f"class_{i}" for i in range(int(model.output_shape[-1]))]


def _optional_versions():
    versions = {}
    for module in ("onnxruntime", "tf2onnx", "onnx", "ai_edge_litert", "pydicom", "highdicom"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            continue
    return versions
