"""Per-head attention windows against a brute-force reference written here: Hugging Face's own modules compute
q/k/v, and an attention function registered in this file softmaxes each windowed head over the keys the
StreamingLLM rule lets it see, one query at a time (no masks, no headscope code). GQA (llama, 4 query / 2 KV
heads) and MHA (GPT-2), both backends, plain forward and chunked-prefill KV-cached decoding."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_model
from transformers import AttentionInterface, AutoModelForCausalLM

from headscope.circuits.attention_window import window_heads
from headscope.engine import ProbeBatch, load_backend
from headscope.engine.activations import Needs
from headscope.errors import HeadscopeError

BACKENDS = ("transformer-lens", "nnsight")
SINK, WINDOW = 2, 5
PROMPT = [1] + [7 + (5 * i) % 80 for i in range(21)]  # 22 tokens
KV_HEADS = {"llama": [(0, 1), (1, 0)], "gpt2": [(0, 2), (1, 0), (1, 3)]}
_CHOSEN: dict[int, set[int]] = {}  # layer -> windowed query heads, read by the reference attention


def _reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [b, h, q, d], key/value [b, kv, k, d]: loops over heads and queries; a windowed head's softmax
    runs over {j <= i : j < SINK or i - j < WINDOW}, every other head's over {j <= i}."""
    batch, n_heads, n_q, d = query.shape
    n_keys = key.shape[2]
    group = n_heads // key.shape[1]
    scaling = d**-0.5 if scaling is None else scaling
    out = torch.zeros(batch, n_q, n_heads, d, dtype=query.dtype)
    for h in range(n_heads):
        windowed = h in _CHOSEN.get(module.layer_idx, set())
        for qi in range(n_q):
            i = n_keys - n_q + qi
            keys = [j for j in range(i + 1) if not windowed or j < SINK or i - j < WINDOW]
            scores = (query[:, h, qi] @ key[:, h // group, keys].transpose(-1, -2)) * scaling  # [b, keys]
            out[:, qi, h] = torch.softmax(scores, dim=-1) @ value[:, h // group, keys]
    return out, None


AttentionInterface.register("headscope_window_reference", _reference_attention)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return {kind: build_tiny_model(kind, tmp_path_factory.mktemp(f"win_{kind}")) for kind in KV_HEADS}


def _reference_logits(folder, tokens, kv_heads, group) -> torch.Tensor:
    _CHOSEN.clear()
    for layer, kv in kv_heads:
        _CHOSEN.setdefault(layer, set()).update(range(kv * group, (kv + 1) * group))
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="headscope_window_reference").eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


@pytest.mark.parametrize("kind", list(KV_HEADS))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_window_matches_brute_force_and_leaves_no_trace(dirs, kind, backend_name):
    backend = load_backend(str(dirs[kind]), backend=backend_name, quiet=True)
    batch = ProbeBatch(torch.tensor([PROMPT]), torch.ones(1, len(PROMPT), dtype=torch.long))
    before = backend.run(batch, Needs(logits=True), lambda acts: None)
    heads = KV_HEADS[kind]
    with window_heads(backend, heads, sink=SINK, window=WINDOW):
        windowed = backend.run(batch, Needs(logits=True), lambda acts: None)
        decoded = backend.decode(PROMPT, max_new_tokens=5, needs=Needs(), on_layer=lambda acts: None, prefill_chunk=6)
    after = backend.run(batch, Needs(logits=True), lambda acts: None)
    assert torch.equal(before, after)  # bit-identical once the context exits

    reference = _reference_logits(dirs[kind], PROMPT + decoded.generated_ids[:-1], heads, backend.spec.group_size)
    torch.testing.assert_close(windowed[0], reference[: len(PROMPT)], atol=2e-5, rtol=1e-4)
    # decoding through the chunked-prefill KV cache equals the windowed full forward at every step
    steps = len(decoded.generated_ids)
    torch.testing.assert_close(decoded.step_logits, reference[len(PROMPT) - 1 :][:steps], atol=2e-5, rtol=1e-4)
    assert (windowed[0] - before[0]).abs().max() > 1e-3  # the window changed the model (positions past SINK+WINDOW)

    full = _reference_logits(dirs[kind], PROMPT, [], backend.spec.group_size)  # the reference without windows
    torch.testing.assert_close(before[0], full, atol=2e-5, rtol=1e-4)


def test_window_refuses_bad_heads_and_padding(dirs):
    backend = load_backend(str(dirs["llama"]), backend="nnsight", quiet=True)
    with pytest.raises(HeadscopeError, match="KV heads"):
        with window_heads(backend, [(0, 2)], sink=1, window=2):  # 2 KV heads: index 2 does not exist
            pass
    padded = ProbeBatch(torch.tensor([PROMPT[:4] + [0]]), torch.tensor([[1, 1, 1, 1, 0]]))
    with window_heads(backend, [(0, 0)], sink=1, window=2), pytest.raises(HeadscopeError, match="unpadded"):
        backend.run(padded, Needs(logits=True), lambda acts: None)


def test_bridges_that_delegate_attention_are_refused():
    """A bridge that hands attention to Hugging Face fires hook_attn_scores after the fact: a window there would
    silently change nothing, so it is refused."""
    from types import SimpleNamespace

    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    from headscope.engine.attention_window import AttentionWindow, check_bridge_recomputes

    class Delegating(AttentionBridge):  # forward not overridden: AttentionBridge's delegating forward
        pass

    bridge = SimpleNamespace(blocks=[SimpleNamespace(attn=object.__new__(Delegating))])
    with pytest.raises(HeadscopeError, match="--backend nnsight"):
        check_bridge_recomputes(bridge, [AttentionWindow(((0, 0),), 1, 2)])
