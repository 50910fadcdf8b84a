"""One self-contained HTML report of an atlas (plotly.js embedded once: it renders with no network)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from headscope.atlas import Atlas
from headscope.atomic import atomic_write_text
from headscope.errors import HeadscopeError
from headscope.viewers.figures import (
    compare_map,
    head_card,
    head_map,
    layer_profile,
    model_level_table,
    role_summary,
    score_metrics,
)

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
table.provenance { border-collapse: collapse; font-size: 13px; } table.provenance td, table.provenance th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
.figure { margin: 12px 0 24px; } nav a { margin-right: 12px; }
"""


def report_figures(atlas: Atlas, compare: Atlas | None = None) -> list[tuple[str, str, go.Figure]]:
    """(section, title, figure) triples of the report, in order."""
    model = atlas.models[0] if len(atlas.models) == 1 else None
    if model is None:
        raise HeadscopeError(f"the report shows one model; this atlas holds {', '.join(atlas.models)}: split it first")
    out: list[tuple[str, str, go.Figure]] = [("roles", "role summary", role_summary(atlas, model))]
    table = model_level_table(atlas, model)
    if table is not None:
        out.append(("model-level", "model-level results", table))
    for metric in score_metrics(atlas, model):
        out.append((metric, f"{metric}: head map", head_map(atlas, metric, model)))
        out.append((metric, f"{metric}: by layer", layer_profile(atlas, metric, model)))
        best = atlas.top(metric, 1, model=model).iloc[0]
        out.append((metric, f"{metric}: strongest head", head_card(atlas, int(best["layer"]), int(best["head"]), model)))
    if compare is not None:
        shared = sorted(set(score_metrics(atlas, model)) & set(score_metrics(compare, compare.models[0])))
        if not shared:
            raise HeadscopeError("the two atlases share no metric to compare: scan both with the same analyzers")
        for metric in shared:
            out.append((f"compare: {metric}", f"compare {metric}", compare_map(atlas, compare, metric, second_model=compare.models[0])))
    return out


def _provenance_html(atlas: Atlas) -> str:
    columns = ["model", "revision", "backend", "dtype", "analyzer", "probe_suite", "probe_hash", "headscope_version"]
    rows = atlas.frame[columns].drop_duplicates()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows.itertuples(index=False))
    return f'<table class="provenance"><tr>{head}</tr>{body}</table>'


def render_report(atlas: Atlas, compare: Atlas | None = None, *, title: str | None = None) -> str:
    figures = report_figures(atlas, compare)
    title = title or f"headscope atlas: {', '.join(atlas.models)}"
    sections: dict[str, list[str]] = {}
    for index, (section, caption, figure) in enumerate(figures):
        div = pio.to_html(figure, full_html=False, include_plotlyjs=(index == 0), div_id=f"figure-{index}",
                          config={"displaylogo": False, "responsive": True})
        sections.setdefault(section, []).append(f'<div class="figure" title="{html.escape(caption)}">{div}</div>')
    nav = " ".join(f'<a href="#{html.escape(name)}">{html.escape(name)}</a>' for name in sections)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>',
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(atlas.frame)} rows; metrics: {html.escape(', '.join(score_metrics(atlas, atlas.models[0])))}</p>",
        _provenance_html(atlas) + (("<h3>compared with</h3>" + _provenance_html(compare)) if compare is not None else ""),
        f"<nav>{nav}</nav>",
    ]
    for name, divs in sections.items():
        parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>')
        parts.extend(divs)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(atlas: Atlas, path: str | Path, compare: Atlas | None = None) -> Path:
    """Write the report atomically to `path`; returns it."""
    return atomic_write_text(path, render_report(atlas, compare))
