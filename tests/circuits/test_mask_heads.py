"""Head masking through engine interventions: the masked head behaves as specified and exit restores the model."""

from __future__ import annotations

import pytest
import torch

from headscope.circuits import mask_heads
from headscope.engine import Intervention, Needs, ProbeBatch
from headscope.errors import HeadscopeError


def _batch(seed=0, n=24):
    torch.manual_seed(seed)
    ids = torch.randint(4, 96, (2, n))
    return ProbeBatch(ids, torch.ones_like(ids))


def _run(backend, batch):
    patterns = {}
    logits = backend.run(batch, Needs(pattern=True, logits=True), lambda a: patterns.__setitem__(a.layer, a.pattern.clone()))
    return logits, patterns


def test_uniform_mask_flattens_the_head_and_exit_restores_bit_identical_logits(tiny_llama_backend):
    batch = _batch()
    before, _ = _run(tiny_llama_backend, batch)
    with mask_heads(tiny_llama_backend, [(1, 2)], mode="uniform"):
        during, patterns = _run(tiny_llama_backend, batch)
    after, _ = _run(tiny_llama_backend, batch)
    assert torch.equal(before, after)
    assert not torch.allclose(before, during)
    t = batch.input_ids.shape[1]
    expected = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]  # uniform over visible keys
    torch.testing.assert_close(patterns[1][:, 2], expected.expand(2, t, t))
    assert not torch.allclose(patterns[1][:, 1], expected.expand(2, t, t))  # other heads untouched


def test_zero_mask_equals_removing_the_head_output(tiny_llama_backend):
    batch = _batch(1)
    with mask_heads(tiny_llama_backend, [(0, 1)], mode="zero"):
        masked, _ = _run(tiny_llama_backend, batch)

    def zero_z(layer, z):  # independent route: the same edit written by hand on z
        z = z.clone()
        z[:, 1] = 0.0
        return z

    with tiny_llama_backend.intervene(Intervention("z", (0,), zero_z)):
        by_hand, _ = _run(tiny_llama_backend, batch)
    assert torch.equal(masked, by_hand)


def test_decode_phase_mask_leaves_prefill_alone_and_restores(tiny_llama_backend):
    prompt = _batch(2).input_ids[0].tolist()
    plain = tiny_llama_backend.decode(prompt, max_new_tokens=4, needs=Needs(), on_layer=lambda a: None)
    rows = []
    with mask_heads(tiny_llama_backend, [(0, 0), (1, 3)], phases=("decode",)):
        tiny_llama_backend.decode(prompt, max_new_tokens=2, needs=Needs(pattern=True),
                                  on_layer=lambda a: rows.append((a.layer, a.pattern.clone())))
    for layer, pattern in rows:  # [1, head, 1, keys]
        head = 0 if layer == 0 else 3
        keys = pattern.shape[-1]
        torch.testing.assert_close(pattern[0, head, 0], torch.full((keys,), 1.0 / keys))
    again = tiny_llama_backend.decode(prompt, max_new_tokens=4, needs=Needs(), on_layer=lambda a: None)
    assert again.generated_ids == plain.generated_ids and torch.equal(again.step_logits, plain.step_logits)


def test_bad_heads_are_one_line_errors(tiny_llama_backend):
    with pytest.raises(HeadscopeError, match="do not exist"):
        with mask_heads(tiny_llama_backend, [(5, 0)]):
            pass
    with pytest.raises(HeadscopeError, match="masking mode"):
        with mask_heads(tiny_llama_backend, [(0, 0)], mode="half"):
            pass
