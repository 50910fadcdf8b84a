"""Role labels: one table of thresholds, keyed by the metric each analyzer writes.

A head gets a role when its metric passes the threshold (or ranks in the top k). Roles whose metric is
not in the atlas are skipped, so the table can name every analyzer's metric up front. Every metric named here
must match one an analyzer declares (tests/analyzers/test_metric_contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from headscope.atlas import Atlas


@dataclass(frozen=True)
class Role:
    name: str
    metrics: tuple[str, ...]  # the first one present in the atlas is used
    threshold: float | None = None  # value > threshold
    top_k: int | None = None  # or: among the k highest
    source: str = ""  # where the cut comes from
    # and: above this quantile of the model's own heads, for a behaviour most heads of a model share (sinks: in
    # SmolLM2-135M 197 of 270 heads pass Gu et al.'s epsilon; the role marks the strongest quarter, not the norm)
    above_quantile: float | None = None


ROLES: tuple[Role, ...] = (
    Role("retrieval", ("retrieval_score",), threshold=0.1, source="Wu et al. 2024: score > 0.1"),
    Role("sink", ("sink_score",), threshold=0.3, above_quantile=0.75,
         source="Gu et al. 2024 epsilon 0.3, and above the model's 75th-percentile head"),
    Role("dormant", ("is_dormant",), threshold=0.5, source="active-dormant test (docs/analyzers/sinks.md)"),
    Role("select-and-copy", ("qk_accuracy_0shot", "qk_accuracy_3shot"), top_k=5, source="top 5 by QK-score accuracy"),
    Role("safety", ("ships_score",), top_k=10, source="Zhou et al. 2024: top 10 Ships heads"),
    Role("copying", ("maps_copying",), threshold=0.5, source="MAPS copying score > 0.5"),
    Role("induction", ("induction_score",), threshold=0.4, source="induction score > 0.4"),
    Role("previous-token", ("previous_token_score",), threshold=0.5, source="previous-token score > 0.5"),
    Role("duplicate-token", ("duplicate_token_score",), threshold=0.3, source="duplicate-token score > 0.3"),
    Role("lookback", ("lookback_weight",), top_k=5, source="top 5 |detector weight|"),
    Role("function-vector", ("fv_aie",), top_k=10, source="Todd et al. 2024: top 10 heads by AIE (|A| = 10)"),
    Role("truthfulness", ("truth_probe_acc",), top_k=10, source="Li et al. 2023: top heads by probe accuracy (ITI keeps 48)"),
    Role("positional", ("is_positional",), threshold=0.5, source="Voita et al. 2019: one offset takes >= 90% of argmaxes"),
    Role("successor", ("successor_score",), threshold=0.4, source="Gould et al. 2024 (circuits-over-time): score > 0.4"),
    Role("copy-suppression", ("copy_suppression_ov_bottom5",), threshold=0.5,
         source="McDougall et al. 2023 OV bottom-5% share > 0.5 (ours: 10x a random map; GPT-2 L10H7 scores 0.99)"),
)


def _metric_for(role: Role, available: set[str]) -> str | None:
    return next((m for m in role.metrics if m in available), None)


def role_table(atlas: Atlas, model: str | None = None, roles: tuple[Role, ...] = ROLES) -> pd.DataFrame:
    """One row per (layer, head, role) for every head that holds a role, with the metric and value."""
    rows = atlas.head_rows(model)
    available = set(rows["metric"].unique())
    out = []
    for role in roles:
        metric = _metric_for(role, available)
        if metric is None:
            continue
        values = rows[rows["metric"] == metric][["layer", "head", "kv_head", "value"]].dropna()
        if role.top_k is not None:
            chosen = values.reindex(values["value"].abs().sort_values(ascending=False).index).head(role.top_k)
        else:
            cut = role.threshold if role.threshold is not None else float("-inf")
            if role.above_quantile is not None and len(values):
                cut = max(cut, float(values["value"].quantile(role.above_quantile)))
            chosen = values[values["value"] > cut]
        for _, row in chosen.iterrows():
            out.append({"layer": int(row["layer"]), "head": int(row["head"]), "kv_head": int(row["kv_head"]),
                        "role": role.name, "metric": metric, "value": float(row["value"]), "rule": role.source})
    columns = ["layer", "head", "kv_head", "role", "metric", "value", "rule"]
    return pd.DataFrame(out, columns=columns).sort_values(["layer", "head", "role"]).reset_index(drop=True)


def roles_by_head(atlas: Atlas, model: str | None = None) -> dict[tuple[int, int], list[str]]:
    table = role_table(atlas, model)
    labels: dict[tuple[int, int], list[str]] = {}
    for _, row in table.iterrows():
        labels.setdefault((int(row["layer"]), int(row["head"])), []).append(row["role"])
    return labels
