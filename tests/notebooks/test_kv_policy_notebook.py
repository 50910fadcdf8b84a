"""The KV-policy walkthrough (scan -> policy -> evaluate) runs top to bottom on the embedded model, tiny sizes.

The scan step is exercised by the retrieval analyzer's own tests; here a retrieval atlas of SmolLM2's shape is
written by hand (planted scores) and handed over through the notebook's ATLAS parameter, so the test stays fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from notebook_runner import cell_outputs, run_notebook

from headscope.atlas import Atlas, Provenance, rows_frame


class _Row:
    def __init__(self, layer, head, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, "retrieval_score", value, 2


@pytest.mark.slow
def test_kv_policy_notebook(tmp_path, monkeypatch):
    scores = np.random.default_rng(0).random((30, 9))
    prov = Provenance("smollm2-135m-instruct", "local", "float32", "nnsight", 30, 9, 3, "0")
    frame = rows_frame([_Row(l, h, float(scores[l, h])) for l in range(30) for h in range(9)], provenance=prov,
                       analyzer="retrieval", probe_suite="needle_haystack", probe_hash="h", params="{}")
    atlas_path = Atlas(pd.DataFrame(frame)).save(tmp_path / "planted.parquet")
    for name, value in {"ATLAS": str(atlas_path), "CONTEXTS": "300", "NEEDLES": "1", "BUDGETS": "0.5",
                        "SEEDS": "1", "MAX_NEW": "3"}.items():
        monkeypatch.setenv(f"HEADSCOPE_KV_{name}", value)
    notebook = run_notebook("kv_policy.ipynb", tmp_path, timeout=600)
    text = cell_outputs(notebook)
    assert "22 of 90 KV heads keep the full cache" in text  # SmolLM2: 30 layers x 3 KV heads; round(0.25 x 90)
    assert "DuoAttention reads gates of shape (30, 3)" in text
    assert "kv-policy rows in the atlas: " in text
    assert (tmp_path / "kv_policy" / "full_attention_heads.tsv").is_file()
    assert (tmp_path / "kv_eval.parquet").is_file()
