"""KV-head ranking and policy files, checked against selections computed here by plain loops, and the
DuoAttention export read back exactly the way mit-han-lab/duo-attention reads it (`duo_attn/utils.py`:
`load_attn_pattern` and `sparsify_attention_heads`, restated below) and the way kvpress' DuoAttentionPress
picks its streaming heads (the round(n * ratio) lowest gates)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.errors import HeadscopeError
from headscope.policies import policy_from_ranking, rank_kv_heads, read_policy
from headscope.policies.api import make_policy
from headscope.policies.policy import DUO_CONFIG, DUO_GATES

N_LAYERS, N_HEADS, N_KV = 3, 4, 2  # GQA: query heads 0,1 -> KV 0; 2,3 -> KV 1


class V:
    def __init__(self, layer, head, metric, value, n=5):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, n


def _atlas(metrics: dict[str, np.ndarray], *, n_layers=N_LAYERS, n_heads=N_HEADS, n_kv=N_KV) -> Atlas:
    prov = Provenance("tiny", "r", "float32", "nnsight", n_layers, n_heads, n_kv, "0")
    frames = [rows_frame([V(l, h, name, float(grid[l, h])) for l in range(n_layers) for h in range(n_heads)],
                         provenance=prov, analyzer=name.split("_")[0], probe_suite="s", probe_hash="h", params="{}")
              for name, grid in metrics.items()]
    import pandas as pd

    return Atlas(pd.concat(frames, ignore_index=True))


SCORES = np.array([[0.00, 0.90, 0.10, 0.20],   # KV (0,0): max .9 mean .45 ; KV (0,1): max .2 mean .15
                   [0.30, 0.30, 0.05, 0.70],   # KV (1,0): max .3 mean .3  ; KV (1,1): max .7 mean .375
                   [0.50, np.nan, 0.00, 0.01]])  # KV (2,0): max .5 mean .5 (NaN ignored) ; KV (2,1): .01 / .005


def _by_loop(scores: np.ndarray, how: str) -> list[tuple[int, int]]:
    """Every KV head, most needed first, computed with explicit loops."""
    values = {}
    for layer in range(N_LAYERS):
        for kv in range(N_KV):
            group = [scores[layer, h] for h in range(N_HEADS) if h // (N_HEADS // N_KV) == kv and not math.isnan(scores[layer, h])]
            values[(layer, kv)] = max(group) if how == "max" else sum(group) / len(group)
    return sorted(values, key=lambda k: (-values[k], k))


@pytest.mark.parametrize("how", ["max", "mean"])
def test_retrieval_rule_aggregates_query_heads_to_kv_heads(how):
    ranking = rank_kv_heads(_atlas({"retrieval_score": SCORES}), rule="retrieval", aggregation=how)
    assert ranking.order() == _by_loop(SCORES, how)
    for budget, n_full in ((0.0, 0), (1 / 3, 2), (0.5, 3), (1.0, 6)):
        policy = policy_from_ranking(ranking, budget)
        assert policy.full == sorted(_by_loop(SCORES, how)[:n_full])
        assert sorted(policy.full + policy.streaming) == sorted(_by_loop(SCORES, how))
    # max and mean really differ here: (0,0) leads under max, (2,0) under mean
    assert _by_loop(SCORES, "max")[0] == (0, 0) and _by_loop(SCORES, "mean")[0] == (2, 0)


def test_razor_rule_reproduces_golden_sticks_union_of_echo_and_induction_tops():
    rng = np.random.default_rng(3)
    layers, heads, kv = 20, 4, 4  # MHA, 80 KV heads: 1% -> 1 echo head, 14% -> 12 induction heads (ceil)
    echo, induction = rng.random((layers, heads)), rng.random((layers, heads))
    atlas = _atlas({"duplicate_token_score": echo, "induction_score": induction}, n_layers=layers, n_heads=heads, n_kv=kv)
    ranking = rank_kv_heads(atlas, rule="razor")
    flat = [(l, h) for l in range(layers) for h in range(heads)]
    top_echo = sorted(flat, key=lambda lh: -echo[lh])[:1]
    top_induction = sorted(flat, key=lambda lh: -induction[lh])[:math.ceil(0.14 * len(flat))]
    union = set(top_echo) | set(top_induction)
    assert set(ranking.order()[: len(union)]) == union


def test_sinks_and_user_metric_rules():
    sink = np.array([[0.9, 0.8, 0.1, 0.2], [0.5, 0.5, 0.6, 0.6], [0.0, 0.1, 0.95, 0.99]])
    atlas = _atlas({"sink_score": sink, "row_entropy": sink})
    assert rank_kv_heads(atlas, rule="sinks").order()[0] == (2, 0)  # least sink-bound keeps its cache
    assert rank_kv_heads(atlas, rule="sinks").order()[-1] == (2, 1)
    lower = rank_kv_heads(atlas, rule="metric", metric="row_entropy", direction="lower")
    assert lower.order() == rank_kv_heads(atlas, rule="sinks").order()
    with pytest.raises(HeadscopeError, match="no duplicate_token_score, induction_score rows"):
        rank_kv_heads(_atlas({"retrieval_score": SCORES}), rule="razor")
    with pytest.raises(HeadscopeError, match="unknown policy rule"):
        rank_kv_heads(atlas, rule="vibes")


def _duo_load(folder):
    """duo_attn/utils.py `load_attn_pattern`, as in the official repository."""
    gates = np.loadtxt(os.path.join(folder, "full_attention_heads.tsv"), dtype=float, delimiter="\t")
    gates = np.clip(gates, 0, 1)
    config = json.load(open(os.path.join(folder, "config.json")))
    return gates, config["sink_size"], config["recent_size"]


def _duo_sparsify(gates, sparsity):
    """duo_attn/utils.py `sparsify_attention_heads(gates, sparsity=...)`, as in the official repository."""
    gates = gates + np.random.uniform(0, 1e-6, gates.shape)
    threshold = np.quantile(gates, sparsity)
    if sparsity >= 1:
        threshold = 2
    if sparsity <= 0:
        threshold = -1
    return (gates >= threshold).astype(float)


@pytest.mark.parametrize("shape,budgets", [((3, 4, 2), (0.0, 1 / 6, 0.5, 5 / 6, 1.0)),
                                           ((32, 32, 32), (0.01, 0.1, 0.25, 0.5, 0.9)),
                                           ((30, 9, 3), (0.1, 0.25, 0.5))])
def test_duoattention_and_kvpress_read_back_the_same_heads(tmp_path, shape, budgets):
    layers, heads, kv = shape
    scores = np.random.default_rng(0).random((layers, heads))
    ranking = rank_kv_heads(_atlas({"retrieval_score": scores}, n_layers=layers, n_heads=heads, n_kv=kv))
    for i, budget in enumerate(budgets):
        folder = tmp_path / f"p{i}"
        policy = policy_from_ranking(ranking, budget, sink=64, window=256)
        policy.save(folder)
        text = (folder / DUO_GATES).read_text()
        assert len(text.splitlines()) == layers and all(len(line.split("\t")) == kv for line in text.splitlines())
        gates, sink, recent = _duo_load(folder)
        assert (sink, recent) == (64, 256) and gates.shape == (layers, kv)
        sparsity = json.loads((folder / DUO_CONFIG).read_text())["sparsity"]
        np.random.seed(i)
        full = {(int(l), int(h)) for l, h in zip(*np.nonzero(_duo_sparsify(gates, sparsity)))}
        assert full == set(policy.full)
        # kvpress DuoAttentionPress: the round(n * compression) lowest gates stream
        n_stream = round(gates.size * (1 - len(policy.full) / gates.size))
        lowest = np.argsort(gates.ravel(), kind="stable")[:n_stream]
        assert {divmod(int(i), kv) for i in lowest} == set(policy.streaming)
        assert read_policy(folder).full == policy.full


def test_make_policy_writes_provenance_and_refuses_bad_input(tmp_path):
    atlas_path = _atlas({"retrieval_score": SCORES}).save(tmp_path / "a.parquet")
    policy = make_policy(atlas_path, out=tmp_path / "pol", budget=0.5, sink=4, window=16)
    saved = json.loads((tmp_path / "pol" / "policy.json").read_text())
    assert saved["provenance"]["atlas_sha256"] and saved["provenance"]["metrics"] == ["retrieval_score"]
    assert saved["provenance"]["aggregation"] == "max" and saved["full"] == [list(x) for x in policy.full]
    with pytest.raises(HeadscopeError, match="outside"):
        make_policy(atlas_path, budget=1.5)
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(HeadscopeError, match="not a headscope KV policy"):
        read_policy(tmp_path / "bad.json")
