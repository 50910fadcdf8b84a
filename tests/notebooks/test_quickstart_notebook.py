"""The quickstart notebook runs top to bottom on the embedded model."""

from notebook_runner import cell_outputs, run_notebook


def test_quickstart_runs(tmp_path):
    notebook = run_notebook("quickstart.ipynb", tmp_path)
    assert (tmp_path / "smollm2.parquet").is_file()
    assert "strongest induction head: L1" in cell_outputs(notebook)
