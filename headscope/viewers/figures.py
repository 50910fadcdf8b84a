"""Plotly figures of an atlas. They read only the atlas: no model, no torch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from headscope.atlas import Atlas
from headscope.errors import HeadscopeError
from headscope.atlas.ranking import is_binary
from headscope.viewers.explorer_data import ROLE_COLOURS
from headscope.viewers.roles import ROLES, role_table, roles_by_head


def _shape(atlas: Atlas, model: str | None) -> tuple[str, int, int, int]:
    rows = atlas.head_rows(model)
    if rows.empty:
        raise HeadscopeError("this atlas has no per-head rows to draw")
    first = rows.iloc[0]
    return str(first["model"]), int(first["n_layers"]), int(first["n_heads"]), int(first["n_kv_heads"])


def score_metrics(atlas: Atlas, model: str | None = None) -> list[str]:
    """Metrics worth a map: per-head, not a standard deviation."""
    return sorted(m for m in atlas.head_rows(model)["metric"].unique() if not m.endswith("_std"))


def metric_grid(atlas: Atlas, metric: str, model: str | None = None) -> np.ndarray:
    """[layer, head] array of `metric` (NaN where missing)."""
    _, n_layers, n_heads, _ = _shape(atlas, model)
    rows = atlas.head_rows(model)
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        raise HeadscopeError(f"metric '{metric}' is not in this atlas: it holds {', '.join(score_metrics(atlas, model))}")
    grid = np.full((n_layers, n_heads), np.nan)
    grid[rows["layer"].to_numpy(), rows["head"].to_numpy()] = rows["value"].to_numpy()
    return grid


def _hover_text(atlas: Atlas, model: str | None) -> np.ndarray:
    """Per head: every metric of every analyzer, and its roles, as hover text."""
    _, n_layers, n_heads, n_kv = _shape(atlas, model)
    group = n_heads // n_kv
    wide = atlas.to_frame(model)
    roles = roles_by_head(atlas, model)
    text = np.empty((n_layers, n_heads), dtype=object)
    metrics = score_metrics(atlas, model)
    for layer in range(n_layers):
        for head in range(n_heads):
            lines = [f"<b>L{layer}H{head}</b> (kv head {head // group})"]
            if (layer, head) in wide.index:
                row = wide.loc[(layer, head)]
                lines += [f"{m}: {row[m]:.4g}" for m in metrics if m in row and pd.notna(row[m])]
            if roles.get((layer, head)):
                lines.append("roles: " + ", ".join(roles[(layer, head)]))
            text[layer, head] = "<br>".join(lines)
    return text


def head_map(atlas: Atlas, metric: str, model: str | None = None, *, colorscale: str = "Viridis") -> go.Figure:
    """Layer x head heatmap of one metric; hover shows the head in every analyzer; KV groups marked."""
    name, n_layers, n_heads, n_kv = _shape(atlas, model)
    grid = metric_grid(atlas, metric, model)
    scale: dict = {"colorscale": colorscale, "colorbar": {"title": metric}}
    if is_binary(grid):  # a 0/1 flag: two categorical colours, not a continuous bar
        scale = {"colorscale": [[0, "#c6dbef"], [0.5, "#c6dbef"], [0.5, "#d62728"], [1, "#d62728"]], "zmin": 0, "zmax": 1,
                 "colorbar": {"title": metric, "tickvals": [0.25, 0.75], "ticktext": ["0: no", "1: yes"]}}
    figure = go.Figure(
        go.Heatmap(z=grid, x=list(range(n_heads)), y=list(range(n_layers)), text=_hover_text(atlas, model),
                   hovertemplate="%{text}<extra></extra>", **scale)
    )
    group = n_heads // n_kv
    if 1 < group < n_heads:
        for boundary in range(group, n_heads, group):
            figure.add_vline(x=boundary - 0.5, line={"color": "white", "width": 2, "dash": "dot"})
    figure.update_layout(title=f"{metric} — {name}" + (f" (KV groups of {group})" if group > 1 else ""),
                         xaxis_title="head", yaxis_title="layer", height=max(320, 18 * n_layers + 140))
    figure.update_yaxes(autorange="reversed")  # layer 0 at the top, as in TransformerLens plots
    return figure


def layer_profile(atlas: Atlas, metric: str, model: str | None = None) -> go.Figure:
    """Per-layer max and mean of a metric (e.g. sink rate by layer)."""
    name, n_layers, _, _ = _shape(atlas, model)
    grid = metric_grid(atlas, metric, model)
    layers = list(range(n_layers))
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=layers, y=np.nanmax(grid, axis=1), mode="lines+markers", name="max over heads"))
    figure.add_trace(go.Scatter(x=layers, y=np.nanmean(grid, axis=1), mode="lines+markers", name="mean over heads"))
    figure.update_layout(title=f"{metric} by layer — {name}", xaxis_title="layer", yaxis_title=metric, height=360)
    return figure


def rank_plot(atlas: Atlas, metric: str, model: str | None = None) -> go.Figure:
    """Heads sorted by a metric: how many stand out."""
    top = atlas.top(metric, k=len(atlas.head_rows(model)), model=model).dropna(subset=["value"])
    labels = [f"L{l}H{h}" for l, h in zip(top["layer"], top["head"])]
    figure = go.Figure(go.Scatter(x=list(range(1, len(top) + 1)), y=top["value"], mode="markers", text=labels,
                                  hovertemplate="%{text}: %{y:.4g}<extra></extra>"))
    figure.update_layout(title=f"{metric}: heads by rank", xaxis_title="rank", yaxis_title=metric, height=340)
    return figure


def metric_scatter(atlas: Atlas, x: str, y: str, model: str | None = None) -> go.Figure:
    """One point per head, two metrics against each other."""
    wide = atlas.to_frame(model)
    for metric in (x, y):
        if metric not in wide.columns:
            raise HeadscopeError(f"metric '{metric}' is not in this atlas: it holds {', '.join(score_metrics(atlas, model))}")
    labels = [f"L{l}H{h}" for l, h in wide.index]
    figure = go.Figure(go.Scatter(x=wide[x], y=wide[y], mode="markers", text=labels,
                                  marker={"color": [l for l, _ in wide.index], "colorscale": "Viridis", "colorbar": {"title": "layer"}},
                                  hovertemplate="%{text}<br>" + x + ": %{x:.4g}<br>" + y + ": %{y:.4g}<extra></extra>"))
    figure.update_layout(title=f"{y} vs {x}", xaxis_title=x, yaxis_title=y, height=420)
    return figure


def head_card(atlas: Atlas, layer: int, head: int, model: str | None = None) -> go.Figure:
    """One head across every analyzer: value, rank among all heads, and its roles."""
    name, n_layers, n_heads, n_kv = _shape(atlas, model)
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise HeadscopeError(f"L{layer}H{head} is outside {name} ({n_layers} layers x {n_heads} heads)")
    rows = atlas.head_rows(model)
    metrics, values, ranks, analyzers = [], [], [], []
    for (analyzer, metric), block in rows.groupby(["analyzer", "metric"], sort=True):
        if metric.endswith("_std"):
            continue
        mine = block[(block["layer"] == layer) & (block["head"] == head)]
        if mine.empty:
            continue
        value = float(mine["value"].iloc[0])
        ranked = block["value"].notna().sum()  # a head without a value ranks last, never first
        rank = f"{int((block['value'] > value).sum()) + 1} / {ranked}" if not np.isnan(value) else "last (no value)"
        analyzers.append(analyzer)
        metrics.append(metric)
        values.append(f"{value:.4g}")
        ranks.append(rank)
    roles = roles_by_head(atlas, model).get((layer, head), [])
    figure = go.Figure(go.Table(header={"values": ["analyzer", "metric", "value", "rank"]},
                                cells={"values": [analyzers, metrics, values, ranks]}))
    group = n_heads // n_kv
    figure.update_layout(title=f"L{layer}H{head} of {name} — kv head {head // group}; roles: {', '.join(roles) or 'none'}",
                         height=120 + 28 * max(1, len(metrics)))
    return figure


def role_summary(atlas: Atlas, model: str | None = None) -> go.Figure:
    """Each head's roles: one colour per role (a marker per head and role, side by side when a head has several)."""
    name, n_layers, n_heads, _ = _shape(atlas, model)
    table = role_table(atlas, model)
    held = table.groupby(["layer", "head"])["role"].apply(list).to_dict()
    figure = go.Figure()
    for role, colour in zip(ROLES, ROLE_COLOURS):
        mine = table[table["role"] == role.name]
        if mine.empty:
            continue
        xs, labels = [], []
        for layer, head in zip(mine["layer"], mine["head"]):
            roles = held[(layer, head)]
            xs.append(head + (roles.index(role.name) - (len(roles) - 1) / 2) * 0.7 / len(roles))
            labels.append(f"L{layer}H{head}: {', '.join(roles)}")
        figure.add_trace(go.Scatter(x=xs, y=mine["layer"], mode="markers", name=f"{role.name} ({len(mine)})", text=labels,
                                    hovertemplate="%{text}<extra></extra>", marker={"symbol": "square", "size": 9, "color": colour}))
    figure.update_layout(title=f"roles — {name}", height=max(380, 18 * n_layers + 140), legend_title_text="role (heads)",
                         xaxis={"title": "head", "range": [-0.5, n_heads - 0.5], "dtick": 1},
                         yaxis={"title": "layer", "range": [n_layers - 0.5, -0.5]})
    return figure


def model_level_table(atlas: Atlas, model: str | None = None) -> go.Figure | None:
    """Model-level numbers (baselines, detector scores), or None when the atlas has none."""
    rows = atlas.model_metrics(model)
    if rows.empty:
        return None
    names = [f"{m} L{layer}" if layer >= 0 else m for m, layer in zip(rows["metric"], rows["layer"])]  # per-layer rows
    figure = go.Figure(go.Table(header={"values": ["analyzer", "metric", "value", "n_samples"]},
                                cells={"values": [rows["analyzer"], names, [f"{v:.4g}" for v in rows["value"]], rows["n_samples"]]}))
    figure.update_layout(title="model-level results", height=120 + 28 * len(rows))
    return figure


def compare_map(first: Atlas, second: Atlas, metric: str, *, first_model: str | None = None,
                second_model: str | None = None, names: tuple[str, str] | None = None) -> go.Figure:
    """Two atlases side by side and their difference. Different shapes are compared by normalised depth.

    `names` label the panels (e.g. file names); by default the model names, told apart when equal.
    """
    a_name, a_layers, a_heads, _ = _shape(first, first_model)
    b_name, b_layers, b_heads, _ = _shape(second, second_model)
    a, b = metric_grid(first, metric, first_model), metric_grid(second, metric, second_model)
    a_label, b_label = names or ((a_name, b_name) if a_name != b_name else (f"{a_name} (first)", f"{b_name} (second)"))
    if (a_layers, a_heads) == (b_layers, b_heads):
        figure = make_subplots(rows=1, cols=3, subplot_titles=(a_label, b_label, "difference (left - middle)"),
                               horizontal_spacing=0.11)
        scale = dict(zmin=float(np.nanmin([np.nanmin(a), np.nanmin(b)])), zmax=float(np.nanmax([np.nanmax(a), np.nanmax(b)])))
        figure.add_trace(go.Heatmap(z=a, colorscale="Viridis", showscale=False, **scale), row=1, col=1)
        figure.add_trace(go.Heatmap(z=b, colorscale="Viridis", colorbar={"x": 0.655, "len": 0.9, "thickness": 12, "title": metric},
                                    **scale), row=1, col=2)
        limit = float(np.nanmax(np.abs(a - b))) or 1.0
        figure.add_trace(go.Heatmap(z=a - b, colorscale="RdBu", zmid=0, zmin=-limit, zmax=limit,
                                    colorbar={"x": 1.0, "len": 0.9, "thickness": 12, "title": "left - middle"}), row=1, col=3)
        figure.update_xaxes(title_text="head")
        figure.update_yaxes(title_text="layer", autorange="reversed")
        figure.update_layout(title=f"{metric}: {a_label} vs {b_label}", height=max(360, 18 * a_layers + 140))
        return figure
    # different shapes: per-layer max and mean against depth / (n_layers - 1)
    figure = go.Figure()
    for label, grid, n_layers in ((a_label, a, a_layers), (b_label, b, b_layers)):
        depth = np.arange(n_layers) / max(n_layers - 1, 1)
        figure.add_trace(go.Scatter(x=depth, y=np.nanmax(grid, axis=1), mode="lines+markers", name=f"{label} max"))
        figure.add_trace(go.Scatter(x=depth, y=np.nanmean(grid, axis=1), mode="lines", line={"dash": "dot"}, name=f"{label} mean"))
    figure.update_layout(title=f"{metric} by normalised depth: {a_label} vs {b_label}", xaxis_title="layer / (n_layers - 1)",
                         yaxis_title=metric, height=400)
    return figure
