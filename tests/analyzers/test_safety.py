"""Ships and Sahara against brute force (one hooked Hugging Face forward per head and prompt), and a planted head."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tqdm.auto import tqdm
from planted_safety import ANSWER, PLANTED_HEAD, REFUSAL, build_planted_refusal_llama, harmful_prompt
from reference import hf_eager
from tiny_models import build_tiny_model

import headscope
from headscope.analyzers.base import ScanContext
from headscope.analyzers.safety import SafetyHeadAnalyzer
from headscope.engine import load_backend
from headscope.errors import HeadscopeError

N_HEADS, D_HEAD = 4, 16


def words(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


def write_suite(folder, harmful: list[list[int]], heldout: list[list[int]] = ()) -> str:
    """A local suite in the shipped schema, written in the tiny models' word vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for split, prompts in (("train", harmful), ("heldout", heldout)):
        for i, ids in enumerate(prompts):
            pair = f"{split}{i}"
            records.append({"id": f"{pair}-harmful", "pair": pair, "kind": "harmful", "category": "test",
                            "request": words(ids), "response": "I can't help with that.", "split": split})
            records.append({"id": f"{pair}-harmless", "pair": pair, "kind": "harmless", "category": "test",
                            "request": words(ids[::-1]), "response": "Sure, here it is.", "split": split})
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "CARD.md").write_text("test suite\n")
    return str(folder)


def hooked_run(model, ids: list[int], heads: list[tuple[int, int]], eps: float):
    """Brute force: one forward of one prompt with `heads`' queries scaled by eps in q_proj's output."""
    handles = []
    for layer, head in heads:
        def scale(module, args, out, head=head):
            out = out.clone()
            out[..., head * D_HEAD : (head + 1) * D_HEAD] *= eps
            return out
        handles.append(model.model.layers[layer].self_attn.q_proj.register_forward_hook(scale))
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    return out.logits[0, -1].double().numpy(), out.hidden_states[-1][0, -1].double().numpy()


def kl_reference(base_logits: np.ndarray, ablated_logits: np.ndarray) -> float:
    """The paper's pd_diff.kl_divergence, in numpy: sum p log(p / q) with 1e-12 added to both."""
    p = np.exp(base_logits - base_logits.max())
    p /= p.sum()
    q = np.exp(ablated_logits - ablated_logits.max())
    q /= q.sum()
    p, q = p + 1e-12, q + 1e-12
    return float(np.sum(p * np.log(p / q)))


def angle_reference(base: np.ndarray, ablated: np.ndarray) -> float:
    u1 = np.linalg.svd(base, full_matrices=False)[0][:, 0]
    u2 = np.linalg.svd(ablated, full_matrices=False)[0][:, 0]
    return math.degrees(math.acos(min(abs(float(u1 @ u2)), 1.0)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("safety_llama"), seed=3)


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return build_planted_refusal_llama(tmp_path_factory.mktemp("planted_refusal"))


PROMPTS = [[1, 12, 40, 41, 50, 7], [1, 60, 61, 12, 62, 63, 64], [1, 70, 71, 72, 12]]


def run_analyzer(backend, suite: str, **params) -> SafetyHeadAnalyzer:
    analyzer = SafetyHeadAnalyzer(source=suite, prompt_style="plain", n_samples=0, **params)
    ctx = ScanContext(backend.spec, backend.tokenizer)
    analyzer.run(backend, analyzer.build_suite(ctx), ctx)
    return analyzer


@pytest.mark.parametrize(("backend_name", "reuse_prefix"),
                         [("transformer-lens", True), ("nnsight", True), ("transformer-lens", False)])
def test_ships_equals_one_hooked_forward_per_head_and_prompt(tiny_dir, tmp_path, backend_name, reuse_prefix):
    backend = load_backend(str(tiny_dir), backend=backend_name, quiet=True)
    suite = write_suite(tmp_path / "suite", [p[1:] for p in PROMPTS])
    analyzer = run_analyzer(backend, suite, sahara_steps=0, rows_per_pass=3, reuse_prefix=reuse_prefix)
    model = hf_eager(tiny_dir)
    prompts = [backend.tokenizer(words(p[1:]))["input_ids"] for p in PROMPTS]
    expected = np.zeros((len(prompts), 2, N_HEADS))
    for index, ids in enumerate(prompts):
        base, _ = hooked_run(model, ids, [], 1e-4)
        for layer in range(2):
            for head in range(N_HEADS):
                expected[index, layer, head] = kl_reference(base, hooked_run(model, ids, [(layer, head)], 1e-4)[0])
    assert expected.max() > 1e-8  # the reference is not trivially zero
    np.testing.assert_allclose(analyzer.kl.numpy(), expected, rtol=1e-3, atol=1e-9)
    rows = {(r.layer, r.head, r.metric): r.value for r in analyzer.results()}
    mean = expected.mean(0)
    best = np.unravel_index(mean.argmax(), mean.shape)
    assert rows[(int(best[0]), int(best[1]), "ships_rank")] == 1.0
    top = np.argsort(-expected.reshape(3, -1), axis=1)[:, :2]  # each prompt's top 2 heads
    share = np.zeros(8)
    for row in top:
        share[row] += 1 / 3
    two = run_analyzer(backend, suite, sahara_steps=0, top_k=2)
    shares = {(r.layer, r.head): r.value for r in two.results() if r.metric == "ships_top2_share"}
    np.testing.assert_allclose([shares[(l, h)] for l in range(2) for h in range(N_HEADS)], share, atol=1e-12)


def test_sahara_greedy_search_equals_brute_force(tiny_dir, tmp_path):
    backend = load_backend(str(tiny_dir), quiet=True)
    suite = write_suite(tmp_path / "suite", [p[1:] for p in PROMPTS])
    analyzer = run_analyzer(backend, suite, sahara_steps=2, sahara_eps=1e-5, rows_per_pass=5)
    model = hf_eager(tiny_dir)
    prompts = [backend.tokenizer(words(p[1:]))["input_ids"] for p in PROMPTS]
    heads = [(l, h) for l in range(2) for h in range(N_HEADS)]

    def hidden(group):
        return np.stack([hooked_run(model, ids, group, 1e-5)[1] for ids in prompts])

    base = hidden([])
    group, trace = [], []
    for step in range(2):
        angles = {head: angle_reference(base, hidden(group + [head])) for head in heads if head not in group}
        if step == 0:
            for (layer, head), angle in angles.items():
                assert analyzer.single_angles[layer, head] == pytest.approx(angle, abs=1e-3)
        best = max(angles, key=angles.get)
        group.append(best)
        trace.append(angles[best])
    assert analyzer.sahara_group == group
    np.testing.assert_allclose(analyzer.sahara_trace, trace, atol=1e-3)
    rows = {(r.layer, r.head, r.metric): r.value for r in analyzer.results()}
    assert rows[(*group[0], "sahara_member")] == 1.0 and rows[(*group[1], "sahara_member")] == 2.0
    assert rows[(-1, -1, "sahara_angle_step2")] == pytest.approx(trace[1], abs=1e-3)


def test_sahara_reuses_the_ships_pass_when_eps_agree(tiny_dir, tmp_path):
    backend = load_backend(str(tiny_dir), quiet=True)
    suite = write_suite(tmp_path / "suite", [p[1:] for p in PROMPTS])
    reused = run_analyzer(backend, suite, sahara_steps=1, sahara_eps=1e-4, eps=1e-4)
    fresh = run_analyzer(backend, suite, sahara_steps=1, sahara_eps=1e-4, eps=1e-4 * (1 + 1e-12))  # forces a new pass
    torch.testing.assert_close(reused.single_angles, fresh.single_angles, atol=1e-4, rtol=0)


def test_planted_refusal_head_gets_the_top_ships_score(planted_dir, tmp_path):
    prompts = [harmful_prompt(seed) for seed in range(4)]
    model = hf_eager(planted_dir)
    for ids in prompts:  # the planted mechanism, checked independently of any headscope code
        base, _ = hooked_run(model, ids, [], 1e-4)
        ablated, _ = hooked_run(model, ids, [PLANTED_HEAD], 1e-4)
        assert base.argmax() == REFUSAL and ablated.argmax() == ANSWER
    suite = write_suite(tmp_path / "suite", [p[1:] for p in prompts])
    atlas = headscope.scan(str(planted_dir), "safety", params={"safety": {
        "source": suite, "prompt_style": "plain", "n_samples": 0, "sahara_steps": 1}}, progress=False)
    top = atlas.top("ships_score", k=2)
    assert (int(top.iloc[0]["layer"]), int(top.iloc[0]["head"])) == PLANTED_HEAD
    assert top.iloc[0]["value"] > 10 * top.iloc[1]["value"]
    rank = atlas.to_frame().loc[PLANTED_HEAD, "ships_rank"]
    assert float(rank) == 1.0


def test_refusal_check_on_the_planted_head(planted_dir, tmp_path, monkeypatch):
    """Ablating the planted head stops the "refusal" (first token t20); random heads leave it."""
    import headscope.circuits.safety_check as check

    monkeypatch.setattr(check, "refusal_rate", lambda texts: sum(t.split()[:1] == ["t20"] for t in texts) / len(texts))
    prompts = [harmful_prompt(seed) for seed in range(6)]
    suite = write_suite(tmp_path / "suite", [p[1:] for p in prompts[:3]], [p[1:] for p in prompts[3:]])
    backend = load_backend(str(planted_dir), quiet=True)
    analyzer = run_analyzer(backend, suite, sahara_steps=0, check_top_k=1, check_random_sets=2, check_max_new_tokens=2)
    result = analyzer.check
    assert result.top_heads == [PLANTED_HEAD]
    assert result.intact == 1.0 and result.top == 0.0 and result.random == [1.0, 1.0]
    rows = {r.metric: r.value for r in analyzer.results() if r.layer == -1}
    assert rows["refusal_rate_ablate_top1"] == 0.0 and rows["refusal_rate_intact"] == 1.0


def test_bad_parameters_say_how_to_fix(tiny_dir, tmp_path):
    backend = load_backend(str(tiny_dir), quiet=True)
    suite = write_suite(tmp_path / "suite", [PROMPTS[0][1:]])
    with pytest.raises(HeadscopeError, match="at least 2 harmful"):
        run_analyzer(backend, suite)
    with pytest.raises(HeadscopeError, match="unknown split"):
        run_analyzer(backend, suite, split="test")
    with pytest.raises(HeadscopeError, match="positive"):
        run_analyzer(backend, suite, eps=0.0)


def test_cli_scan_and_diff_name_the_planted_head(planted_dir, tiny_dir, tmp_path):
    """`headscope scan -a safety` on a base and a "tuned" model, then `headscope diff` ranks what changed."""
    from typer.testing import CliRunner

    from headscope.atlas import diff_atlases, read_atlas
    from headscope.cli import app

    runner = CliRunner()
    suite = write_suite(tmp_path / "suite", [harmful_prompt(seed)[1:] for seed in range(3)])
    outs = {}
    for label, folder in (("tuned", planted_dir), ("base", tiny_dir)):
        outs[label] = tmp_path / f"{label}.parquet"
        result = runner.invoke(app, ["scan", str(folder), "-a", "safety", "-o", str(outs[label]), "-q",
                                     "-p", f"safety.source={suite}", "-p", "safety.prompt_style=plain",
                                     "-p", "safety.n_samples=0", "-p", "safety.sahara_steps=1"])
        assert result.exit_code == 0, result.output
        assert "ships_score" in result.output
    table = diff_atlases(read_atlas(outs["tuned"]), read_atlas(outs["base"]), "ships_score")
    assert (int(table.iloc[0]["layer"]), int(table.iloc[0]["head"])) == PLANTED_HEAD
    assert table.iloc[0]["delta"] == pytest.approx(table.iloc[0]["after"] - table.iloc[0]["before"])
    assert table.iloc[0]["rank_after"] == 1
    shown = runner.invoke(app, ["diff", str(outs["tuned"]), str(outs["base"]), "--top", "3"])
    assert shown.exit_code == 0 and "L1H2" in shown.output
    missing = runner.invoke(app, ["diff", str(outs["tuned"]), str(outs["base"]), "-m", "nope"])
    assert missing.exit_code != 0 and "not in the after atlas" in str(missing.exception)


@pytest.fixture(scope="module")
def deep_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("safety_llama4"), seed=5, num_hidden_layers=4)


@pytest.mark.parametrize("backend_name", ["transformer-lens", "nnsight"])
def test_layer_grouped_passes_equal_one_forward_per_head_to_1e6(deep_dir, backend_name):
    """The optimised path (passes grouped by first ablated layer, each started from the intact residual
    stream) against one hooked Hugging Face forward per (head, prompt): the ablated final hidden state
    (Sahara's input) to 1e-6, KL to 1e-4 relative; head sets also in an order that is not by layer."""
    from headscope.analyzers.safety import _passes
    from headscope.circuits.ablation import HeadAblation

    backend = load_backend(str(deep_dir), backend=backend_name, quiet=True)
    analyzer = SafetyHeadAnalyzer(rows_per_pass=3)
    analyzer.reset(backend.spec)
    heads = [(layer, head) for layer in range(4) for head in range(N_HEADS)]
    passes = _passes([[h] for h in heads], 3, by_layer=True)
    assert all(len(p) <= 3 and len({heads[i][0] for i in p}) == 1 for p in passes) and len(passes) == 8
    hf = backend.bridge.original_model if backend_name == "transformer-lens" else backend.model._module
    calls = []
    handles = [layer.register_forward_hook(lambda *_: calls.append(1)) for layer in hf.model.layers]
    try:
        base, ablated = analyzer.score_ships(backend, PROMPTS[:1], HeadAblation("scale", 1e-4))
    finally:
        for handle in handles:
            handle.remove()
    # layers run: 2 intact forwards (4 each) + per layer L two passes (3 + 1 rows) of layers L..3; no skipped layer runs
    assert len(calls) == 8 + 2 * (4 + 3 + 2 + 1)
    model = hf_eager(deep_dir)
    for index, ids in enumerate(PROMPTS[:1]):
        base_logits, base_hidden = hooked_run(model, ids, [], 1e-4)
        np.testing.assert_allclose(base[index].double().numpy(), base_hidden, atol=1e-6)
        for row, (layer, head) in enumerate(heads):
            logits, hidden = hooked_run(model, ids, [(layer, head)], 1e-4)
            np.testing.assert_allclose(float(analyzer.kl[index, layer, head]), kl_reference(base_logits, logits),
                                       rtol=1e-4, atol=1e-12)  # a random tiny model's KLs are ~1e-7
            np.testing.assert_allclose(ablated[row, index].double().numpy(), hidden, atol=1e-6)
    assert analyzer.kl.min() > 1e-9  # not trivially zero
    assert torch.cdist(ablated[:, 0], ablated[:, 0]).add(torch.eye(len(heads))).min() > 1e-4  # a swapped row shows
    # Sahara-style sets in a shuffled order: rows come back to their own set
    sets = [[(3, 1), h] for h in [(3, 0), (1, 2), (2, 3), (1, 0), (0, 1)]]
    assert sorted(i for p in _passes(sets, 3, by_layer=True) for i in p) == list(range(len(sets)))
    bar = tqdm(disable=True)
    for rows, _, hidden in analyzer._ablated_passes(backend, PROMPTS[0], sets, HeadAblation("scale", 1e-5), bar):
        for offset, row in enumerate(rows):
            expected = hooked_run(model, PROMPTS[0], sets[row], 1e-5)[1]
            np.testing.assert_allclose(hidden[offset].double().numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("share", [True, False])
def test_shared_prompt_start_equals_one_forward_per_head(deep_dir, share):
    """Prompts that start alike (a chat template's system part): with `share_prefix` each pass computes the
    common start once, ablated, and continues it per prompt. Every KL and ablated hidden state still equals one
    hooked Hugging Face forward per (head, prompt), and the decoder layers process fewer token-rows."""
    from headscope.analyzers.safety import shared_start
    from headscope.circuits.ablation import HeadAblation

    prompts = [[1, 12, 40, 41, 50, 7, 8, 9, 10, 11, 20 + i, 30 + i, 33] for i in range(3)]
    assert shared_start(prompts) == 10 and shared_start(prompts[:1]) == 0
    backend = load_backend(str(deep_dir), backend="nnsight", quiet=True)
    analyzer = SafetyHeadAnalyzer(rows_per_pass=3, share_prefix=share)
    analyzer.reset(backend.spec)
    hf = backend.model._module
    token_rows = []
    handles = [layer.register_forward_pre_hook(lambda module, args: token_rows.append(args[0].shape[0] * args[0].shape[1]))
               for layer in hf.model.layers]
    try:
        base, ablated = analyzer.score_ships(backend, prompts, HeadAblation("scale", 1e-4))
    finally:
        for handle in handles:
            handle.remove()
    # intact: a last-token pass and a resid run per prompt (13 tokens x 4 layers each); ablated: per first layer L,
    # 4 head rows through layers L..3 (sum of 4 - L = 10) of 10 shared + 3 x 3 own tokens, or 3 x 13 tokens unshared
    intact = 2 * 3 * 13 * 4
    assert sum(token_rows) == intact + 4 * 10 * ((10 + 3 * 3) if share else 3 * 13)
    model = hf_eager(deep_dir)
    heads = [(layer, head) for layer in range(4) for head in range(N_HEADS)]
    for index, ids in enumerate(prompts):
        base_logits, base_hidden = hooked_run(model, ids, [], 1e-4)
        np.testing.assert_allclose(base[index].double().numpy(), base_hidden, atol=1e-6)
        for row, (layer, head) in enumerate(heads):
            logits, hidden = hooked_run(model, ids, [(layer, head)], 1e-4)
            np.testing.assert_allclose(float(analyzer.kl[index, layer, head]), kl_reference(base_logits, logits),
                                       rtol=1e-4, atol=1e-12)
            np.testing.assert_allclose(ablated[row, index].double().numpy(), hidden, atol=1e-6)
    assert analyzer.kl.min() > 1e-9
