"""MAPS viewer: which head implements which relation, as a head x relation matrix (reads only the atlas).

The values are the `maps` analyzer's rows `maps_<relation>` (or `maps_<relation>_suppression`): the share of a
relation's (src, dst) pairs whose dst is in the top-k of the head's vocabulary map row M[src]
(Elhelo & Geva 2024). The readable salient mappings live beside the atlas in `<atlas>.maps.json`.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from headscope.atlas import Atlas
from headscope.errors import HeadscopeError

ANALYZER = "maps"
SUFFIX = "_suppression"


def relation_scores(atlas: Atlas, *, model: str | None = None, suppression: bool = False) -> pd.DataFrame:
    """Wide table: index (layer, head), one column per relation, values = MAPS relation (or suppression) scores."""
    rows = atlas.head_rows(model)
    rows = rows[rows["analyzer"] == ANALYZER]
    if rows.empty:
        raise HeadscopeError("this atlas has no MAPS rows: scan with `headscope scan MODEL --analyzers maps`")
    is_supp = rows["metric"].str.endswith(SUFFIX)
    rows = rows[is_supp] if suppression else rows[~is_supp]
    rows = rows.assign(relation=rows["metric"].str.removeprefix("maps_").str.removesuffix(SUFFIX if suppression else ""))
    wide = rows.pivot_table(index=["layer", "head"], columns="relation", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.sort_index()


def relation_matrix(
    atlas: Atlas,
    *,
    model: str | None = None,
    suppression: bool = False,
    min_score: float = 0.0,
    relations: list[str] | None = None,
) -> go.Figure:
    """Heatmap of heads (rows, 'L{layer}H{head}') x relations (columns).

    `min_score` keeps only heads whose best relation reaches it, so a 270-head model shows the heads that matter.
    """
    wide = relation_scores(atlas, model=model, suppression=suppression)
    if relations:
        missing = [r for r in relations if r not in wide.columns]
        if missing:
            raise HeadscopeError(f"relations {missing} are not in this atlas: it holds {', '.join(wide.columns)}")
        wide = wide[relations]
    wide = wide[wide.max(axis=1) >= min_score]
    if wide.empty:
        raise HeadscopeError(f"no head reaches a MAPS score of {min_score}: lower min_score")
    labels = [f"L{layer}H{head}" for layer, head in wide.index]
    kind = "suppression" if suppression else "relation"
    figure = go.Figure(
        go.Heatmap(
            z=wide.to_numpy(),
            x=list(wide.columns),
            y=labels,
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues" if not suppression else "Reds",
            colorbar={"title": "score"},
            hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"MAPS {kind} scores: {atlas.models[0] if model is None else model}",
        xaxis_title="relation",
        yaxis_title="head",
        yaxis={"autorange": "reversed"},
        height=max(400, 14 * len(labels) + 160),
    )
    return figure


def layer_head_grid(atlas: Atlas, relation: str, *, model: str | None = None, suppression: bool = False) -> go.Figure:
    """One relation over the whole model: layers (rows) x heads (columns)."""
    wide = relation_scores(atlas, model=model, suppression=suppression)
    if relation not in wide.columns:
        raise HeadscopeError(f"relation '{relation}' is not in this atlas: it holds {', '.join(wide.columns)}")
    grid = wide[relation].unstack("head")
    figure = go.Figure(
        go.Heatmap(z=grid.to_numpy(), x=[f"H{h}" for h in grid.columns], y=[f"L{layer}" for layer in grid.index],
                   zmin=0.0, zmax=1.0, colorscale="Reds" if suppression else "Blues",
                   hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>")
    )
    figure.update_layout(title=f"MAPS {relation}{' suppression' if suppression else ''}", yaxis={"autorange": "reversed"},
                         xaxis_title="head", yaxis_title="layer")
    return figure
