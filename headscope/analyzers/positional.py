"""Positional heads: where a head's attention argmax lands, by relative offset and by absolute position.

Voita et al. 2019, "Analyzing Multi-Head Self-Attention: Specialized Heads Do the Heavy Lifting, the Rest Can Be
Pruned", section 4.1: a head is positional when its attention argmax falls on one fixed relative position in at
least 90% of cases. The official repository (lena-voita/the-story-of-heads) holds the pruning code only, not the
head classification, so this follows the paper's definition, adapted to causal LMs:

* offsets are backwards only: offset d means the key at query - d (d = 0 is the token itself); the positional
  score is the largest share over d = 1..max_offset (a causal "previous-token" head generalised);
* the first `exclude_first` real tokens of each sequence (BOS, the usual attention sink) are never an argmax
  candidate, and only queries with at least two candidates are counted;
* besides the argmax share, the mean attention mass at each offset and at each absolute position (counted from
  the first real token) is kept, so a head that spreads attention can be told from one that picks.

Streaming and shardable: per layer the sums of argmax hits and mass, and the number of counted queries, add up
across shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headscope.analyzers.base import HeadValue, ScanContext, StreamingAnalyzer, head_rows
from headscope.analyzers.metrics import MetricDoc
from headscope.engine import LayerActivations, Needs, ProbeBatch
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.natural_text import natural_text_suite


@dataclass(frozen=True)
class PositionalParams:
    seq_len: int = 64  # equal to the sinks defaults, so both share one forward pass
    n_samples: int = 64
    seed: int = 0  # unused by the shipped suite (kept for the shared --seed knob)
    prepend_bos: bool = True
    max_offset: int = 8  # offsets 0..max_offset get their own rows
    n_absolute: int = 4  # absolute positions exclude_first .. exclude_first + n_absolute - 1 get their own rows
    exclude_first: int = 1  # leading real tokens never counted as the argmax (BOS / sink)
    threshold: float = 0.9  # Voita et al.: one offset takes >= 90% of the argmaxes
    dataset: str = ""  # hub dataset instead of the shipped natural_text suite (needs network)
    dataset_split: str = "train"
    dataset_column: str = "text"


class PositionalAnalyzer(StreamingAnalyzer):
    """Argmax share and attention mass per relative offset and absolute position; positional score and flag."""

    name = "positional"
    Params = PositionalParams
    shardable = True
    needs = Needs(pattern=True)
    metrics = (
        "positional_score",
        "positional_offset",
        "positional_offset_mass",
        "is_positional",
        "positional_abs_score",
        "positional_abs_position",
        "positional_argmax_back{offset}",
        "positional_mass_back{offset}",
        "positional_argmax_abs{position}",
        "positional_mass_abs{position}",
    )
    description = "share of a head's attention argmax at one relative offset (Voita et al. 2019)"
    metric_docs = {
        "positional_score": MetricDoc("largest share of attention argmaxes on one backward offset 1..k (Voita et al.)"),
        "positional_offset": MetricDoc("the backward offset that takes positional_score (-1 = previous token)", "neither"),
        "positional_offset_mass": MetricDoc("mean attention mass on the offset of positional_score"),
        "is_positional": MetricDoc("1 if one backward offset takes >= 90% of the argmaxes", "flag"),
        "positional_abs_score": MetricDoc("largest share of argmaxes on one absolute position (BOS excluded)"),
        "positional_abs_position": MetricDoc("the absolute position that takes positional_abs_score", "neither"),
        "positional_argmax_back{offset}": MetricDoc("share of attention argmaxes on the key that many tokens back"),
        "positional_mass_back{offset}": MetricDoc("mean attention mass on the key that many tokens back"),
        "positional_argmax_abs{position}": MetricDoc("share of attention argmaxes on this absolute position"),
        "positional_mass_abs{position}": MetricDoc("mean attention mass on this absolute position"),
    }

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if p.max_offset < 1:
            raise HeadscopeError("positional.max_offset must be at least 1")
        if p.n_absolute < 0 or p.exclude_first < 0:
            raise HeadscopeError("positional.n_absolute and positional.exclude_first must be >= 0")
        if not 0 < p.threshold <= 1:
            raise HeadscopeError("positional.threshold must be in (0, 1]")
        if p.seq_len > ctx.spec.n_ctx:
            raise HeadscopeError(f"positional.seq_len {p.seq_len} exceeds the model's context {ctx.spec.n_ctx}: lower it")
        if p.seq_len < p.exclude_first + 2:
            raise HeadscopeError(f"positional.seq_len must be at least exclude_first + 2 = {p.exclude_first + 2}")
        return natural_text_suite(ctx.tokenizer, seq_len=p.seq_len, n_samples=p.n_samples, bos_token_id=ctx.spec.bos_token_id,
                                  prepend_bos=p.prepend_bos, dataset=p.dataset, split=p.dataset_split, column=p.dataset_column)

    def start(self, ctx: ScanContext, suite: TokenSuite) -> None:
        p, spec = self.params, ctx.spec
        shape = (spec.n_layers, spec.n_heads)
        self._acc = {
            "argmax_rel": torch.zeros(*shape, p.max_offset + 1, dtype=torch.float64),
            "mass_rel": torch.zeros(*shape, p.max_offset + 1, dtype=torch.float64),
            "argmax_abs": torch.zeros(*shape, p.n_absolute, dtype=torch.float64),
            "mass_abs": torch.zeros(*shape, p.n_absolute, dtype=torch.float64),
            "rows": torch.zeros(spec.n_layers, dtype=torch.float64),
        }

    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        p = self.params
        attention = acts.pattern  # [batch, head, query, key]
        device = attention.device
        valid = batch.valid.to(device)  # [batch, pos]
        b, n_heads, t, _ = attention.shape
        first = valid.float().argmax(dim=1)  # first real token (left padding shifts it)
        position = torch.arange(t, device=device)
        rel = position[None, :] - first[:, None]  # [batch, pos]: position counted from the first real token
        candidate = valid & (rel >= p.exclude_first)  # keys the argmax may land on
        causal = position[None, :, None] >= position[None, None, :]  # [1, query, key]
        allowed = candidate[:, None, :] & causal  # [batch, query, key]
        counted = valid & (rel >= p.exclude_first + 1)  # queries with at least two candidates
        masked = attention.masked_fill(~allowed[:, None], -1.0)
        key = masked.argmax(dim=-1)  # [batch, head, query]
        weight = counted[:, None, :].to(torch.float64)  # [batch, 1, query]
        offset = position[None, None, :] - key  # [batch, head, query]
        layer = acts.layer
        for d in range(p.max_offset + 1):
            self._acc["argmax_rel"][layer, :, d] += ((offset == d) * weight).sum((0, 2)).cpu()
            keys = position - d
            ok = keys >= 0
            mass = torch.zeros(b, n_heads, t, dtype=torch.float64, device=device)
            if ok.any():
                q_idx = position[ok]
                k_idx = keys[ok]
                hit = allowed[:, q_idx, k_idx]  # [batch, n]
                mass[:, :, q_idx] = (attention[:, :, q_idx, k_idx] * hit[:, None]).to(torch.float64)
            self._acc["mass_rel"][layer, :, d] += (mass * weight).sum((0, 2)).cpu()
        abs_key = key - first[:, None, None]  # [batch, head, query]
        for index in range(p.n_absolute):
            where = p.exclude_first + index
            self._acc["argmax_abs"][layer, :, index] += ((abs_key == where) * weight).sum((0, 2)).cpu()
            column = (first + where).clamp(max=t - 1)  # [batch]
            exists = (first + where < t)
            col_mass = attention[torch.arange(b, device=device), :, :, column]  # [batch, head, query]
            col_ok = allowed[torch.arange(b, device=device), :, column] & exists[:, None]  # [batch, query]
            self._acc["mass_abs"][layer, :, index] += (col_mass * col_ok[:, None] * weight).sum((0, 2)).cpu()
        self._acc["rows"][layer] += float(counted.sum())

    def state(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self._acc.items()}

    def merge_states(self, states: list[dict[str, torch.Tensor]]) -> None:
        for name, value in self._acc.items():
            value.zero_()
            for state in states:
                value += state[name]

    def results(self) -> list[HeadValue]:
        p = self.params
        rows = self._acc["rows"]
        n = rows.clamp(min=1)[:, None, None]
        argmax_rel, mass_rel = self._acc["argmax_rel"] / n, self._acc["mass_rel"] / n
        argmax_abs, mass_abs = self._acc["argmax_abs"] / n, self._acc["mass_abs"] / n
        best = argmax_rel[..., 1:].max(dim=-1)  # offsets 1..max_offset
        offset = best.indices + 1
        count = rows.long()
        tables = {
            "positional_score": (best.values, count),
            "positional_offset": (-offset.double(), count),
            "positional_offset_mass": (mass_rel.gather(-1, offset[..., None])[..., 0], count),
            "is_positional": ((best.values >= p.threshold).double(), count),
        }
        if p.n_absolute:
            best_abs = argmax_abs.max(dim=-1)
            tables["positional_abs_score"] = (best_abs.values, count)
            tables["positional_abs_position"] = ((best_abs.indices + p.exclude_first).double(), count)
        for d in range(p.max_offset + 1):
            tables[f"positional_argmax_back{d}"] = (argmax_rel[..., d], count)
            tables[f"positional_mass_back{d}"] = (mass_rel[..., d], count)
        for index in range(p.n_absolute):
            where = p.exclude_first + index
            tables[f"positional_argmax_abs{where}"] = (argmax_abs[..., index], count)
            tables[f"positional_mass_abs{where}"] = (mass_abs[..., index], count)
        return head_rows(tables)
