"""Truthfulness heads: per-head probe accuracy against sklearn on HF-hooked o_proj inputs; a planted blind head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference import hf_eager, hf_o_proj_inputs
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from tiny_models import build_tiny_model

from headscope.analyzers.base import ScanContext, suite_batches
from headscope.analyzers.truthfulness import TruthfulnessAnalyzer
from headscope.engine import Needs, load_backend
from headscope.errors import HeadscopeError

BACKENDS = ("transformer-lens", "nnsight")
N_HEADS, D_HEAD = 4, 16


def _blind_layer0_kv1(model) -> None:
    """Values scaled x20 (activations O(1), as in trained models, so the probe's L2 penalty does not swamp them);
    layer 0's KV head 1 has zero values: query heads 2 and 3 there output exactly 0 (no information)."""
    for layer in model.model.layers:
        layer.self_attn.v_proj.weight *= 20.0
    model.model.layers[0].self_attn.v_proj.weight[D_HEAD:] = 0.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = build_tiny_model("llama", tmp_path_factory.mktemp("truth_llama"), seed=7, edit=_blind_layer0_kv1)
    suite_dir = tmp_path_factory.mktemp("truth_suite")
    rng = np.random.default_rng(0)
    rows = []
    for q in range(16):  # the answer tells true (t60, t61) from false (t70); 2 true + 1 false per question
        question = " ".join(f"t{i}" for i in rng.integers(4, 8, size=2))  # few question words: a clean signal
        for label, token in ((1, 60), (1, 61), (0, 70)):
            rows.append({"qid": q, "question": question, "answer": f"t{token}", "label": label})
    (suite_dir / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, suite_dir, hf_eager(folder)


def _reference(model, suite, n_folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[layer, head] accuracy and shuffled-label accuracy, from o_proj inputs hooked on HF and sklearn, questions
    dealt into folds after a seeded shuffle."""
    labels = np.array([s["label"] for s in suite.samples])
    qids = [s["qid"] for s in suite.samples]
    unique = sorted(set(qids), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[q]: i % n_folds for i, q in enumerate(order)}
    folds = np.array([fold_of[q] for q in qids])
    shuffled = np.random.default_rng(seed).permutation(labels)
    # one right-padded forward without a mask: causal attention keeps every real position exact
    width = max(len(ids) for ids in suite.sequences)
    padded = torch.tensor([ids + [0] * (width - len(ids)) for ids in suite.sequences])
    last = torch.tensor([len(ids) - 1 for ids in suite.sequences])
    feats = [z[torch.arange(len(last)), last].numpy() for z in hf_o_proj_inputs(model, padded)]
    out = np.zeros((2, 2, N_HEADS))
    for l in range(2):
        for h in range(N_HEADS):
            x = feats[l][:, h * D_HEAD : (h + 1) * D_HEAD]
            for k, fit in enumerate((labels, shuffled)):
                correct = 0
                for f in range(n_folds):
                    tr, te = folds != f, folds == f
                    with threadpool_limits(limits=1):
                        probe = LogisticRegression(max_iter=1000, random_state=seed).fit(x[tr], fit[tr])
                    correct += (probe.predict(x[te]) == labels[te]).sum()
                out[k, l, h] = correct / len(labels)
    return out[0], out[1]


@pytest.fixture(scope="module")
def reference(setup):
    folder, suite_dir, model = setup
    backend = load_backend(str(folder), backend="nnsight", quiet=True)
    suite = TruthfulnessAnalyzer(source=str(suite_dir), n_folds=2).build_suite(ScanContext(backend.spec, backend.tokenizer))
    return _reference(model, suite, 2, 42)


@pytest.mark.parametrize("name", BACKENDS)
def test_probe_accuracy_matches_sklearn_on_hf_activations_and_a_blind_head_scores_chance(setup, reference, name):
    folder, suite_dir, model = setup
    backend = load_backend(str(folder), backend=name, quiet=True)
    ctx = ScanContext(backend.spec, backend.tokenizer, batch_size=16, padding_side="left" if name == "nnsight" else "right")
    analyzer = TruthfulnessAnalyzer(source=str(suite_dir), n_folds=2)
    suite = analyzer.build_suite(ctx)
    analyzer.start(ctx, suite)
    for batch in suite_batches(suite, ctx):  # ragged rows: padding on both sides is exercised
        backend.run(batch, analyzer.needs | Needs(), lambda acts, batch=batch: analyzer.observe(batch, acts))
    rows = analyzer.results()
    table = {(r.metric, r.layer, r.head): r.value for r in rows}
    acc = np.array([[table[("truth_probe_acc", l, h)] for h in range(N_HEADS)] for l in range(2)])
    shuffled = np.array([[table[("truth_probe_acc_shuffled", l, h)] for h in range(N_HEADS)] for l in range(2)])
    expected, expected_shuffled = reference
    np.testing.assert_allclose(acc, expected, atol=1e-9)
    np.testing.assert_allclose(shuffled, expected_shuffled, atol=1e-9)
    majority = table[("truth_majority_baseline", -1, -1)]
    assert majority == pytest.approx(2 / 3)
    assert acc[0, 2] == acc[0, 3] == pytest.approx(majority)  # planted blind heads: constant features
    assert acc.max() >= 0.9 and table[("truth_rank", 0, 2)] > 4  # informative heads outrank the blind ones


def test_bad_suite_is_refused_before_work(setup, tmp_path):
    folder, _, _ = setup
    backend = load_backend(str(folder), backend="nnsight", quiet=True)
    (tmp_path / "data.jsonl").write_text(json.dumps({"qid": 0, "question": "t5", "answer": "t6", "label": 1}) + "\n")
    with pytest.raises(HeadscopeError, match="labels 0 and 1"):
        TruthfulnessAnalyzer(source=str(tmp_path)).build_suite(ScanContext(backend.spec, backend.tokenizer))
