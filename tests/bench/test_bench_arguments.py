"""Every benchmark command refuses a bad argument before it trains or times anything.

Benchmarks write their results last, after minutes or hours: an output path that is a file,
a global batch two workers cannot split, or a count of 0 must stop them at once, with the
argument named, and leave nothing behind.
"""

import importlib
import subprocess

import pytest

CASES = [
    ("kdkeras.bench.determinism", ["--pairs", "0"], "argument --pairs: must be at least 1, got 0"),
    ("kdkeras.bench.determinism", ["--out-dir", "{file}"], "argument --out-dir: {file} is a file, not a folder"),
    ("kdkeras.bench.multiworker", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    ("kdkeras.bench.multiworker", ["--batch-size", "3"], "--batch-size 3 does not split over the 2 workers"),
    ("kdkeras.bench.multiworker", ["--limit", "100"], "--limit 100 is less than one global batch (128)"),
    ("kdkeras.bench.multiworker", ["--out-dir", "{file}"], "argument --out-dir: {file} is a file, not a folder"),
    ("kdkeras.bench.speed", ["--out-dir", "{file}"], "argument --out-dir: {file} is a file, not a folder"),
    ("kdkeras.bench.speed", ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    ("kdkeras.bench.speed", ["--warmup", "0"], "argument --warmup: must be at least 1, got 0"),
    ("kdkeras.bench.accuracy", ["--out-dir", "{file}"], "argument --out-dir: {file} is a file, not a folder"),
    ("kdkeras.bench.gap", ["--figure", "{folder}"], "argument --figure: {folder} is a folder"),
    ("kdkeras.bench.gap", ["--out-dir", "{file}"], "argument --out-dir: {file} is a file, not a folder"),
    ("kdkeras.bench.report", ["--out", "{folder}"], "argument --out: {folder} is a folder"),
    ("kdkeras.bench.report", ["--out", "{file}/x.md"],
     "argument --out: {file}/x.md lies under {file}, which is a file"),
    ("kdkeras.data.benchmark", ["--jpegs", "4"], "--jpegs 4: pass at least 5"),
    ("kdkeras.data.benchmark", ["--image-size", "0"], "argument --image-size: must be at least 1, got 0"),
    ("kdkeras.data.benchmark", ["--out", "{folder}"], "argument --out: {folder} is a folder"),
]


@pytest.mark.parametrize("module, argv, message", CASES, ids=[f"{m.split('.')[-1]} {' '.join(a)}" for m, a, _ in CASES])
def test_a_bad_argument_stops_the_benchmark_before_any_work(module, argv, message, tmp_path, capsys, monkeypatch):
    file, folder = tmp_path / "results.txt", tmp_path / "out"
    file.write_text("a file")
    folder.mkdir()
    monkeypatch.chdir(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("a process started although an argument is wrong")

    monkeypatch.setattr(subprocess, "run", no_work)
    monkeypatch.setattr(subprocess, "Popen", no_work)
    bench = importlib.import_module(module)
    for name in ("run", "run_benchmark", "run_speed_benchmark", "run_gap_benchmark", "run_accuracy_benchmark"):
        if hasattr(bench, name):
            monkeypatch.setattr(bench, name, no_work)
    with pytest.raises(SystemExit) as exit_info:
        bench.main([item.format(file=file, folder=folder) for item in argv])
    assert exit_info.value.code == 2
    assert message.format(file=file, folder=folder) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "results.txt"] and not any(folder.iterdir())
    assert file.read_text() == "a file"


def test_determinism_names_a_missing_config_and_a_failed_phase(tmp_path, capsys, monkeypatch):
    from kdkeras.bench import determinism

    assert determinism.main(["--config", str(tmp_path / "nope.toml"), "--out-dir", str(tmp_path / "d")]) == 2
    assert "nope.toml' not found" in capsys.readouterr().err

    def failed_phase(args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="Epoch 1/12\nkdkeras: disk full: free 2 GB\n")

    monkeypatch.setattr(determinism.subprocess, "run", failed_phase)
    assert determinism.main(["--pairs", "1", "--out-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "kdkeras.bench.determinism: `kdkeras student --config quickstart" in err
    assert "exited with 1:\nEpoch 1/12\nkdkeras: disk full: free 2 GB" in err
    assert not (tmp_path / "d").exists()
