"""Analyzer names as users type them, mapped to their classes; `register_analyzer` adds your own."""

from __future__ import annotations

from typing import TypeVar

from headscope.analyzers.base import Analyzer, DrivingAnalyzer, StreamingAnalyzer
from headscope.errors import HeadscopeError

A = TypeVar("A", bound=type[Analyzer])

ANALYZERS: dict[str, type[Analyzer]] = {}
GROUPS: dict[str, tuple[str, ...]] = {
    "classic": ("previous-token", "duplicate-token", "induction"),
    "weights": ("maps",),  # parameter-only analyzers: no forward pass
}
DEFAULT_ANALYZERS: tuple[str, ...] = GROUPS["classic"]


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_analyzer(cls: A, *, replace: bool = False) -> A:
    """Make `cls` scannable by its `name` (`headscope.scan(model, ["my-analyzer"])`, `-a my-analyzer`).

    Usable as a class decorator. The class must derive from `StreamingAnalyzer` or `DrivingAnalyzer` and set
    `name`, `Params` (a dataclass) and `metrics`. Under Ray, workers import the class from its module, so
    define it in an importable module (not in `__main__`).
    """
    if not (isinstance(cls, type) and issubclass(cls, (StreamingAnalyzer, DrivingAnalyzer))):
        raise HeadscopeError(f"{cls!r} is not an analyzer: derive it from StreamingAnalyzer or DrivingAnalyzer")
    for attribute in ("name", "Params", "metrics"):
        if not hasattr(cls, attribute):
            raise HeadscopeError(f"analyzer {cls.__name__} has no `{attribute}`: set it as a class attribute")
    key = _key(cls.name)
    if key in GROUPS:
        raise HeadscopeError(f"analyzer name '{cls.name}' is a group name: choose another name")
    if key in ANALYZERS and ANALYZERS[key] is not cls and not replace:
        raise HeadscopeError(f"analyzer '{key}' is already registered ({ANALYZERS[key].__name__}): "
                             "choose another name or pass replace=True")
    ANALYZERS[key] = cls
    return cls


def analyzer_class(name: str) -> type[Analyzer]:
    key = _key(name)
    if key not in ANALYZERS:
        raise HeadscopeError(f"unknown analyzer '{name}': use one of {', '.join(sorted(ANALYZERS))}")
    return ANALYZERS[key]


def expand_names(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """Split a comma list, expand groups ("classic"), keep order, drop repeats."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        key = _key(item)
        if not key:
            continue
        for name in GROUPS.get(key, (key,)):
            analyzer_class(name)
            if name not in out:
                out.append(name)
    if not out:
        raise HeadscopeError("no analyzers given: pass e.g. `--analyzers induction,previous-token`")
    return out


def _register_builtins() -> None:
    """The analyzers that ship with headscope, in the order `headscope analyzers` lists them."""
    from headscope.analyzers.copy_suppression import CopySuppressionAnalyzer
    from headscope.analyzers.duplicate_token import DuplicateTokenAnalyzer
    from headscope.analyzers.function_vector import FunctionVectorAnalyzer
    from headscope.analyzers.induction import InductionAnalyzer
    from headscope.analyzers.kv_policy import KVPolicyAnalyzer
    from headscope.analyzers.lookback import LookbackLensAnalyzer
    from headscope.analyzers.maps import MapsAnalyzer
    from headscope.analyzers.positional import PositionalAnalyzer
    from headscope.analyzers.previous_token import PreviousTokenAnalyzer
    from headscope.analyzers.retrieval import RetrievalAnalyzer
    from headscope.analyzers.safety import SafetyHeadAnalyzer
    from headscope.analyzers.select_and_copy import SelectAndCopyAnalyzer
    from headscope.analyzers.sinks import SinkAnalyzer
    from headscope.analyzers.successor import SuccessorAnalyzer
    from headscope.analyzers.truthfulness import TruthfulnessAnalyzer

    for cls in (PreviousTokenAnalyzer, DuplicateTokenAnalyzer, InductionAnalyzer, SinkAnalyzer, RetrievalAnalyzer,
                MapsAnalyzer, SelectAndCopyAnalyzer, LookbackLensAnalyzer, SafetyHeadAnalyzer,
                PositionalAnalyzer, SuccessorAnalyzer, CopySuppressionAnalyzer, FunctionVectorAnalyzer,
                TruthfulnessAnalyzer, KVPolicyAnalyzer):
        register_analyzer(cls)


_register_builtins()
