"""nnsight passes that read no attention weights run with sdpa attention: q/k/v/z must be what eager attention gives.

Checked per architecture (Llama GQA + RoPE, GPT-2 fused qkv, Gemma-3 q/k norm + sliding window) on a left-padded
batch against (1) the same backend's eager pass (q/k/v bit-identical, z at float rounding) and (2) Hugging Face's
own eager forward: its attention weights must be softmax(q k^T * scaling) of the recorded q/k, and its output
projection's input must be the recorded z. Layer 0's q/k/v are bit-identical (they are computed before any attention
call); later layers see earlier layers' z, so everything there agrees at float rounding.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_model

from headscope.engine import Needs, pad_sequences
from headscope.engine.nnsight_backend import NNsightBackend

QKVZ = Needs(q=True, k=True, v=True, z=True)
OUT_PROJ = {"gpt2": "attn.c_proj", "llama": "self_attn.o_proj", "gemma3": "self_attn.o_proj"}


def _record(backend: NNsightBackend, batch, needs: Needs) -> tuple[dict, list[str]]:
    layers, seen = {}, []
    hf_config = backend.model._module.config

    def keep(acts) -> None:
        layers[acts.layer] = acts
        seen.append(hf_config._attn_implementation)

    backend.run(batch, needs, keep)
    return layers, seen


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_sdpa_pass_matches_eager_and_hf(kind, tmp_path):
    folder = build_tiny_model(kind, tmp_path / kind)
    backend = NNsightBackend(folder, model_id=kind, revision="local")
    hf = backend.model._module
    batch = pad_sequences([[1, 5, 6, 7, 8, 9, 10, 5, 6, 7, 8], [1, 12, 13, 14, 12, 13]], 0, side="left")
    valid = batch.attention_mask.bool()

    fast, fast_impl = _record(backend, batch, QKVZ)
    assert set(fast_impl) == {"sdpa"}  # the pass really ran with sdpa ...
    assert hf.config._attn_implementation == "eager"  # ... and the loaded implementation is back afterwards
    slow, slow_impl = _record(backend, batch, Needs(pattern=True, q=True, k=True, v=True, z=True))
    assert set(slow_impl) == {"eager"}

    # Hugging Face's own eager forward: attention weights and each output projection's input (= z)
    z_ref = {}
    handles = [hf.get_submodule(f"{site.layer_path}.{OUT_PROJ[kind]}").register_forward_pre_hook(
        lambda module, args, layer=layer: z_ref.__setitem__(layer, args[0].detach()))
        for layer, site in enumerate(backend.sites)]
    try:
        with torch.inference_mode():
            out = hf(**backend._encoding(batch.input_ids, batch.attention_mask), output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()

    spec = backend.spec
    for layer, site in enumerate(backend.sites):
        a, b = fast[layer], slow[layer]
        for field in ("q", "k", "v"):  # computed before the attention call: identical in layer 0; later layers
            # read a residual stream that went through earlier layers' z, so they agree at float rounding
            x, y = getattr(a, field)[valid[:, None, :].expand(-1, getattr(a, field).shape[1], -1)], \
                getattr(b, field)[valid[:, None, :].expand(-1, getattr(b, field).shape[1], -1)]
            assert torch.equal(x, y) if layer == 0 else float((x - y).abs().max()) < 1e-5, (kind, layer, field)
        # z is the attention call's output: equal at float rounding on real positions (pad query rows attend to nothing)
        za, zb = a.z.transpose(1, 2)[valid], b.z.transpose(1, 2)[valid]  # [real tokens, head, d]
        assert float((za - zb).abs().max()) < 1e-5, (kind, layer)
        ref = z_ref[layer].unflatten(-1, (spec.n_heads, spec.d_head))[valid]
        assert float((za - ref).abs().max()) < 1e-5, (kind, layer)
        # q/k against HF's eager weights: softmax(q k^T * scaling) over the keys HF lets each real query see
        module = hf.get_submodule(site.attention_path)
        k = a.k.repeat_interleave(spec.group_size, dim=1)
        scores = (a.q @ k.transpose(-1, -2)) * module.scaling
        weights = out.attentions[layer]
        allowed = weights > 0
        predicted = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        rows = valid[:, None, :].expand(-1, spec.n_heads, -1)
        assert float((predicted - weights)[rows].abs().max()) < 1e-5, (kind, layer)


def test_auto_sends_pattern_free_scans_to_nnsight(tiny_llama_dir, tmp_path):
    from headscope import scan
    from headscope.engine.loading import choose_backend
    from headscope.scanning import build_analyzers
    from headscope.scanning.settings import prefers_bridge

    # sinks resolves to its q/k path on Llama (no weights read); the classic analyzers read patterns
    assert not prefers_bridge(build_analyzers("sinks"), "LlamaForCausalLM")
    assert prefers_bridge(build_analyzers("sinks,induction"), "LlamaForCausalLM")
    # decoding and ablation analyzers read at most one attention row per step: nnsight (sdpa prefills) is faster
    assert not prefers_bridge(build_analyzers("retrieval,lookback,safety,maps"), "LlamaForCausalLM")
    assert prefers_bridge(build_analyzers("retrieval,previous-token"), "LlamaForCausalLM")
    # retrieval's masking check with the official uniform mode scales the post-rotary q: the bridge edits it
    assert prefers_bridge(build_analyzers("retrieval", params={"retrieval": {"mask_top_k": 3}}), "LlamaForCausalLM")
    assert not prefers_bridge(build_analyzers("retrieval", params={"retrieval": {"mask_top_k": 3, "mask_mode": "zero"}}),
                              "LlamaForCausalLM")
    assert not prefers_bridge(build_analyzers("function-vector,safety"), "LlamaForCausalLM")
    assert prefers_bridge(build_analyzers("sinks", params={"sinks": {"score_source": "pattern"}}),
                                   "LlamaForCausalLM")
    assert prefers_bridge(build_analyzers("sinks"), "Qwen2ForCausalLM")  # sinks needs patterns there
    assert choose_backend(tiny_llama_dir) == "transformer-lens"
    assert choose_backend(tiny_llama_dir, lambda architecture: True) == "transformer-lens"
    assert choose_backend(tiny_llama_dir, lambda architecture: False) == "nnsight"
    # soft-capped attention logits: sdpa would drop the cap, so the bridge keeps the scan
    capped = build_tiny_model("llama", tmp_path / "capped")
    config = (capped / "config.json").read_text().replace('"model_type"', '"attn_logit_softcapping": 50.0, "model_type"')
    (capped / "config.json").write_text(config)
    assert choose_backend(capped, lambda architecture: False) == "transformer-lens"
    atlas = scan(str(tiny_llama_dir), "sinks", seq_len=16, n_samples=2)
    assert set(atlas.frame["backend"]) == {"nnsight"}


def test_prefill_and_last_token_run_sdpa_and_match_hf_eager(tiny_llama_dir):
    """Decoding prefills, row-free steps and last-token passes switch to sdpa; tokens and logits stay Hugging Face's
    eager ones (greedy `generate` and a plain eager forward), and a step that reads its row stays eager."""
    from transformers import AutoModelForCausalLM

    backend = NNsightBackend(tiny_llama_dir, model_id="tiny", revision="local")
    hf = backend.model._module
    seen: list[tuple[int, str]] = []
    handle = hf.model.layers[0].register_forward_pre_hook(
        lambda module, args: seen.append((int(args[0].shape[1]), hf.config._attn_implementation)))
    prompt = [1, 5, 9, 14, 3, 22, 7, 30, 11, 4]
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    try:
        with torch.inference_mode():
            reference = eager.generate(torch.tensor([prompt]), max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                       output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        rows = []
        result = backend.decode(prompt, max_new_tokens=4, needs=Needs(pattern=True), on_layer=lambda a: rows.append(a),
                                prefill_chunk=4)
        assert seen[:3] == [(4, "sdpa"), (4, "sdpa"), (1, "sdpa")]  # prefill chunks of 4, 4, 1 tokens
        assert {impl for _, impl in seen[3:]} == {"eager"}  # steps that read their attention row
        assert result.generated_ids == reference.sequences[0, len(prompt):].tolist()
        torch.testing.assert_close(result.step_logits, torch.cat(reference.logits).float(), atol=1e-4, rtol=1e-4)
        seen.clear()
        backend.decode(prompt, max_new_tokens=2, needs=Needs(z=True), on_layer=lambda a: None)
        assert {impl for _, impl in seen} == {"sdpa"}  # no row read: every step sdpa

        batch = pad_sequences([prompt, prompt[:6]], 0, side="left")
        seen.clear()
        out = backend.last_token(batch)
        assert {impl for _, impl in seen} == {"sdpa"}
        with torch.inference_mode():
            full = eager(**backend._encoding(batch.input_ids, batch.attention_mask)).logits[:, -1]
        torch.testing.assert_close(out.logits, full.float(), atol=1e-4, rtol=1e-4)
    finally:
        handle.remove()
    assert hf.config._attn_implementation == "eager"
