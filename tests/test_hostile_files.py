"""Crafted files we read (atlas metadata and columns, lookback detector JSON) end in one HeadscopeError or a
correct load: never RecursionError, OverflowError, ZeroDivisionError, a silently coerced field or a silent pick."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headscope.analyzers.lookback_detector import LookbackDetector
from headscope.atlas import Atlas, Provenance, read_atlas, rows_frame
from headscope.atlas.io import frame_to_table
from headscope.atlas.schema import METADATA_KEY
from headscope.errors import HeadscopeError

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class _V:
    def __init__(self, layer, head, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, "induction_score", value, 3


def _frame() -> pd.DataFrame:
    """2 layers x 4 query heads sharing 2 KV heads: a grouped-query layout to tamper with."""
    prov = Provenance("m", "r", "float32", "transformer-lens", 2, 4, 2, "0.1.0")
    return rows_frame([_V(l, h, 0.1 * l + h) for l in range(2) for h in range(4)], provenance=prov,
                      analyzer="induction", probe_suite="s", probe_hash="h", params="{}")


def _write(path: Path, frame: pd.DataFrame, metadata: bytes | None = None, **parquet) -> Path:
    table = frame_to_table(frame)
    meta = metadata if metadata is not None else json.dumps({"schema_version": 1}).encode()
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: meta}), path, **parquet)
    return path


def _refused(path: Path, match: str | None = None) -> None:
    with pytest.raises(HeadscopeError) as err:
        read_atlas(path)
    assert "\n" not in str(err.value)
    if match:
        assert match in str(err.value), str(err.value)


# --- atlas metadata ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metadata", [
    b"[" * 200_000 + b"]" * 200_000,
    b'{"schema_version": 1, "x": ' + b"9" * 5000 + b"}",
    b'{"schema_version": 0}', b'{"schema_version": -5}', b'{"schema_version": true}', b'{"schema_version": 1.0}',
    b'{"schema_version": 1, "schema_version": 1}', b'{"schema_version": NaN}', b'{"schema_version": 1e999}',
])
def test_hostile_metadata_is_refused(metadata, tmp_path):
    _refused(_write(tmp_path / "a.parquet", _frame(), metadata))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=20)


@HYPOTHESIS
@given(version=_JSON, extra=_JSON, depth=st.integers(0, 5000), digits=st.integers(1, 6000))
def test_generated_metadata_loads_only_when_valid(version, extra, depth, digits, tmp_path):
    body = json.dumps({"schema_version": version, "extra": extra}, allow_nan=True)
    body = body[:-1] + ', "deep": ' + "[" * depth + "]" * depth + ', "big": ' + "7" * digits + "}"
    path = _write(tmp_path / "a.parquet", _frame(), body.encode())
    try:
        atlas = read_atlas(path)
    except HeadscopeError as err:
        assert "\n" not in str(err)
    else:
        assert type(version) is int and version == 1 and depth < 32 and digits <= 20
        assert len(atlas) == len(_frame())


# --- atlas columns -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tamper,match", [
    (lambda f: f.assign(n_kv_heads=0), "counts"),
    (lambda f: f.assign(n_kv_heads=3), "multiple"),
    (lambda f: f.assign(kv_head=f["kv_head"].where(f["head"] != 1, 1)), "kv_head"),
    (lambda f: f.assign(schema_version=2 * (f.index == 0) + 1 * (f.index != 0)), "schema_version"),
    (lambda f: pd.concat([f, f.iloc[[0]].assign(value=f["value"].iloc[0] + 1.0)], ignore_index=True), "same provenance"),
])
def test_tampered_columns_are_refused(tamper, match, tmp_path):
    _refused(_write(tmp_path / "a.parquet", tamper(_frame())), match)


def test_identical_duplicate_rows_still_load(tmp_path):
    frame = _frame()
    path = _write(tmp_path / "a.parquet", pd.concat([frame, frame.iloc[[0]]], ignore_index=True))
    assert len(read_atlas(path)) == len(frame) + 1


@HYPOTHESIS
@given(data=st.data())
def test_generated_column_tampering_loads_only_consistent_atlases(data, tmp_path):
    frame = _frame()
    for _ in range(data.draw(st.integers(1, 4))):
        column = data.draw(st.sampled_from(["layer", "head", "kv_head", "n_layers", "n_heads", "n_kv_heads",
                                            "schema_version", "value"]))
        row = data.draw(st.integers(0, len(frame) - 1))
        frame.loc[row, column] = data.draw(st.integers(-3, 9)) if column != "value" else data.draw(st.floats())
    try:
        atlas = read_atlas(_write(tmp_path / "a.parquet", frame))
    except HeadscopeError as err:
        assert "\n" not in str(err)
    else:
        got = atlas.frame
        assert (got["n_kv_heads"] > 0).all() and (got["n_heads"] % got["n_kv_heads"] == 0).all()
        assert (got["kv_head"] == got["head"] // (got["n_heads"] // got["n_kv_heads"])).all()
        assert (got["schema_version"] == 1).all()
        assert not got.drop_duplicates().duplicated(["layer", "head", "metric"]).any()


def test_a_decompression_bomb_in_params_is_refused_before_it_expands(tmp_path):
    frame = _frame().assign(params="a" * (8 * 2**20))  # 64 MB of params that zstd packs into a few KB
    path = _write(tmp_path / "bomb.parquet", frame, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 64 * 2**10
    _refused(path, "expand")


def test_a_real_atlas_is_far_below_the_expansion_bound(tmp_path):
    path = tmp_path / "real.parquet"
    Atlas(_frame()).save(path)
    assert len(read_atlas(path)) == len(_frame())


# --- lookback detector JSON ----------------------------------------------------------------------------------------

def _detector(**changes) -> dict:
    good = {"format": "headscope-lookback-detector", "version": 1, "n_layers": 2, "n_heads": 2,
            "coef": [0.5, -0.5, 1.0, 0.0], "intercept": 0.1, "span": "predefined", "window": 8, "metadata": {}}
    return {**good, **changes}


@pytest.mark.parametrize("text", [
    json.dumps(_detector(version=True)), json.dumps(_detector(n_layers=2.9)), json.dumps(_detector(coef="1234")),
    json.dumps(_detector(n_layers=0, coef=[])), json.dumps(_detector(window=True)), json.dumps(_detector(intercept="0")),
    json.dumps(_detector()).replace('"n_layers": 2', '"n_layers": Infinity'),
    json.dumps(_detector()).replace('"intercept": 0.1', '"intercept": 1e999'),
    json.dumps(_detector(metadata=[])), json.dumps(_detector()).replace('"metadata": {}', '"metadata": ' + "[" * 100000 + "]" * 100000),
])
def test_hostile_detectors_are_refused(text):
    with pytest.raises(HeadscopeError) as err:
        LookbackDetector.from_json(text)
    assert "\n" not in str(err.value)


@HYPOTHESIS
@given(field=st.sampled_from(["version", "n_layers", "n_heads", "coef", "intercept", "span", "window", "metadata"]),
       value=_JSON)
def test_generated_detectors_load_only_with_exact_types(field, value):
    text = json.dumps(_detector(**{field: value}), allow_nan=True)
    try:
        detector = LookbackDetector.from_json(text)
    except HeadscopeError as err:
        assert "\n" not in str(err)
    else:
        assert type(detector.n_layers) is int and type(detector.n_heads) is int and detector.n_layers > 0
        assert type(detector.window) is int and detector.window > 0 and isinstance(detector.span, str)
        assert detector.coef.shape == (detector.n_layers * detector.n_heads,) and np.isfinite(detector.coef).all()
        assert np.isfinite(detector.intercept)


# --- scan parts ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [b"[" * 100_000 + b"]" * 100_000, b'{"x": ' + b"9" * 5000 + b"}", b'{"x": NaN}', b"[]"])
def test_hostile_part_metadata_is_refused(side, tiny_llama_dir, tmp_path, monkeypatch):
    """A rows part whose side-output JSON was crafted: resume refuses it in one line, never crashes."""
    import headscope

    out = tmp_path / "atlas.parquet"
    with monkeypatch.context() as patch:
        patch.setattr(Atlas, "save", lambda self, path: (_ for _ in ()).throw(RuntimeError("interrupted")))
        with pytest.raises(RuntimeError):
            headscope.scan(str(tiny_llama_dir), "sinks", out=out, seq_len=16, n_samples=2, progress=False)
    (part,) = Path(f"{out}.parts").glob("*.rows.parquet")
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"side_outputs": side}), part)
    with pytest.raises(HeadscopeError, match="unreadable") as err:
        headscope.scan(str(tiny_llama_dir), "sinks", out=out, seq_len=16, n_samples=2, progress=False, resume=True)
    assert "\n" not in str(err.value)
