"""Figures of the `sinks` analyzer, drawn from the atlas alone: per-layer sink-rate curve, head maps, massive
activations per layer. Each function takes an `Atlas` (or a path to one) and returns a Plotly figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from headscope.atlas import Atlas, read_atlas
from headscope.atlas.tokens import readable_token
from headscope.errors import HeadscopeError

ANALYZER = "sinks"


def _rows(atlas: Atlas | str | Path, model: str | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(head rows, model-level rows) of the sinks analyzer for one model."""
    atlas = read_atlas(atlas) if isinstance(atlas, (str, Path)) else atlas
    heads = atlas.head_rows(model)
    heads = heads[heads["analyzer"] == ANALYZER]
    if heads.empty:
        raise HeadscopeError("this atlas has no sinks rows: scan with `headscope scan MODEL --analyzers sinks`")
    levels = atlas.model_metrics(model)
    return heads, levels[levels["analyzer"] == ANALYZER], str(heads["model"].iloc[0])


def _grid(heads: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = heads[heads["metric"] == metric]
    if rows.empty:
        raise HeadscopeError(f"metric '{metric}' is not among the sinks rows: use one of {sorted(heads['metric'].unique())}")
    return rows.pivot_table(index="layer", columns="head", values="value", aggfunc="first").sort_index()


def sink_rate_curve(atlas: Atlas | str | Path, *, model: str | None = None) -> go.Figure:
    """Per layer: the sink rate (share of heads x samples with alpha_0 > epsilon, Gu et al.) and mean sink score."""
    heads, _, name = _rows(atlas, model)
    rate = _grid(heads, "sink_rate").mean(axis=1)
    score = _grid(heads, "sink_score").mean(axis=1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rate.index, y=rate.values, mode="lines+markers", name="sink rate (alpha_0 > eps)"))
    fig.add_trace(go.Scatter(x=score.index, y=score.values, mode="lines+markers", name="mean first-token score", line={"dash": "dot"}))
    fig.update_layout(title=f"Attention sinks per layer: {name}", xaxis_title="layer", yaxis_title="share / attention",
                      yaxis_range=[0, 1.02], template="plotly_white")
    return fig


def head_map(atlas: Atlas | str | Path, metric: str = "sink_score", *, model: str | None = None) -> go.Figure:
    """Layer x head heat map of one sinks metric (sink_score, sink_rate, hidden_sink_mass, dormant_score, ...)."""
    heads, _, name = _rows(atlas, model)
    grid = _grid(heads, metric)
    fig = go.Figure(go.Heatmap(z=grid.values, x=[str(h) for h in grid.columns], y=list(grid.index), colorscale="Viridis",
                               colorbar={"title": metric}, hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"{metric}: {name}", xaxis_title="head", yaxis_title="layer", template="plotly_white")
    return fig


def massive_activation_curve(atlas: Atlas | str | Path, *, model: str | None = None) -> go.Figure:
    """Per layer: top |activation| of the residual stream over its median (Sun et al.), log scale, and how often the
    top-norm position is the first token."""
    atlas = read_atlas(atlas) if isinstance(atlas, (str, Path)) else atlas
    _, _, name = _rows(atlas, model)
    per_layer = atlas.layer_metrics(model)  # the layer column (older atlases: read from `massive_ratio.L<n>` names)
    massive = per_layer[(per_layer["analyzer"] == ANALYZER) & per_layer["metric"].str.startswith("massive_")]
    if massive.empty:
        raise HeadscopeError("this atlas has no massive-activation rows: rescan with the current sinks analyzer")
    table = massive.pivot_table(index="layer", columns="metric", values="value", aggfunc="first").sort_index()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=table.index, y=table["massive_ratio"], mode="lines+markers", name="max |h| / median |h|"))
    fig.add_trace(go.Scatter(x=table.index, y=table["massive_top_is_first"], mode="lines+markers", yaxis="y2",
                             name="top-norm position is the first token", line={"dash": "dot"}))
    fig.update_layout(title=f"Massive activations entering each layer: {name}", xaxis_title="layer",
                      yaxis={"title": "ratio", "type": "log"},
                      yaxis2={"title": "share", "overlaying": "y", "side": "right", "range": [0, 1.02]},
                      template="plotly_white")
    return fig


def hidden_sink_tokens(atlas: Atlas | str | Path, *, model: str | None = None) -> pd.DataFrame:
    """The hidden-sink tokens the atlas kept: token as readable text (`Ġthe` -> ' the') and share of all
    hidden-sink detections."""
    _, levels, _ = _rows(atlas, model)
    tokens = levels[levels["metric"].str.startswith("hidden_sink_token[")]
    names = [readable_token(name) for name in tokens["metric"].str[len("hidden_sink_token["):-1]]
    out = pd.DataFrame({"token": names, "share": tokens["value"].to_numpy()})
    return out.sort_values("share", ascending=False).reset_index(drop=True)


def save_html(figure: go.Figure, path: str | Path) -> Path:
    """Write a self-contained HTML file (plotly.js inlined: opens offline)."""
    path = Path(path)
    figure.write_html(path, include_plotlyjs=True, full_html=True)
    return path
