"""Chunked prefill through the KV cache equals the one-shot run (logits and every decoding step's attention rows)."""

from __future__ import annotations

import torch

from headscope.engine import Needs, ProbeBatch


def _decode(backend, prompt, chunk):
    rows: dict[tuple[int, int], torch.Tensor] = {}

    def keep(acts):
        rows[(acts.step, acts.layer)] = acts.pattern.clone()

    result = backend.decode(prompt, max_new_tokens=5, needs=Needs(pattern=True), on_layer=keep, prefill_chunk=chunk)
    return result, rows


def test_chunked_prefill_equals_one_shot(tiny_llama_backend):
    torch.manual_seed(0)
    prompt = torch.randint(4, 96, (60,)).tolist()
    one, rows_one = _decode(tiny_llama_backend, prompt, 10_000)
    for chunk in (1, 7, 32):
        got, rows = _decode(tiny_llama_backend, prompt, chunk)
        assert got.generated_ids == one.generated_ids
        torch.testing.assert_close(got.step_logits, one.step_logits, rtol=1e-5, atol=1e-5)
        assert rows.keys() == rows_one.keys()
        for key in rows:
            assert rows[key].shape[-1] == len(prompt) + key[0]  # keys so far
            torch.testing.assert_close(rows[key], rows_one[key], rtol=1e-5, atol=1e-6)


def test_prefill_logits_equal_plain_forward(tiny_llama_backend):
    torch.manual_seed(1)
    ids = torch.randint(4, 96, (1, 45))
    _, logits = tiny_llama_backend.prefill(ids, chunk=8, return_logits=True)
    full = tiny_llama_backend.run(ProbeBatch(ids, torch.ones_like(ids)), Needs(logits=True), lambda acts: None)
    torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
