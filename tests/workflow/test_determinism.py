"""A seeded, deterministic experiment repeats bit for bit in another process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kdkeras.files import load_model

# The tiny experiment (tests/conftest.py) as this file changes it.
TINY = {
    "name": "repeat",
    "seed": 11,
    "deterministic": True,
    "data": {"limit": 96, "augment": "light"},
    "teacher": {"options": {"filters": [8, 16]}, "epochs": 2},
    "student": {"epochs": 2, "class_weight": "balanced"},
    "distill": {"epochs": 2, "class_weight": "balanced"},
}

# Measured quantities that legitimately differ between two runs.
_TIMINGS = ("train_seconds", "latency", "size_bytes", "size_on_disk")


def _run_all(config, runs):
    # One fresh process runs the three phases, as `make all` would in three.
    script = (
        "import sys; from kdkeras import cli\n"
        "for phase in ('teacher', 'student', 'distill'):\n"
        f"    assert cli.main([phase, '--config', {str(config)!r}, '--runs-dir', {str(runs)!r}, '--quiet']) == 0\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)


def _metrics(runs, name):
    with open(os.path.join(runs, "repeat", f"{name}_metrics.json")) as f:
        metrics = json.load(f)
    metrics["run"].pop("date")  # when it finished
    return {k: v for k, v in metrics.items() if not any(k.startswith(t) for t in _TIMINGS)}


@pytest.mark.slow
def test_three_phases_repeat_bit_for_bit_in_two_processes(tmp_path, tiny_experiment):
    config = tiny_experiment(tmp_path, **TINY)
    first, second = tmp_path / "first", tmp_path / "second"
    _run_all(config, first)
    _run_all(config, second)
    for name in ("teacher", "student", "distilled"):
        a = load_model(str(first / "repeat" / f"{name}.keras"))
        b = load_model(str(second / "repeat" / f"{name}.keras"))
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
        assert _metrics(first, name) == _metrics(second, name)
        history_a = (first / "repeat" / f"{name}_history.csv").read_text()
        assert history_a == (second / "repeat" / f"{name}_history.csv").read_text()
