"""Shared scoring of the classic pattern heads (TransformerLens `head_detector.detect_head`).

A head's score on one sequence compares its attention A [query, key] with a 0/1 detection pattern P:
  "mul": sum(A * P) / sum(A)   (TransformerLens' default: the share of attention on the pattern)
  "abs": 1 - sum(|A - P|) / T  (TransformerLens rounds to 3 decimals; we do not)
The atlas value is the mean over sequences, as `detect_head` averages a list of prompts. Unlike
`detect_head` this runs batched, inside the hooks, with padding masked and BOS handled per sequence.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

from headscope.analyzers.base import HeadValue, RunningMoments, ScanContext, StreamingAnalyzer, head_rows
from headscope.engine import LayerActivations, Needs, ProbeBatch
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite, repeated_random_tokens


@dataclass(frozen=True)
class PatternHeadParams:
    seq_len: int = 101  # BOS + two copies of 50 random tokens
    n_samples: int = 32
    seed: int = 0
    exclude_bos: bool = True  # detect_head defaults to False; sinks on BOS then swamp every score
    exclude_current_token: bool = False
    error_measure: Literal["mul", "abs"] = "mul"


class PatternHeadAnalyzer(StreamingAnalyzer):
    """Scores every head against a detection pattern built from each probe's tokens.

    Subclasses declare `metrics = ("<score>", "<score>_std")`: the mean and the std over sequences.
    """

    Params = PatternHeadParams
    shardable = True
    needs = Needs(pattern=True)

    @abstractmethod
    def detection_pattern(self, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """0/1 pattern [batch, query, key] over real tokens (padded coordinates)."""

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        if self.params.error_measure not in ("mul", "abs"):
            raise HeadscopeError(f"unknown error_measure '{self.params.error_measure}': use 'mul' or 'abs'")
        return repeated_random_tokens(
            seq_len=self.params.seq_len,
            n_samples=self.params.n_samples,
            seed=self.params.seed,
            vocab_size=ctx.spec.d_vocab,
            bos_token_id=ctx.spec.bos_token_id,
            special_ids=ctx.special_ids,
            n_ctx=ctx.spec.n_ctx,
        )

    def start(self, ctx: ScanContext, suite: TokenSuite) -> None:
        self._moments = RunningMoments(ctx.spec.n_layers, ctx.spec.n_heads)
        self._batch_masks: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _masks(self, batch: ProbeBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Detection pattern and counted region as the columns of one [batch, query*key, 2] matrix, and the
        pattern's size per sequence [batch, 1]; built once per batch.

        Scoring is then one batched matrix product per layer (`observe`), which reads the attention once
        instead of materialising masked copies of it.
        """
        if self._batch_masks is None or self._batch_masks[0] != id(batch):
            valid = batch.valid.to(device)
            n, t = valid.shape
            causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
            region = valid[:, :, None] & valid[:, None, :] & causal
            if self.params.exclude_bos:
                first = valid.float().argmax(dim=1)  # first real token of each sequence
                region[torch.arange(len(first), device=device), :, first] = False
            if self.params.exclude_current_token:
                region &= ~torch.eye(t, dtype=torch.bool, device=device)
            pattern = self.detection_pattern(batch.input_ids.to(device), valid).bool() & region
            columns = torch.stack((pattern.reshape(n, t * t), region.reshape(n, t * t)), dim=-1).float()
            self._batch_masks = (id(batch), columns, pattern.sum((-2, -1)).float()[:, None])
        return self._batch_masks[1], self._batch_masks[2]

    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        attention = acts.pattern  # [batch, head, query, key]
        columns, pattern_size = self._masks(batch, attention.device)
        n, heads, t, _ = attention.shape
        # [batch, head, 2]: sum(A * P) and sum(A * R) (P lies inside R, so A * R * P = A * P)
        sums = torch.bmm(attention.reshape(n, heads, t * t), columns)
        on_pattern, on_region = sums[..., 0], sums[..., 1]
        if self.params.error_measure == "mul":
            score = on_pattern / on_region.clamp(min=1e-12)
        else:
            # sum over R of |A - P| with 0 <= A <= 1 and P a 0/1 subset of R: A off the pattern, 1 - A on it
            n_tokens = batch.valid.sum(-1).to(attention.device).float()[:, None]
            score = 1.0 - (on_region - 2.0 * on_pattern + pattern_size) / n_tokens
        self._moments.add(acts.layer, score)

    def state(self) -> dict[str, torch.Tensor]:
        return self._moments.state()

    def merge_states(self, states: list[dict[str, torch.Tensor]]) -> None:
        self._moments.load_states(states)

    def results(self) -> list[HeadValue]:
        score, std = self.metrics
        count = self._moments.count
        return head_rows({score: (self._moments.mean(), count), std: (self._moments.std(), count)})


def same_token(input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[batch, query, key]: True where both are real tokens with equal ids and key < query."""
    t = input_ids.shape[1]
    strictly_earlier = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril(-1)
    equal = input_ids[:, :, None] == input_ids[:, None, :]
    return equal & strictly_earlier & valid[:, :, None] & valid[:, None, :]
