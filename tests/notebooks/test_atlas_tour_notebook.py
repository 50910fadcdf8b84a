"""The atlas tour notebook runs top to bottom and writes its report."""

from notebook_runner import cell_outputs, run_notebook


def test_atlas_tour_runs(tmp_path):
    notebook = run_notebook("atlas_tour.ipynb", tmp_path)
    assert (tmp_path / "tour.html").stat().st_size > 1_000_000  # plotly.js is inside
    assert "tour.html" in cell_outputs(notebook)
