"""The TL backend hands over exactly what the model computes, one layer at a time."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from headscope.engine import Needs, load_backend, pad_sequences
from reference import hf_attentions, hf_eager, hf_o_proj_inputs


def _collect(backend, batch, needs):
    layers = {}
    backend.run(batch, needs, lambda acts: layers.setdefault(acts.layer, acts))
    return layers


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_patterns_match_hf_output_attentions(fixture, request):
    path = request.getfixturevalue(fixture)
    backend = load_backend(str(path), quiet=True)
    ids = torch.randint(4, 96, (3, 17), generator=torch.Generator().manual_seed(1))
    batch = pad_sequences(ids.tolist(), 0)
    layers = _collect(backend, batch, Needs(pattern=True))
    reference = hf_attentions(hf_eager(path), ids)
    assert sorted(layers) == list(range(len(reference)))
    for layer, expected in enumerate(reference):
        torch.testing.assert_close(layers[layer].pattern, expected, atol=1e-6, rtol=1e-5)


def test_rotated_q_k_rebuild_the_pattern_with_gqa(tiny_llama_dir):
    """softmax(q k^T / sqrt(d) + causal) with k taken from kv_head = h // group reproduces HF's attention."""
    backend = load_backend(str(tiny_llama_dir), quiet=True)
    spec = backend.spec
    assert spec.n_kv_heads < spec.n_heads  # the fixture is GQA
    ids = torch.randint(4, 96, (2, 13), generator=torch.Generator().manual_seed(2))
    layers = _collect(backend, pad_sequences(ids.tolist(), 0), Needs(q=True, k=True))
    reference = hf_attentions(hf_eager(tiny_llama_dir), ids)
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer, expected in enumerate(reference):
        q, k = layers[layer].q, layers[layer].k
        assert q.shape == (2, spec.n_heads, t, spec.d_head) and k.shape == (2, spec.n_kv_heads, t, spec.d_head)
        for head in range(spec.n_heads):
            scores = q[:, head] @ k[:, spec.kv_head(head)].transpose(-1, -2) / spec.d_head**0.5
            rebuilt = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            torch.testing.assert_close(rebuilt, expected[:, head], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_z_is_the_o_proj_input_and_equals_pattern_times_v(fixture, request):
    path = request.getfixturevalue(fixture)
    backend = load_backend(str(path), quiet=True)
    spec = backend.spec
    ids = torch.randint(4, 96, (2, 11), generator=torch.Generator().manual_seed(3))
    layers = _collect(backend, pad_sequences(ids.tolist(), 0), Needs(pattern=True, v=True, z=True))
    o_inputs = hf_o_proj_inputs(hf_eager(path), ids)
    for layer, expected in enumerate(o_inputs):
        acts = layers[layer]
        z_flat = acts.z.transpose(1, 2).reshape(expected.shape)  # [batch, pos, head * d_head]
        torch.testing.assert_close(z_flat, expected, atol=1e-5, rtol=1e-4)
        for head in range(spec.n_heads):
            mixed = acts.pattern[:, head] @ acts.v[:, spec.kv_head(head)]
            torch.testing.assert_close(mixed, acts.z[:, head], atol=1e-5, rtol=1e-4)


def test_rows_only_hands_over_just_the_requested_rows(tiny_llama_backend):
    ids = torch.randint(4, 96, (2, 15), generator=torch.Generator().manual_seed(4))
    batch = pad_sequences(ids.tolist(), 0)
    full = _collect(tiny_llama_backend, batch, Needs(pattern=True))
    batch.query_positions = torch.tensor([[14, 3], [7, 0]])
    rows = _collect(tiny_llama_backend, batch, Needs(pattern=True, rows_only=True))
    for layer, acts in rows.items():
        assert acts.pattern.shape[2] == 2
        for b in range(2):
            expected = full[layer].pattern[b][:, batch.query_positions[b]]
            torch.testing.assert_close(acts.pattern[b], expected)


def test_no_layer_outlives_its_callback(tmp_path):
    """The engine keeps no cross-layer cache: each layer's tensors are freed once its callback returns."""
    from tiny_models import build_tiny_model

    backend = load_backend(str(build_tiny_model("llama", tmp_path, num_hidden_layers=4)), quiet=True)
    refs: list[weakref.ref] = []
    alive_when_reported: list[int] = []

    def observe(acts):
        gc.collect()
        alive_when_reported.append(sum(ref() is not None for ref in refs))
        refs.extend(weakref.ref(t) for t in (acts.pattern, acts.q, acts.k, acts.v, acts.z))

    ids = torch.randint(4, 96, (2, 33), generator=torch.Generator().manual_seed(5))
    backend.run(pad_sequences(ids.tolist(), 0), Needs(pattern=True, q=True, k=True, v=True, z=True), observe)
    assert alive_when_reported == [0, 0, 0, 0]


def test_left_padding_gives_the_same_rows_as_no_padding(tiny_llama_backend):
    short = [1, 10, 11, 12, 13, 14]
    long = [1, 20, 21, 22, 23, 24, 25, 26, 27]
    alone = {}
    tiny_llama_backend.run(pad_sequences([short], 0), Needs(pattern=True, z=True), lambda a: alone.setdefault(a.layer, a))
    for side in ("left", "right"):
        batch = pad_sequences([short, long], 0, side=side)
        padded = _collect(tiny_llama_backend, batch, Needs(pattern=True, z=True))
        cols = batch.valid[0]
        for layer, acts in padded.items():
            got = acts.pattern[0][:, cols][:, :, cols]
            torch.testing.assert_close(got, alone[layer].pattern[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(acts.z[0][:, cols], alone[layer].z[0], atol=1e-5, rtol=1e-4)


def test_decode_matches_hf_generate_and_full_forward_rows(tiny_llama_dir, tiny_llama_backend):
    prompt = [1] + list(range(30, 50))
    steps: dict[tuple[int, int], torch.Tensor] = {}

    def keep(acts):
        steps[(acts.step, acts.layer)] = acts.pattern

    result = tiny_llama_backend.decode(prompt, max_new_tokens=6, needs=Needs(pattern=True), on_layer=keep, stop_token_ids=[2])
    model = hf_eager(tiny_llama_dir)
    with torch.no_grad():
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)[0, len(prompt):]
    assert result.generated_ids == generated.tolist()
    full_sequence = torch.tensor([prompt + result.generated_ids[:-1]])
    reference = hf_attentions(model, full_sequence)
    for (step, layer), row in steps.items():
        query = len(prompt) - 1 + step
        assert row.shape == (1, tiny_llama_backend.spec.n_heads, 1, query + 1)
        torch.testing.assert_close(row[0, :, 0], reference[layer][0, :, query, : query + 1], atol=1e-5, rtol=1e-4)
