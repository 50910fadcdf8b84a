"""Induction heads: attention on the token right after an earlier copy of the query's token."""

from __future__ import annotations

import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.pattern_heads import PatternHeadAnalyzer, same_token


class InductionAnalyzer(PatternHeadAnalyzer):
    """TransformerLens `get_induction_head_detection_pattern`: the duplicate pattern shifted one key right."""

    name = "induction"
    metrics = ("induction_score", "induction_score_std")
    description = "share of attention on the token after an earlier copy of the current token"
    metric_docs = {
        "induction_score": MetricDoc("mean attention from a repeated token to the token after its earlier copy"),
        "induction_score_std": MetricDoc("spread of induction_score over probe sequences", "neither"),
    }

    def detection_pattern(self, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        duplicate = same_token(input_ids, valid)  # [batch, query, key]
        shifted = torch.zeros_like(duplicate)
        shifted[:, :, 1:] = duplicate[:, :, :-1]  # key k is induction target when key k-1 duplicates the query
        t = input_ids.shape[1]
        lower = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
        return shifted & lower & valid[:, None, :]
