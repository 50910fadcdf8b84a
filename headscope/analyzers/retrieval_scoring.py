"""The retrieval score of Wu et al. 2024 as pure functions (no model), so brute-force references can share nothing
with the driver but these few lines of definition.

Official: nightdessert/Retrieval_Head `retrieval_head_detection.py`, `retrieval_calculate` and the ROUGE filter.
"""

from __future__ import annotations

from typing import Sequence

import torch


def copy_paste_scores(
    argmax_keys: torch.Tensor, generated_ids: Sequence[int], prompt_ids: Sequence[int], needle_start: int, needle_end: int
) -> torch.Tensor:
    """Per-head retrieval score of one decoded sample.

    argmax_keys: [step, layer, head], the key position each head attends to most at each decoding step.
    At step s the model emits `generated_ids[s]`; head (l, h) copy-pastes it when its top key `i` lies in
    `[needle_start, needle_end)` and `prompt_ids[i] == generated_ids[s]`. Each copy adds `1 / (end - start)`
    (repeats are not de-duplicated, as in the official code). Returns [layer, head] float64.
    """
    steps, n_layers, n_heads = argmax_keys.shape
    scores = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    if needle_start < 0 or needle_end <= needle_start:
        return scores
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    weight = 1.0 / (needle_end - needle_start)
    for step in range(min(steps, len(generated_ids))):
        keys = argmax_keys[step].long()
        inside = (keys >= needle_start) & (keys < needle_end)
        held = prompt[keys.clamp(max=len(prompt) - 1)]
        scores += (inside & (held == int(generated_ids[step]))).double() * weight
    return scores
