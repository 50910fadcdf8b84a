"""Execute a notebook from notebooks/ top to bottom; a failing cell fails the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, workdir: Path, *, timeout: int = 600, parameters: dict[str, Any] | None = None
                 ) -> nbformat.NotebookNode:
    """Run notebooks/<name> with `workdir` as its current directory; returns the executed notebook.

    `parameters` (small sizes for the test) are assigned in a cell inserted after the one tagged `parameters`,
    as papermill does, so the tutorial cells stay free of test scaffolding; the committed outputs are cleared first.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    if parameters is not None:
        inject_parameters(notebook, parameters)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute()  # the kernel's current directory is `workdir`: notebooks write their files there
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


def parameters_cell(notebook: nbformat.NotebookNode) -> int:
    """Index of the one code cell tagged `parameters`."""
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise AssertionError(f"expected exactly one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def inject_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, Any]) -> None:
    """Insert `NAME = value` lines after the parameters cell; every name must already be set there."""
    index = parameters_cell(notebook)
    declared = notebook.cells[index].source
    for name in parameters:
        if f"{name} =" not in declared:
            raise AssertionError(f"parameter {name} is not set in the notebook's parameters cell")
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)


def notebook_size_kb(name: str) -> float:
    return (NOTEBOOKS / name).stat().st_size / 1024


def figure_count(notebook: nbformat.NotebookNode) -> int:
    """Plotly figures the notebook displayed (as plotly JSON, drawn offline by Jupyter)."""
    return sum("application/vnd.plotly.v1+json" in output.get("data", {})
               for cell in notebook.cells for output in cell.get("outputs", []))


def warnings_text(notebook: nbformat.NotebookNode) -> str:
    """What went to stderr (warnings such as tqdm's 'IProgress not found')."""
    return "\n".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
                     if output.get("name") == "stderr")
