"""Execute a notebook from notebooks/ top to bottom; a failing cell fails the test."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, workdir: Path, *, timeout: int = 600) -> nbformat.NotebookNode:
    """Run notebooks/<name> with `workdir` as its current directory; returns the executed notebook."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env_before = os.environ.get("HEADSCOPE_NOTEBOOK_DIR")
    os.environ["HEADSCOPE_NOTEBOOK_DIR"] = str(workdir)
    try:
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("HEADSCOPE_NOTEBOOK_DIR", None)
        else:
            os.environ["HEADSCOPE_NOTEBOOK_DIR"] = env_before
    return notebook


def cell_outputs(notebook: nbformat.NotebookNode) -> str:
    """All text the notebook printed, for assertions."""
    chunks = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                chunks.append(output["text"])
            elif "data" in output and "text/plain" in output["data"]:
                chunks.append(output["data"]["text/plain"])
    return "\n".join(chunks)
