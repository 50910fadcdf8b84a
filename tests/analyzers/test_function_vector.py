"""Function-vector heads: every head's AIE against a brute-force reference hooked by hand on the HF model."""

from __future__ import annotations

import json

import pytest
import torch
from reference import hf_eager, hf_o_proj_inputs
from tiny_models import build_tiny_model

from headscope.analyzers.base import ScanContext
from headscope.analyzers.function_vector import FunctionVectorAnalyzer
from headscope.analyzers.registry import expand_names
from headscope.engine import load_backend
from headscope.errors import HeadscopeError

BACKENDS = ("transformer-lens", "nnsight")
N_HEADS, D_HEAD = 4, 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = build_tiny_model("llama", tmp_path_factory.mktemp("fv_llama"), seed=5)
    tasks = tmp_path_factory.mktemp("fv_tasks")
    rows = [{"task": "shift", "input": f"t{i}", "output": f"t{i + 30}"} for i in range(10, 30)]
    rows += [{"task": "same", "input": f"t{i}", "output": f"t{i}"} for i in range(40, 60)]
    (tasks / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, tasks, hf_eager(folder)


_CACHE: dict[str, torch.Tensor] = {}


def _reference_aie(model, suite, n_layers: int) -> torch.Tensor:
    """Computed once per suite (both backends see the same suite).

    Mean o_proj input at the last token over clean prompts; CIE = softmax p(target) with one head's slice of the
    o_proj input replaced at the last token, minus unpatched; averaged over prompts, then tasks."""
    if suite.content_hash in _CACHE:
        return _CACHE[suite.content_hash]
    per_task = []
    for task in suite.details["tasks"]:
        clean = [s for s, m in zip(suite.sequences, suite.samples) if m["task"] == task and m["role"] == "mean"]
        per_prompt = [[z[0, -1] for z in hf_o_proj_inputs(model, torch.tensor([ids]))] for ids in clean]
        z = [torch.stack([p[l] for p in per_prompt]).mean(0) for l in range(n_layers)]
        cies = []
        for ids, m in zip(suite.sequences, suite.samples):
            if m["task"] != task or m["role"] != "corrupted":
                continue
            with torch.no_grad():
                base = torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)[m["target"]]
            cie = torch.zeros(n_layers, N_HEADS, dtype=torch.float64)
            for layer in range(n_layers):
                for head in range(N_HEADS):
                    cols = slice(head * D_HEAD, (head + 1) * D_HEAD)

                    def pre(mod, args, cols=cols, value=z[layer][cols]):
                        x = args[0].clone()
                        x[0, -1, cols] = value
                        return (x,)

                    handle = model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(pre)
                    with torch.no_grad():
                        p = torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)[m["target"]]
                    handle.remove()
                    cie[layer, head] = p - base
            cies.append(cie)
        per_task.append(torch.stack(cies).mean(0))
    _CACHE[suite.content_hash] = torch.stack(per_task).mean(0)
    return _CACHE[suite.content_hash]


@pytest.mark.parametrize("name", BACKENDS)
def test_aie_and_function_vector_match_a_hand_hooked_reference(setup, name):
    folder, tasks, model = setup
    backend = load_backend(str(folder), backend=name, quiet=True)
    analyzer = FunctionVectorAnalyzer(source=str(tasks), tasks="shift,same", n_shots=3, n_mean_prompts=3,
                                      n_cie_prompts=2, filter_correct=False, top_k=3, check_random_sets=1,
                                      rows_per_pass=3)
    ctx = ScanContext(backend.spec, backend.tokenizer)
    suite = analyzer.build_suite(ctx)
    assert all(s[0] == 1 and s.count(1) == 1 for s in suite.sequences)  # BOS once
    analyzer.run(backend, suite, ctx)
    rows = analyzer.results()
    aie = torch.zeros(2, N_HEADS, dtype=torch.float64)
    for row in rows:
        if row.metric == "fv_aie":
            aie[row.layer, row.head] = row.value
    expected = _reference_aie(model, suite, 2)
    assert expected.abs().max() > 1e-6  # patching moves the probability
    torch.testing.assert_close(aie, expected, atol=1e-6, rtol=1e-4)
    # the top-k heads by the reference, and the FV through HF's own o_proj (bias-free) summed over them
    top = [(int(i) // N_HEADS, int(i) % N_HEADS) for i in expected.flatten().argsort(descending=True)[:3]]
    assert sorted(analyzer.top) == sorted(top)
    clean = [s for s, m in zip(suite.sequences, suite.samples) if m["task"] == "shift" and m["role"] == "mean"]
    fv = torch.zeros(64)
    per_prompt = [[z[0, -1] for z in hf_o_proj_inputs(model, torch.tensor([ids]))] for ids in clean]
    for layer, head in top:
        mean = torch.stack([p[layer] for p in per_prompt]).mean(0)
        padded = torch.zeros(N_HEADS * D_HEAD)
        padded[head * D_HEAD : (head + 1) * D_HEAD] = mean[head * D_HEAD : (head + 1) * D_HEAD]
        with torch.no_grad():
            fv += model.model.layers[layer].self_attn.o_proj(padded)
    torch.testing.assert_close(torch.tensor(analyzer.side_output()["function_vectors"]["shift"]), fv, atol=1e-5, rtol=1e-4)
    metrics = {row.metric for row in rows if row.layer == -1}
    assert {"fv_check_acc_zeroshot_top3", "fv_check_prob_corrupted_random3", "fv_norm"} <= metrics
    assert len([r for r in rows if r.metric == "fv_rank"]) == 2 * N_HEADS


def test_names_and_bad_params_are_refused_before_work(setup):
    folder, tasks, _ = setup
    assert expand_names("function-vector,truthfulness") == ["function-vector", "truthfulness"]
    backend = load_backend(str(folder), backend="nnsight", quiet=True)
    ctx = ScanContext(backend.spec, backend.tokenizer)
    with pytest.raises(HeadscopeError, match="unknown function-vector task"):
        FunctionVectorAnalyzer(source=str(tasks), tasks="antonym").build_suite(ctx)
    with pytest.raises(HeadscopeError, match="must be >= 1"):
        FunctionVectorAnalyzer(source=str(tasks), tasks="shift", n_shots=0).build_suite(ctx)
