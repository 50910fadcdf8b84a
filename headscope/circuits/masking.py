"""Head masking as an engine intervention: a per-layer function applied to one named tensor of the chosen heads.

Modes:
  "uniform"  zero the head's query, so its attention is uniform over the visible keys. This is what the
             retrieval-head paper's masking does (nightdessert/Retrieval_Head, `faiss_attn/source/modeling_llama.py`:
             `query_states[:, h] = 0` for heads in `block_list`).
  "zero"     zero the head's output z (its contribution to the output projection): classic zero-ablation.
Other interventions (query scaling, patching) are built the same way: `Intervention(tensor, layers, edit)`.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Iterable, Iterator

import torch

from headscope.circuits.ablation import check_heads
from headscope.engine import Backend, Intervention
from headscope.engine.intervention import PHASES
from headscope.errors import HeadscopeError

MODES = {"uniform": "q", "zero": "z"}


def head_mask_interventions(
    heads: Iterable[tuple[int, int]], *, mode: str = "uniform", phases: Iterable[str] = PHASES
) -> list[Intervention]:
    """One intervention per masking mode: zero `heads`' slice of the mode's tensor on their layers."""
    if mode not in MODES:
        raise HeadscopeError(f"unknown masking mode '{mode}': use one of {', '.join(MODES)}")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        by_layer[int(layer)].append(int(head))
    if not by_layer:
        return []

    def edit(layer: int, tensor: torch.Tensor) -> torch.Tensor:  # tensor [batch, head, pos, d_head]
        out = tensor.clone()
        out[:, by_layer[layer]] = 0
        return out

    return [Intervention(MODES[mode], tuple(sorted(by_layer)), edit, frozenset(phases))]


@contextlib.contextmanager
def mask_heads(
    backend: Backend, heads: Iterable[tuple[int, int]], *, mode: str = "uniform", phases: Iterable[str] = PHASES
) -> Iterator[None]:
    """Inside the block every run/decode of `backend` has `heads` masked; on exit the model is exactly as before."""
    heads = check_heads(backend.spec, heads)
    with backend.intervene(*head_mask_interventions(heads, mode=mode, phases=phases)):
        yield
