"""Analyzers: one module per method, each reducing per-head tensors (or its own runs) into atlas rows."""

from headscope.analyzers.base import (
    Analyzer,
    DrivingAnalyzer,
    HeadValue,
    ScanContext,
    StreamingAnalyzer,
    head_rows,
    suite_batches,
)
from headscope.analyzers.duplicate_token import DuplicateTokenAnalyzer
from headscope.analyzers.induction import InductionAnalyzer
from headscope.analyzers.metrics import declares, undeclared
from headscope.analyzers.previous_token import PreviousTokenAnalyzer
from headscope.analyzers.registry import ANALYZERS, DEFAULT_ANALYZERS, analyzer_class, expand_names, register_analyzer
from headscope.analyzers.select_and_copy import SelectAndCopyAnalyzer

__all__ = [
    "ANALYZERS",
    "Analyzer",
    "DEFAULT_ANALYZERS",
    "DrivingAnalyzer",
    "DuplicateTokenAnalyzer",
    "HeadValue",
    "InductionAnalyzer",
    "PreviousTokenAnalyzer",
    "ScanContext",
    "SelectAndCopyAnalyzer",
    "StreamingAnalyzer",
    "analyzer_class",
    "declares",
    "expand_names",
    "head_rows",
    "register_analyzer",
    "suite_batches",
]
