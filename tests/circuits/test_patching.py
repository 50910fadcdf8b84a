"""Activation patching against Hugging Face references hooked by hand (plain torch hooks), on both backends."""

from __future__ import annotations

import pytest
import torch
from reference import hf_eager, hf_o_proj_inputs
from tiny_models import build_tiny_model

from headscope.circuits.patching import HeadPatch, last_positions, mean_heads, patch_from_source, patch_heads
from headscope.engine import load_backend, pad_sequences
from headscope.errors import HeadscopeError

BACKENDS = ("transformer-lens", "nnsight")
SOURCE = [[1, 5, 9, 13, 17, 21, 25], [1, 40, 41, 42, 43]]
TARGET = [[1, 60, 61, 62, 63], [1, 70, 71, 72, 73, 74, 75, 76]]
D_HEAD = 16  # tiny llama: 64 / 4 heads, 2 KV heads


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("patch_llama"), seed=3)


@pytest.fixture(scope="module")
def backends(llama_dir):
    return {name: load_backend(str(llama_dir), backend=name, quiet=True) for name in BACKENDS}


@pytest.fixture(scope="module")
def model(llama_dir):
    return hf_eager(llama_dir)


def _module(model, layer: int, tensor: str):
    attention = model.model.layers[layer].self_attn
    return {"z": attention.o_proj, "q_raw": attention.q_proj, "k_raw": attention.k_proj, "v": attention.v_proj}[tensor]


def _captured(model, ids: list[int], layer: int, tensor: str) -> torch.Tensor:
    """[pos, width] of the module's input (z) or output (q/k/v projections) on one unpadded prompt."""
    if tensor == "z":
        return hf_o_proj_inputs(model, torch.tensor([ids]))[layer][0]
    seen = []
    handle = _module(model, layer, tensor).register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen[0][0]


def _reference_last_logits(model, ids: list[int], edits: list[tuple[int, str, int, int, torch.Tensor]]) -> torch.Tensor:
    """Last-token logits of one prompt with (layer, tensor, head, position, value) written in by hand."""
    handles = []
    for layer, tensor, head, pos, value in edits:
        cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
        if tensor == "z":
            def pre(mod, args, cols=cols, pos=pos, value=value):
                z = args[0].clone()
                z[0, pos, cols] = value
                return (z,)
            handles.append(_module(model, layer, tensor).register_forward_pre_hook(pre))
        else:
            def post(mod, args, out, cols=cols, pos=pos, value=value):
                out = out.clone()
                out[0, pos, cols] = value
                return out
            handles.append(_module(model, layer, tensor).register_forward_hook(post))
    try:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1].float()
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("tensor,heads", [("z", [(0, 1), (1, 3)]), ("v", [(1, 0)]), ("k_raw", [(0, 1)]), ("q_raw", [(1, 2)])])
def test_patch_from_source_at_last_token_matches_hand_hooks(backends, model, name, tensor, heads):
    """Each head's value at the source's last token replaces the target's last token (ragged, right-padded)."""
    backend = backends[name]
    source, target = pad_sequences(SOURCE, 0), pad_sequences(TARGET, 0)
    before = backend.last_token(target).logits
    with patch_from_source(backend, source, heads, tensor=tensor, source_positions=last_positions(source),
                           target_positions=last_positions(target)):
        patched = backend.last_token(target).logits
    assert torch.equal(before, backend.last_token(target).logits)  # bit-identical after the context
    for row, (src, tgt) in enumerate(zip(SOURCE, TARGET)):
        edits = []
        for layer, head in heads:
            value = _captured(model, src, layer, tensor)[-1, head * D_HEAD : (head + 1) * D_HEAD]
            edits.append((layer, tensor, head, len(tgt) - 1, value))
        expected = _reference_last_logits(model, tgt, edits)
        assert (expected - _reference_last_logits(model, tgt, [])).abs().max() > 1e-4  # the patch matters
        torch.testing.assert_close(patched[row], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_mean_patch_with_a_head_per_row(backends, model, name):
    """Row i patches its own head with a given mean at its last token only; means equal HF's o_proj inputs."""
    backend = backends[name]
    means = mean_heads(backend, [pad_sequences(SOURCE, 0)])
    per_layer = [_captured(model, ids, layer, "z")[-1] for ids in SOURCE for layer in range(2)]
    expected_means = torch.stack([torch.stack(per_layer[l::2]).mean(0).reshape(4, D_HEAD) for l in range(2)])
    torch.testing.assert_close(means, expected_means, atol=1e-5, rtol=1e-5)
    prompt = TARGET[1]
    heads = [(0, 0), (0, 3), (1, 1)]
    batch = pad_sequences([prompt] * len(heads), 0)
    patches = [HeadPatch(l, h, means[l, h], rows=(i,)) for i, (l, h) in enumerate(heads)]
    with patch_heads(backend, patches, positions=last_positions(batch)):
        rows = backend.last_token(batch).logits
    for i, (l, h) in enumerate(heads):
        expected = _reference_last_logits(model, prompt, [(l, "z", h, len(prompt) - 1, means[l, h])])
        torch.testing.assert_close(rows[i], expected, atol=1e-5, rtol=1e-5)


def test_bad_patches_are_refused_before_running(backends):
    backend = backends["nnsight"]
    with pytest.raises(HeadscopeError, match="does not exist"):
        with patch_heads(backend, [HeadPatch(0, 2, torch.zeros(D_HEAD))], tensor="v"):  # 2 KV heads only
            pass
    with pytest.raises(HeadscopeError, match="d_head"):
        with patch_heads(backend, [HeadPatch(0, 0, torch.zeros(D_HEAD + 1))]):
            pass
    source, target = pad_sequences(SOURCE, 0), pad_sequences(TARGET, 0)  # 7 vs 8 positions, all of them patched
    with pytest.raises(HeadscopeError, match="matching source and target positions"):
        with patch_from_source(backend, source, [(0, 1)]):
            backend.last_token(target)
    with pytest.raises(HeadscopeError, match="cannot patch"):
        with patch_heads(backend, [], tensor="pattern"):
            pass


@pytest.mark.parametrize("name", BACKENDS)
def test_last_token_rows_equal_full_runs_patched_at_the_last_token(backends, model, name):
    """The prefix computed once (KV cache repeated per row) gives the full run's last-token logits, with and
    without per-row patches at the last token (position 0 of the one-token pass)."""
    backend = backends[name]
    prompt = TARGET[1]
    torch.testing.assert_close(backend.last_token_rows(prompt, 2).logits[1], backend.last_token(pad_sequences([prompt], 0)).logits[0],
                               atol=1e-5, rtol=1e-5)
    heads = [(0, 2), (1, 0), (1, 3)]
    patches = [HeadPatch(l, h, torch.full((D_HEAD,), 0.5 * (i + 1)), rows=(i,)) for i, (l, h) in enumerate(heads)]
    with patch_heads(backend, patches, positions=torch.zeros(3, 1, dtype=torch.long)):
        rows = backend.last_token_rows(prompt, 3).logits
    for i, (l, h) in enumerate(heads):
        expected = _reference_last_logits(model, prompt, [(l, "z", h, len(prompt) - 1, torch.full((D_HEAD,), 0.5 * (i + 1)))])
        torch.testing.assert_close(rows[i], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_gpt2_value_and_key_patches_match_hooks_on_the_fused_projection(tmp_path_factory, name):
    """GPT-2's fused c_attn: a value (and key) patch lands in its value (key) third, head 2, every position."""
    folder = build_tiny_model("gpt2", tmp_path_factory.mktemp("patch_gpt2"), seed=4)
    backend, model = load_backend(str(folder), backend=name, quiet=True), hf_eager(folder)
    prompt, width = TARGET[1], 64
    for tensor, third in (("v", 2), ("k_raw", 1)):
        value = torch.linspace(-1.0, 1.0, D_HEAD)
        with patch_heads(backend, [HeadPatch(1, 2, value)], tensor=tensor):
            got = backend.last_token(pad_sequences([prompt], 0)).logits[0]

        def post(mod, args, out, start=third * width + 2 * D_HEAD):
            out = out.clone()
            out[..., start : start + D_HEAD] = value
            return out

        handle = model.transformer.h[1].attn.c_attn.register_forward_hook(post)
        try:
            with torch.no_grad():
                expected = model(torch.tensor([prompt])).logits[0, -1]
        finally:
            handle.remove()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
