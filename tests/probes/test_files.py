"""Shipped probe suites load through `datasets`; bad suite files are one clear error."""

from __future__ import annotations

import pytest

from headscope.errors import HeadscopeError
from headscope.probes import load_suite_records


def test_loads_records_and_hashes_content(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    records, digest = load_suite_records(str(tmp_path), required=("text",))
    assert [r["text"] for r in records] == ["a", "b"]
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n{"text": "c"}\n')
    assert load_suite_records(str(tmp_path))[1] != digest


@pytest.mark.parametrize(
    "content,match",
    [("", "empty|cannot parse"), ('{"text": "a"\n', "cannot parse"), ('{"other": 1}\n', "lacks columns")],
)
def test_bad_suites(tmp_path, content, match):
    (tmp_path / "data.jsonl").write_text(content)
    with pytest.raises(HeadscopeError, match=match):
        load_suite_records(str(tmp_path), required=("text",))


def test_unknown_suite_and_folder_without_data(tmp_path):
    with pytest.raises(HeadscopeError, match="unknown probe suite"):
        load_suite_records("no-such-suite")
    with pytest.raises(HeadscopeError, match="no data file"):
        load_suite_records(str(tmp_path))
