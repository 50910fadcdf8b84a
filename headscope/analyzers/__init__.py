"""Analyzers: one module per method, each reducing per-head tensors into atlas rows."""

from headscope.analyzers.base import Analyzer, HeadValue, ScanContext, suite_batches
from headscope.analyzers.duplicate_token import DuplicateTokenAnalyzer
from headscope.analyzers.induction import InductionAnalyzer
from headscope.analyzers.previous_token import PreviousTokenAnalyzer
from headscope.analyzers.select_and_copy import SelectAndCopyAnalyzer
from headscope.analyzers.registry import ANALYZERS, DEFAULT_ANALYZERS, analyzer_class, expand_names

__all__ = [
    "ANALYZERS",
    "Analyzer",
    "DEFAULT_ANALYZERS",
    "DuplicateTokenAnalyzer",
    "HeadValue",
    "InductionAnalyzer",
    "PreviousTokenAnalyzer",
    "ScanContext",
    "SelectAndCopyAnalyzer",
    "analyzer_class",
    "expand_names",
    "suite_batches",
]
