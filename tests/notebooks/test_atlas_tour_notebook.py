"""The atlas tour notebook runs top to bottom and writes its report (small sizes injected in its parameters cell)."""

from notebook_runner import cell_outputs, figure_count, run_notebook, warnings_text


def test_atlas_tour_runs(tmp_path):
    notebook = run_notebook("atlas_tour.ipynb", tmp_path, parameters={"N_SAMPLES": 2})
    assert (tmp_path / "tour.html").stat().st_size > 1_000_000  # plotly.js is inside
    text = cell_outputs(notebook)
    assert "tour.html" in text and "induction" in text
    assert figure_count(notebook) >= 6 and "TqdmWarning" not in warnings_text(notebook)
