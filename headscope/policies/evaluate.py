"""Does a KV-cache policy keep needle retrieval working? Accuracy with the policy applied (its streaming heads
windowed in prefill and decoding), next to the full cache, random policies of the same budget, and the
"lowest-scoring heads kept" control; plus the KV cache each would need.

Scoring is the retrieval suite's (`headscope.probes.needle_haystack`): greedy answer, ROUGE-1 recall of the needle's
answer span (`real_needle`), a needle counts as found when recall > 0.5 (the official filter). KV bytes come from
shapes: a full KV head keeps T tokens, a streaming one min(T, sink + window), each token 2 (K and V) x d_head values
of the backend's dtype, over all layers:  bytes = 2 * d_head * itemsize * (n_full * T + n_stream * min(T, sink + window)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from headscope.circuits.attention_window import window_heads
from headscope.circuits.retrieval_masking import needle_accuracy
from headscope.engine import Backend
from headscope.errors import HeadscopeError
from headscope.policies.policy import KVPolicy, check_budget
from headscope.probes import TokenSuite

CONDITIONS = ("full", "atlas", "lowest", "random")


def budget_label(budget: float) -> str:
    """0.25 -> "b25" (percent, as metric names carry it); 0.125 -> "b12.5"."""
    percent = round(budget * 100, 3)
    return f"b{int(percent)}" if percent == int(percent) else f"b{percent:g}"


def kv_cache_bytes(policy: KVPolicy | None, n_tokens: int, *, n_kv_total: int, d_head: int, itemsize: int) -> int:
    """Bytes of K and V over all layers for `n_tokens` tokens; `policy` None = every head full."""
    n_full = n_kv_total if policy is None else len(policy.full)
    kept = n_tokens if policy is None else min(n_tokens, policy.sink + policy.window)
    return 2 * d_head * itemsize * (n_full * n_tokens + (n_kv_total - n_full) * kept)


def check_policy_fits(policy: KVPolicy, backend: Backend, *, model_id: str | None = None) -> None:
    """Refuse a policy made for another model or head layout (one line, before any work)."""
    spec = backend.spec
    shape = policy.shape
    if (shape.n_layers, shape.n_heads, shape.n_kv_heads) != (spec.n_layers, spec.n_heads, spec.n_kv_heads):
        raise HeadscopeError(
            f"the policy is for a {shape.n_layers}-layer model with {shape.n_heads} heads / {shape.n_kv_heads} KV heads, "
            f"this model has {spec.n_layers} / {spec.n_heads} / {spec.n_kv_heads}: make the policy from this model's atlas"
        )
    model_id = model_id or backend.model_id
    if policy.model != model_id:
        raise HeadscopeError(f"the policy was made for '{policy.model}', not '{model_id}': make one from this model's atlas")


def check_lengths(context_lengths: Sequence[int], max_new_tokens: int, n_ctx: int) -> None:
    if not context_lengths:
        raise HeadscopeError("give at least one context length (e.g. --context-lengths 2000,4000)")
    too_long = [n for n in context_lengths if n + max_new_tokens > n_ctx]
    if too_long:
        raise HeadscopeError(f"context lengths {too_long} (+ {max_new_tokens} new tokens) exceed the model's context "
                             f"of {n_ctx}: use shorter --context-lengths")
    if min(context_lengths) < 1:
        raise HeadscopeError("context lengths must be positive token counts")


@dataclass
class PolicyEvaluation:
    """Every (condition, budget, seed, context length) measured: `rows` is the long table behind `table()`."""

    model: str
    rule: str
    sink: int
    window: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def table(self) -> pd.DataFrame:
        """One row per (context length, condition, budget): accuracy and recall (mean over seeds; spread = std
        over random seeds, 0 for the deterministic policies), KV bytes, full KV heads."""
        frame = self.frame()
        grouped = frame.groupby(["context_length", "condition", "budget"], sort=True)
        table = grouped.agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", lambda s: float(np.std(s))),
                            accuracy_min=("accuracy", "min"), accuracy_max=("accuracy", "max"),
                            recall=("recall", "mean"), kv_bytes=("kv_bytes", "mean"), full_kv_heads=("full_kv_heads", "mean"),
                            seeds=("seed", "nunique"), needles=("n_needles", "max")).reset_index()
        table["kv_fraction"] = table["kv_bytes"] / table.groupby("context_length")["kv_bytes"].transform("max")
        table["_order"] = table["condition"].map({c: i for i, c in enumerate(CONDITIONS)})
        table = table.sort_values(["context_length", "_order", "budget"]).drop(columns="_order")
        return table.reset_index(drop=True)

    def figure(self) -> Any:
        """Plotly: needle accuracy vs budget per context length; random as mean with its spread (std)."""
        import plotly.graph_objects as go

        table = self.table()
        fig = go.Figure()
        dashes = {"atlas": "solid", "lowest": "dot", "random": "dash"}
        for length, block in table.groupby("context_length"):
            for condition in ("atlas", "lowest", "random"):
                rows = block[block["condition"] == condition].sort_values("budget")
                if rows.empty:
                    continue
                error = dict(type="data", array=rows["accuracy_std"].tolist(), visible=True) if condition == "random" else None
                fig.add_trace(go.Scatter(x=(rows["budget"] * 100).tolist(), y=rows["accuracy"].tolist(),
                                         mode="lines+markers", name=f"{condition} ({length} tok)", error_y=error,
                                         line=dict(dash=dashes[condition])))
            full = block[block["condition"] == "full"]
            if not full.empty:
                fig.add_trace(go.Scatter(x=[0, 100], y=[float(full["accuracy"].iloc[0])] * 2, mode="lines",
                                         name=f"full cache ({length} tok)", line=dict(color="gray", dash="longdash")))
        fig.update_layout(title=f"{self.model}: needle accuracy vs KV heads kept full ({self.rule} policy, "
                                f"others sink {self.sink} + window {self.window})",
                          xaxis_title="budget: % of KV heads with the full cache", yaxis_title="needle accuracy",
                          yaxis=dict(range=[-0.05, 1.05]))
        return fig

    def metric_values(self) -> dict[str, tuple[float, int]]:
        """Model-level atlas values {metric: (value, n_needles)} (names as `KVPolicyAnalyzer.metrics` declares)."""
        values: dict[str, tuple[float, int]] = {}
        for row in self.table().to_dict("records"):
            label = row["condition"] if row["condition"] == "full" else f"{row['condition']}_{budget_label(row['budget'])}"
            suffix = f"{label}_ctx{row['context_length']}"
            n = int(row["needles"])
            values[f"kv_policy_accuracy_{suffix}"] = (float(row["accuracy"]), n)
            values[f"kv_policy_recall_{suffix}"] = (float(row["recall"]), n)
            values[f"kv_policy_cache_bytes_{suffix}"] = (float(row["kv_bytes"]), n)
            if row["condition"] == "random":
                values[f"kv_policy_accuracy_std_{suffix}"] = (float(row["accuracy_std"]), n)
        return values


def evaluate_policy(
    backend: Backend,
    policy: KVPolicy,
    suites: dict[int, TokenSuite],
    *,
    budgets: Sequence[float] = (),
    random_seeds: Sequence[int] = (0, 1, 2),
    lowest: bool = True,
    include_full: bool = True,
    include_atlas: bool = True,
    max_new_tokens: int = 32,
    stop_token_ids: Sequence[int] = (),
    prefill_chunk: int = 512,
    pass_threshold: float = 0.5,
    model_id: str | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> PolicyEvaluation:
    """Decode every needle prompt of `suites` ({context length: suite}) under each condition and score it.

    `budgets` (fractions of KV heads kept full) cut the policy's ranking again; empty = the policy's own budget.
    `on_result` sees each row as it is measured (progress, partial results on long runs). `include_full`,
    `include_atlas` and `lowest` switch those conditions off (e.g. to add random seeds to an earlier run), and
    the conditions run in passes (full; the policy at every budget; lowest; each random seed) so a run cut
    short still covers every budget.
    """
    check_policy_fits(policy, backend, model_id=model_id)
    budgets = tuple(budgets) or (policy.budget,)
    for budget in budgets:
        check_budget(budget)
    check_lengths(list(suites), max_new_tokens, backend.spec.n_ctx)
    if not random_seeds:
        raise HeadscopeError("give at least one random seed for the random-policy baseline")
    spec = backend.spec
    itemsize = torch.empty((), dtype=backend.dtype).element_size()
    result = PolicyEvaluation(policy.model, policy.rule, policy.sink, policy.window)
    kwargs = dict(max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids, prefill_chunk=prefill_chunk,
                  pass_threshold=pass_threshold)

    def measure(length: int, suite: TokenSuite, condition: str, budget: float, seed: int | None,
                chosen: KVPolicy | None) -> None:
        if chosen is None:
            recall, accuracy, runs = needle_accuracy(backend, suite, **kwargs)
        else:
            with window_heads(backend, chosen.streaming, sink=chosen.sink, window=chosen.window):
                recall, accuracy, runs = needle_accuracy(backend, suite, **kwargs)
        row = {"context_length": length, "condition": condition, "budget": budget, "seed": seed,
               "accuracy": accuracy, "recall": recall, "n_needles": len(runs),
               "full_kv_heads": spec.n_layers * spec.n_kv_heads if chosen is None else len(chosen.full),
               "kv_bytes": kv_cache_bytes(chosen, length, n_kv_total=spec.n_layers * spec.n_kv_heads,
                                          d_head=spec.d_head, itemsize=itemsize),
               "responses": [r.response for r in runs]}
        result.rows.append(row)
        if on_result is not None:
            on_result(row)

    for length, suite in suites.items():
        if include_full:
            measure(length, suite, "full", 1.0, None, None)
        for budget in budgets if include_atlas else ():
            measure(length, suite, "atlas", budget, None, policy.at_budget(budget))
        for budget in budgets if lowest else ():
            measure(length, suite, "lowest", budget, None, policy.lowest(budget))
        for seed in random_seeds:
            for budget in budgets:
                measure(length, suite, "random", budget, seed, policy.random(budget, seed))
    return result
