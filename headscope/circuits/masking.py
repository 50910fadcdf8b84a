"""Head masking for the retrieval-head check: `ablate_heads` restricted to the two masking modes.

Modes (the knockout itself lives in `circuits/ablation.py`, the one vocabulary for knocking out heads):
  "uniform"  zero the head's query, so its attention is uniform over the visible keys (the retrieval-head paper).
  "zero"     zero the head's output z: classic zero-ablation.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from headscope.circuits.ablation import HeadAblation, ablate_heads
from headscope.engine import Backend, Head
from headscope.engine.intervention import PHASES
from headscope.errors import HeadscopeError

MASKING_MODES = ("uniform", "zero")


@contextlib.contextmanager
def mask_heads(
    backend: Backend, heads: Iterable[Head], *, mode: str = "uniform", phases: Iterable[str] = PHASES
) -> Iterator[None]:
    """Inside the block every run/decode of `backend` has `heads` masked; on exit the model is exactly as before."""
    if mode not in MASKING_MODES:
        raise HeadscopeError(f"unknown masking mode '{mode}': use one of {', '.join(MASKING_MODES)}")
    with ablate_heads(backend, heads, HeadAblation(mode), phases=phases):
        yield
