"""An atlas as a small HTML summary, for notebooks (`Atlas._repr_html_`): every name escaped."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

from headscope.atlas.ranking import direction_of, strongest

if TYPE_CHECKING:
    from headscope.atlas.atlas import Atlas

TOP = 3


def _top_heads(rows: pd.DataFrame, direction: str) -> str:
    if direction == "neither":
        known = rows["value"].dropna()
        return f"{known.min():.3g} .. {known.max():.3g}" if len(known) else "no values"
    best = strongest(rows, direction, TOP)
    if direction == "flag":
        n_flagged = int((rows["value"] == 1).sum())
        return f"{n_flagged} flagged" + (": " + ", ".join(f"L{l}H{h}" for l, h in zip(best["layer"], best["head"]))
                                         if 0 < n_flagged <= TOP else "")
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
                  "top heads": _top_heads(block, direction_of(docs, metric, block["value"]))}
                 for (analyzer, metric), block in heads.groupby(["analyzer", "metric"], sort=True)]
        if table:
            parts.append(pd.DataFrame(table).to_html(index=False, escape=True, border=0))
        levels = len(rows) - len(rows[rows["head"] >= 0])
        if levels:
            parts.append(f"<p>{levels} model-level rows: <code>atlas.scalar_metrics()</code>, "
                         "<code>atlas.layer_metrics()</code></p>")
    return "\n".join(parts)
