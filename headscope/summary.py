"""The terminal summary of an atlas (`headscope show`, and after `scan`): long format that fits 80 columns.

One block per analyzer: each per-head metric is a row with its top-k heads (by the declared direction; 0/1 flags
list the flagged heads), then the analyzer's model-level results: per-layer ones as a sparkline with min and max,
families such as `hidden_sink_token[...]` as their top entries, the rest as name = value. `full=True` (`show --all`)
lists every model-level row instead.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from headscope.atlas import Atlas
from headscope.atlas.ranking import direction_of, strongest
from headscope.atlas.tokens import readable_metric, readable_token
from headscope.terminal import printable, safe

SPARKS = "▁▂▃▄▅▆▇█"
ARROWS = {"higher": "↑", "lower": "↓", "flag": "0/1", "neither": "·"}
FAMILY = re.compile(r"^(?P<base>[^\[]+)\[(?P<key>.*)\]$")
MAX_SCALARS = 8  # model-level rows shown per analyzer before "+N more (headscope show --all)"


def _value(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled min..max (NaN as a space); log scale when values span 100x or more."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return " " * len(array)
    if (finite > 0).all() and finite.max() / finite.min() >= 100:
        array, finite = np.log10(array), np.log10(finite)
    low, high = finite.min(), finite.max()
    scaled = array * 0.0 if high == low else (array - low) / (high - low)  # NaN stays NaN
    return "".join(" " if not np.isfinite(v) else SPARKS[min(int(v * len(SPARKS)), len(SPARKS) - 1)] for v in scaled)


def _top_heads(rows: pd.DataFrame, direction: str, k: int) -> str:
    """`L18H7:0.915  L18H6:0.897 ...`; flags: the flagged heads; NaN never listed as top."""
    known = rows.dropna(subset=["value"])
    missing = len(rows) - len(known)
    tail = f"  ({missing} without a value)" if missing else ""
    if direction == "neither":
        return f"range {_value(known['value'].min())} .. {_value(known['value'].max())}, median {_value(known['value'].median())}{tail}"
    best = strongest(rows, direction, k)
    if direction == "flag":
        n_flagged = int((known["value"] == 1).sum())
        heads = " ".join(f"L{l}H{h}" for l, h in zip(best["layer"], best["head"]))
        more = f" +{n_flagged - k}" if n_flagged > k else ""
        return f"{n_flagged} of {len(known)} flagged: {heads}{more}{tail}" if n_flagged else f"none flagged{tail}"
    # "L18H7:0.915": one word, so a narrow terminal wraps between heads, never inside one
    return "  ".join(f"L{l}H{h}:{_value(v)}" for l, h, v in zip(best["layer"], best["head"], best["value"])) + tail


def head_block(atlas: Atlas, model: str, analyzer: str, k: int) -> Table | None:
    """Rows: metric (with its direction) and its top-k heads; spreads (`_std`) left out."""
    rows = atlas.head_rows(model)
    rows = rows[(rows["analyzer"] == analyzer) & (rows["head"] >= 0) & ~rows["metric"].str.endswith("_std")]
    if rows.empty:
        return None
    docs = atlas.metric_docs
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("metric", no_wrap=True, max_width=32, overflow="ellipsis")
    table.add_column("", no_wrap=True)
    table.add_column(f"top {k} heads", overflow="fold")
    for metric, block in rows.groupby("metric", sort=True):
        direction = direction_of(docs, metric, block["value"])
        table.add_row(safe(metric), ARROWS[direction], _top_heads(block, direction, k))
    return table


def model_block(atlas: Atlas, model: str, analyzer: str, *, full: bool) -> Table | None:
    """Per-layer metrics as sparklines; `name[key]` families as their top entries; scalars as name = value."""
    per_layer = atlas.layer_metrics(model)
    per_layer = per_layer[per_layer["analyzer"] == analyzer]
    scalars = atlas.scalar_metrics(model)
    scalars = scalars[scalars["analyzer"] == analyzer]
    if per_layer.empty and scalars.empty:
        return None
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("name", no_wrap=True, max_width=34, overflow="ellipsis")
    table.add_column("value", overflow="fold")
    for base, block in per_layer.groupby("metric", sort=True):
        block = block.sort_values("layer")
        if full:
            for layer, value in zip(block["layer"].astype(int), block["value"]):
                table.add_row(f"{safe(base)} L{layer}", _value(value))
            continue
        if block["value"].isna().all():
            table.add_row(safe(base), "no values")
            continue
        low, high = block.loc[block["value"].idxmin()], block.loc[block["value"].idxmax()]
        table.add_row(safe(base), Text(sparkline(block["value"].tolist())) + Text(
            f"  {_value(low['value'])} (L{int(low['layer'])}) .. {_value(high['value'])} (L{int(high['layer'])})"))
    families = scalars["metric"].str.extract(FAMILY)
    if full:
        for metric, value in zip(scalars["metric"], scalars["value"]):
            table.add_row(safe(readable_metric(metric)), _value(value))
        return table
    for base, block in scalars[families["base"].notna()].groupby(families["base"], sort=True):
        keys = families.loc[block.index, "key"]
        top = block.assign(key=keys).sort_values("value", ascending=False).head(3)
        table.add_row(f"{safe(base)}[...]", safe(", ".join(f"{readable_token(key)!r} {_value(v)}" for key, v in zip(top["key"], top["value"])))
                      + (f" (+{len(block) - 3})" if len(block) > 3 else ""))
    plain = scalars[families["base"].isna()]
    for metric, value in zip(plain["metric"].head(MAX_SCALARS), plain["value"].head(MAX_SCALARS)):
        table.add_row(safe(metric), _value(value))
    if len(plain) > MAX_SCALARS:
        table.add_row(f"+{len(plain) - MAX_SCALARS} more", "headscope show ATLAS --all")
    return table


def print_summary(atlas: Atlas, *, k: int = 5, console: Console | None = None, full: bool = False) -> None:
    """Print the summary of every model in the atlas.

    Args:
        atlas: the atlas to summarise.
        k: heads listed per metric.
        console: where to print (a fresh rich Console by default: the terminal's width).
        full: every model-level row instead of sparklines and top entries (`headscope show --all`).
    """
    console = console or Console()
    for model in atlas.models:
        first = atlas.frame[atlas.frame["model"] == model].iloc[0]
        console.print(Text(f"{printable(model)}: {int(first['n_layers'])} layers x {int(first['n_heads'])} heads "
                           f"({int(first['n_kv_heads'])} KV heads)", style="bold"))
        console.print(Text("↑ higher = stronger, ↓ lower = stronger, 0/1 flag, · no direction", style="dim"))
        for analyzer in sorted(atlas.frame.loc[atlas.frame["model"] == model, "analyzer"].unique()):
            console.rule(Text(printable(analyzer), style="bold"), align="left")
            heads = head_block(atlas, model, analyzer, k)
            if heads is not None:
                console.print(heads)
            levels = model_block(atlas, model, analyzer, full=full)
            if levels is not None:
                console.print(Text("model-level", style="italic"))
                console.print(levels)
