"""Hostile inputs, round three (issue 26): transfer sets, report run files, predict.

Each test names the defect of issue 26 it covers; each failed on the code before its fix.
"""

import os

import numpy as np
import pytest
from PIL import Image

from kdkeras.config import ConfigError
from kdkeras.data.info import DatasetInfo
from kdkeras.workflow import transfer


def _info(size=8):
    return DatasetInfo(
        name="toy", task="binary-class", class_names=["a", "b"], n_channels=1,
        image_size=(size, size), split_sizes={"train": 40}, class_counts=[30, 10],
        class_weights={0: 0.5, 1: 2.0}, source="", skipped=[], label_mode="sparse",
    )


# Defect 1: a folder as transfer set crashed on the (headers, skipped) pair.
def test_folder_transfer_set_of_pngs_is_read_at_the_data_size(tmp_path):
    folder = tmp_path / "unlabeled"
    (folder / "sub").mkdir(parents=True)
    for k in range(16):
        Image.fromarray(np.full((28, 28), 10 * k, np.uint8)).save(folder / ("sub" if k % 2 else "") / f"{k:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        images = transfer.load_transfer_images(str(folder), _info(28))
    assert images.shape == (16, 28, 28, 1) and images.dtype == np.float32
    assert sorted(np.unique(images).tolist()) == [10.0 * k for k in range(16)]


def test_folder_transfer_set_of_only_unreadable_files_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="none of its 1 image files is readable"):
        transfer.load_transfer_images(str(tmp_path), _info())


# Defect 10: npz faults gave tracebacks; 0 images were accepted.
def _npz_faults(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((4, 8, 8), np.uint8))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "text.npz"
    text.write_text("images = 1, 2, 3\n")
    objects = tmp_path / "objects.npz"
    np.savez(objects, images=np.array([np.zeros((8, 8)), None], dtype=object))
    zero_channels = tmp_path / "zero_channels.npz"
    np.savez(zero_channels, images=np.zeros((4, 8, 8, 0), np.uint8))
    empty = tmp_path / "empty.npz"
    np.savez(empty, images=np.zeros((0, 8, 8), np.uint8))
    return {
        truncated: "is not a readable npz file",
        text: "is not a readable npz file",
        objects: "is not a readable npz file .*allow_pickle",
        zero_channels: r"must be uint8 \(n, H, W\[, C\]\) with C = 1 to 4, got uint8 \(4, 8, 8, 0\)",
        empty: "holds 0 images",
    }


def test_damaged_npz_transfer_sets_are_refused_naming_the_file(tmp_path):
    for path, message in _npz_faults(tmp_path).items():
        with pytest.raises(ConfigError, match=f"transfer_set = '{path}'.*{message}"):
            transfer.load_transfer_images(str(path), _info())


# Defect 7: an operating point on a one-class validation split crashed the report.
@pytest.mark.parametrize("val_class, missing", [(0, "sensitivity"), (1, "specificity")])
def test_operating_point_on_a_one_class_validation_split_falls_back_and_says_so(tmp_path, val_class, missing):
    from kdkeras.reporting.clinical import clinical_section

    rng = np.random.default_rng(0)
    y_test = np.array([0, 1] * 20)
    logits = {name: rng.normal(size=(40, 2)) for name in ("teacher", "student")}
    val = {name: rng.normal(size=(12, 2)) for name in ("teacher", "student")}
    result = clinical_section(
        str(tmp_path), task="binary-class", class_names=["normal", "pneumonia"],
        y_val=np.full(12, val_class), y_test=y_test, val_logits=val, test_logits=logits,
        operating_point={"sensitivity": 0.95},
    )
    point = result.metrics["student"]["operating_point"]
    assert point["threshold"] == 0.5 and point["rule"] == {"threshold": 0.5}
    assert point["not_applied"]["rule"] == {"sensitivity": 0.95}
    p = 1 / (1 + np.exp(-(np.diff(logits["student"], axis=1)[:, 0]
                           / result.metrics["student"]["calibration"]["temperature"])))
    assert point["test"]["tp"] == int(np.sum((p >= 0.5) & (y_test == 1)))
    text = "\n".join(result.markdown)
    assert (f"was not applied**, because the validation split holds only class {val_class} (12 images), "
            f"so it has no {missing}") in text
    assert os.path.exists(tmp_path / "roc_operating_point.png")


def _student_run(folder):
    from kdkeras.evaluation.metrics import classification_metrics, logits_to_scores
    from kdkeras.workflow import runs

    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 20)
    logits = rng.normal(size=(40, 2)) + np.eye(2)[labels]
    scores = logits_to_scores(logits, "binary-class")
    runs.save_metrics(folder / "student_metrics.json",
                      classification_metrics(labels, scores, "binary-class", ["normal", "pneumonia"]))
    runs.save_predictions(folder / "student_predictions.npz", labels, scores)
    (folder / "student_history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.6,0.7,0.6,0.69\n1,0.7,0.6,0.65,0.65\n")


# Defect 9: damaged run files gave tracebacks (BadZipFile without the file's name).
@pytest.mark.parametrize("file, content, message", [
    ("student_metrics.json", b'{"task": "binary-cl', "is not valid JSON"),
    ("student_metrics.json", b"", "is not valid JSON"),
    ("student_metrics.json", b"{}", "has no 'task' field"),
    ("student_metrics.json", b"[]", "has no 'task' field"),
    ("student_history.csv", b"", "holds no epoch"),
    ("student_history.csv", b"epoch,loss,val_loss\n", "holds no epoch"),
    ("student_predictions.npz", None, "BadZipFile"),
])
def test_report_on_damaged_run_files_names_the_file_and_the_phase(tmp_path, file, content, message):
    from kdkeras import reporting
    from kdkeras.data.errors import DataError

    _student_run(tmp_path)
    target = tmp_path / file
    target.write_bytes(content if content is not None else target.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{target}.*{message}.*Re-run `kdkeras student`"):
        reporting.write_report(str(tmp_path), ["student"], "x", None)
    assert not os.path.exists(tmp_path / "report.md")
    _student_run(tmp_path)
    assert os.path.exists(reporting.write_report(str(tmp_path), ["student"], "x", None))


CONFIG = """
name = "recorded"

[data]
loader = "medmnist"
flag = "pneumoniamnist"
root = "@bundled"
batch_size = 32

[teacher]
model = "cnn_small"
epochs = 1

[student]
model = "cnn_small"
epochs = 1
"""


# Defect 22: `make all LIMIT=600` ended in a traceback: `report` reloaded the full test split.
def test_report_reloads_the_data_the_run_recorded_not_todays_command_line(tmp_path, monkeypatch, capsys):
    from kdkeras import cli, config as config_lib
    from kdkeras.workflow import training

    experiment = tmp_path / "recorded.toml"
    experiment.write_text(CONFIG)
    run = tmp_path / "runs" / "recorded"
    run.mkdir(parents=True)
    _student_run(run)
    ran = config_lib.apply_overrides(config_lib.load_config(str(experiment)), {"data.limit": 600})
    (run / "student_config.toml").write_text("# what ran\n" + config_lib.dump_toml(ran))
    seen = []
    monkeypatch.setattr(training, "write_report", lambda config, runs_dir: seen.append(config) or "report.md")
    assert cli.main(["report", "--config", str(experiment), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert seen[0].data["limit"] == 600 and seen[0].name == "recorded"
    assert f"[data] as the run recorded it in {run / 'student_config.toml'} (limit = 600)" in capsys.readouterr().out
    (run / "student_config.toml").write_text("[data\nlimit = ")
    assert cli.main(["report", "--config", str(experiment), "--runs-dir", str(tmp_path / "runs")]) == 1
    assert "student_config.toml is not readable TOML" in capsys.readouterr().err
