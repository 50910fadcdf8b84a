"""evaluate-policy on a tiny llama (GQA, 2 layers x 2 KV heads): each condition windows exactly the heads it
should (recorded at the backend), the full-cache answer is the needle (Hugging Face's own greedy answer, made
here), KV bytes match a real Hugging Face cache, rows are declared metrics, and bad inputs stop before work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import build_tiny_model
from transformers import AutoModelForCausalLM, DynamicCache
from typer.testing import CliRunner

from headscope.analyzers.kv_policy import KVPolicyAnalyzer
from headscope.analyzers.metrics import declares
from headscope.atlas import Atlas, Provenance, read_atlas, rows_frame
from headscope.cli import app
from headscope.engine import hf_cache, load_backend
from headscope.engine.attention_window import AttentionWindow
from headscope.errors import HeadscopeError
from headscope.policies import evaluate_policy, kv_cache_bytes, policy_from_ranking, rank_kv_heads
from headscope.probes import TokenSuite
from headscope.probes.needle_haystack import rouge1_recall

PROMPT = [1] + [4 + (7 * i) % 90 for i in range(40)]
SCORES = np.array([[0.9, 0.1, 0.0, 0.2], [0.3, 0.4, 0.8, 0.05]])  # KV heads by max: (0,0) .9, (1,1) .8, (1,0) .4, (0,1) .2


class V:
    def __init__(self, layer, head, metric, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("kvpol"), max_position_embeddings=512)


@pytest.fixture(scope="module")
def backend(folder):
    return load_backend(str(folder), backend="nnsight", quiet=True)


def _atlas(model: str) -> Atlas:
    prov = Provenance(model, "local", "float32", "nnsight", 2, 4, 2, "0")
    return Atlas(rows_frame([V(l, h, "retrieval_score", float(SCORES[l, h])) for l in range(2) for h in range(4)],
                            provenance=prov, analyzer="retrieval", probe_suite="s", probe_hash="h", params="{}"))


def _suite(folder, backend) -> TokenSuite:
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        answer = model.generate(torch.tensor([PROMPT]), max_new_tokens=3, do_sample=False)[0, len(PROMPT):]
    needle = backend.tokenizer.decode(answer, skip_special_tokens=True).strip()
    return TokenSuite("needle_haystack", [PROMPT], [{"real_needle": needle, "context_length": len(PROMPT)}], {})


def test_conditions_window_the_right_heads_and_score_like_the_suite(folder, backend):
    ranking = rank_kv_heads(_atlas(backend.model_id))
    policy = policy_from_ranking(ranking, 0.5, sink=2, window=4)
    seen: list[set] = []
    original = backend.intervene

    def spy(*items):
        seen.append({h for item in items if isinstance(item, AttentionWindow) for h in item.kv_heads})
        return original(*items)

    backend.intervene = spy
    try:
        result = evaluate_policy(backend, policy, {len(PROMPT): _suite(folder, backend)}, budgets=(0.25, 0.5),
                                 random_seeds=(0, 1), max_new_tokens=3)
    finally:
        del backend.intervene
    every = {(l, h) for l in range(2) for h in range(2)}
    ranked = [(0, 0), (1, 1), (1, 0), (0, 1)]  # by hand from SCORES (max over each KV group)
    # passes: the policy at each budget, the lowest-ranked control at each budget, then each random seed
    expected = [every - set(ranked[:n]) for n in (1, 2)] + [every - set(ranked[::-1][:n]) for n in (1, 2)]
    expected += [every - set(policy.random(n / 4, seed).full) for seed in (0, 1) for n in (1, 2)]
    assert seen == expected
    assert [len(s) for s in seen] == [3, 2, 3, 2, 3, 2, 3, 2]

    frame = result.frame()
    assert list(frame["condition"]) == ["full"] + ["atlas"] * 2 + ["lowest"] * 2 + ["random"] * 4
    full = frame.iloc[0]
    assert full["accuracy"] == 1.0 and full["recall"] == 1.0  # the needle is HF's own greedy answer
    needle = _suite(folder, backend).samples[0]["real_needle"]
    for _, row in frame.iterrows():  # every row scored as the retrieval suite scores
        recall = rouge1_recall(needle, row["responses"][0])
        assert row["recall"] == pytest.approx(recall) and row["accuracy"] == float(recall > 0.5)

    table = result.table()
    random_25 = table[(table["condition"] == "random") & (table["budget"] == 0.25)].iloc[0]
    values = frame[(frame["condition"] == "random") & (frame["budget"] == 0.25)]["accuracy"]
    assert random_25["accuracy"] == pytest.approx(values.mean()) and random_25["accuracy_std"] == pytest.approx(np.std(values))
    metrics = result.metric_values()
    assert all(declares(KVPolicyAnalyzer.metrics, m) for m in metrics)
    assert "kv_policy_accuracy_atlas_b25_ctx41" in metrics and "kv_policy_accuracy_std_random_b50_ctx41" in metrics
    assert len(result.figure().data) == 4  # atlas, lowest, random, full


def test_kv_bytes_match_a_real_cache(folder, backend):
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(torch.tensor([PROMPT]), **hf_cache.cache_kwargs(model, cache))
    real = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)
    spec = backend.spec
    per_head_token = real / (spec.n_layers * spec.n_kv_heads * len(PROMPT))
    assert kv_cache_bytes(None, len(PROMPT), n_kv_total=4, d_head=spec.d_head, itemsize=4) == real
    policy = policy_from_ranking(rank_kv_heads(_atlas(backend.model_id)), 0.25, sink=2, window=4)
    assert kv_cache_bytes(policy, len(PROMPT), n_kv_total=4, d_head=spec.d_head, itemsize=4) == per_head_token * (1 * 41 + 3 * 6)


def test_bad_inputs_stop_before_any_decode(folder, backend, monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded before refusing")

    monkeypatch.setattr(backend, "decode", no_decode)
    suite = {len(PROMPT): TokenSuite("s", [PROMPT], [{"real_needle": "x", "context_length": len(PROMPT)}], {})}
    policy = policy_from_ranking(rank_kv_heads(_atlas(backend.model_id)), 0.5)
    other = policy_from_ranking(rank_kv_heads(_atlas("someone-else")), 0.5)
    with pytest.raises(HeadscopeError, match="made for 'someone-else'"):
        evaluate_policy(backend, other, suite)
    with pytest.raises(HeadscopeError, match="outside"):
        evaluate_policy(backend, policy, suite, budgets=(1.5,))
    with pytest.raises(HeadscopeError, match="exceed the model's context"):
        evaluate_policy(backend, policy, {600: suite[len(PROMPT)]})


def test_cli_policy_then_evaluate_writes_rows_and_curve(folder, backend, tmp_path):
    atlas_path = _atlas(backend.model_id).save(tmp_path / "a.parquet")
    runner = CliRunner()
    made = runner.invoke(app, ["policy", str(atlas_path), "-o", str(tmp_path / "pol"), "--budget", "0.5", "--window", "8"])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "pol" / "full_attention_heads.tsv").is_file()
    out = tmp_path / "eval.parquet"
    run = runner.invoke(app, ["evaluate-policy", str(folder), str(tmp_path / "pol"), "-o", str(out), "-q",
                              "--context-lengths", "300", "--budgets", "0.5", "--needles", "1", "--seeds", "1",
                              "--max-new-tokens", "3", "--backend", "nnsight"])
    assert run.exit_code == 0, run.output
    frame = read_atlas(out).frame
    rows = frame[frame["analyzer"] == "kv-policy"]
    assert set(rows["head"]) == {-1} and set(rows["layer"]) == {-1} and "kv_policy_accuracy_atlas_b50_ctx300" in set(rows["metric"])
    assert out.with_suffix(".html").stat().st_size > 100_000
    bad = runner.invoke(app, ["evaluate-policy", str(folder), str(tmp_path / "pol"), "--budgets", "2", "-q"])
    assert isinstance(bad.exception, HeadscopeError) and "outside [0, 1]" in str(bad.exception)  # main() prints it, exit 2
