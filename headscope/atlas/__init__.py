"""The atlas: schema, atomic io, merge, pivot and top-k over per-head measurements."""

from headscope.atlas.atlas import Atlas, merge_atlases, params_of, read_atlas
from headscope.atlas.build import Provenance, rows_frame
from headscope.atlas.diff import diff_atlases
from headscope.atlas.schema import COLUMNS, SCHEMA, SCHEMA_VERSION

__all__ = ["Atlas", "COLUMNS", "Provenance", "SCHEMA", "SCHEMA_VERSION", "diff_atlases", "merge_atlases", "params_of", "read_atlas", "rows_frame"]
