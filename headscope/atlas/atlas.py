"""The Atlas: a long-format table of per-head measurements with provenance, and the queries people run on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from headscope.atlas.io import frame_to_table, read_table, write_table
from headscope.atlas.schema import COLUMNS, ROW_KEY, SCHEMA_VERSION
from headscope.errors import HeadscopeError

# merge: values of one provenance this close are the same measurement (thread counts and Ray differ by ~1e-6)
MERGE_RTOL, MERGE_ATOL = 1e-5, 1e-6


class Atlas:
    """What every head of one or more models does. Viewers and users see only this."""

    def __init__(self, frame: pd.DataFrame, metadata: dict | None = None) -> None:
        # one set of dtypes whether built in memory or read from disk (the Arrow schema's)
        self.frame = frame_to_table(frame).to_pandas(ignore_metadata=True)
        self.metadata = metadata if metadata is not None else _metadata_for(self.frame)

    # --- io -------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> "Atlas":
        frame, metadata = read_table(path)
        return cls(frame, metadata)

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash leaves the old file or none, never half an atlas."""
        return write_table(self.frame, path, _metadata_for(self.frame))

    # --- views ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"Atlas({len(self.frame)} rows, models={self.models}, metrics={self.metrics})"

    @property
    def models(self) -> list[str]:
        return sorted(self.frame["model"].unique().tolist())

    @property
    def metrics(self) -> list[str]:
        return sorted(self.frame["metric"].unique().tolist())

    @property
    def analyzers(self) -> list[str]:
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
        """Long rows about single heads (model-level rows left out)."""
        frame = self._select(model)
        return frame[frame["layer"] >= 0]

    def model_metrics(self, model: str | None = None) -> pd.DataFrame:
        """Model-level rows (layer == head == -1): baselines, detector scores, sample counts."""
        frame = self._select(model)
        return frame[frame["layer"] == -1][["model", "analyzer", "metric", "value", "n_samples"]].reset_index(drop=True)

    def to_frame(self, model: str | None = None) -> pd.DataFrame:
        """Wide view: one row per (layer, head), one column per metric, plus kv_head."""
        frame = self.head_rows(model)
        wide = frame.pivot_table(index=["layer", "head", "kv_head"], columns="metric", values="value", aggfunc="first")
        wide.columns.name = None
        return wide.reset_index().set_index(["layer", "head"]).sort_index()

    def top(self, metric: str, k: int = 10, *, model: str | None = None, ascending: bool = False) -> pd.DataFrame:
        """The k heads with the highest (or lowest) `metric`."""
        frame = self.head_rows(model)
        rows = frame[frame["metric"] == metric]
        if rows.empty:
            raise HeadscopeError(f"metric '{metric}' is not in this atlas: it holds {', '.join(self.metrics)}")
        ordered = rows.sort_values(["value", "layer", "head"], ascending=[ascending, True, True], na_position="last")
        return ordered.head(k)[["model", "layer", "head", "kv_head", "metric", "value", "n_samples"]].reset_index(drop=True)

    def merge(self, *others: "Atlas") -> "Atlas":
        return merge_atlases([self, *others])


def merge_atlases(atlases: Iterable[Atlas]) -> Atlas:
    """Concatenate atlases; rows of one provenance collapse when their values agree within MERGE_RTOL/MERGE_ATOL
    (other thread counts and Ray give float noise of ~1e-6), keeping the first atlas's value; others are refused."""
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
    return Atlas(combined.sort_values(["model", "analyzer", "metric", "layer", "head"]).reset_index(drop=True))


def read_atlas(path: str | Path) -> Atlas:
    """Open a shared atlas file (validated; no code is executed)."""
    return Atlas.read(path)


def _metadata_for(frame: pd.DataFrame) -> dict:
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
    }


def params_of(atlas: Atlas, analyzer: str) -> dict:
    """The parameters an analyzer ran with (first row's; they are equal within one scan)."""
    rows = atlas.frame[atlas.frame["analyzer"] == analyzer]
    if rows.empty:
        raise HeadscopeError(f"analyzer '{analyzer}' is not in this atlas: it holds {', '.join(atlas.analyzers)}")
    return json.loads(rows.iloc[0]["params"])
