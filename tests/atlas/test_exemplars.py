"""Exemplars: each head's stored pattern is Hugging Face's own eager attention on that text; the table opens in pandas."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer

import headscope
from headscope.atlas import read_atlas
from headscope.atlas.exemplars import BUDGET_KB, EXEMPLAR_SCHEMA_VERSION, exemplar_path, fits_budget, head_pattern
from headscope.errors import HeadscopeError
from headscope.scanning.exemplars import exemplar_ids, record_exemplars
from reference import hf_attentions, hf_eager

TEXT = "t5 t9 t7 t11 t5 t9 t7 t11"


@pytest.mark.parametrize("backend", ["transformer-lens", "nnsight"])
def test_stored_patterns_equal_hugging_face_eager_attentions(tiny_llama_dir, backend):
    from headscope.engine import load_backend

    table = record_exemplars(load_backend(str(tiny_llama_dir), backend=backend, quiet=True), texts={"mine": TEXT})
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    expected = hf_attentions(hf_eager(tiny_llama_dir), torch.tensor([ids]))  # per layer [1, head, query, key]
    n_layers, n_heads = len(expected), expected[0].shape[1]
    assert len(table) == n_layers * n_heads * len(ids) * (len(ids) + 1) // 2  # the causal triangle of every head
    for layer in range(n_layers):
        for head in range(n_heads):
            stored = head_pattern(table, "mine", layer, head).to_numpy()
            want = np.tril(expected[layer][0, head].numpy())
            np.testing.assert_allclose(np.nan_to_num(stored), want, atol=1e-5)
    first = table[(table["layer"] == 0) & (table["head"] == 0)]
    assert list(first.drop_duplicates("key")["key_token"]) == ["<bos>", *TEXT.split()]  # readable strings, in order


def test_a_scan_writes_a_versioned_table_beside_the_atlas(tiny_llama_dir, tmp_path):
    out = tmp_path / "atlas.parquet"
    atlas = headscope.scan(str(tiny_llama_dir), ["induction"], out=out, seq_len=9, n_samples=2, progress=False)
    beside = exemplar_path(out)
    frame = pd.read_parquet(beside)  # plain pandas, no headscope needed
    assert set(frame["text"]) == {"repeated", "plain"} and set(frame["model"]) == {atlas.models[0]}
    meta = json.loads(pq.read_schema(beside).metadata[b"headscope_exemplars"])
    assert meta["schema_version"] == EXEMPLAR_SCHEMA_VERSION and meta["budget_kb"] == BUDGET_KB
    sums = frame.groupby(["text", "layer", "head", "query"])["weight"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-4)  # every stored row is a whole softmax row
    assert len(read_atlas(out).exemplars) == len(frame)
    assert atlas.metric_docs["induction_score"]["direction"] == "higher"  # the declaration travelled into the atlas
    assert read_atlas(out).metric_docs == atlas.metric_docs


def test_long_texts_are_cut_to_the_budget(tiny_llama_backend):
    text = " ".join(f"t{4 + i % 50}" for i in range(400))
    ids = exemplar_ids(tiny_llama_backend.tokenizer, 2000, {"long": text, "short": "t5 t6"})
    assert fits_budget(2000, [len(v) for v in ids.values()])
    assert not fits_budget(2000, [len(ids["long"]) + 1, len(ids["short"])])  # cut no more than needed
    assert ids["short"] == [1, 5, 6]


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "x.exemplars.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    from headscope.atlas.exemplars import read_exemplars

    with pytest.raises(HeadscopeError, match="not a headscope exemplar table"):
        read_exemplars(path)
