"""Which heads are strongest in a metric, by the direction its analyzer declared: one rule for the explorer, the
terminal summary and the notebook view. A missing value (NaN) is never strong: it ranks last."""

from __future__ import annotations

import numpy as np
import pandas as pd


def is_binary(values: np.ndarray | pd.Series) -> bool:
    """A 0/1 flag: every known value is 0 or 1 (drawn with two colours, listed rather than ranked)."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return finite.size > 0 and bool(np.isin(finite, (0.0, 1.0)).all())


def direction_of(docs: dict[str, dict[str, str]], metric: str, values: np.ndarray | pd.Series) -> str:
    """The declared direction ("higher", "lower", "flag", "neither"); undeclared: "flag" for 0/1 values, else "higher"."""
    return docs.get(metric, {}).get("direction") or ("flag" if is_binary(values) else "higher")


def ranks(values: np.ndarray, direction: str) -> np.ndarray:
    """Rank 1 = strongest ("lower": smallest first); ties share the best rank; NaN stays NaN (ranked last)."""
    series = pd.Series(np.asarray(values, dtype=float).ravel())
    return series.rank(ascending=direction == "lower", method="min", na_option="keep").to_numpy().reshape(np.shape(values))


def strongest(rows: pd.DataFrame, direction: str, k: int) -> pd.DataFrame:
    """The k strongest rows (layer, head, value) by `direction`; flags: the flagged heads in layer order."""
    known = rows.dropna(subset=["value"])
    if direction == "flag":
        return known[known["value"] == 1].sort_values(["layer", "head"]).head(k)
    return known.sort_values(["value", "layer", "head"], ascending=[direction == "lower", True, True]).head(k)
