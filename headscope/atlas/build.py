"""Turn analyzer results plus scan provenance into atlas rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import pandas as pd

from headscope.atlas.schema import COLUMNS, SCHEMA_VERSION


class HeadValueLike(Protocol):
    layer: int
    head: int
    metric: str
    value: float
    n_samples: int


@dataclass(frozen=True)
class Provenance:
    """Where a set of rows came from."""

    model: str
    revision: str
    dtype: str
    backend: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    headscope_version: str


def rows_frame(
    values: Iterable[HeadValueLike],
    *,
    provenance: Provenance,
    analyzer: str,
    probe_suite: str,
    probe_hash: str,
    params: str,
) -> pd.DataFrame:
    group = provenance.n_heads // provenance.n_kv_heads
    records = [
        {
            "model": provenance.model,
            "revision": provenance.revision,
            "dtype": provenance.dtype,
            "backend": provenance.backend,
            "analyzer": analyzer,
            "metric": v.metric,
            "layer": int(v.layer),
            "head": int(v.head),
            "kv_head": int(v.head) // group if int(v.head) >= 0 else -1,
            "value": float(v.value),
            "n_samples": int(v.n_samples),
            "probe_suite": probe_suite,
            "probe_hash": probe_hash,
            "params": params,
            "n_layers": provenance.n_layers,
            "n_heads": provenance.n_heads,
            "n_kv_heads": provenance.n_kv_heads,
            "headscope_version": provenance.headscope_version,
            "schema_version": SCHEMA_VERSION,
        }
        for v in values
    ]
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))
