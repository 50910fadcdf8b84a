"""notebooks/maps.ipynb runs top to bottom (on SmolLM2 layer 23 only, to stay quick)."""

from __future__ import annotations

import os

import pytest

from notebook_runner import cell_outputs, figure_count, run_notebook


@pytest.mark.slow
def test_maps_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(__import__("pathlib").Path(__file__).resolve().parents[2]),
                                                      os.environ.get("PYTHONPATH", "")]))
    notebook = run_notebook("maps.ipynb", tmp_path,
                            parameters={"LAYERS": (23,), "RELATIONS": ("copying", "country_to_capital", "plural")})
    text = cell_outputs(notebook)
    assert "maps_country_to_capital_n_pairs" in text
    assert "maps_copying L" in text and figure_count(notebook) == 1
