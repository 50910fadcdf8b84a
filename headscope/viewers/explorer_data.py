"""What the explorer page shows, as one JSON-able dict per atlas: metrics with meanings, values and ranks; roles;
exemplar patterns. Computed here in pandas so the page's script only draws."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from headscope.atlas import Atlas
from headscope.atlas.ranking import direction_of, is_binary, ranks
from headscope.errors import HeadscopeError
from headscope.viewers.roles import ROLES, role_table

# one colour per role, in ROLES order (categorical: a head's colour says which role, not how many)
ROLE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def shape_of(atlas: Atlas, model: str) -> tuple[int, int, int]:
    """(n_layers, n_heads, n_kv_heads) of one model of the atlas."""
    rows = atlas.head_rows(model)
    if rows.empty:
        raise HeadscopeError("this atlas has no per-head rows to draw: scan with a per-head analyzer such as classic")
    first = rows.iloc[0]
    return int(first["n_layers"]), int(first["n_heads"]), int(first["n_kv_heads"])


def single_model(atlas: Atlas) -> str:
    if len(atlas.models) != 1:
        raise HeadscopeError(f"the explorer shows one model per atlas; this one holds {', '.join(atlas.models)}: "
                             "split it first (Atlas.frame[Atlas.frame.model == ...])")
    return atlas.models[0]


def per_head_metrics(atlas: Atlas, model: str) -> pd.DataFrame:
    """Rows about single heads, spreads (`_std`) left out: they restate a score already shown."""
    rows = atlas.head_rows(model)
    rows = rows[(rows["head"] >= 0) & ~rows["metric"].str.endswith("_std")]
    if rows.duplicated(["metric", "layer", "head"]).any():
        raise HeadscopeError("this atlas holds one metric from several scans of the same model: split it first")
    return rows


def _json_grid(grid: np.ndarray, digits: int = 6) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else round(float(v), digits) for v in row] for row in grid]


def metric_entries(atlas: Atlas, model: str, n_layers: int, n_heads: int) -> tuple[list[dict], dict[str, dict]]:
    """([{analyzer, metrics}] in analyzer order, {metric: meaning, direction, values, ranks, ...})."""
    rows = per_head_metrics(atlas, model)
    docs = atlas.metric_docs
    groups: dict[str, list[str]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for (analyzer, metric), block in rows.groupby(["analyzer", "metric"], sort=True):
        grid = np.full((n_layers, n_heads), np.nan)
        grid[block["layer"].to_numpy(), block["head"].to_numpy()] = block["value"].to_numpy()
        doc = docs.get(metric, {})
        binary = is_binary(grid)
        direction = direction_of(docs, str(metric), grid)
        groups.setdefault(str(analyzer), []).append(str(metric))
        entries[str(metric)] = {
            "analyzer": str(analyzer), "meaning": doc.get("meaning", ""), "direction": direction, "binary": binary,
            "values": _json_grid(grid), "ranks": _json_grid(ranks(grid, direction), 0),
            "n_values": int(np.isfinite(grid).sum()), "n_nan": int(np.isnan(grid).sum()),
        }
    return [{"analyzer": a, "metrics": ms} for a, ms in groups.items()], entries


def role_entries(atlas: Atlas, model: str) -> dict[str, Any]:
    """Roles present in this atlas, each with its colour and rule, and the heads holding it."""
    table = role_table(atlas, model)
    out = []
    for role, colour in zip(ROLES, ROLE_COLOURS):
        mine = table[table["role"] == role.name]
        if mine.empty:
            continue
        out.append({"name": role.name, "colour": colour, "rule": role.source, "metric": str(mine["metric"].iloc[0]),
                    "heads": [[int(l), int(h)] for l, h in zip(mine["layer"], mine["head"])]})
    return {"roles": out}


def exemplar_entries(atlas: Atlas, model: str) -> dict[str, Any] | None:
    """Per text: its tokens and, per head "L,H", the causal triangle row by row (weights x 1000, rounded)."""
    if atlas.exemplars is None:
        return None
    table = atlas.exemplars[atlas.exemplars["model"] == model]
    if table.empty:
        return None
    texts: dict[str, Any] = {}
    for text, block in table.groupby("text", sort=False):
        block = block.sort_values(["layer", "head", "query", "key"])
        first = block[(block["layer"] == block["layer"].iloc[0]) & (block["head"] == block["head"].iloc[0])]
        tokens = first.drop_duplicates("key").sort_values("key")["key_token"].tolist()
        patterns = {f"{l},{h}": np.rint(head_block["weight"].to_numpy() * 1000).astype(int).tolist()
                    for (l, h), head_block in block.groupby(["layer", "head"], sort=False)}
        texts[str(text)] = {"tokens": [str(t) for t in tokens], "patterns": patterns}
    return texts


def atlas_entry(atlas: Atlas, label: str) -> dict[str, Any]:
    """Everything the page needs about one atlas."""
    model = single_model(atlas)
    n_layers, n_heads, n_kv = shape_of(atlas, model)
    groups, metrics = metric_entries(atlas, model, n_layers, n_heads)
    return {"label": label, "model": model, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv,
            "groups": groups, "metrics": metrics, **role_entries(atlas, model),
            "exemplars": exemplar_entries(atlas, model)}


def model_level_frames(atlas: Atlas, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scalar rows, per-layer rows with a `layer` column) of one model: a table and curves."""
    return atlas.scalar_metrics(model), atlas.layer_metrics(model)
