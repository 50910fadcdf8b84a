"""Analyzer names as users type them, mapped to their classes."""

from __future__ import annotations

from headscope.analyzers.base import Analyzer
from headscope.analyzers.duplicate_token import DuplicateTokenAnalyzer
from headscope.analyzers.induction import InductionAnalyzer
from headscope.analyzers.lookback import LookbackLensAnalyzer
from headscope.analyzers.maps import MapsAnalyzer
from headscope.analyzers.previous_token import PreviousTokenAnalyzer
from headscope.analyzers.retrieval import RetrievalAnalyzer
from headscope.analyzers.safety import SafetyHeadAnalyzer
from headscope.analyzers.select_and_copy import SelectAndCopyAnalyzer
from headscope.analyzers.sinks import SinkAnalyzer
from headscope.errors import HeadscopeError

ANALYZERS: dict[str, type[Analyzer]] = {
    cls.name: cls
    for cls in (PreviousTokenAnalyzer, DuplicateTokenAnalyzer, InductionAnalyzer, SinkAnalyzer, RetrievalAnalyzer,
                MapsAnalyzer, SelectAndCopyAnalyzer, LookbackLensAnalyzer, SafetyHeadAnalyzer)
}
GROUPS: dict[str, tuple[str, ...]] = {
    "classic": ("previous-token", "duplicate-token", "induction"),
    "weights": ("maps",),  # parameter-only analyzers: no forward pass
}
DEFAULT_ANALYZERS: tuple[str, ...] = GROUPS["classic"]


def analyzer_class(name: str) -> type[Analyzer]:
    key = name.strip().lower().replace("_", "-")
    if key not in ANALYZERS:
        raise HeadscopeError(f"unknown analyzer '{name}': use one of {', '.join(sorted(ANALYZERS))}")
    return ANALYZERS[key]


def expand_names(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """Split a comma list, expand groups ("classic"), keep order, drop repeats."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        key = item.strip().lower().replace("_", "-")
        if not key:
            continue
        for name in GROUPS.get(key, (key,)):
            analyzer_class(name)
            if name not in out:
                out.append(name)
    if not out:
        raise HeadscopeError("no analyzers given: pass e.g. `--analyzers induction,previous-token`")
    return out
