"""Exemplars: each head's attention pattern on a few short probe texts, stored beside the atlas so a viewer can show
what a head does on real tokens without the model.

One long-format table, `<atlas stem>.exemplars.parquet`, one row per (model, text, layer, head, query, key) of the
causal (lower) triangle:

| column | meaning |
|---|---|
| model | the model id, as in the atlas rows |
| text | the probe's name (`repeated`: a sentence said twice, where induction heads draw a stripe; `plain`) |
| layer, head | the head |
| query, key | token positions, 0-based, key <= query |
| query_token, key_token | the decoded token strings (readable text, not raw BPE) |
| weight | post-softmax attention weight (float32) |

Schema-versioned in the Parquet metadata (`headscope_exemplars`); `pd.read_parquet` opens it. Budget: at most
`BUDGET_KB` (512) KB of float32 weights per model, i.e. n_layers * n_heads * sum_t T_t (T_t + 1) / 2 * 4 bytes;
longer texts are cut from the end to fit (SmolLM2-135M, 270 heads: both texts whole, about 360 KB raw).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from headscope.atomic import atomic_write
from headscope.errors import HeadscopeError

EXEMPLAR_SCHEMA_VERSION = 1
BUDGET_KB = 512
METADATA_KEY = b"headscope_exemplars"
EXEMPLAR_SCHEMA = pa.schema([
    pa.field("model", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("layer", pa.int16(), nullable=False),
    pa.field("head", pa.int16(), nullable=False),
    pa.field("query", pa.int16(), nullable=False),
    pa.field("key", pa.int16(), nullable=False),
    pa.field("query_token", pa.string(), nullable=False),
    pa.field("key_token", pa.string(), nullable=False),
    pa.field("weight", pa.float32(), nullable=False),
])


def exemplar_path(atlas_path: str | Path) -> Path:
    """atlas.parquet -> atlas.exemplars.parquet (beside it)."""
    path = Path(atlas_path)
    return path.with_name(f"{path.stem}.exemplars.parquet")


def fits_budget(n_heads_total: int, lengths: list[int], budget_kb: int = BUDGET_KB) -> bool:
    """Do patterns of texts of these lengths, for every head, fit the budget (float32 lower triangles)?"""
    return n_heads_total * sum(t * (t + 1) // 2 for t in lengths) * 4 <= budget_kb * 1024


def exemplar_frame(model: str, text: str, tokens: list[str], patterns: np.ndarray) -> pd.DataFrame:
    """Rows of one text: `patterns` is [layer, head, query, key] (the full square; the causal triangle is kept)."""
    n_layers, n_heads, n_query, n_key = patterns.shape
    if n_query != n_key or n_query != len(tokens):
        raise ValueError(f"patterns {patterns.shape} do not match {len(tokens)} tokens")
    query, key = np.tril_indices(n_query)
    layer = np.repeat(np.arange(n_layers), n_heads * len(query))
    head = np.tile(np.repeat(np.arange(n_heads), len(query)), n_layers)
    names = np.asarray(tokens, dtype=object)
    return pd.DataFrame({
        "model": model, "text": text, "layer": layer.astype(np.int16), "head": head.astype(np.int16),
        "query": np.tile(query, n_layers * n_heads).astype(np.int16), "key": np.tile(key, n_layers * n_heads).astype(np.int16),
        "query_token": names[np.tile(query, n_layers * n_heads)], "key_token": names[np.tile(key, n_layers * n_heads)],
        "weight": patterns[:, :, query, key].reshape(-1).astype(np.float32),
    })


def probe_texts(frame: pd.DataFrame) -> dict[str, str]:
    """Each text as its tokens spell it (the decoded keys of one head, in order)."""
    first = frame.drop_duplicates(["model", "text", "key"]).sort_values(["model", "text", "key"])
    return {str(text): "".join(block["key_token"]) for text, block in first.groupby("text", sort=False)}


def write_exemplars(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically with the schema version, the budget and the probe texts in the Parquet metadata."""
    metadata = {"schema_version": EXEMPLAR_SCHEMA_VERSION, "budget_kb": BUDGET_KB, "texts": probe_texts(frame)}
    table = pa.Table.from_pandas(frame[EXEMPLAR_SCHEMA.names], schema=EXEMPLAR_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    # weights: no dictionary (every value differs) and byte-stream split, which lets zstd compress floats
    columns = [name for name in EXEMPLAR_SCHEMA.names if name != "weight"]
    return atomic_write(path, lambda temp: pq.write_table(table, temp, compression="zstd", use_dictionary=columns,
                                                          use_byte_stream_split=["weight"]))


def read_exemplars(path: str | Path) -> pd.DataFrame:
    """Read and validate an exemplar table; every failure is a one-line HeadscopeError."""
    try:
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        version = json.loads(raw)["schema_version"] if raw else None
    except Exception as err:  # foreign bytes: the same user-facing problem
        raise HeadscopeError(f"'{path}' is not a readable exemplar table ({type(err).__name__}): delete it or re-run the scan") from None
    if not isinstance(version, int):
        raise HeadscopeError(f"'{path}' is not a headscope exemplar table (no schema version): delete it or re-run the scan")
    if version > EXEMPLAR_SCHEMA_VERSION:
        raise HeadscopeError(f"'{path}' uses exemplar schema {version}, newer than this headscope's: upgrade headscope")
    if set(EXEMPLAR_SCHEMA.names) - set(table.schema.names):
        raise HeadscopeError(f"'{path}' lacks exemplar columns: the file was altered; re-run the scan")
    return table.select(EXEMPLAR_SCHEMA.names).cast(EXEMPLAR_SCHEMA).to_pandas(ignore_metadata=True)


def head_pattern(exemplars: pd.DataFrame, text: str, layer: int, head: int, model: str | None = None) -> pd.DataFrame:
    """One head's pattern on one text as a [query token x key token] table (NaN above the diagonal)."""
    rows = exemplars[(exemplars["text"] == text) & (exemplars["layer"] == layer) & (exemplars["head"] == head)]
    if model is not None:
        rows = rows[rows["model"] == model]
    if rows.empty:
        raise HeadscopeError(f"no exemplar for L{layer}H{head} on '{text}': texts here are {sorted(exemplars['text'].unique())}")
    return rows.pivot_table(index="query", columns="key", values="weight", aggfunc="first")
