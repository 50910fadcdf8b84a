"""notebooks/backends.ipynb runs top to bottom and shows the two backends agreeing."""

import re

from notebook_runner import cell_outputs, run_notebook


def test_backends_notebook(tmp_path):
    notebook = run_notebook("backends.ipynb", tmp_path)
    text = cell_outputs(notebook)
    assert "auto picks: transformer-lens" in text
    worst = re.search(r"max \|nnsight - TL\| = ([0-9.e+-]+)", text)
    assert worst and float(worst.group(1)) < 1e-4, text[-400:]
    assert "attention_interface_1" in text
