"""Rank KV heads by how much they need the whole KV cache, from atlas rows (per query head) to KV heads.

Rules (each gives a per-query-head "keep full" score; higher = keep the head's whole cache):
  retrieval  `retrieval_score` (Wu et al. 2024): heads that copy from far back need the far keys. DuoAttention's
             premise: retrieval heads need full attention, the rest stream.
  razor      RazorAttention (Tang et al. 2024) as Huawei's golden-stick implements it: "echo" heads (attend to
             earlier copies of the current token: our `duplicate_token_score`) and induction heads
             (`induction_score`) keep full caches; golden-stick keeps the global top 1% by echo plus the top 14%
             by induction (`ra_config.py`). As one ranking: score = max(echo / e99, induction / i86), where e99 and
             i86 are the 99th and 86th percentiles of the KV-head scores, so exactly golden-stick's union scores
             >= 1, and every other budget keeps the heads nearest those cuts.
  sinks      sink/dormant evidence (`sink_score`, Gu et al.): a head that puts its attention on the first token
             loses least when only the sink and recent tokens stay. score = 1 - sink_score: sink heads stream first.
  metric     any per-head metric in the atlas, with a direction ("higher" or "lower" = keep full).
Query heads are aggregated to their KV head (`kv_head = head // group_size`) by `max` (golden-stick: a KV head is
needed when any of its query heads needs it; the default) or `mean` (kvpress' DuoAttention fallback averages
each KV group). Heads without a value (NaN: e.g. no retrieval sample kept) count as the least needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from headscope.atlas import Atlas
from headscope.errors import HeadscopeError

RULES = ("retrieval", "razor", "sinks", "metric")
AGGREGATIONS = ("max", "mean")
RULE_METRICS = {"retrieval": ("retrieval_score",), "razor": ("duplicate_token_score", "induction_score"),
                "sinks": ("sink_score",)}
METRIC_WRITERS = {"retrieval_score": "retrieval", "duplicate_token_score": "duplicate-token",
                  "induction_score": "induction", "sink_score": "sinks"}
RAZOR_ECHO_TOP, RAZOR_INDUCTION_TOP = 0.01, 0.14  # golden-stick ra_config.py: echo 1%, induction 14%


@dataclass(frozen=True)
class Shape:
    """The head layout a policy is for."""

    n_layers: int
    n_heads: int
    n_kv_heads: int

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def n_kv_total(self) -> int:
        return self.n_layers * self.n_kv_heads


@dataclass
class Ranking:
    """Per-KV-head keep-full scores [layer, kv_head] and what they came from."""

    model: str
    shape: Shape
    scores: np.ndarray  # [layer, kv_head], NaN allowed
    rule: str
    metrics: tuple[str, ...]
    aggregation: str
    provenance: dict

    def order(self) -> list[tuple[int, int]]:
        """KV heads, most needed first: score descending, NaN last, ties by (layer, kv_head)."""
        flat = [(l, h) for l in range(self.shape.n_layers) for h in range(self.shape.n_kv_heads)]
        key = lambda lh: (np.isnan(self.scores[lh]), -np.nan_to_num(self.scores[lh], nan=0.0), lh)  # noqa: E731
        return sorted(flat, key=key)


def check_choice(rule: str, aggregation: str, metric: str | None, direction: str) -> None:
    if rule not in RULES:
        raise HeadscopeError(f"unknown policy rule '{rule}': use one of {', '.join(RULES)}")
    if aggregation not in AGGREGATIONS:
        raise HeadscopeError(f"unknown aggregation '{aggregation}': use max or mean")
    if rule == "metric" and not metric:
        raise HeadscopeError("rule 'metric' needs --metric NAME (a per-head metric of the atlas)")
    if direction not in ("higher", "lower"):
        raise HeadscopeError(f"direction '{direction}' is unknown: use higher or lower (which values keep a head full)")


def rank_kv_heads(atlas: Atlas, *, rule: str = "retrieval", aggregation: str = "max", model: str | None = None,
                  metric: str | None = None, direction: str = "higher") -> Ranking:
    """Score every KV head of one model of `atlas` by `rule` (see the module docstring)."""
    check_choice(rule, aggregation, metric, direction)
    models = atlas.models
    if model is None:
        if len(models) != 1:
            raise HeadscopeError(f"the atlas holds {len(models)} models ({', '.join(models)}): pick one with --model")
        model = models[0]
    elif model not in models:
        raise HeadscopeError(f"model '{model}' is not in the atlas (it has {', '.join(models)}): fix --model")
    rows = atlas.head_rows(model)
    needed = (metric,) if rule == "metric" else RULE_METRICS[rule]
    missing = [m for m in needed if m not in set(rows["metric"])]
    if missing:
        writers = ",".join(sorted({METRIC_WRITERS.get(m, "the analyzer that writes it") for m in missing}))
        raise HeadscopeError(f"the atlas has no {', '.join(missing)} rows for {model}: scan it first "
                             f"(`headscope scan {model} --analyzers {writers}`) and merge the atlases")
    shape = Shape(int(rows["n_layers"].iloc[0]), int(rows["n_heads"].iloc[0]), int(rows["n_kv_heads"].iloc[0]))
    per_head = {m: _grid(rows[rows["metric"] == m], shape) for m in needed}
    kv = {m: aggregate(grid, shape, aggregation) for m, grid in per_head.items()}
    if rule == "retrieval":
        scores = kv["retrieval_score"]
    elif rule == "sinks":
        scores = 1.0 - kv["sink_score"]
    elif rule == "razor":
        scores = razor_scores(kv["duplicate_token_score"], kv["induction_score"])
    else:
        scores = kv[metric] if direction == "higher" else -kv[metric]
    used = rows[rows["metric"].isin(needed)]
    provenance = {
        "analyzers": sorted(set(used["analyzer"])),
        "probe_hashes": sorted(set(used["probe_hash"])),
        "params": sorted(set(used["params"])),
        "revision": str(used["revision"].iloc[0]),
        "dtype": str(used["dtype"].iloc[0]),
        "backend": str(used["backend"].iloc[0]),
        "n_samples": {m: int(rows[rows["metric"] == m]["n_samples"].max()) for m in needed},
    }
    return Ranking(model, shape, scores, rule, tuple(needed), aggregation, provenance)


def _grid(rows: pd.DataFrame, shape: Shape) -> np.ndarray:
    """[layer, head] values of one metric (NaN where absent); rows of several probe runs are averaged."""
    grid = np.full((shape.n_layers, shape.n_heads), np.nan)
    values = rows.groupby(["layer", "head"])["value"].mean()
    for (layer, head), value in values.items():
        grid[int(layer), int(head)] = value
    return grid


def aggregate(per_head: np.ndarray, shape: Shape, aggregation: str) -> np.ndarray:
    """[layer, head] -> [layer, kv_head] by max or mean over each KV group (NaN heads ignored; all-NaN -> NaN)."""
    grouped = per_head.reshape(shape.n_layers, shape.n_kv_heads, shape.group_size)
    with warnings.catch_warnings():  # an all-NaN group is expected (NaN out), not worth a RuntimeWarning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(grouped, axis=2) if aggregation == "max" else np.nanmean(grouped, axis=2)


def razor_scores(echo: np.ndarray, induction: np.ndarray) -> np.ndarray:
    """max(echo / echo cut, induction / induction cut): >= 1 exactly for golden-stick's union of the top 1% by
    echo and the top 14% by induction (cuts = the values of the last head kept by each)."""
    def cut(values: np.ndarray, share: float) -> float:
        flat = np.sort(np.nan_to_num(values.ravel(), nan=-np.inf))[::-1]
        k = max(1, int(np.ceil(share * flat.size)))
        value = float(flat[k - 1])
        return value if np.isfinite(value) and value > 0 else np.inf

    return np.fmax(np.nan_to_num(echo, nan=-np.inf) / cut(echo, RAZOR_ECHO_TOP),
                   np.nan_to_num(induction, nan=-np.inf) / cut(induction, RAZOR_INDUCTION_TOP))
