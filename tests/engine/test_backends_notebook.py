"""notebooks/backends.ipynb runs top to bottom and shows the two backends agreeing."""

from notebook_runner import cell_outputs, run_notebook


def test_backends_notebook(tmp_path):
    notebook = run_notebook("backends.ipynb", tmp_path)
    text = cell_outputs(notebook)
    assert "auto picks: transformer-lens" in text
    assert "max |nnsight - TL|" in text
    assert "attention_interface_1" in text
