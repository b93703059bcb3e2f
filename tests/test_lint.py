"""ruff, configured in pyproject.toml, finds nothing in the package, the tests and the experiments."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ruff():
    """The ruff executable beside this Python (the dev extra installs it), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "ruff")
    return beside if os.path.exists(beside) else shutil.which("ruff")


@pytest.mark.skipif(ruff() is None, reason="ruff is not installed: pip install -e '.[dev]'")
def test_ruff_finds_nothing():
    result = subprocess.run(
        [ruff(), "check", "--no-cache", "--output-format", "concise", "kdkeras", "tests", "experiments"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (
        f"{result.stdout[-4000:]}{result.stderr[-1000:]}\nFix them, `ruff check --fix` for the safe ones, "
        "or add an ignore with its reason in pyproject.toml."
    )


@pytest.mark.skipif(ruff() is None, reason="ruff is not installed: pip install -e '.[dev]'")
def test_ruff_reads_the_project_configuration(tmp_path):
    """A line of 121 characters fails and one of 120 passes: pyproject.toml's line length is in force."""
    for length, expected in ((120, 0), (121, 1)):
        path = tmp_path / "tests" / "case.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"X = {'1' * (length - 4)}\n")
        result = subprocess.run(
            [ruff(), "check", "--no-cache", "--config", os.path.join(ROOT, "pyproject.toml"), str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == expected, result.stdout
