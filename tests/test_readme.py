"""The README's Python example runs as written."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    return re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    (example,) = python_blocks()
    assert "kdkeras.Distiller(student=student, teacher=teacher)" in example
    script = tmp_path / "example.py"
    script.write_text("import keras\nkeras.utils.set_random_seed(0)\n" + example)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = eval(result.stdout.strip().splitlines()[-1])  # the printed evaluate() dict
    assert set(logs) == {"loss", "student_loss", "distillation_loss", "accuracy"}
    # PneumoniaMNIST's test split has 390 pneumonia and 234 normal images: a
    # model always answering "pneumonia" scores 0.625. The example's 2 + 2
    # epochs reached 0.708 (2 CPU cores, 2026-12-03); 0.66 is 22 images past the
    # majority answer.
    assert logs["accuracy"] > 0.66
    assert (tmp_path / "student.keras").exists()


def test_readme_quickstart_result_quotes_the_benchmark_it_came_from():
    """The README's result block and BENCHMARKS.md come from one `make bench`: every line the same.

    BENCHMARKS.md prints the block verbatim ("The quickstart result the README quotes"), so a
    changed number, interval, verdict or bullet on either side fails here.
    """
    from kdkeras.bench.readme import README_END, README_START

    text = open(README, encoding="utf-8").read()
    block = text[text.index(README_START) + len(README_START):text.index(README_END)].strip("\n")
    benchmarks = open(os.path.join(os.path.dirname(README), "BENCHMARKS.md"), encoding="utf-8").read()
    lines = block.splitlines()
    assert len([line for line in lines if line]) >= 8  # the header, the table, the verdicts
    heading = "## The quickstart result the README quotes"
    assert heading in benchmarks, "BENCHMARKS.md lacks the README-block section: rerun `make bench`"
    quoted = benchmarks[benchmarks.index(heading):].split("\n## ")[0].splitlines()
    missing = [line for line in lines if line and line not in quoted]
    assert not missing, f"README lines not in BENCHMARKS.md: {missing}"
    assert block in "\n".join(quoted), "the README block is not quoted in order"


def test_readme_table_matches_the_accuracy_table():
    """The README's three rows equal the per-seed row of BENCHMARKS.md's accuracy table for the same seed."""
    from kdkeras.bench.readme import README_END, README_START

    text = open(README, encoding="utf-8").read()
    block = text[text.index(README_START):text.index(README_END)]
    seed = re.search(r"`make all` \(seed (\d+)\)", block).group(1)
    readme = {
        model: re.findall(r"\| (\d\.\d{3}) \(", line)
        for model, line in re.findall(r"^\| (teacher|student alone|distilled student): `[^`]+` (\|.*)$", block, re.M)
    }
    assert sorted(readme) == ["distilled student", "student alone", "teacher"]
    benchmarks = open(os.path.join(os.path.dirname(README), "BENCHMARKS.md"), encoding="utf-8").read()
    triple = r"(\d\.\d{3} / \d\.\d{3} / \S+)"
    (row,) = re.findall(rf"^\| {seed} \| {triple} \| {triple} \| {triple} \|", benchmarks, re.M)
    cells = [cell.split(" / ") for cell in row]
    assert [readme["teacher"], readme["student alone"], readme["distilled student"]] == cells
