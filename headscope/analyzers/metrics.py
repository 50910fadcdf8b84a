"""Declared metric names: patterns such as `qk_accuracy_{shots}shot` that every written metric must match."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

from headscope.errors import HeadscopeError

_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


@lru_cache(maxsize=None)
def _regex(pattern: str) -> re.Pattern[str]:
    """`maps_{relation}_k` -> ^maps_(.+)_k$ (a placeholder stands for one or more characters)."""
    pieces = _PLACEHOLDER.split(pattern)
    return re.compile("^" + "(.+)".join(re.escape(piece) for piece in pieces) + "$")


def declares(patterns: Iterable[str], metric: str) -> bool:
    """Does one of the declared `patterns` name `metric`?"""
    return any(_regex(pattern).match(metric) for pattern in patterns)


def undeclared(patterns: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """The metrics no pattern declares (sorted, each once)."""
    patterns = tuple(patterns)
    return sorted({m for m in metrics if not declares(patterns, m)})


def check_declared(analyzer: str, patterns: Iterable[str], metrics: Iterable[str]) -> None:
    """Refuse rows under a metric name the analyzer does not declare: the viewers and users rely on the names."""
    missing = undeclared(patterns, metrics)
    if missing:
        raise HeadscopeError(f"analyzer '{analyzer}' wrote metric(s) {missing[:5]} it does not declare: "
                             "add them (or a pattern such as 'score_{shots}shot') to its `metrics`")
