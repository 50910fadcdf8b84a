"""JSON from files we did not write ourselves: bounded size and nesting, finite numbers, no duplicate keys.

Every failure is one HeadscopeError (never RecursionError, OverflowError or a 5000-digit int's ValueError), so a
crafted atlas or detector file cannot crash a reader or make it spend unbounded memory or time.
"""

from __future__ import annotations

import json
import math
from typing import Any

from headscope.errors import HeadscopeError

MAX_BYTES = 16 * 2**20
MAX_DEPTH = 32
MAX_INT_DIGITS = 20


def load_json(raw: str | bytes, *, origin: str, fix: str, what: str = "valid JSON", max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` strictly; the one-line error says `origin` is not `what`, then `fix`."""
    if len(raw) > max_bytes:
        raise HeadscopeError(f"{origin} holds {len(raw)} bytes of JSON, more than the {max_bytes} allowed: {fix}")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_int=_int, parse_float=_float,
                           object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError, TypeError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err).split("\n")[0][:120]
        raise HeadscopeError(f"{origin} is not {what} ({reason}): {fix}") from None
    if _depth(value) > max_depth:
        raise HeadscopeError(f"{origin} nests JSON deeper than {max_depth} levels: {fix}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} overflows")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate keys")
    return out


def _depth(value: Any) -> int:
    """Nesting depth, walked without recursion (the parser's own limit is the interpreter's stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
