"""The Colab quickstart notebook executes headless, on a short run of the quickstart recipe."""

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab_quickstart.ipynb")


@pytest.mark.slow
def test_colab_quickstart_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("KDKERAS_NOTEBOOK_LIMIT", "128")
    monkeypatch.setenv("KDKERAS_NOTEBOOK_EPOCHS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources).execute()
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [o for cell in cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]

    def printed(cell):
        return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")

    assert re.search(r"Accelerator: |No GPU or TPU: .*Runtime > Change runtime type", printed(cells[0]), re.S)
    # Off Colab the install cell installs nothing, and says so.
    assert re.fullmatch(r"kdkeras \S+ is importable here: nothing to install.\n", printed(cells[1]))
    # The strategy the phases train under (on a CPU-only machine: "default strategy: 1 replica on CPU:0").
    assert re.search(r"^Strategy \(strategy = 'auto'\): [\w ]+: \d+ replicas? on [A-Z]+:\d", printed(cells[2]), re.M)
    # The quickstart recipe, shortened only where the test asked.
    assert 'class_weight = "balanced"' in printed(cells[2]) and "limit = 128" in printed(cells[2])
    out = tmp_path / "runs" / "quickstart"
    for name in ("teacher", "student", "distilled"):
        assert (out / f"{name}.keras").exists()
    report = (out / "report.md").read_text()
    # Every figure of the report is shown inline, and its text too.
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures and len(images) == len(figures)
    markdown = "".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert "distilled" in markdown
    assert f"the run folder stays at {out}" in printed(cells[-1])  # saving to Drive is Colab-only
    # Only the public API: no private kdkeras helper in any cell.
    assert not [c.source for c in cells if re.search(r"kdkeras\.\w+\._|from kdkeras\.\w+ import _", c.source)]
    # The notebook's numbers are the CLI's: the same phases, same seed, same shortening, to the last digit.
    cli_runs = tmp_path / "cli_runs"
    for phase in ("teacher", "student", "distill"):
        subprocess.run(
            [sys.executable, "-m", "kdkeras", phase, "--config", "quickstart", "--limit", "128", "--epochs", "1",
             "--runs-dir", str(cli_runs)],
            cwd=tmp_path, check=True, capture_output=True, timeout=300,
        )
    for name in ("teacher", "student", "distilled"):
        notebook_metrics = json.loads((out / f"{name}_metrics.json").read_text())
        cli_metrics = json.loads((cli_runs / "quickstart" / f"{name}_metrics.json").read_text())
        for key in ("acc", "auc", "balanced_acc", "loss", "confusion_matrix"):
            assert notebook_metrics[key] == cli_metrics[key], (name, key)
