"""`kdkeras sweep`: a temperature x alpha grid of distill runs, its table, plot and resume."""

import csv
import json
import os
import re
import shutil
import subprocess

import pytest
from matplotlib.figure import Figure

from kdkeras import cli, models
from kdkeras import config as config_lib
from kdkeras.workflow import sweep

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "description": "tiny sweep",
    "seed": 5,
    "teacher": {"epochs": None},
    "student": {"epochs": None},
    "distill": {"epochs": 1, "monitor": "val_loss"},
}

TEACHER_METRICS = {"task": "binary-class", "acc": 0.9, "auc": 0.95, "balanced_acc": 0.875, "epochs_run": 12, "train_seconds": 301.5,
                   "n": 64, "architecture": "resnet18"}  # fmt: skip
STUDENT_METRICS = {"task": "binary-class", "acc": 0.8125, "auc": 0.9, "balanced_acc": 0.75, "epochs_run": 9, "train_seconds": 12.25,
                   "n": 624, "architecture": "cnn_small"}  # fmt: skip


@pytest.fixture(scope="session")
def write_experiment(tiny_experiment):
    """`write_experiment(folder, sweep_table="")`: the tiny experiment's path, with the table appended."""
    def write(root, sweep_table=""):
        path = tiny_experiment(root, **TINY)
        path.write_text(path.read_text() + sweep_table)
        return str(path)

    return write


def add_teacher(runs):
    """An untrained tiny teacher: the sweep only needs a model that reads the data."""
    out = os.path.join(runs, "tiny")
    os.makedirs(out, exist_ok=True)
    models.get_model("cnn_small", input_shape=(28, 28, 1), num_classes=2, filters=[8, 16]).save(
        os.path.join(out, "teacher.keras"))
    for name, metrics in (("teacher", TEACHER_METRICS), ("student", STUDENT_METRICS)):
        with open(os.path.join(out, f"{name}_metrics.json"), "w") as f:
            json.dump(metrics, f)
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory, write_experiment):
    root = tmp_path_factory.mktemp("sweep")
    path = write_experiment(root)
    runs = str(root / "runs")
    out = add_teacher(runs)
    lines = []
    rows = sweep.run_sweep(
        config_lib.load_config(path), temperatures=[8, 2], alphas=[0.5], runs_dir=runs, verbose=0, log=lines.append)
    return path, runs, os.path.join(out, "sweep"), rows, lines


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sweep_writes_one_distill_run_per_point_and_the_summary(swept):
    _, _, sweep_dir, _, lines = swept
    assert sorted(os.listdir(sweep_dir)) == ["T2_a0.5", "T8_a0.5", "sweep.csv", "sweep.md", "sweep.png"]
    for name, temperature in (("T2_a0.5", 2.0), ("T8_a0.5", 8.0)):
        files = os.listdir(os.path.join(sweep_dir, name))
        assert {"config.toml", "distilled.keras", "distilled_metrics.json", "distilled_history.csv"} <= set(files)
        assert "teacher.keras" not in files  # read from the experiment's folder, never copied
        point = config_lib.load_config(os.path.join(sweep_dir, name, "config.toml"))
        assert (point.name, point.distill.temperature, point.distill.alpha) == (name, temperature, 0.5)
        assert (point.sweep.temperatures, point.sweep.alphas) == ([], [])
    assert [line.split(":")[0] for line in lines if line.startswith("[sweep ")] == [
        "[sweep 1/2] T=2 alpha=0.5", "[sweep 1/2] T=2 alpha=0.5",
        "[sweep 2/2] T=8 alpha=0.5", "[sweep 2/2] T=8 alpha=0.5",
    ]  # fmt: skip
    assert lines[0].endswith(f"distilling into {os.path.join(sweep_dir, 'T2_a0.5')}")
    with open(os.path.join(sweep_dir, "sweep.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_each_point_distils_at_its_own_temperature(swept):
    _, _, sweep_dir, _, _ = swept
    losses = [read_csv(os.path.join(sweep_dir, name, "distilled_history.csv"))[0]["distillation_loss"]
              for name in ("T2_a0.5", "T8_a0.5")]  # fmt: skip
    assert losses[0] != losses[1]


@pytest.mark.slow
def test_csv_rows_match_each_points_metrics(swept):
    _, _, sweep_dir, rows, _ = swept
    table = read_csv(os.path.join(sweep_dir, "sweep.csv"))
    assert list(table[0]) == list(sweep.CSV_COLUMNS)
    assert [(r["run"], r["temperature"], r["alpha"]) for r in table] == [("T2_a0.5", "2.0", "0.5"), ("T8_a0.5", "8.0", "0.5")]
    for row, saved in zip(table, rows):
        metrics = json.load(open(os.path.join(sweep_dir, row["run"], "distilled_metrics.json")))
        history = read_csv(os.path.join(sweep_dir, row["run"], "distilled_history.csv"))
        assert float(row["acc"]) == metrics["acc"] and float(row["auc"]) == metrics["auc"]
        assert float(row["balanced_acc"]) == metrics["balanced_acc"]
        assert (row["epochs"], row["n"], row["seconds"]) == ("1", "64", str(metrics["train_seconds"]))
        # A val_loss monitor ranks by the student's own loss: the distiller's val_loss scales with T^2.
        assert row["monitor"] == "val_student_loss"
        assert float(row["monitor_value"]) == float(history[0]["val_student_loss"])
        assert saved["monitor_value"] == float(row["monitor_value"])
    best = min(table, key=lambda r: float(r["monitor_value"]))
    assert [r["best"] for r in table] == ["1" if r is best else "0" for r in table]


@pytest.mark.slow
def test_markdown_marks_the_best_point_and_shows_the_references(swept):
    _, _, sweep_dir, rows, _ = swept
    text = open(os.path.join(sweep_dir, "sweep.md")).read()
    best = next(r for r in rows if r["best"])
    assert text.startswith("# Temperature x alpha sweep: tiny sweep\n")
    assert f"| **{best['run']} (best)** | {best['temperature']:g} | 0.5 | {best['acc']:.3f} |" in text
    assert "| teacher (resnet18) |  |  | 0.900 | 0.950 | 0.875 | n/a | 12 | 301.5 |" in text
    assert "| student alone (cnn_small) |  |  | 0.812 | 0.900 | 0.750 | n/a | 9 | 12.2 |" in text
    assert f"Best: {best['run']}, the lowest val_student_loss on the validation split" in text
    assert "test splits of different sizes ([64, 624])" in text


@pytest.mark.slow
def test_rerun_skips_finished_points(swept, capsys):
    path, runs, sweep_dir, _, _ = swept
    trained = os.path.join(sweep_dir, "T2_a0.5", "distilled.keras")
    before = os.stat(trained).st_mtime_ns
    args = ["sweep", "--config", path, "--runs-dir", runs, "--temperatures", "2 8", "--alphas", "0.5", "--quiet"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"[sweep 1/2] T=2 alpha=0.5: finished earlier, skipped ({sweep_dir}/T2_a0.5/distilled_metrics.json)" in out
    assert "[sweep 2/2] T=8 alpha=0.5: finished earlier, skipped" in out
    assert "distilling" not in out
    assert os.stat(trained).st_mtime_ns == before
    assert len(read_csv(os.path.join(sweep_dir, "sweep.csv"))) == 2


@pytest.mark.slow
def test_finished_point_of_another_config_is_not_reused(swept, capsys):
    path, runs, sweep_dir, _, _ = swept
    args = ["sweep", "--config", path, "--runs-dir", runs, "--temperatures", "2", "--alphas", "0.5", "--epochs", "3"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{sweep_dir}/T2_a0.5 was trained with another config (distill.epochs differ): delete that folder" in err


def test_sweep_without_teacher_says_run_make_teacher(tmp_path, capsys, write_experiment):
    path = write_experiment(tmp_path)
    args = ["sweep", "--config", path, "--runs-dir", str(tmp_path / "runs"), "--temperatures", "2,4"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "tiny/teacher.keras not found: a sweep distils the experiment's trained teacher" in err
    assert "`make teacher EXP=tiny`" in err
    assert not os.path.exists(tmp_path / "runs" / "tiny" / "sweep")


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperatures", "2,-1"], r"\[sweep\] temperatures = \[2.0, -1.0\]: each value must be a number in \[0.01, 1000\], got -1.0"),
        (["--temperatures", "0"], r"each value must be a number in \[0.01, 1000\], got 0.0"),
        (["--alphas", "0.1,1.5"], r"\[sweep\] alphas = \[0.1, 1.5\]: each value must be a number in \[0, 1\], got 1.5"),
        (["--alphas", "0.5,0.5"], r"\[sweep\] alphas = \[0.5, 0.5\] repeats a value"),
        (["--epochs", "2"], r"nothing to sweep. Pass --temperatures 2,4,8 and/or --alphas 0.1,0.5, or add a \[sweep\]"),
    ],
)
def test_bad_grids_exit_2_with_the_fix(tmp_path, capsys, flags, message, write_experiment):
    path = write_experiment(tmp_path)
    assert cli.main(["sweep", "--config", path, "--runs-dir", str(tmp_path), *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "tiny")


@pytest.mark.slow
@pytest.mark.parametrize("value, message", [("", "is empty: give at least one number"), ("2,x", "expects numbers")])
def test_unreadable_axis_is_a_usage_error(tmp_path, capsys, value, message, write_experiment):
    path = write_experiment(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", "--config", path, "--temperatures", value])
    assert exit_info.value.code == 2
    assert f"argument --temperatures: {message}" in capsys.readouterr().err


def test_grid_comes_from_the_sweep_table_and_defaults_to_distill(tmp_path, write_experiment):
    config = config_lib.load_config(write_experiment(tmp_path, "\n[sweep]\ntemperatures = [100, 3, 10]\n"))
    assert sweep.grid(config) == [(3.0, 0.1), (10.0, 0.1), (100.0, 0.1)]  # alpha stays [distill]'s 0.1
    assert sweep.grid(config, alphas=[0.9, 0]) == [(t, a) for t in (3.0, 10.0, 100.0) for a in (0.0, 0.9)]
    assert sweep.grid(config, temperatures=[6]) == [(6.0, 0.1)]
    with pytest.raises(config_lib.ConfigError, match="The sweep's alphas are empty: give at least one value"):
        sweep.grid(config, alphas=[])


@pytest.mark.parametrize(
    "table, message",
    [
        ("alphas = [0.1, -0.2]", r"tiny.toml: \[sweep\] alphas = \[0.1, -0.2\]: each value must be a number in \[0, 1\]"),
        ('temperatures = ["4"]', r"each value must be a number in \[0.01, 1000\], got '4'"),
        ("temperatures = 4", r"\[sweep\]: temperatures must be of type list, got 4"),
        ("temperature = [4]", r"\[sweep\]: unknown key\(s\) 'temperature'. Allowed keys: alphas, temperatures."),
    ],
)
def test_bad_sweep_table_is_a_config_error(tmp_path, table, message, write_experiment):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config(write_experiment(tmp_path, f"\n[sweep]\n{table}\n"))


def test_point_names_keep_every_digit():
    assert sweep.point_name(4.0, 0.1) == "T4_a0.1"
    assert sweep.point_name(2.5, 1) == "T2.5_a1"
    assert sweep.point_name(0.1234567, 0.1234568) == "T0.1234567_a0.1234568"


def grid_rows(temperatures):
    return [
        {"run": sweep.point_name(t, 0.5), "temperature": t, "alpha": 0.5, "acc": 0.5 + t / 1000, "auc": 0.7,
         "balanced_acc": 0.6, "monitor": "val_auc", "monitor_value": 0.8, "epochs": 1, "seconds": 1.0, "n": 64,
         "best": False}
        for t in temperatures
    ]  # fmt: skip


@pytest.mark.parametrize("temperatures, scale", [([3, 10, 30, 100], "log"), ([2, 6], "linear")])
def test_plot_uses_a_log_axis_for_wide_temperature_ranges(tmp_path, monkeypatch, temperatures, scale):
    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))[1])
    path = sweep.plot_sweep(grid_rows(temperatures), str(tmp_path / "s.png"), {"teacher": TEACHER_METRICS})
    assert path == str(tmp_path / "s.png") and os.path.getsize(path) > 0
    (fig,) = drawn
    acc, auc = fig.axes
    assert acc.get_xscale() == auc.get_xscale() == scale
    assert [tick.get_text() for tick in acc.get_xticklabels()] == [str(t) for t in temperatures]
    lines = {line.get_label(): line for line in acc.get_lines()}
    assert sorted(lines) == ["alpha = 0.5", "teacher"]
    assert list(lines["alpha = 0.5"].get_ydata()) == [0.5 + t / 1000 for t in temperatures]
    assert list(lines["teacher"].get_ydata()) == [0.9, 0.9]
    assert os.listdir(tmp_path) == ["s.png"]  # no temporary file left behind


def test_markdown_without_references_or_best():
    text = sweep.sweep_markdown(grid_rows([2, 6]))
    assert text.splitlines()[2:] == [
        "| Run | T | alpha | Test ACC | Test AUC | Balanced ACC | val_auc | Epochs | Seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| T2_a0.5 | 2 | 0.5 | 0.502 | 0.700 | 0.600 | 0.800 | 1 | 1.0 |",
        "| T6_a0.5 | 6 | 0.5 | 0.506 | 0.700 | 0.600 | 0.800 | 1 | 1.0 |",
        "",
    ]


@pytest.mark.slow
def test_make_sweep_passes_the_grid(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not shutil.which("make"):
        pytest.skip("needs make")
    result = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "sweep", "EXP=tiny", f"RUNS={tmp_path}",
         "TEMPERATURES=3 10 100", "ALPHAS=0.5", "EPOCHS=2"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "kdkeras sweep" in line]
    assert f"sweep --config tiny --runs-dir {tmp_path} --epochs 2" in " ".join(line.split())
    assert '--temperatures "3 10 100"' in result.stdout and '--alphas "0.5"' in result.stdout


@pytest.mark.slow
def test_interrupted_point_continues_from_its_last_epoch(tmp_path, monkeypatch, capsys, write_experiment):
    from kdkeras.workflow.callbacks import RunState

    path = write_experiment(tmp_path)
    runs = str(tmp_path / "runs")
    out = add_teacher(runs)
    args = ["sweep", "--config", path, "--runs-dir", runs, "--temperatures", "2", "--alphas", "0.5",
            "--epochs", "2", "--quiet"]  # fmt: skip
    original = RunState.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(RunState, "on_epoch_end", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        cli.main(args)
    point = os.path.join(out, "sweep", "T2_a0.5")
    assert not os.path.exists(os.path.join(point, "distilled.keras"))
    monkeypatch.setattr(RunState, "on_epoch_end", original)
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "[distilled] resuming after epoch 1 of 2" in capsys.readouterr().out
    assert [row["epoch"] for row in read_csv(os.path.join(point, "distilled_history.csv"))] == ["1", "2"]
    assert os.path.exists(os.path.join(point, "distilled.keras"))
