"""The KV-policy walkthrough (scan -> policy -> evaluate) runs top to bottom on the embedded model, tiny sizes."""

from __future__ import annotations

import pytest
from notebook_runner import cell_outputs, run_notebook


@pytest.mark.slow
def test_kv_policy_notebook(tmp_path, monkeypatch):
    for name, value in {"SCAN_CONTEXT": "400", "SCAN_SAMPLES": "1", "CONTEXTS": "400", "NEEDLES": "1",
                        "BUDGETS": "0.5", "SEEDS": "1", "MAX_NEW": "3"}.items():
        monkeypatch.setenv(f"HEADSCOPE_KV_{name}", value)
    notebook = run_notebook("kv_policy.ipynb", tmp_path, timeout=600)
    text = cell_outputs(notebook)
    assert "of 90 KV heads keep the full cache" in text  # SmolLM2: 30 layers x 3 KV heads, 23 kept at 25%
    assert "DuoAttention reads gates of shape (30, 3)" in text
    assert "kv-policy rows in the atlas: " in text
    assert (tmp_path / "kv_policy" / "full_attention_heads.tsv").is_file()
    assert (tmp_path / "kv_eval.parquet").is_file()
