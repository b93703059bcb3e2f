"""Tests of kdkeras.records.MetricsRecord: the typed `<model>_metrics.json`, each field stored once."""

import copy
import json
import math
import os

import numpy as np
import pytest

from kdkeras import reporting, runs
from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores

CLASSES = ["normal", "pneumonia"]
RUN = {
    "phase": "distill", "overrides": {"data.limit": 200}, "limit": 200, "epochs": 12, "epochs_run": 9,
    "best_epoch": 7, "stopped_early": True, "steps_per_epoch": 37, "train_images": {"labeled": 4708, "unlabeled": 0},
    "kdkeras_version": "0.1.0", "date": "2026-12-07T03:43:59+00:00",
}
HISTORY = "epoch,accuracy,loss,val_accuracy,val_loss\n1,0.6,0.7,0.6,0.69\n2,0.7,0.6,0.65,0.65\n"
# The four run facts a file written before MetricsRecord also kept at the top level.
DUPLICATES = ("epochs_run", "best_epoch", "steps_per_epoch", "train_images")


def _classification(seed=0, n=40):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    logits = rng.normal(size=(n, 2)) + 1.5 * np.eye(2)[labels]
    return classification_metrics(labels, logits_to_scores(logits, "binary-class"), "binary-class", CLASSES,
                                  loss=0.41, n_resamples=200)


def _old_file(**changes):
    """A metrics file as the version before MetricsRecord wrote it: the run facts at the top level and in `run`."""
    data = {
        **_classification(),
        "params": 162458, "trainable_params": 161786, "non_trainable_params": 672, "size_bytes": 741794,
        "latency": {"1": {"ms_per_image": 8.9, "ms_per_batch": 8.9, "images_per_s": 112.7}},
        "architecture": "cnn_small",
        "train_images": RUN["train_images"], "steps_per_epoch": RUN["steps_per_epoch"],
        "run": RUN,
        "epochs_run": RUN["epochs_run"], "best_epoch": RUN["best_epoch"],
        "monitor": "val_auc", "best_monitor_value": 0.996, "train_seconds": 488.1,
    }
    return {**copy.deepcopy(data), **changes}


def _write(path, data):
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def test_a_record_round_trips_through_strict_json():
    record = runs.MetricsRecord.from_json({**_classification(), "params": np.int64(5954), "latency": {1: {}}})
    record.run = runs.RunRecord(**RUN)
    record.best_monitor_value = np.float32(0.5)
    record.train_seconds = math.nan  # not measured: written as null
    data = record.to_json()
    text = json.dumps(data, allow_nan=False)  # strict JSON: numpy types and NaN converted
    assert (data["params"], data["latency"]) == (5954, {"1": {}})
    assert (data["best_monitor_value"], data["train_seconds"]) == (0.5, None)
    assert data["run"] == RUN and not set(DUPLICATES) & set(data)
    again = runs.MetricsRecord.from_json(json.loads(text))
    assert again.to_json() == data and again == runs.MetricsRecord.from_json(data)
    assert again.run == runs.RunRecord(**RUN) and again.acc == record.acc and again.per_class == record.per_class


def test_every_field_is_written_once_and_null_where_unknown(tmp_path):
    # A model `kdkeras evaluate` scored: no run, monitor or train seconds.
    path = runs.save_metrics(tmp_path / "m_metrics.json", runs.MetricsRecord.from_json(_classification()))
    data = json.loads(open(path).read())
    assert (data["run"], data["monitor"], data["train_seconds"], data["architecture"]) == (None, None, None, None)
    assert list(data)[:4] == ["task", "n", "n_classes", "acc"] and data["loss"] == pytest.approx(0.41)
    assert not set(DUPLICATES) & set(data)


def test_an_old_file_with_the_duplicates_reads_the_same_and_is_written_once(tmp_path):
    old = _old_file()
    record = runs.read_metrics(_write(tmp_path / "old_metrics.json", old))
    assert isinstance(record, runs.MetricsRecord) and record.run == runs.RunRecord(**RUN) and record.extra == {}
    for key, value in old.items():
        assert record[key] == value, key  # the duplicates read through the run record
    assert record.get("epochs_run") == 9 and runs.headline(record)["epochs"] == 9
    assert dict(record) == old
    path = runs.save_metrics(tmp_path / "new_metrics.json", record)
    written = json.loads(open(path).read())
    assert not set(DUPLICATES) & set(written) and written["run"] == RUN
    assert written == {key: value for key, value in old.items() if key not in DUPLICATES}
    assert runs.read_metrics(path) == record


def test_top_level_copies_that_disagree_with_the_run_record_are_refused(tmp_path):
    path = _write(tmp_path / "edited_metrics.json", _old_file(epochs_run=11))
    with pytest.raises(ValueError, match=r"edited_metrics.json: epochs_run is 11 at the top level but 9 in `run`; "
                                         r"the file was edited by hand: keep the value under `run`"):
        runs.read_metrics(path)


def test_a_file_from_before_the_run_record_keeps_its_top_level_facts(tmp_path):
    old = _old_file()
    del old["run"]
    record = runs.read_metrics(_write(tmp_path / "older_metrics.json", old))
    assert record.run is None and runs.run_record(record) is None
    assert record.extra == {key: old[key] for key in DUPLICATES}
    assert (record["epochs_run"], record.get("best_epoch"), record["train_images"]) == (9, 7, RUN["train_images"])
    written = json.loads(open(runs.save_metrics(tmp_path / "again_metrics.json", record)).read())
    assert written == {**old, "run": None}


def test_unknown_keys_survive_in_extra(tmp_path):
    record = runs.read_metrics(_write(tmp_path / "newer_metrics.json", _old_file(calibrated={"ece": 0.01}, note="x")))
    assert record.extra == {"calibrated": {"ece": 0.01}, "note": "x"}
    assert record["note"] == "x" and "calibrated" in record
    written = json.loads(open(runs.save_metrics(tmp_path / "out_metrics.json", record)).read())
    assert (written["calibrated"], written["note"]) == ({"ece": 0.01}, "x")


@pytest.mark.parametrize("content", [b"{}", b"[]", b'"acc"', b'{"acc": 0.9}'])
def test_a_file_that_is_not_a_metrics_dict_fails_with_the_message_of_before(tmp_path, content):
    path = tmp_path / "student_metrics.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        runs.read_metrics(path)
    assert str(error.value) == (
        f"{path} has no 'task' field; write it with `kdkeras.runs.save_metrics` "
        "from `kdkeras.evaluation.metrics.classification_metrics(...)`."
    )


@pytest.mark.parametrize("run, message", [
    ([1, 2], r"bad_metrics.json: `run` is list, not a table \(a `RunRecord` or its dict\); re-run the phase"),
    ({"date": "2026-12-07", "kdkeras_version": "0.1.0"},
     r"bad_metrics.json: `run` has no phase, overrides, limit, epochs, epochs_run, best_epoch, stopped_early, "
     r"steps_per_epoch, train_images; re-run the phase"),
])
def test_a_damaged_run_table_names_the_file_and_what_is_missing(tmp_path, run, message):
    path = _write(tmp_path / "bad_metrics.json", {"task": "binary-class", "run": run})
    with pytest.raises(ValueError, match=message):
        runs.read_metrics(path)


def test_the_record_is_set_like_the_dict_of_before():
    record = runs.MetricsRecord.from_json(_old_file())
    record["acc"] = 0.5
    record["epochs_run"] = 10  # a run fact: changes the run record
    record["note"] = "checked"
    record.update(train_seconds=1.5)
    assert (record.acc, record.run.epochs_run, record.train_seconds) == (0.5, 10, 1.5)
    assert record.extra == {"note": "checked"}
    record["run"] = {**RUN, "phase": "student"}
    assert record.run == runs.RunRecord(**{**RUN, "phase": "student"})
    with pytest.raises(KeyError):
        record["no such key"]
    with pytest.raises(ValueError, match=r"`extra` holds acc, which are fields of a MetricsRecord"):
        runs.MetricsRecord(task="binary-class", extra={"acc": 0.5})


def test_a_dict_is_still_written_as_given():
    # Users' code that saves a dict keeps its file; a record writes each field once.
    old = _old_file()
    assert runs.jsonable(old) == json.loads(json.dumps(old))
    assert runs.jsonable(runs.MetricsRecord.from_json(old)) == runs.MetricsRecord.from_json(old).to_json()


def test_the_report_reads_a_run_folder_of_the_old_layout(tmp_path):
    # Metrics files as the version before MetricsRecord wrote them, with real test labels and predictions.
    with np.load(os.path.join(os.path.dirname(runs.__file__), "data", "bundled", "pneumoniamnist.npz")) as data:
        labels = data["test_labels"][:200]
    rng = np.random.default_rng(0)
    for index, (name, phase) in enumerate((("student", "student"), ("distilled", "distill"))):
        logits = rng.normal(size=(len(labels), 2))
        logits[np.arange(len(labels)), labels[:, 0]] += 1.0 + index
        scores = logits_to_scores(logits, "binary-class")
        metrics = _old_file(**classification_metrics(labels, scores, "binary-class", CLASSES),
                            run={**RUN, "phase": phase, "steps_per_epoch": 30 + index},
                            steps_per_epoch=30 + index)
        _write(tmp_path / f"{name}_metrics.json", metrics)
        runs.save_predictions(tmp_path / f"{name}_predictions.npz", labels, scores)
        (tmp_path / f"{name}_history.csv").write_text(HISTORY)
    text = open(reporting.write_report(str(tmp_path), ["student", "distilled"], "Old layout", None),
                encoding="utf-8").read()
    assert "| student | 4,708 + 0 | 30 | 9 (12) | 7 | yes | `data.limit = 200` |" in text
    assert "| distilled | 4,708 + 0 | 31 | 9 (12) | 7 | yes | `data.limit = 200` |" in text
