"""The atlas explorer: one self-contained HTML page (plotly.js and the data inline, so it opens offline).

A metric picker grouped by analyzer (with each metric's declared meaning and direction), the head map, a role
map, a head card (value and rank in every metric, roles, attention pattern on real tokens) that follows clicks,
model-level results (per-layer ones as curves, the rest a sortable table), and a compare view.
"""

from __future__ import annotations

import html
import json
import math
from importlib.resources import files
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from headscope.atlas import Atlas
from headscope.atlas.tokens import readable_metric
from headscope.atomic import atomic_write_text
from headscope.errors import HeadscopeError
from headscope.viewers.explorer_data import atlas_entry, model_level_frames, single_model

PREFERRED_FIRST = ("induction_score", "previous_token_score", "retrieval_score", "ships_score", "sink_score")


def _static(name: str) -> str:
    return files("headscope.viewers").joinpath("static", name).read_text(encoding="utf-8")


def layer_curves(per_layer: pd.DataFrame, docs: dict) -> go.Figure | None:
    """Per-layer model-level metrics as small multiples (one panel per metric, layer on x), or None."""
    if per_layer.empty:
        return None
    names = list(dict.fromkeys(per_layer["metric"]))
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[html.escape(n) for n in names],
                           vertical_spacing=0.3 / rows, horizontal_spacing=0.08)
    for index, name in enumerate(names):
        block = per_layer[per_layer["metric"] == name].sort_values("layer")
        meaning = next((d["meaning"] for m, d in docs.items() if m.startswith(name + ".L") or m == name), "")
        row, col = index // cols + 1, index % cols + 1
        figure.add_trace(go.Scatter(x=block["layer"], y=block["value"], mode="lines+markers", name=html.escape(name),
                                    showlegend=False, hovertemplate=f"layer %{{x}}: %{{y:.4g}}<extra>{html.escape(meaning)}</extra>"),
                         row=row, col=col)
        values = block["value"].dropna()
        if len(values) and (values > 0).all() and values.max() / max(values.min(), 1e-12) > 100:
            figure.update_yaxes(type="log", row=row, col=col)
        figure.update_xaxes(title_text="layer", row=row, col=col)
    figure.update_layout(height=260 * rows + 60, margin={"t": 50, "l": 60, "r": 20, "b": 40}, template="plotly_white")
    return figure


def model_level_table(scalars: pd.DataFrame) -> str:
    """Scalar model-level rows as an HTML table (the page sorts it on a header click); names escaped."""
    if scalars.empty:
        return '<p class="note">No scalar model-level results.</p>'
    table = scalars.drop(columns=["model"], errors="ignore")  # one model per page: its name is in the title
    table = table.assign(metric=table["metric"].map(readable_metric), value=table["value"].map(lambda v: f"{v:.4g}"))
    return table.to_html(index=False, escape=True, classes="model-level", border=0)


def _provenance(atlas: Atlas) -> str:
    columns = ["model", "revision", "backend", "dtype", "analyzer", "probe_suite", "probe_hash", "headscope_version"]
    return atlas.frame[columns].drop_duplicates().to_html(index=False, escape=True, classes="provenance", border=0)


def render_explorer(atlas: Atlas, compare: Atlas | None = None, *, names: tuple[str, str] | None = None,
                    title: str | None = None) -> str:
    """The explorer page as one HTML string.

    Args:
        atlas: one model's atlas (with exemplars for the pattern panel).
        compare: a second atlas drawn beside it for the picked metric.
        names: how the two atlases are labelled (e.g. their file names); defaults to their model names.
        title: the page title.
    Returns:
        the HTML document, plotly.js inlined once.
    """
    model = single_model(atlas)
    first_name, second_name = names or (model, single_model(compare) if compare is not None else "")
    if compare is not None and first_name == second_name:
        first_name, second_name = f"{first_name} (first)", f"{second_name} (second)"
    data = {"atlas": atlas_entry(atlas, first_name), "compare": atlas_entry(compare, second_name) if compare is not None else None}
    data["initial_metric"] = next((m for m in PREFERRED_FIRST if m in data["atlas"]["metrics"]), None)
    scalars, per_layer = model_level_frames(atlas, model)
    curves = layer_curves(per_layer, atlas.metric_docs)
    curves_html = (pio.to_html(curves, full_html=False, include_plotlyjs=False, div_id="layer-curves",
                               config={"displaylogo": False, "responsive": True}) if curves is not None else "")
    title = title or f"headscope atlas explorer: {model}"
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")  # inert in a script block
    e = html.escape
    compare_html = ""
    if compare is not None:
        compare_html = (f'<h2 id="compare-section">Compare: {e(first_name)} vs {e(second_name)}</h2>'
                        '<p class="note" id="compare-note"></p><div id="compare"></div>')
    return "\n".join([
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_static("explorer.css")}</style>',
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>',
        f"<h1>{e(title)}</h1>",
        f'<p class="sub">{len(atlas.frame)} rows · analyzers {e(", ".join(atlas.analyzers))} · '
        f'{data["atlas"]["n_layers"]} layers × {data["atlas"]["n_heads"]} heads ({data["atlas"]["n_kv_heads"]} KV heads)</p>',
        f"<details><summary>provenance</summary>{_provenance(atlas)}"
        + (f"<h4>compared with</h4>{_provenance(compare)}" if compare is not None else "") + "</details>",
        '<div class="explorer"><div>',
        '<div class="controls"><label for="metric-picker">metric</label><select id="metric-picker"></select></div>',
        '<p class="meaning" id="meaning"></p><div id="head-map"></div><p class="note" id="map-note"></p>',
        '</div><div class="card" id="head-card"><h3 id="card-title"></h3><div id="card-roles"></div>',
        '<div class="controls"><label for="text-picker">pattern on</label><select id="text-picker"></select></div>',
        '<div id="pattern"></div><p class="note" id="pattern-note"></p>',
        '<div class="scroll"><table class="metrics"><thead><tr><th>analyzer</th><th>metric</th><th>value</th><th>rank</th></tr>'
        '</thead><tbody id="card-rows"></tbody></table></div></div></div>',
        compare_html,
        '<h2>Roles</h2><div id="role-map"></div><p class="note" id="role-note"></p>',
        "<h2>Model-level results</h2>",
        '<p class="note">Per-layer results as curves; the rest in a table (click a column header to sort).</p>',
        curves_html,
        f'<div class="scroll">{model_level_table(scalars)}</div>',
        f'<script type="application/json" id="atlas-data">{payload}</script>',
        f"<script>{_static('explorer.js')}</script>",
        "</body></html>",
    ])


def write_explorer(atlas: Atlas, path: str | Path, compare: Atlas | None = None, *,
                   names: tuple[str, str] | None = None) -> Path:
    """Write the explorer atomically to `path`; returns it."""
    if compare is not None and not set(atlas_entry(atlas, "")["metrics"]) & set(atlas_entry(compare, "")["metrics"]):
        raise HeadscopeError("the two atlases share no metric to compare: scan both with the same analyzers")
    return atomic_write_text(path, render_explorer(atlas, compare, names=names))
