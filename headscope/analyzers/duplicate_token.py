"""Duplicate-token heads: attention on earlier occurrences of the query's own token."""

from __future__ import annotations

import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.pattern_heads import PatternHeadAnalyzer, same_token


class DuplicateTokenAnalyzer(PatternHeadAnalyzer):
    """TransformerLens `get_duplicate_token_head_detection_pattern` (diagonal excluded), batched."""

    name = "duplicate-token"
    accepts_prompts = True  # TransformerLens' detect_head scores any prompt
    metrics = ("duplicate_token_score", "duplicate_token_score_std")
    description = "share of attention on earlier copies of the current token"
    metric_docs = {
        "duplicate_token_score": MetricDoc("mean attention from a token to earlier copies of itself"),
        "duplicate_token_score_std": MetricDoc("spread of duplicate_token_score over probe sequences", "neither"),
    }

    def detection_pattern(self, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return same_token(input_ids, valid)
