"""Declared metric names: patterns such as `qk_accuracy_{shots}shot` that every written metric must match."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Literal, Mapping

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


Direction = Literal["higher", "lower", "flag", "neither"]


@dataclass(frozen=True)
class MetricDoc:
    """What one declared metric means, in one line, and which way is "strong": the explorer and summary show it.

    `direction`: "higher" (larger = more of the behaviour), "lower" (smaller = stronger, e.g. a rank),
    "flag" (0/1: 1 = the head has the property), "neither" (a description, not a score).
    """

    meaning: str
    direction: Direction = "higher"


def pattern_of(patterns: Iterable[str], metric: str) -> str | None:
    """The most specific declared pattern naming `metric` (most literal characters: `maps_{relation}_k` before
    `maps_{relation}` for `maps_copying_k`)."""
    matching = [p for p in patterns if _regex(p).match(metric)]
    return max(matching, key=lambda p: len(_PLACEHOLDER.sub("", p)), default=None)


def doc_for(patterns: Iterable[str], docs: Mapping[str, MetricDoc], metric: str) -> MetricDoc | None:
    """The doc of the declared pattern that names `metric` (docs are keyed by pattern, like `metrics`)."""
    pattern = pattern_of(patterns, metric)
    return docs.get(pattern) if pattern is not None else None
