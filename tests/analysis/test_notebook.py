"""analysis/dashboard.ipynb runs top to bottom on the real experiment (nbclient, the venv's python3 kernel)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.analysis.conftest import REPO


def test_dashboard_executes(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("NSM_EXPERIMENT", str(experiment))
    monkeypatch.setenv("NSM_EXPERIMENTS", str(experiment))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(REPO / "analysis" / "dashboard.ipynb", as_version=4)
    # jupyter_client starts the "python3" kernel with this interpreter (the venv's).
    NotebookClient(notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(output.get("text", "") for output in outputs)
    assert f"experiment: {experiment}" in text
    assert "test accuracy" in text and "best_model.pt" in text
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 8  # curves, confusion matrix, confidence, comparison, 4 importance plots
    assert (experiment / "best" / "best_config.yaml").is_file()
