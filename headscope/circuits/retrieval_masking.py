"""The causal check of Wu et al. 2024: mask the top-k retrieval heads, and separately k random heads, and
measure needle-in-a-haystack retrieval (official: nightdessert/Retrieval_Head `needle_in_haystack_with_mask.py`,
`--mask_top K` with K > 0 for the top heads and K < 0 for random ones). Spec: circuits/retrieval_masking.md.

As in the official script the mask acts only on the decoding steps (the prefill runs unmasked) and random heads
are drawn from outside the top `exclude_top` retrieval heads (100 there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from headscope.circuits.ablation import random_head_sets
from headscope.circuits.masking import mask_heads
from headscope.engine import Backend, Needs
from headscope.probes import TokenSuite
from headscope.probes.needle_haystack import rouge1_recall


@dataclass
class NeedleRun:
    response: str
    recall: float


@dataclass
class MaskingResult:
    """Needle retrieval (mean ROUGE-1 recall, share of samples with recall > 0.5) per masking condition."""

    k: int
    top_heads: list[tuple[int, int]]
    random_heads: list[list[tuple[int, int]]]
    unmasked: tuple[float, float]
    top: tuple[float, float]
    random: list[tuple[float, float]] = field(default_factory=list)

    @property
    def random_mean(self) -> tuple[float, float]:
        n = max(len(self.random), 1)
        return (sum(r[0] for r in self.random) / n, sum(r[1] for r in self.random) / n)


def needle_accuracy(
    backend: Backend,
    suite: TokenSuite,
    *,
    max_new_tokens: int = 50,
    stop_token_ids: Sequence[int] = (),
    prefill_chunk: int = 512,
    pass_threshold: float = 0.5,
) -> tuple[float, float, list[NeedleRun]]:
    """Greedy-decode every prompt of `suite` and score the answer against its `real_needle` with ROUGE-1 recall."""
    runs = []
    for prompt, sample in zip(suite.sequences, suite.samples):
        result = backend.decode(prompt, max_new_tokens=max_new_tokens, needs=Needs(), on_layer=_ignore,
                                stop_token_ids=stop_token_ids, prefill_chunk=prefill_chunk)
        response = backend.tokenizer.decode(result.generated_ids, skip_special_tokens=True).strip()
        runs.append(NeedleRun(response, rouge1_recall(sample["real_needle"], response)))
    n = max(len(runs), 1)
    return sum(r.recall for r in runs) / n, sum(r.recall > pass_threshold for r in runs) / n, runs


def _ignore(_: Any) -> None:
    return None


def retrieval_masking_check(
    backend: Backend,
    suite: TokenSuite,
    scores: torch.Tensor,
    k: int,
    *,
    random_sets: int = 3,
    seed: int = 0,
    exclude_top: int = 100,
    mode: str = "uniform",
    phases: Sequence[str] = ("decode",),
    **decode_kwargs: Any,
) -> MaskingResult:
    """Accuracy with no mask, with the top-`k` heads of `scores` [layer, head] masked, and with `random_sets`
    sets of `k` random heads (outside the top `exclude_top`) masked."""
    n_layers, n_heads = scores.shape
    ranked = sorted(((float(scores[l, h]), l, h) for l in range(n_layers) for h in range(n_heads)), key=lambda t: -t[0])
    ranked = [(l, h) for s, l, h in ranked if s == s]  # drop NaN
    top = ranked[:k]
    excluded = set(ranked[: max(exclude_top, k)])
    if n_layers * n_heads - len(excluded) < k:  # too few heads outside the top: exclude only the masked ones
        excluded = set(top)
    random_heads = random_head_sets(n_layers, n_heads, k, random_sets, seed=seed, exclude=excluded)

    unmasked = needle_accuracy(backend, suite, **decode_kwargs)[:2]
    with mask_heads(backend, top, mode=mode, phases=phases):
        top_acc = needle_accuracy(backend, suite, **decode_kwargs)[:2]
    random_acc = []
    for heads in random_heads:
        with mask_heads(backend, heads, mode=mode, phases=phases):
            random_acc.append(needle_accuracy(backend, suite, **decode_kwargs)[:2])
    return MaskingResult(k, top, random_heads, unmasked, top_acc, random_acc)
