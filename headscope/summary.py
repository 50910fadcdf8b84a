"""The closing summary of a scan: top heads per metric, as a rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from headscope.atlas import Atlas


def summary_table(atlas: Atlas, *, k: int = 5, model: str | None = None) -> Table:
    """Top-k heads of every score metric (std metrics left out), one column per metric."""
    model = model or atlas.models[0]
    metrics = [m for m in atlas.metrics if not m.endswith("_std")]
    table = Table(title=f"top heads: {model}", show_lines=False)
    table.add_column("rank", justify="right")
    for metric in metrics:
        table.add_column(metric)
    tops = {metric: atlas.top(metric, k, model=model) for metric in metrics}
    for rank in range(k):
        cells = [str(rank + 1)]
        for metric in metrics:
            top = tops[metric]
            if rank < len(top):
                row = top.iloc[rank]
                cells.append(f"L{row['layer']}H{row['head']}  {row['value']:.3f}")
            else:
                cells.append("")
        table.add_row(*cells)
    return table


def print_summary(atlas: Atlas, *, k: int = 5, console: Console | None = None) -> None:
    console = console or Console()
    for model in atlas.models:
        console.print(summary_table(atlas, k=k, model=model))
