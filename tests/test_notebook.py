"""The Colab quickstart notebook executes headless on a smoke-sized run."""

import os

import nbformat
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "colab_quickstart.ipynb")


def test_colab_quickstart_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("KDKERAS_NOTEBOOK_SMOKE", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = tmp_path / "runs" / "colab_quickstart"
    assert (out / "report.md").exists() and (out / "roc.png").exists()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("distilled" in text for text in markdown)
