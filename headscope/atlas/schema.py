"""The atlas schema: long format, one row per (model, layer, head, analyzer, metric), provenance on every row."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
METADATA_KEY = b"headscope"

SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("revision", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("analyzer", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("head", pa.int32(), nullable=False),
        pa.field("kv_head", pa.int32(), nullable=False),
        pa.field("value", pa.float64(), nullable=True),
        pa.field("n_samples", pa.int64(), nullable=False),
        pa.field("probe_suite", pa.string(), nullable=False),
        pa.field("probe_hash", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),  # analyzer parameters as canonical JSON
        pa.field("n_layers", pa.int32(), nullable=False),
        pa.field("n_heads", pa.int32(), nullable=False),
        pa.field("n_kv_heads", pa.int32(), nullable=False),
        pa.field("headscope_version", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
    ]
)
COLUMNS = tuple(SCHEMA.names)

# Rows with layer == head == -1 (kv_head -1) hold model-level numbers of an analyzer: a baseline accuracy,
# a detector's AUROC, how many samples passed a filter. `Atlas.to_frame()` leaves them out;
# `Atlas.model_metrics()` shows them. Rows with layer >= 0 and head == -1 are model-level numbers measured per
# layer (e.g. sinks' massive_ratio entering layer L): `Atlas.layer_metrics()`. Atlases written before this kept
# the layer in the metric name (`massive_ratio.L12`, layer -1); `layer_metrics()` still reads them.
MODEL_LEVEL = -1

# A row is identified by these; two rows with the same key and different values are a conflict.
ROW_KEY = ("model", "revision", "dtype", "backend", "analyzer", "metric", "layer", "head", "probe_hash", "params")
