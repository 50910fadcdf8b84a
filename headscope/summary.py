"""The closing summary of a scan: top heads per metric, as a rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from headscope.atlas import Atlas
from headscope.terminal import safe


def summary_table(atlas: Atlas, *, k: int = 5, model: str | None = None) -> Table:
    """Top-k heads of every score metric, one column per metric.

    Left out: spreads (`_std`) and orderings (`_rank`, `_member`: a rank or greedy step, smaller is stronger),
    which restate a score column already shown.
    """
    model = model or atlas.models[0]
    metrics = sorted(m for m in atlas.head_rows(model)["metric"].unique() if not m.endswith(("_std", "_rank", "_member")))
    table = Table(title=f"top heads: {safe(model)}", show_lines=False)
    table.add_column("rank", justify="right")
    for metric in metrics:
        table.add_column(safe(metric))
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
        model_rows = atlas.model_metrics(model)
        if not model_rows.empty:
            table = Table(title=f"model-level: {safe(model)}")
            for column in ("analyzer", "metric", "value", "n_samples"):
                table.add_column(column)
            for _, row in model_rows.iterrows():
                table.add_row(safe(row["analyzer"]), safe(row["metric"]), f"{row['value']:.4g}", str(row["n_samples"]))
            console.print(table)
