"""Head ablations (query scaling, zero, mean) against Hugging Face references hooked by hand, on both backends."""

from __future__ import annotations

import pytest
import torch
from reference import hf_eager, hf_o_proj_inputs
from tiny_models import build_tiny_model

from headscope.circuits.ablation import HeadAblation, ablate_heads, head_output_means, row_ablations
from headscope.engine import Needs, load_backend, pad_sequences
from headscope.errors import HeadscopeError

BACKENDS = ("transformer-lens", "nnsight")
PROMPTS = [[1, 5, 9, 13, 17, 21, 25], [1, 40, 41, 42, 43, 44, 45]]
HEADS = [(0, 1), (1, 3)]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return {kind: build_tiny_model(kind, tmp_path_factory.mktemp(kind)) for kind in ("llama", "gpt2", "gemma3")}


@pytest.fixture(scope="module")
def backends(model_dirs):
    return {(kind, name): load_backend(str(path), backend=name, quiet=True)
            for kind, path in model_dirs.items() for name in BACKENDS}


def _layers(model):
    return model.model.layers if hasattr(model, "model") else model.transformer.h


def reference_logits(model, ids, heads, *, mode="scale", eps=1e-4, means=None):
    """Last-token logits with `heads` ablated by hooks written here, on the HF model itself."""
    config = model.config
    n_heads = config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    handles = []
    for layer, head in heads:
        block = _layers(model)[layer]
        attention = block.self_attn if hasattr(block, "self_attn") else block.attn
        cols = slice(head * d_head, (head + 1) * d_head)
        if mode == "scale":
            if hasattr(attention, "q_norm"):  # Gemma-3: the query after its norm ([batch, head, pos, d]), before the rotary
                def scale(mod, args, out, head=head):
                    out = out.clone()
                    out[:, head] *= eps
                    return out
                handles.append(attention.q_norm.register_forward_hook(scale))
            else:
                target = attention.q_proj if hasattr(attention, "q_proj") else attention.c_attn
                def scale(mod, args, out, cols=cols):
                    out = out.clone()
                    out[..., cols] *= eps
                    return out
                handles.append(target.register_forward_hook(scale))
        else:
            proj = attention.o_proj if hasattr(attention, "o_proj") else attention.c_proj
            def replace(mod, args, cols=cols, layer=layer, head=head):
                z = args[0].clone()
                z[..., cols] = 0.0 if mode == "zero" else means[layer, head]
                return (z,)
            handles.append(proj.register_forward_pre_hook(replace))
    try:
        with torch.no_grad():
            return model(torch.tensor(ids)).logits[:, -1].float()
    finally:
        for handle in handles:
            handle.remove()


def _batch(ids):
    return pad_sequences(ids, 0)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("name", BACKENDS)
def test_scale_ablation_matches_reference_and_restores_exactly(backends, model_dirs, kind, name):
    backend = backends[(kind, name)]
    model = hf_eager(model_dirs[kind])
    batch = _batch(PROMPTS)
    before = backend.last_token(batch).logits
    with ablate_heads(backend, HEADS, HeadAblation("scale", 1e-4)):
        ablated = backend.last_token(batch).logits
    after = backend.last_token(batch).logits
    expected = reference_logits(model, PROMPTS, HEADS, eps=1e-4)
    assert torch.equal(before, after)  # nothing persists after the context
    assert (ablated - before).abs().max() > 1e-3  # the ablation did something (not undone by a q-norm)
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(before, reference_logits(model, PROMPTS, []), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_output_ablations_match_reference(backends, model_dirs, name, mode):
    backend = backends[("llama", name)]
    model = hf_eager(model_dirs["llama"])
    means = torch.randn(2, 4, 16) if mode == "mean" else None
    batch = _batch(PROMPTS)
    before = backend.last_token(batch).logits
    with ablate_heads(backend, HEADS, HeadAblation(mode, means=means)):
        ablated = backend.last_token(batch).logits
    assert torch.equal(before, backend.last_token(batch).logits)
    torch.testing.assert_close(ablated, reference_logits(model, PROMPTS, HEADS, mode=mode, means=means), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_each_row_gets_its_own_head_set(backends, model_dirs, name):
    backend = backends[("llama", name)]
    model = hf_eager(model_dirs["llama"])
    prompt = PROMPTS[0]
    head_sets = [[], [(0, 0)], [(1, 2)], [(0, 3), (1, 1)]]
    ablation = HeadAblation("scale", 1e-5)
    with backend.intervene(*row_ablations(ablation, head_sets, backend.spec)):
        rows = backend.last_token(_batch([prompt] * len(head_sets))).logits
    for row, heads in enumerate(head_sets):
        torch.testing.assert_close(rows[row], reference_logits(model, [prompt], heads, eps=1e-5)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(HeadscopeError, match="one row per head set"), backend.intervene(*row_ablations(ablation, head_sets, backend.spec)):
        backend.last_token(_batch([prompt] * 3))


def test_last_token_reads_hf_hidden_states_with_padding(backends, model_dirs):
    model = hf_eager(model_dirs["llama"])
    ragged = [[1, 5, 9, 13, 17, 21, 25], [1, 40, 41]]
    for name in BACKENDS:
        out = backends[("llama", name)].last_token(_batch(ragged))
        for row, ids in enumerate(ragged):
            with torch.no_grad():
                ref = model(torch.tensor([ids]), output_hidden_states=True)
            torch.testing.assert_close(out.hidden[row], ref.hidden_states[-1][0, -1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.logits[row], ref.logits[0, -1], atol=1e-5, rtol=1e-5)


def test_head_output_means_are_the_mean_of_o_proj_inputs(backends, model_dirs):
    model = hf_eager(model_dirs["llama"])
    means = head_output_means(backends[("llama", "transformer-lens")], [_batch(PROMPTS)])
    per_layer = hf_o_proj_inputs(model, torch.tensor(PROMPTS))  # [batch, pos, head * d_head] per layer
    expected = torch.stack([z.reshape(-1, 4, 16).mean(0) for z in per_layer])
    torch.testing.assert_close(means, expected, atol=1e-5, rtol=1e-5)


def test_bad_ablations_say_how_to_fix(backends):
    backend = backends[("llama", "transformer-lens")]
    with pytest.raises(HeadscopeError, match="do not exist"), ablate_heads(backend, [(5, 0)]):
        pass
    with pytest.raises(HeadscopeError, match="head_output_means"):
        HeadAblation("mean")
    with pytest.raises(HeadscopeError, match="use one of"):
        HeadAblation("shuffle")


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("name", BACKENDS)
def test_last_token_from_a_later_layer_equals_the_full_pass(backends, kind, name):
    """Feeding the intact resid_pre of layer 1 and skipping layer 0 changes nothing, ablation included."""
    backend = backends[(kind, name)]
    batch = _batch([PROMPTS[0]] * 2)
    resid = {}
    backend.run(batch, Needs(resid_pre=True), lambda acts: resid.__setitem__(acts.layer, acts.resid_pre))
    with ablate_heads(backend, [(1, 2)]):
        full = backend.last_token(batch)
        resumed = backend.last_token(batch, start_layer=1, resid=resid[1])
    torch.testing.assert_close(resumed.logits, full.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(resumed.hidden, full.hidden, atol=1e-6, rtol=1e-6)
    assert torch.equal(backend.last_token(batch).logits, backend.last_token(batch).logits)  # layers restored
    with pytest.raises(HeadscopeError, match="unpadded"):
        backend.last_token(_batch([PROMPTS[0], PROMPTS[0][:4]]), start_layer=1, resid=torch.zeros(2, 7, resid[1].shape[-1]))
