"""The Atlas: a long-format table of per-head measurements with provenance, and the queries people run on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from headscope.atlas.exemplars import exemplar_path, read_exemplars, write_exemplars
from headscope.atlas.io import frame_to_table, read_table, write_table
from headscope.atlas.schema import COLUMNS, ROW_KEY, SCHEMA_VERSION
from headscope.errors import HeadscopeError

# merge: values of one provenance this close are the same measurement (thread counts and Ray differ by ~1e-6)
MERGE_RTOL, MERGE_ATOL = 1e-5, 1e-6


_PER_LAYER = r"^(?P<base>.+)\.L(?P<layer>\d+)$"  # older model-level rows: one metric per layer, layer in the name


class Atlas:
    """What every head of one or more models does. Viewers and users see only this.

    Attributes:
        frame: the long rows (one per model, analyzer, metric, layer, head), provenance on every row.
        metadata: provenance summary and `metric_docs` (each metric's declared meaning and direction).
        exemplars: each head's attention pattern on short probe texts (`headscope.atlas.exemplars`), or None.
    """

    def __init__(self, frame: pd.DataFrame, metadata: dict | None = None, *, metric_docs: dict | None = None,
                 exemplars: pd.DataFrame | None = None) -> None:
        """Args:
            frame: long rows with every column of `headscope.atlas.COLUMNS`.
            metadata: as read from a file; built from `frame` when None.
            metric_docs: {metric: {"analyzer", "meaning", "direction"}} from the analyzers' declarations.
            exemplars: the exemplar table (see `headscope.atlas.exemplars`).
        """
        # one set of dtypes whether built in memory or read from disk (the Arrow schema's)
        self.frame = frame_to_table(frame).to_pandas(ignore_metadata=True)
        docs = metric_docs if metric_docs is not None else (metadata or {}).get("metric_docs", {})
        self.metadata = metadata if metadata is not None else _metadata_for(self.frame, docs)
        self.metadata["metric_docs"] = docs
        self.exemplars = exemplars

    @classmethod
    def read(cls, path: str | Path) -> "Atlas":
        """Read a validated atlas file, and its exemplar table when one lies beside it.

        Args:
            path: the `.parquet` atlas written by `headscope scan` or `Atlas.save`.
        Returns:
            the Atlas; HeadscopeError (with the fix) when the file is missing, foreign or altered.
        """
        frame, metadata = read_table(path)
        beside = exemplar_path(path)
        return cls(frame, metadata, exemplars=read_exemplars(beside) if beside.is_file() else None)

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash leaves the old file or none, never half an atlas.

        Args:
            path: where the atlas goes; its exemplars (if any) go beside it as `<stem>.exemplars.parquet`.
        Returns:
            the atlas path.
        """
        written = write_table(self.frame, path, _metadata_for(self.frame, self.metric_docs))
        if self.exemplars is not None:
            write_exemplars(self.exemplars, exemplar_path(path))
        return written

    @property
    def metric_docs(self) -> dict[str, dict[str, str]]:
        """{metric: {"analyzer", "meaning", "direction"}} as the analyzers declared them (empty for old atlases)."""
        return self.metadata.get("metric_docs", {})

    def __len__(self) -> int:
        """Number of long rows."""
        return len(self.frame)

    def __repr__(self) -> str:
        return f"Atlas({len(self.frame)} rows, models={self.models}, metrics={self.metrics})"

    def _repr_html_(self) -> str:
        """Jupyter's view: per model its shape, and per analyzer its metrics with their top 3 heads."""
        from headscope.atlas.html import atlas_html

        return atlas_html(self)

    @property
    def models(self) -> list[str]:
        """Model ids in this atlas, sorted."""
        return sorted(self.frame["model"].unique().tolist())

    @property
    def metrics(self) -> list[str]:
        """Every metric name (per-head and model-level), sorted."""
        return sorted(self.frame["metric"].unique().tolist())

    @property
    def analyzers(self) -> list[str]:
        """Analyzers that wrote rows, sorted."""
        return sorted(self.frame["analyzer"].unique().tolist())

    def _select(self, model: str | None) -> pd.DataFrame:
        frame = self.frame
        if model is not None:
            frame = frame[frame["model"] == model]
            if frame.empty:
                raise HeadscopeError(f"model '{model}' is not in this atlas: it holds {', '.join(self.models)}")
        elif len(self.models) > 1:
            raise HeadscopeError(f"this atlas holds {len(self.models)} models: pass model= one of {', '.join(self.models)}")
        return frame

    def head_rows(self, model: str | None = None) -> pd.DataFrame:
        """Long rows about single heads (model-level rows left out).

        Args:
            model: which model (needed when the atlas holds several).
        Returns:
            the atlas's rows with every column, layer >= 0 and head >= 0.
        """
        frame = self._select(model)
        return frame[(frame["layer"] >= 0) & (frame["head"] >= 0)]

    def model_metrics(self, model: str | None = None) -> pd.DataFrame:
        """Model-level rows (head == -1): baselines, detector scores, sample counts, and per-layer numbers.

        Args:
            model: which model (needed when the atlas holds several).
        Returns:
            rows (model, analyzer, metric, layer, value, n_samples), layer -1 where a number is not per layer;
            `layer_metrics` and `scalar_metrics` split them.
        """
        frame = self._select(model)
        columns = ["model", "analyzer", "metric", "layer", "value", "n_samples"]
        return frame[frame["head"] < 0][columns].reset_index(drop=True)

    def layer_metrics(self, model: str | None = None) -> pd.DataFrame:
        """Model-level numbers measured once per layer, with the layer in the `layer` column.

        Args:
            model: which model (needed when the atlas holds several).
        Returns:
            rows (model, analyzer, metric, layer, value, n_samples): rows with a layer and no head, and older
            rows named `<metric>.L<layer>` (read as metric and layer).
        """
        frame = self._select(model)
        levels = frame[frame["head"] < 0]
        named = levels["metric"].str.extract(_PER_LAYER)
        by_name = named["base"].notna() & (levels["layer"] < 0)
        out = pd.concat([levels[by_name].assign(metric=named["base"][by_name], layer=named["layer"][by_name].astype(int)),
                         levels[levels["layer"] >= 0]])
        columns = ["model", "analyzer", "metric", "layer", "value", "n_samples"]
        return out[columns].sort_values(["analyzer", "metric", "layer"]).reset_index(drop=True)

    def scalar_metrics(self, model: str | None = None) -> pd.DataFrame:
        """Model-level numbers that are not per layer (baselines, detector scores, counts).

        Args:
            model: which model (needed when the atlas holds several).
        Returns:
            rows (model, analyzer, metric, value, n_samples).
        """
        frame = self._select(model)
        levels = frame[(frame["head"] < 0) & (frame["layer"] < 0)]
        levels = levels[~levels["metric"].str.match(_PER_LAYER)]
        return levels[["model", "analyzer", "metric", "value", "n_samples"]].reset_index(drop=True)

    def to_frame(self, model: str | None = None) -> pd.DataFrame:
        """Wide view: one row per (layer, head), one column per metric, plus kv_head.

        Args:
            model: which model (needed when the atlas holds several).
        Returns:
            a DataFrame indexed by (layer, head).
        """
        frame = self.head_rows(model)
        wide = frame.pivot_table(index=["layer", "head", "kv_head"], columns="metric", values="value", aggfunc="first")
        wide.columns.name = None
        return wide.reset_index().set_index(["layer", "head"]).sort_index()

    def top(self, metric: str, k: int = 10, *, model: str | None = None, ascending: bool = False) -> pd.DataFrame:
        """The k heads with the highest (or lowest) `metric`; heads without a value come last.

        Args:
            metric: a per-head metric of this atlas.
            k: how many heads.
            model: which model (needed when the atlas holds several).
            ascending: lowest first (for metrics where lower is stronger, e.g. ranks or entropies).
        Returns:
            rows (model, layer, head, kv_head, metric, value, n_samples).
        """
        frame = self.head_rows(model)
        rows = frame[frame["metric"] == metric]
        if rows.empty:
            raise HeadscopeError(f"metric '{metric}' is not in this atlas: it holds {', '.join(self.metrics)}")
        ordered = rows.sort_values(["value", "layer", "head"], ascending=[ascending, True, True], na_position="last")
        return ordered.head(k)[["model", "layer", "head", "kv_head", "metric", "value", "n_samples"]].reset_index(drop=True)

    def merge(self, *others: "Atlas") -> "Atlas":
        """This atlas and `others` as one (see `merge_atlases`).

        Returns:
            a new Atlas; HeadscopeError when two rows share provenance but differ in value.
        """
        return merge_atlases([self, *others])


def merge_atlases(atlases: Iterable[Atlas]) -> Atlas:
    """Concatenate atlases; rows of one provenance collapse when their values agree within MERGE_RTOL/MERGE_ATOL
    (other thread counts and Ray give float noise of ~1e-6), keeping the first atlas's value; others are refused.

    Args:
        atlases: atlases of the same schema version (same or different models).
    Returns:
        one Atlas holding every row, metric doc and exemplar.
    """
    atlases = list(atlases)
    if not atlases:
        raise HeadscopeError("nothing to merge: give at least one atlas")
    versions = {int(v) for a in atlases for v in a.frame["schema_version"].unique()}
    if len(versions) > 1:
        raise HeadscopeError(f"cannot merge atlases of schema versions {sorted(versions)}: re-scan the older ones")
    combined = pd.concat([a.frame for a in atlases], ignore_index=True)
    first = combined.groupby(list(ROW_KEY), sort=False, dropna=False)["value"].transform(lambda values: values.iloc[0])
    same = np.isclose(combined["value"], first, rtol=MERGE_RTOL, atol=MERGE_ATOL, equal_nan=True)
    clashes = combined[~same]
    if not clashes.empty:
        sample = clashes.iloc[0]
        raise HeadscopeError(
            f"{len(clashes)} conflicting rows (same provenance, values apart by more than rtol {MERGE_RTOL:g} + atol "
            f"{MERGE_ATOL:g}), e.g. {sample['model']} L{sample['layer']}H{sample['head']} {sample['metric']}: "
            "re-scan one of them or merge them separately"
        )
    combined = combined[~combined.duplicated(subset=list(ROW_KEY), keep="first")]  # the first atlas's value is kept
    docs = {metric: doc for a in atlases for metric, doc in a.metric_docs.items()}
    tables = [a.exemplars for a in atlases if a.exemplars is not None]
    exemplars = pd.concat(tables, ignore_index=True).drop_duplicates(["model", "text", "layer", "head", "query", "key"]) if tables else None
    return Atlas(combined.sort_values(["model", "analyzer", "metric", "layer", "head"]).reset_index(drop=True),
                 metric_docs=docs, exemplars=exemplars)


def read_atlas(path: str | Path) -> Atlas:
    """Open a shared atlas file (validated; no code is executed), with its exemplars when they lie beside it.

    Args:
        path: the `.parquet` file written by `headscope scan` or `Atlas.save`.
    Returns:
        the Atlas; HeadscopeError with the fix when the file is missing, foreign, newer or altered.
    """
    return Atlas.read(path)


def _metadata_for(frame: pd.DataFrame, metric_docs: dict | None = None) -> dict:
    models = []
    if not frame.empty:
        shapes = frame.groupby(["model", "revision", "backend", "dtype"], sort=True)[["n_layers", "n_heads", "n_kv_heads"]].first()
        for (model, revision, backend, dtype), shape in shapes.iterrows():
            models.append(
                {"model": model, "revision": revision, "backend": backend, "dtype": dtype,
                 "n_layers": int(shape["n_layers"]), "n_heads": int(shape["n_heads"]), "n_kv_heads": int(shape["n_kv_heads"])}
            )
    versions = sorted(frame["headscope_version"].unique().tolist()) if not frame.empty else []
    suites = sorted({f"{s}:{h}" for s, h in zip(frame["probe_suite"], frame["probe_hash"])}) if not frame.empty else []
    return {
        "schema_version": SCHEMA_VERSION,
        "headscope_versions": versions,
        "models": models,
        "analyzers": sorted(frame["analyzer"].unique().tolist()) if not frame.empty else [],
        "probe_suites": suites,
        "columns": list(COLUMNS),
        "metric_docs": {m: d for m, d in (metric_docs or {}).items() if m in set(frame["metric"])},
    }


def params_of(atlas: Atlas, analyzer: str) -> dict:
    """The parameters an analyzer ran with (first row's; they are equal within one scan).

    Args:
        atlas: the atlas.
        analyzer: an analyzer name in it.
    Returns:
        the parameters as a dict.
    """
    rows = atlas.frame[atlas.frame["analyzer"] == analyzer]
    if rows.empty:
        raise HeadscopeError(f"analyzer '{analyzer}' is not in this atlas: it holds {', '.join(atlas.analyzers)}")
    return json.loads(rows.iloc[0]["params"])
