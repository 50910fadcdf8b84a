"""Previous-token heads: attention on the token just before the query (the subdiagonal)."""

from __future__ import annotations

import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.pattern_heads import PatternHeadAnalyzer


class PreviousTokenAnalyzer(PatternHeadAnalyzer):
    """TransformerLens `get_previous_token_head_detection_pattern`, batched and padding-aware."""

    name = "previous-token"
    accepts_prompts = True  # TransformerLens' detect_head scores any prompt
    metrics = ("previous_token_score", "previous_token_score_std")
    description = "share of attention on the previous token"
    metric_docs = {
        "previous_token_score": MetricDoc("mean attention on the immediately preceding token"),
        "previous_token_score_std": MetricDoc("spread of previous_token_score over probe sequences", "neither"),
    }

    def detection_pattern(self, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        subdiagonal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril(-1).triu(-1)
        return subdiagonal & valid[:, :, None] & valid[:, None, :]
