"""Head-by-head differences between two atlases: which heads changed role between two models or two scans.

The typical question: which heads did fine-tuning turn into safety heads? Diff the tuned model's atlas against
the base's on `ships_score` and read the heads that moved most.
"""

from __future__ import annotations

import pandas as pd

from headscope.atlas.atlas import Atlas
from headscope.errors import HeadscopeError


def diff_atlases(
    after: Atlas, before: Atlas, metric: str, *, after_model: str | None = None, before_model: str | None = None
) -> pd.DataFrame:
    """One row per head: `before`, `after`, `delta` (= after - before) and both ranks, largest |delta| first.

    Ranks are 1 = highest value within each atlas. The two models must have the same heads.
    """
    frames = []
    for label, atlas, model in (("after", after, after_model), ("before", before, before_model)):
        rows = atlas.head_rows(model)
        rows = rows[rows["metric"] == metric]
        if rows.empty:
            raise HeadscopeError(f"metric '{metric}' is not in the {label} atlas: it holds {', '.join(atlas.metrics)}")
        if rows.duplicated(["layer", "head"]).any():
            raise HeadscopeError(f"the {label} atlas holds '{metric}' from several scans of one model: split it first")
        frames.append(rows.set_index(["layer", "head"])["value"].rename(label))
    if set(frames[0].index) != set(frames[1].index):
        raise HeadscopeError("the two atlases have different heads: diff atlases of models with the same shape")
    joined = pd.concat(frames, axis=1)
    joined["delta"] = joined["after"] - joined["before"]
    joined["rank_after"] = joined["after"].rank(ascending=False, method="min")
    joined["rank_before"] = joined["before"].rank(ascending=False, method="min")
    order = joined["delta"].abs().sort_values(ascending=False, kind="stable").index
    return joined.loc[order].reset_index()
