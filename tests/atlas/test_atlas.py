"""The atlas file: round trip, plain-pandas readability, atomic writes, validation, merge, queries."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headscope.atlas import Atlas, Provenance, merge_atlases, read_atlas, rows_frame
from headscope.atlas.schema import METADATA_KEY, SCHEMA_VERSION
from headscope.errors import HeadscopeError


class Value:
    def __init__(self, layer, head, metric, value, n=4):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, n


def make_atlas(model="m", offset=0.0, n_layers=2, n_heads=4, n_kv=2) -> Atlas:
    prov = Provenance(model, "rev1", "float32", "transformer-lens", n_layers, n_heads, n_kv, "0.1.0")
    values = [Value(l, h, "induction_score", l * 10 + h + offset) for l in range(n_layers) for h in range(n_heads)]
    values.append(Value(-1, -1, "baseline_accuracy", 0.5))
    return Atlas(rows_frame(values, provenance=prov, analyzer="induction", probe_suite="s", probe_hash="abc", params="{}"))


def test_round_trip_and_plain_pandas(tmp_path):
    atlas = make_atlas()
    path = atlas.save(tmp_path / "a.parquet")
    again = read_atlas(path)
    pd.testing.assert_frame_equal(again.frame, atlas.frame)
    plain = pd.read_parquet(path)  # no headscope needed to read a shared atlas
    assert len(plain) == len(atlas) and {"model", "layer", "head", "kv_head", "value"} <= set(plain.columns)
    meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert meta["schema_version"] == SCHEMA_VERSION and meta["models"][0]["n_heads"] == 4


def test_kv_head_follows_gqa_grouping():
    frame = make_atlas(n_heads=4, n_kv=2).head_rows()
    assert dict(zip(frame["head"], frame["kv_head"])) == {0: 0, 1: 0, 2: 1, 3: 1}


def test_pivot_top_and_model_level_rows():
    atlas = make_atlas()
    wide = atlas.to_frame()
    assert wide.shape[0] == 8 and "baseline_accuracy" not in wide.columns
    top = atlas.top("induction_score", 3)
    assert list(zip(top["layer"], top["head"])) == [(1, 3), (1, 2), (1, 1)]
    assert atlas.model_metrics()["metric"].tolist() == ["baseline_accuracy"]
    with pytest.raises(HeadscopeError, match="not in this atlas"):
        atlas.top("nope")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.parquet"
    make_atlas(offset=0).save(path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", explode)
    with pytest.raises(OSError):
        make_atlas(offset=100).save(path)
    assert path.read_bytes() == before  # old atlas intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]  # no temp file left behind


def test_merge_dedups_and_refuses_conflicts():
    a, b = make_atlas("m1"), make_atlas("m2")
    merged = merge_atlases([a, b, a])
    assert len(merged) == len(a) + len(b) and merged.models == ["m1", "m2"]
    with pytest.raises(HeadscopeError, match="conflicting rows"):
        merge_atlases([a, make_atlas("m1", offset=0.5)])
    newer = make_atlas("m3")
    newer.frame["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(HeadscopeError, match="schema versions"):
        merge_atlases([a, newer])
    with pytest.raises(HeadscopeError, match="pass model="):
        merged.to_frame()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "plain_parquet", "newer_schema", "dropped_column", "retyped_column", "bad_index"])
def test_bad_files_raise_one_clear_error(tmp_path, damage):
    path = tmp_path / "a.parquet"
    make_atlas().save(path)
    table = pq.read_table(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "garbage":
        path.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    elif damage == "plain_parquet":
        pq.write_table(pa.table({"x": [1, 2]}), path)
    elif damage == "newer_schema":
        meta = json.loads(table.schema.metadata[METADATA_KEY])
        meta["schema_version"] = SCHEMA_VERSION + 1
        pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)
    elif damage == "dropped_column":
        pq.write_table(table.drop_columns(["kv_head"]), path)
    elif damage == "retyped_column":
        index = table.schema.get_field_index("value")
        pq.write_table(table.set_column(index, "value", pa.array([str(v) for v in table["value"].to_pylist()])), path)
    elif damage == "bad_index":
        index = table.schema.get_field_index("head")
        pq.write_table(table.set_column(index, "head", pa.array([99] * len(table), pa.int32())), path)
    with pytest.raises(HeadscopeError) as info:
        read_atlas(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder_target(tmp_path):
    with pytest.raises(HeadscopeError, match="does not exist"):
        read_atlas(tmp_path / "none.parquet")
    with pytest.raises(HeadscopeError, match="is a folder"):
        make_atlas().save(tmp_path)
