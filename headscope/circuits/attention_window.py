"""Apply a head-wise KV-cache policy to a backend: the chosen KV heads attend through a StreamingLLM window.

The window itself (the rule, where it hooks in each backend) is `headscope.engine.attention_window`; this is
the circuits-side entry point, the one way policies and notebooks window heads.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from headscope.engine import Backend, Head
from headscope.engine.attention_window import AttentionWindow
from headscope.engine.intervention import PHASES


@contextlib.contextmanager
def window_heads(
    backend: Backend, kv_heads: Iterable[Head], *, sink: int, window: int, phases: Iterable[str] = PHASES
) -> Iterator[None]:
    """Inside the block, `kv_heads` ((layer, kv_head)) see only the first `sink` and the last `window` keys
    (prefill and decoding by default); every other head is untouched, and the model is exactly restored on exit."""
    item = AttentionWindow(tuple(kv_heads), sink, window, frozenset(phases))
    item.check(backend.spec)
    with backend.intervene(*([item] if item.kv_heads else [])):
        yield
