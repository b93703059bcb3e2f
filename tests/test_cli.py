"""The workflow end to end on a tiny real config: CLI phases, artifacts, report, resume."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import kdkeras
from kdkeras import cli, runs
from kdkeras.workflow.callbacks import RunState

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "description": "tiny smoke run",
    "seed": 3,
    "data": {"limit": 96},
    "teacher": {"options": {"filters": [8, 16]}, "epochs": 2, "monitor": "val_auc"},
    "student": {"monitor": "val_loss"},
    "distill": {"epochs": 2, "alpha": 0.2, "temperature": 3.0, "monitor": "val_accuracy"},
}

ARTIFACTS = [
    "config.toml", "report.md", "roc.png", "val_overlay.png",
    "clinical.json", "latency.json", "roc_operating_point.png", "precision_recall.png",
    *(f"{m}{s}" for m in ("teacher", "student", "distilled") for s in (
        ".keras", "_config.toml", "_history.csv", "_metrics.json", "_predictions.npz",
        "_curves.png", "_confusion.png", "_predictions.png", "_calibration.json", "_reliability.png")),
    "student_gradcam.png", "distilled_gradcam.png",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_experiment):
    root = tmp_path_factory.mktemp("cli")
    config = tiny_experiment(root, **TINY)
    runs = str(root / "runs")
    common = ["--config", str(config), "--runs-dir", runs]
    assert cli.main(["distill", *common]) == 1  # no teacher yet
    for phase in ("teacher", "student", "distill"):
        assert cli.main([phase, *common, "--quiet"]) == 0
    assert cli.main(["report", *common]) == 0
    return config, os.path.join(runs, "tiny")


@pytest.mark.slow
def test_every_artifact_is_written(tiny_run):
    _, out = tiny_run
    assert sorted(os.listdir(out)) == sorted(ARTIFACTS + ["logs"])
    assert sorted(os.listdir(os.path.join(out, "logs"))) == ["distilled", "student", "teacher"]
    with open(os.path.join(out, "distilled_history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "student_loss", "distillation_loss", "val_accuracy", "val_auc", "learning_rate"} <= set(rows[0])
    # Same architecture, saved without optimizer state: the same size on disk.
    sizes = [os.path.getsize(os.path.join(out, f"{m}.keras")) for m in ("student", "distilled")]
    assert abs(sizes[0] - sizes[1]) < 1024


@pytest.mark.slow
def test_metrics_match_saved_predictions_and_report(tiny_run):
    _, out = tiny_run
    report = open(os.path.join(out, "report.md")).read()
    for name in ("teacher", "student", "distilled"):
        metrics = json.load(open(os.path.join(out, f"{name}_metrics.json")))
        predictions = runs.load_predictions(os.path.join(out, f"{name}_predictions.npz"))
        assert len(predictions["y_true"]) == metrics["n"] == 96
        recomputed = np.mean(predictions["y_score"].argmax(1) == predictions["y_true"])
        assert metrics["acc"] == pytest.approx(recomputed)
        assert metrics["params"] > 0 and metrics["size_bytes"] == os.path.getsize(os.path.join(out, f"{name}.keras"))
        assert set(metrics["latency"]) == {"1", "32"}
        # Each field once: what ran (epochs, kept epoch, steps, train images) is under `run` alone.
        assert metrics["run"]["phase"] == runs.PHASE_OF[name] and metrics["run"]["epochs_run"] >= 1
        assert not {"epochs_run", "best_epoch", "steps_per_epoch", "train_images"} & set(metrics)
        assert re.search(rf"\| *{name}", report, re.IGNORECASE)
        assert f"{metrics['acc']:.3f}" in report or f"{100 * metrics['acc']:.1f}" in report
    # `kdkeras report` loads the test split: the Grad-CAM agreement covers every test image.
    clinical = runs.read_report_json(os.path.join(out, "clinical.json"))
    assert [clinical[name]["gradcam_agreement"]["images"] for name in ("student", "distilled")] == [96, 96]
    # The report times the three models together and shows those latencies, not each phase's own.
    timed = runs.read_report_json(os.path.join(out, "latency.json"))
    assert set(timed) == {"teacher", "student", "distilled"} and all(set(t) == {"1", "32"} for t in timed.values())
    for name, latency in timed.items():
        assert re.search(rf"\| {name} \| 1 \| {latency['1']['ms_per_image']:.3g} \|", report), name


@pytest.mark.slow
def test_distill_without_teacher_says_run_make_teacher(tmp_path, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    assert cli.main(["distill", "--config", str(config), "--runs-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "teacher.keras not found" in err and "Run `make teacher`" in err


@pytest.mark.slow
def test_config_errors_exit_2_before_training(tmp_path, monkeypatch, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    runs = tmp_path / "runs"
    workdir = tmp_path / "cwd"  # where the default --runs-dir would write
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    assert cli.main(["distill", "--config", str(config), "--runs-dir", str(runs), "--temperature", "-1"]) == 2
    assert "[distill] temperature = -1.0 must be > 0" in capsys.readouterr().err
    assert cli.main(["student", "--config", str(config), "--set", "student.epochz=3"]) == 2
    assert "unknown key(s) 'epochz'" in capsys.readouterr().err
    assert not runs.exists() and os.listdir(workdir) == []


@pytest.mark.slow
def test_killed_phase_resumes_where_it_stopped(tmp_path, monkeypatch, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    common = ["student", "--config", str(config), "--runs-dir", str(tmp_path), "--epochs", "3", "--quiet"]
    original = RunState.on_epoch_end

    def killed_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(RunState, "on_epoch_end", killed_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        cli.main(common)
    assert os.path.exists(tmp_path / "tiny" / "state" / "student" / "epoch_0002.json")
    assert not os.path.exists(tmp_path / "tiny" / "student.keras")
    monkeypatch.setattr(RunState, "on_epoch_end", original)
    assert cli.main(common) == 0
    assert "resuming after epoch 2 of 3" in capsys.readouterr().out
    with open(tmp_path / "tiny" / "student_history.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    assert not os.path.exists(tmp_path / "tiny" / "state")


@pytest.mark.slow
def test_help_explains_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["distill", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--temperature" in text and "softening temperature" in text and "--set KEY=VALUE" in text


@pytest.mark.slow
def test_make_target_runs_a_phase(tmp_path, tiny_experiment):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(repo, ".venv", "bin", "kdkeras")):
        pytest.skip("make targets use the project's .venv, which `make test` creates")
    config = tiny_experiment(tmp_path, **TINY)
    result = subprocess.run(
        ["make", "--no-print-directory", "student", f"EXP={config}", f"RUNS={tmp_path}", "EPOCHS=1", "LIMIT=64"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--epochs 1" in result.stdout and "--limit 64" in result.stdout
    metrics = json.load(open(tmp_path / "tiny" / "student_metrics.json"))
    assert metrics["n"] == 64 and metrics["run"]["epochs_run"] == 1


@pytest.mark.slow
def test_seeded_runs_repeat(tmp_path, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    results = []
    for run in ("a", "b"):
        assert cli.main(["student", "--config", str(config), "--runs-dir", str(tmp_path / run), "--quiet"]) == 0
        with open(tmp_path / run / "tiny" / "student_history.csv", newline="") as f:
            results.append([row["val_loss"] for row in csv.DictReader(f)])
    assert results[0] == results[1]


@pytest.mark.parametrize("command", ["teacher", "student"])
def test_distillation_flags_only_on_the_commands_that_distil(command, capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["distill", "--alpha", "0.5", "--loss", "dist"]).alpha == 0.5
    assert parser.parse_args(["sweep", "--temperature", "2"]).temperature == 2.0
    for flag in ("--alpha", "--temperature", "--loss"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, flag, "1"])
        assert exit_info.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kdkeras {kdkeras.__version__}"


@pytest.mark.slow
def test_a_config_error_is_reported_before_tensorflow_is_imported(tmp_path, tiny_experiment):
    config = tiny_experiment(tmp_path, **{**TINY, "name": "bad", "distill": {**TINY["distill"], "epochs": 0}})
    code = (
        "import sys\nfrom kdkeras import cli\n"
        f"status = cli.main(['distill', '--config', {str(config)!r}, '--runs-dir', {str(tmp_path)!r}])\n"
        "print(status, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "2 []"
    assert "bad.toml: [distill] epochs = 0 must be >= 1 (>= 0 for a teacher read from a file" in done.stderr
