"""An atlas as a small HTML summary, for notebooks (`Atlas._repr_html_`): every name escaped."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from headscope.atlas.atlas import Atlas

TOP = 3


def _top_heads(rows: pd.DataFrame, direction: str) -> str:
    known = rows.dropna(subset=["value"])
    if direction == "flag":
        flagged = known[known["value"] == 1]
        return f"{len(flagged)} flagged" + (": " + ", ".join(f"L{l}H{h}" for l, h in zip(flagged["layer"], flagged["head"]))
                                            if 0 < len(flagged) <= TOP else "")
    if direction == "neither":
        return f"{known['value'].min():.3g} .. {known['value'].max():.3g}" if len(known) else "no values"
    best = known.sort_values(["value", "layer", "head"], ascending=[direction == "lower", True, True]).head(TOP)
    return ", ".join(f"L{l}H{h} ({v:.3g})" for l, h, v in zip(best["layer"], best["head"], best["value"]))


def atlas_html(atlas: Atlas) -> str:
    """Per model: shape and row count; a table of analyzer, metric, meaning and its top heads."""
    parts = [f"<p><b>headscope Atlas</b>: {len(atlas.frame)} rows, {len(atlas.models)} model(s)"
             + (", with exemplars" if atlas.exemplars is not None else "") + "</p>"]
    docs = atlas.metric_docs
    for model in atlas.models:
        rows = atlas.frame[(atlas.frame["model"] == model)]
        first = rows.iloc[0]
        parts.append(f"<p><b>{html.escape(model)}</b>: {int(first['n_layers'])} layers x {int(first['n_heads'])} heads "
                     f"({int(first['n_kv_heads'])} KV heads), {len(rows)} rows</p>")
        heads = rows[(rows["head"] >= 0) & ~rows["metric"].str.endswith("_std")]
        table = [{"analyzer": analyzer, "metric": metric, "meaning": docs.get(metric, {}).get("meaning", ""),
                  "top heads": _top_heads(block, docs.get(metric, {}).get("direction", "higher"))}
                 for (analyzer, metric), block in heads.groupby(["analyzer", "metric"], sort=True)]
        if table:
            parts.append(pd.DataFrame(table).to_html(index=False, escape=True, border=0))
        levels = len(rows) - len(rows[rows["head"] >= 0])
        if levels:
            parts.append(f"<p>{levels} model-level rows: <code>atlas.scalar_metrics()</code>, "
                         "<code>atlas.layer_metrics()</code></p>")
    return "\n".join(parts)
