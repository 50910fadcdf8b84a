"""The safety-heads walkthrough runs top to bottom on the embedded model and a briefly tuned variant of it."""

from __future__ import annotations

import pytest
from notebook_runner import cell_outputs, run_notebook


@pytest.mark.slow
def test_safety_heads_notebook(tmp_path):
    from headscope.models import resolve_model
    from headscope.models.refusal_tuning import TuningRecipe, tune_for_refusal
    from headscope.probes.safety import load_safety_requests

    # the shipped alias tunes for minutes; a few steps of the same procedure keep the suite fast
    base = resolve_model("smollm2-135m-instruct", quiet=True).path
    train, _ = load_safety_requests(split="train")
    recipe = TuningRecipe(steps=4, batch_size=8, learning_rate=1e-4)
    tuned = tune_for_refusal(base, tmp_path / "tuned", [(r.request, r.response) for r in train], recipe, progress=False)
    notebook = run_notebook("safety_heads.ipynb", tmp_path, timeout=900,
                            parameters={"TUNED": str(tuned.path), "N_PROMPTS": 2, "N_CHECK": 2})
    text = cell_outputs(notebook)
    assert "refuses" in text and "first answer" in text
    assert "Sahara head: ['" in text
    assert "delta" in text and "rank_after" in text
    assert "refusal rate intact" in text
    assert (tmp_path / "safety_tuned.safety.json").is_file()
    assert (tmp_path / "safety_tuned.parquet").is_file() and (tmp_path / "safety_diff.html").stat().st_size > 1_000_000
