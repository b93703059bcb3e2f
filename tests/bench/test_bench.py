"""kdkeras.bench: speed smoke run, ratios, accuracy aggregation and resume, BENCHMARKS.md."""

import contextlib
import io
import json
import os
import subprocess

import pytest

from kdkeras import config as config_lib
from kdkeras import stats
from kdkeras.bench import accuracy, report, speed, transfer

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "teacher": {"options": None},
    "student": {"options": None},
    "published": [{"source": "MedMNIST v2", "model": "ResNet-18 (28)", "auc": 0.944, "acc": 0.854}],
}

# Three seeds of made-up metrics whose statistics are easy to check by hand.
PER_SEED = {
    "0": {"teacher": {"acc": 0.80, "auc": 0.90, "balanced_acc": 0.70},
          "student": {"acc": 0.90, "auc": 0.95, "balanced_acc": 0.85},
          "distilled": {"acc": 0.86, "auc": 0.96, "balanced_acc": 0.80}},
    "1": {"teacher": {"acc": 0.82, "auc": 0.92, "balanced_acc": 0.72},
          "student": {"acc": 0.80, "auc": 0.97, "balanced_acc": 0.85},
          "distilled": {"acc": 0.88, "auc": 0.96, "balanced_acc": None}},
    "2": {"teacher": {"acc": 0.84, "auc": 0.94, "balanced_acc": 0.74},
          "student": {"acc": 0.85, "auc": 0.98, "balanced_acc": 0.85},
          "distilled": {"acc": 0.90, "auc": 0.96, "balanced_acc": 0.88}},
}  # fmt: skip


def test_aggregate_mean_and_sample_std():
    summary = accuracy.aggregate(PER_SEED)
    assert list(summary) == ["teacher", "student", "distilled"]
    student_acc = summary["student"]["acc"]
    assert student_acc["values"] == [0.90, 0.80, 0.85] and student_acc["n"] == 3
    assert student_acc["mean"] == pytest.approx(0.85, abs=1e-12)
    assert student_acc["std"] == pytest.approx(0.05, abs=1e-12)  # n - 1 in the denominator
    assert summary["teacher"]["auc"]["mean"] == pytest.approx(0.92) and summary["teacher"]["auc"]["std"] == pytest.approx(0.02)
    assert summary["student"]["balanced_acc"]["std"] == pytest.approx(0.0, abs=1e-12)
    # A missing value is left out, not counted as zero.
    assert summary["distilled"]["balanced_acc"] == {"values": [0.80, 0.88], "n": 2, "mean": pytest.approx(0.84),
                                                    "std": pytest.approx(0.0565685425, abs=1e-9)}
    one = accuracy.aggregate({"0": {"student": {"acc": 0.9}}}, ["acc"])["student"]["acc"]
    assert one["std"] is None and accuracy.format_mean_std(one) == "0.900"
    assert accuracy.format_mean_std(student_acc) == "0.850 ± 0.050"
    assert accuracy.format_mean_std({"values": [], "n": 0, "mean": None, "std": None}) == "n/a"


def _result(published=({"source": "MedMNIST v2", "model": "ResNet-18 (28)", "auc": 0.944, "acc": 0.854},)):
    return {
        "seeds": [0, 1, 2],
        "per_seed": PER_SEED,
        "summary": accuracy.aggregate(PER_SEED),
        "paired": {pair: accuracy.paired_differences(PER_SEED, *pair.split("-")) for pair in accuracy.PAIRS},
        "published": list(published),
        "models": {name: {"architecture": "cnn_small", "params": 162458} for name in accuracy.MODELS},
    }


def test_verdicts_call_a_gain_only_when_its_holm_adjusted_p_is_below_alpha():
    checks = dict(accuracy.verdicts(_result()))
    assert checks["distilled student mean ACC 0.880 > ResNet-18 (28) (MedMNIST v2) 0.854"] == "met"
    assert checks["distilled student mean AUC 0.960 > ResNet-18 (28) (MedMNIST v2) 0.944"] == "met"
    # distilled - alone ACC per seed: -0.04, +0.08, +0.05: mean +0.03, sd 0.0624, t(0.975, 2) = 4.303;
    # unadjusted p 0.49, Holm over the 6 comparisons: 1.
    acc = ("distilled student minus student alone, ACC: +3.0 points (unadjusted 95% t-interval over 3 seeds "
           "-12.5 points to +18.5 points; distilled ahead in 2 of 3; Holm-adjusted p = 1.000)")
    assert checks[acc] == "no significant difference"
    # Against the teacher the distilled student is ahead by 6 points on every seed: zero spread, no t-test.
    assert checks["distilled student minus teacher, ACC: +6.0 points (unadjusted 95% t-interval over 3 seeds "
                  "+6.0 points to +6.0 points; distilled ahead in 3 of 3; no t-test: the difference is the same on every "
                  "seed)"] == "not tested"
    # AUC +0.06, +0.04, +0.02: ahead on every seed, unadjusted p 0.074, the family's smallest (the
    # untested ACC counts as p = 1): Holm 6 * 0.074 = 0.445.
    auc = [text for text in checks if text.startswith("distilled student minus teacher, AUC")]
    assert auc == ["distilled student minus teacher, AUC: +0.0400 (unadjusted 95% t-interval over 3 seeds "
                   "-0.0097 to +0.0897; distilled ahead in 3 of 3; Holm-adjusted p = 0.445)"]
    assert checks[auc[0]] == "no significant difference"
    # A missing balanced ACC leaves two seeds to pair.
    assert any("Balanced ACC" in text and "over 2 seeds" in text for text in checks)
    assert len(checks) == 8


def test_paired_rows_are_one_holm_family_and_read_old_results():
    result = _result()
    rows = accuracy.paired_rows(result)
    assert list(rows) == [(pair, metric) for pair in accuracy.PAIRS for metric in accuracy.METRICS]
    unadjusted = {key: row["p_value"] for key, row in rows.items()}
    assert {key: row["p_adjusted"] for key, row in rows.items()} == pytest.approx(
        dict(zip(unadjusted, stats.holm(list(unadjusted.values())))))
    # accuracy.json files written before p-values were saved: the p is computed from mean, std and n.
    for differences in result["paired"].values():
        for interval in differences.values():
            del interval["p_value"]
    assert accuracy.paired_rows(result) == rows


def test_accuracy_markdown_tables():
    text = accuracy.to_markdown(_result())
    assert "| Model | Params | ACC (mean ± std, 3 seeds) | AUC (mean ± std, 3 seeds) | Balanced ACC (mean ± std, 3 seeds) |" in text
    assert "| student alone: `cnn_small` | 162,458 | 0.850 ± 0.050 | 0.967 ± 0.015 | 0.850 ± 0.000 |" in text
    assert "| published: ResNet-18 (28), MedMNIST v2 | | 0.854 | 0.944 |  |" in text
    assert "- no significant difference: distilled student minus student alone, AUC: -0.0067" in text
    assert "| 1 | 0.820 / 0.920 / 0.720 | 0.800 / 0.970 / 0.850 | 0.880 / 0.960 / n/a |" in text


def _plant_records(root, config_path, seeds):
    base = config_lib.load_config(config_path)
    for seed in seeds:
        seeded = config_lib.apply_overrides(base, {"seed": seed})
        for name in accuracy.MODELS:
            folder = root / f"seed{seed}" / "tiny"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"bench_{name}.json").write_text(json.dumps({
                "config": config_lib.dump_toml(seeded), "metrics": PER_SEED[str(seed)][name],
                "test_images": 64, "architecture": "cnn_small", "params": 162458, "train_seconds": 1.5,
                "class_recall": {"normal": 0.6 + 0.1 * seed, "pneumonia": 0.95},
            }))


def test_accuracy_benchmark_reuses_finished_runs(tmp_path, capsys, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    _plant_records(tmp_path / "bench", config, [0, 2])
    lines = []
    result = accuracy.run_accuracy_benchmark(str(config), [0, 2], str(tmp_path / "bench"), log=lines.append)
    assert len(lines) == 6 and all("already done" in line for line in lines)
    assert result["per_seed"] == {"0": PER_SEED["0"], "2": PER_SEED["2"]}
    assert result["summary"]["teacher"]["acc"]["mean"] == pytest.approx(0.82)
    assert result["test_images"] == [64] and result["train_seconds"]["distilled"] == [1.5, 1.5]
    assert result["published"][0]["acc"] == 0.854
    # Seeds 0 and 2 planted normal recalls 0.6 and 0.8.
    assert result["class_recall"]["distilled"]["normal"]["mean"] == pytest.approx(0.7)
    assert result["class_recall"]["teacher"]["pneumonia"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert "| distilled student | 0.700 ± 0.141 | 0.950 ± 0.000 |" in accuracy.to_markdown(result)
    assert accuracy.main(["--config", str(config), "--seeds", "0", "2", "--runs-dir", str(tmp_path / "bench")]) == 0
    assert "0.820 ± 0.028" in capsys.readouterr().out
    saved = json.loads((tmp_path / "bench" / "accuracy.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))


@pytest.mark.parametrize("change, rerun", [
    ("[distill]\nalpha = 0.5\n", ["distill"]),
    ("[sweep]\nalphas = [0.2]\n", []),
])
def test_a_config_change_reruns_only_the_phases_it_affects(tmp_path, monkeypatch, change, rerun, tiny_experiment,
                                                          phase_record):
    config = tiny_experiment(tmp_path, **TINY)
    _plant_records(tmp_path / "bench", config, [0])
    changed = tmp_path / "changed.toml"
    changed.write_text(config.read_text() + change)
    calls = []

    def fake_run_phase(seeded, phase, runs_dir, verbose, log, teacher_path=None):
        calls.append(phase)
        return phase_record()

    monkeypatch.setattr("kdkeras.workflow.training.run_phase", fake_run_phase)
    result = accuracy.run_accuracy_benchmark(str(changed), [0], str(tmp_path / "bench"), log=lambda line: None)
    assert calls == rerun
    expected = {**PER_SEED["0"], **{("distilled" if p == "distill" else p): {"acc": 0.5, "auc": 0.5, "balanced_acc": 0.5}
                                    for p in rerun}}
    assert result["per_seed"]["0"] == expected
    # The rerun phase's record now holds the new config: a second run reuses everything.
    calls.clear()
    accuracy.run_accuracy_benchmark(str(changed), [0], str(tmp_path / "bench"), log=lambda line: None)
    assert calls == []


def test_accuracy_benchmark_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"`seeds` must be distinct integers, at least one; got \[1, 1\]"):
        accuracy.run_accuracy_benchmark("quickstart", [1, 1], str(tmp_path))
    with pytest.raises(ValueError, match="`epochs` must be >= 1, got 0"):
        accuracy.run_accuracy_benchmark("quickstart", [0], str(tmp_path), epochs=0)
    assert accuracy.main(["--config", str(tmp_path / "nope.toml"), "--runs-dir", str(tmp_path)]) == 2
    assert "nope.toml' not found" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("module", ["accuracy", "recipes", "transfer", "gap"])
@pytest.mark.parametrize("file_at", ["runs", "runs/seed0"])
def test_every_benchmark_names_a_runs_dir_that_is_a_file_before_training(module, file_at, tmp_path, capsys,
                                                                          monkeypatch):
    import importlib

    bench = importlib.import_module(f"kdkeras.bench.{module}")

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained although --runs-dir is a file")

    monkeypatch.setattr(accuracy, "run_recorded_phase", must_not_train)
    if file_at != "runs":
        (tmp_path / "runs").mkdir()
    (tmp_path / file_at).write_text("not a folder")
    assert bench.main(["--seeds", "0", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"--runs-dir: {tmp_path / file_at} is a file, not a folder" in err, err
    assert (tmp_path / file_at).read_text() == "not a folder"


def test_ratios_are_times_per_step_against_goals():
    # Repeat 2 ran under load: every step kind is 4x slower, the paired ratios do not move.
    rows = [{"jit_compile": jit, "step": step, "runs": [rate, rate / 4, rate * 1.1]}
            for jit in (False, True)
            for step, rate in (("kdkeras", 4.0), ("floor", 5.0), ("keras", 3.0), ("student", 8.0))]
    rows.append({"jit_compile": True, "step": "cached", "runs": [6.0, 1.0, 6.0]})
    result = speed.ratios(rows)
    assert [(r["jit_compile"], r["ratio"]) for r in result] == [
        (False, "kdkeras/floor"), (False, "kdkeras/keras"),
        (True, "kdkeras/floor"), (True, "kdkeras/keras"), (True, "cached/student"),
    ]
    assert result[0] == {"jit_compile": False, "ratio": "kdkeras/floor", "value": pytest.approx(1.25),
                         "low": pytest.approx(1.25), "high": pytest.approx(1.25), "goal": 1.10, "met": False}
    assert result[1]["value"] == pytest.approx(0.75) and result[1]["met"] is True
    # cached/student per repeat: 8/6, 2/1, 8.8/6 -> median 8.8/6, range 1.333-2.
    assert result[4]["value"] == pytest.approx(8.8 / 6.0) and result[4]["low"] == pytest.approx(8.0 / 6.0)
    assert result[4]["high"] == pytest.approx(2.0) and result[4]["goal"] is None and result[4]["met"] is None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the speed benchmark: (exit code, printed text, output folder).

    Run here, not in a test, so that every test reading its files passes alone
    and in any order.
    """
    out = tmp_path_factory.mktemp("speed")
    argv = ["--smoke", "--teacher", "cnn_small", "--teacher-options", '{"filters": [4]}',
            "--student-options", '{"filters": [4]}', "--batch-size", "8", "--batches", "1", "--jit", "off",
            "--out-dir", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = speed.main(argv)
    return code, printed.getvalue(), out


@pytest.mark.slow
def test_speed_smoke_run_prints_ratios(smoke):
    code, printed, out = smoke
    assert code == 0
    for ratio in ("kdkeras/floor", "kdkeras/keras", "cached/student"):
        assert f"| off | {ratio} |" in printed
    result = json.loads((out / "speed.json").read_text())
    assert [row["step"] for row in result["rows"]] == list(speed.STEPS)
    assert all(row["steps_per_s"] > 0 and len(row["runs"]) == 1 for row in result["rows"])
    assert result["settings"]["steps"] == 2 and result["settings"]["batch_size"] == 8
    assert result["models"]["student"] == {"name": "cnn_small", "options": {"filters": [4]}, "params": 222}
    assert result["environment"]["cpus"] >= 1 and result["environment"]["tensorflow"]
    assert (out / "speed.md").read_text() == speed.to_markdown(result)


def test_speed_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`steps` must be >= 1, got 0"):
        speed.run_speed_benchmark(steps=0)
    with pytest.raises(ValueError, match="Unknown pair 'vgg'; use one of quickstart, resnet18_full"):
        speed.run_speed_benchmark(pair="vgg")
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["--jit", "maybe"])
    assert exit_info.value.code == 2


def test_report_from_outputs_and_without_them(smoke, tmp_path):
    *_, out = smoke
    empty = report.build_markdown(str(tmp_path))
    assert empty.count("Not measured yet") == 8 and "| NVIDIA GPU | not yet measured |" in empty
    runs = tmp_path / "bench"
    (runs / "speed").mkdir(parents=True)
    (runs / "speed" / "speed.json").write_text((out / "speed.json").read_text())
    result = {**_result(), "experiment": "quickstart", "config_path": "experiments/quickstart.toml",
              "test_images": [624], "train_seconds": {"teacher": [100.0, 110.0, 120.0]},
              "config": {"distill": {"alpha": 0.1, "temperature": 4.0}},
              "environment": json.loads((out / "speed.json").read_text())["environment"]}
    (runs / "accuracy.json").write_text(json.dumps(result))
    assert report.main(["--runs-dir", str(runs), "--out", str(tmp_path / "BENCHMARKS.md")]) == 0
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text.count("Not measured yet") == 6  # recipes, transfer, reproducibility, input pipeline, multi-worker, export
    assert "scored on the 624 test images" in text and "teacher 100, 110, 120" in text
    assert "distillation alpha 0.1, T 4.0" in text
    assert "- Accuracy: standard deviation of the test ACC over seeds, distilled student 0.020, student alone 0.050." in text
    assert text.index("## Summary") < text.index("## Machine") < text.index("## Accuracy")
    assert "| off | kdkeras/floor |" in text and "| NVIDIA GPU | not yet measured |" in text
    assert "python -m kdkeras.bench.accuracy --config quickstart --seeds 0 1 2 --runs-dir runs/bench" in text
    assert report.main(["--runs-dir", str(tmp_path / "none")]) == 2



@pytest.mark.parametrize("content, named", [("garbage", "is unreadable"), ('{"seeds": [0]}', "KeyError: 'experiment'"),
                                            ('["not", "a", "result"]', "TypeError")])
def test_report_names_a_malformed_result_and_writes_nothing(content, named, tmp_path, capsys):
    (tmp_path / "accuracy.json").write_text(content)
    assert report.main(["--runs-dir", str(tmp_path), "--out", str(tmp_path / "BENCHMARKS.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdkeras.bench.report: ") and named in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["accuracy.json"]


@pytest.mark.parametrize("ratios, cost", [([1.03, 1.13], "determinism costs +8% of training time (median pair)"),
                                          ([1.05, 1.10, 1.40], "determinism costs +10%"),
                                          ([0.97, 1.20], "no cost measurable on this shared machine (the range "
                                                         "0.97-1.20 includes 1)")])
def test_determinism_cost_is_the_median_pair_and_none_when_the_range_holds_1(ratios, cost):
    from kdkeras.bench import determinism

    run = {"deterministic": True, "train_seconds": 100.0, "logits_sha256": "0" * 16,
           "metrics": {"acc": 0.9, "auc": 0.97, "balanced_acc": 0.88}}
    result = {"runs": [run], "time_ratios": ratios, "repeatable": True, "repeatable_off": False,
              "largest_change": {"acc": 0.0, "auc": 0.0, "balanced_acc": 0.0}}
    assert cost in determinism.to_markdown(result)

def test_report_quotes_the_multiworker_overhead(tmp_path):
    from kdkeras.bench import multiworker

    result = {
        "teacher": multiworker.TEACHER, "student": multiworker.STUDENT, "dataset": "pneumoniamnist (bundled, 28 px)",
        "images": 1024, "global_batch": 128, "epochs": 3, "timed_epochs": 2,
        "rounds": [
            {"one_process_s": 2.0, "two_workers_s": 2.5, "ratio": 1.25, "load_average_1min": 3.5},
            {"one_process_s": 2.0, "two_workers_s": 3.5, "ratio": 1.75, "load_average_1min": None},
        ],
        "ratio": {"median": 1.5, "min": 1.25, "max": 1.75},
        "environment": {"date": "2026-12-03T12:00:00+00:00", "cpus": 2, "tensorflow": "2.21.0", "keras": "3.15.0",
                        "load_average": [3.0, 2.0, 1.0], "load_average_after": [4.0, 3.0, 2.0]},
    }
    multiworker.save(result, str(tmp_path / "multiworker"))
    assert json.loads((tmp_path / "multiworker" / "multiworker.json").read_text()) == result
    text = report.build_markdown(str(tmp_path))
    section = text[text.index("## Multi-worker"):text.index("## Export")]
    assert (tmp_path / "multiworker" / "multiworker.md").read_text().rstrip() in section
    assert "| 1 | 2.00 | 2.50 | 1.25 | 3.5 |" in section and "| 2 | 2.00 | 3.50 | 1.75 | n/a |" in section
    assert "2 workers / 1 process: **1.50x** (median over 2 interleaved rounds, 1.25-1.75x)" in section
    assert "1-min load average 3.0 before, 4.0 after" in section and "Not measured" not in section
    assert "python -m kdkeras.bench.multiworker --out-dir runs/bench/multiworker" in text


@pytest.mark.slow
def test_make_bench_passes_seeds_and_epochs():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "bench", "BENCH_SEEDS=3 4", "BENCH_EPOCHS=2"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.replace("\\\n", " ").split())
    assert "-m kdkeras.bench.speed --out-dir runs/bench/speed" in text
    assert "-m kdkeras.bench.accuracy --config quickstart --seeds 3 4 --runs-dir runs/bench --epochs 2" in text
    assert "-m kdkeras.bench.recipes --config quickstart --seeds 3 4 --runs-dir runs/bench" in text
    assert "export --config quickstart --runs-dir runs/bench/seed3 --out runs/bench/export" in text
    assert "-m kdkeras.bench.multiworker --out-dir runs/bench/multiworker" in text
    assert "-m kdkeras.bench.report --runs-dir runs/bench --out BENCHMARKS.md" in text


def test_summary_states_each_goal_and_its_verdict():
    rows = [{"jit_compile": False, "step": step, "runs": [rate]}
            for step, rate in (("kdkeras", 4.0), ("floor", 4.2), ("keras", 3.9))]
    speed_result = {"ratios": speed.ratios(rows), "rows": [{**row, "steps_per_s": row["runs"][0]} for row in rows]}
    export_rows = [
        {"format": "keras", "acc": 0.900, "size_bytes": 1000},
        {"format": "tflite_dynamic_int8", "acc": 0.895, "size_bytes": 250},
        {"format": "tflite_int8", "acc": 0.885, "size_bytes": 260},
    ]
    lines = report.summary_lines(_result(), speed_result, {"rows": export_rows})
    assert "- Accuracy, met: distilled student mean ACC 0.880 > ResNet-18 (28) (MedMNIST v2) 0.854." in lines
    assert any(line.startswith("- Accuracy, not tested: distilled student minus teacher, ACC: +6.0 points") for line in lines)
    assert any(line.startswith("- Accuracy, no significant difference: distilled student minus teacher, AUC: +0.0400 "
                               "(unadjusted 95% t-interval") and "Holm-adjusted p = 0.445" in line for line in lines)
    assert ("- Speed, CPU, jit_compile off: time per step `kdkeras/floor` = 1.050 (range over repeats "
            "1.050-1.050), goal <= 1.10: yes.") in lines
    assert "`kdkeras/keras` = 0.975" in lines[-3] and lines[-3].endswith("goal <= 1.00: yes.")
    assert lines[-2] == ("- Export, met: `tflite_dynamic_int8` test ACC 0.8950 against 0.9000 for the Keras model "
                         "(-0.50 points; goal: at most 1 point lower), 0.25x its size on disk.")
    assert lines[-1].startswith("- Export, NOT met: `tflite_int8` test ACC 0.8850 against 0.9000 for the Keras model (-1.50")
    assert report.summary_lines(None, None, None) == ["Nothing measured yet."]


def test_set_overrides_reach_every_seed(tmp_path, monkeypatch, capsys, tiny_experiment, phase_record):
    config = tiny_experiment(tmp_path, **TINY)
    runs = tmp_path / "bench"
    _plant_records(runs / "variants" / "alpha0.5", config, [0, 2])
    seen = []

    def fake_run_phase(seeded, phase, runs_dir, verbose, log, teacher_path=None):
        seen.append((seeded.seed, seeded.distill.alpha, seeded.distill.temperature))
        return phase_record(acc=0.9, auc=0.97, balanced_acc=0.88, best_monitor_value=0.9)

    monkeypatch.setattr("kdkeras.workflow.training.run_phase", fake_run_phase)
    argv = ["--config", str(config), "--seeds", "0", "2", "--runs-dir", str(runs / "variants" / "alpha0.5"),
            "--set", "distill.alpha=0.5", "--set", "distill.temperature=2"]
    assert accuracy.main(argv) == 0
    assert seen == [(0, 0.5, 2.0), (2, 0.5, 2.0)]  # distillation only: teacher and student are reused
    variant = json.loads((runs / "variants" / "alpha0.5" / "accuracy.json").read_text())
    assert variant["overrides"] == {"distill.alpha": 0.5, "distill.temperature": 2}
    assert accuracy.main(["--config", str(config), "--set", "distill.alpha"]) == 2
    assert "--set expects KEY=VALUE, got 'distill.alpha'" in capsys.readouterr().err


def _transfer_result(gains):
    """A transfer result whose ACC gains per seed are `gains` (AUC gains half of them), one fraction."""
    per_seed = {}
    for seed, gain in enumerate(gains):
        full = {"acc": 0.90, "auc": 0.95}
        per_seed[str(seed)] = {"teacher": full, "all labels": full, "0.05": {
            "student": {"acc": 0.80, "auc": 0.90},
            "distilled": {"acc": 0.80 + gain, "auc": 0.90 + gain / 2}}}
    return {"seeds": list(range(len(gains))), "per_seed": per_seed,
            "comparisons": transfer.compare_arms(per_seed, [0.05])}


def test_transfer_report_with_one_seed_says_so_instead_of_crashing():
    result = _transfer_result([0.04])
    lines = transfer.verdicts(result)  # crashed with TypeError: None * int
    assert lines[0] == ("5% labels, ACC: distilled minus the student alone +4.0 points (one seed: no interval or "
                        "test over seeds; run at least 2 seeds): not tested.")
    assert lines[2].endswith("(one seed: no interval, so closeness to it is not tested).")
    assert "| 5% | 0.800 | 0.840 | +4.0 (one seed) |" in transfer.to_markdown(result)


def test_transfer_verdicts_read_the_holm_adjusted_p():
    # ACC gains with unadjusted p = 0.033 (interval above 0); AUC gains half of them, same p.
    # Holm over the 2 gains: 2 * 0.033 = 0.066, so neither is called better.
    result = _transfer_result([0.01, 0.04, 0.02, 0.05, 0.01])
    acc = result["comparisons"]["0.05"]["acc"]["gain"]
    assert acc["low"] > 0 and acc["p_value"] == pytest.approx(0.0329, abs=1e-4)
    rows = transfer.gain_rows(result)
    assert rows[("0.05", "acc")]["p_adjusted"] == pytest.approx(2 * acc["p_value"], rel=1e-9)
    lines = transfer.verdicts(result)
    assert lines[0].startswith("5% labels, ACC: no significant difference between the distilled student and "
                               "the student alone: +2.6 points (95% t-interval +0.3 to +4.9, unadjusted; "
                               "distilled better in 5 of 5 seeds; Holm-adjusted p = 0.066)")
    text = transfer.to_markdown(result)
    assert "Family: the transfer-set gains" in text and "conditional on the one official test split" in text
    strong = _transfer_result([0.04, 0.05, 0.045, 0.05, 0.042])
    assert transfer.verdicts(strong)[0].startswith("5% labels, ACC: distillation through the transfer set is "
                                                   "better than the student alone by +4.5 points")


def test_benchmarks_md_quotes_the_readme_block_verbatim(tmp_path):
    from kdkeras.bench import readme

    runs = tmp_path / "bench"
    runs.mkdir()
    result = {**_result(), "experiment": "quickstart", "config_path": "experiments/quickstart.toml",
              "test_images": [624], "train_seconds": {"teacher": [1.0, 1.0, 1.0]},
              "config": {"distill": {"alpha": 0.1, "temperature": 4.0}},
              "environment": {"cpus": 2, "gpus": [], "tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.11",
                              "platform": "Linux", "date": "2026-12-07T00:00:00", "lscpu": "Model name: AMD EPYC"}}
    (runs / "accuracy.json").write_text(json.dumps(result))
    assert "incomplete: rerun `make bench`" in report.build_markdown(str(runs))
    run = runs / "seed0" / "quickstart"
    run.mkdir(parents=True)
    for name in accuracy.MODELS:
        metrics = {**PER_SEED["0"][name], "task": "binary-class", "architecture": "cnn_small", "params": 162458,
                   "intervals": {"acc": {"low": 0.8, "high": 0.9}}}
        (run / f"{name}_metrics.json").write_text(json.dumps(metrics))
    (runs / "transfer.json").write_text(json.dumps({**_transfer_result([0.04]), "environment": result["environment"]}))
    text = report.build_markdown(str(runs))
    body = readme.block_body(str(runs), result)
    assert "| student alone: `cnn_small` | 162,458 | n/a | n/a | 0.900 (0.800-0.900) | 0.950 | 0.850 |" in body
    assert "- 5% labels, ACC: distilled minus the student alone +4.0 points (one seed" in body
    assert "Holm-adjusted p = 1.000): no significant difference" in body
    assert body.rstrip() in text
    readme_path = tmp_path / "README.md"
    readme_path.write_text(f"intro\n{readme.README_START}\nold\n{readme.README_END}\nrest\n")
    readme.update_readme(str(readme_path), str(runs))
    assert readme_path.read_text() == f"intro\n{readme.README_START}\n{body}{readme.README_END}\nrest\n"
