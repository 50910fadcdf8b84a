"""`headscope.read_side_output`: reads back what a scan wrote beside its atlas; crafted files are one-line errors."""

from __future__ import annotations

import math

import pytest

import headscope
from headscope.atomic import atomic_write_json
from headscope.errors import HeadscopeError
from headscope.side_outputs import finite, side_output_path


def test_round_trip_beside_the_atlas(tmp_path):
    atlas = tmp_path / "run.parquet"
    payload = {"generations": [{"id": "q1", "answer": "Mara Tollen", "faithful": True, "mean_ratio": 0.25}],
               "detector": None, "mean_scores": [[0.0, 1.0]], "text": "naïve ✓"}
    written = atomic_write_json(side_output_path(atlas, "lookback"), payload)
    assert written == tmp_path / "run.lookback.json"
    assert headscope.read_side_output(atlas, "lookback") == payload
    assert headscope.read_side_output(str(atlas), "lookback") == payload


def test_finite_turns_nan_and_inf_into_null_so_the_strict_reader_accepts_it(tmp_path):
    cleaned = finite({"a": math.nan, "b": [1.5, math.inf, {"c": -math.inf}], "d": (2, "x"), "e": None})
    assert cleaned == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, "x"], "e": None}
    atomic_write_json(side_output_path(tmp_path / "a.parquet", "retrieval"), cleaned)
    assert headscope.read_side_output(tmp_path / "a.parquet", "retrieval") == cleaned


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"x": NaN}', "not a JSON side output"),
    (b'{"x": 1, "x": 2}', "duplicate keys"),
    (b"[" * 100_000 + b"]" * 100_000, "not a JSON side output"),
    (b'{"x": ' + b"9" * 5000 + b"}", "not a JSON side output"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"cos\nsystem\n(S'touch x'\ntR.", "not a JSON side output"),  # a pickle is never unpickled
])
def test_crafted_files_are_one_line_errors(tmp_path, raw, reason):
    side_output_path(tmp_path / "a.parquet", "safety").write_bytes(raw)
    with pytest.raises(HeadscopeError, match=reason) as caught:
        headscope.read_side_output(tmp_path / "a.parquet", "safety")
    assert "\n" not in str(caught.value) and "rerun headscope.scan" in str(caught.value)


def test_missing_and_oversized_files_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(HeadscopeError, match=r"no retrieval side output at .*a\.retrieval\.json: rerun"):
        headscope.read_side_output(tmp_path / "a.parquet", "retrieval")
    monkeypatch.setattr("headscope.side_outputs.MAX_BYTES", 10)
    side_output_path(tmp_path / "a.parquet", "retrieval").write_text('{"samples": [1, 2, 3, 4]}')
    with pytest.raises(HeadscopeError, match="larger than 10 bytes"):
        headscope.read_side_output(tmp_path / "a.parquet", "retrieval")
