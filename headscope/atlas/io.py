"""Reading and writing atlas files: atomic writes, validated reads, nothing ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from headscope.atomic import atomic_write
from headscope.atlas.schema import COLUMNS, METADATA_KEY, MODEL_LEVEL, ROW_KEY, SCHEMA, SCHEMA_VERSION
from headscope.errors import HeadscopeError
from headscope.strict_json import load_json

MAX_METADATA_BYTES = 2**20  # provenance metadata is a few hundred bytes
MAX_EXPANSION = 200  # decompressed column bytes per file byte; headscope's atlases stay far below


def write_table(frame: pd.DataFrame, path: str | Path, metadata: dict) -> Path:
    """Write `frame` as Parquet at `path`: to a temp file beside it, fsync, then rename over."""
    table = frame_to_table(frame).replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return atomic_write(path, lambda temp: pq.write_table(table, temp, compression="zstd", write_page_checksum=True))


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"atlas frame lacks columns {missing}")
    return pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read and validate an atlas file; every failure is a one-line HeadscopeError."""
    source = Path(path)
    if not source.is_file():
        raise HeadscopeError(f"atlas '{source}' does not exist: check the path (atlases are written by `headscope scan`)")
    _check_expansion(source)
    try:
        # page checksums (written by headscope) turn silent bit flips into a read error
        table = pq.read_table(source, page_checksum_verification=True)
        table = table.combine_chunks()
    except Exception as err:  # any parse failure of foreign bytes is the same user-facing problem
        raise HeadscopeError(
            f"'{source}' is not a readable atlas (truncated or corrupt Parquet: {type(err).__name__}): re-run the scan or re-download it"
        ) from None
    metadata = _metadata(table, source)
    version = metadata.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise HeadscopeError(f"'{source}' has no headscope schema version: it was not written by headscope")
    if version > SCHEMA_VERSION:
        raise HeadscopeError(
            f"'{source}' uses atlas schema {version}, newer than this headscope's {SCHEMA_VERSION}: upgrade with `pip install -U headscope`"
        )
    _check_columns(table, source)
    try:
        frame = table.select(list(COLUMNS)).cast(SCHEMA).to_pandas(ignore_metadata=True)
    except Exception as err:  # undecodable strings, overflowing casts: the file was altered
        raise HeadscopeError(f"'{source}' has columns of the wrong type ({type(err).__name__}): the atlas was altered; re-run the scan") from None
    _check_values(frame, source)
    _check_shapes(frame, version, source)
    return frame, metadata


def _metadata(table: pa.Table, source: Path) -> dict:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise HeadscopeError(f"'{source}' is a Parquet file but not a headscope atlas (no provenance metadata)")
    metadata = load_json(raw, origin=f"'{source}' provenance metadata", fix="re-run the scan", max_bytes=MAX_METADATA_BYTES)
    if not isinstance(metadata, dict):
        raise HeadscopeError(f"'{source}' has corrupt provenance metadata: re-run the scan")
    return metadata


def _check_columns(table: pa.Table, source: Path) -> None:
    names = set(table.schema.names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise HeadscopeError(f"'{source}' lacks atlas columns {missing}: the atlas was altered; re-run the scan")
    for field in SCHEMA:
        actual = table.schema.field(field.name).type
        if actual != field.type and not (pa.types.is_integer(actual) and pa.types.is_integer(field.type)):
            raise HeadscopeError(
                f"'{source}' column '{field.name}' is {actual}, expected {field.type}: the atlas was altered; re-run the scan"
            )


def _check_values(frame: pd.DataFrame, source: Path) -> None:
    required = [f.name for f in SCHEMA if not f.nullable]
    if frame[required].isna().any().any():
        raise HeadscopeError(f"'{source}' has empty provenance cells: the atlas was altered; re-run the scan")
    model_level = (frame["layer"] == -1) & (frame["head"] == -1)
    per_layer = (frame["head"] == -1) & (frame["layer"] >= 0)  # a model-level number measured per layer
    bad = ~model_level & (
        (frame["layer"] < 0) | ((frame["head"] < 0) & ~per_layer) | (frame["layer"] >= frame["n_layers"])
        | (frame["head"] >= frame["n_heads"])
    )
    if bad.any():
        raise HeadscopeError(f"'{source}' has {int(bad.sum())} rows with impossible layer/head indices: the atlas was altered")


def _check_expansion(source: Path) -> None:
    """Refuse, from the footer alone, a file whose columns would decompress to far more than it holds (a zstd bomb)."""
    try:
        meta = pq.ParquetFile(source).metadata
        expanded = sum(meta.row_group(i).column(j).total_uncompressed_size
                       for i in range(meta.num_row_groups) for j in range(meta.num_columns))
    except Exception:  # unreadable footers are reported by the full read that follows
        return
    limit = MAX_EXPANSION * source.stat().st_size + MAX_METADATA_BYTES
    if expanded > limit:
        raise HeadscopeError(f"'{source}' would expand to {expanded} bytes ({limit} allowed for its size): "
                             "it is not an atlas headscope wrote; re-run the scan")


def _check_shapes(frame: pd.DataFrame, version: int, source: Path) -> None:
    """Counts positive, grouped-query layout consistent, one schema version, no row key with two values."""
    altered = "the atlas was altered; re-run the scan"
    if ((frame["n_layers"] < 1) | (frame["n_heads"] < 1) | (frame["n_kv_heads"] < 1)).any():
        raise HeadscopeError(f"'{source}' has rows with zero or negative layer/head counts: {altered}")
    if (frame["n_heads"] % frame["n_kv_heads"] != 0).any():
        raise HeadscopeError(f"'{source}' has rows whose n_heads is not a multiple of n_kv_heads: {altered}")
    head_rows = frame[(frame["layer"] != MODEL_LEVEL) | (frame["head"] != MODEL_LEVEL)]
    group = head_rows["n_heads"] // head_rows["n_kv_heads"]
    if (head_rows["kv_head"] != head_rows["head"] // group).any():
        raise HeadscopeError(f"'{source}' has rows whose kv_head is not head // (n_heads / n_kv_heads): {altered}")
    if (frame["schema_version"] != version).any():
        raise HeadscopeError(f"'{source}' has rows whose schema_version differs from its metadata ({version}): {altered}")
    keyed = frame.drop_duplicates(subset=[*ROW_KEY, "value"])
    conflicts = keyed.duplicated(subset=list(ROW_KEY), keep=False)
    if conflicts.any():
        first = keyed[conflicts].iloc[0]
        raise HeadscopeError(f"'{source}' holds {int(conflicts.sum())} rows with the same provenance and different values "
                             f"(e.g. {first['analyzer']} {first['metric']} L{first['layer']}H{first['head']}): {altered}")
