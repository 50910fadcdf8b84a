"""Property test: whatever bytes an atlas file holds, reading it raises only HeadscopeError (or succeeds)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headscope.atlas import Atlas, Provenance, read_atlas, rows_frame
from headscope.errors import HeadscopeError


class _V:
    def __init__(self, layer, head, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, "induction_score", value, 3


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[bytes, Atlas]:
    prov = Provenance("m", "r", "float32", "transformer-lens", 2, 2, 1, "0.1.0")
    frame = rows_frame([_V(l, h, 0.1 * l + h) for l in range(2) for h in range(2)], provenance=prov,
                       analyzer="induction", probe_suite="s", probe_hash="h", params="{}")
    path = tmp_path_factory.mktemp("fuzz") / "a.parquet"
    Atlas(frame).save(path)
    return path.read_bytes(), read_atlas(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bytes_raise_only_headscope_error(original, tmp_path, data):
    atlas_bytes, clean = original
    raw = bytearray(atlas_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "random"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 16))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "splice":
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + bytearray(data.draw(st.binary(min_size=1, max_size=64))) + raw[at:]
    else:
        raw = bytearray(data.draw(st.binary(max_size=512)))
    path = tmp_path / "fuzzed.parquet"
    path.write_bytes(bytes(raw))
    try:
        atlas = read_atlas(path)
    except HeadscopeError as err:
        assert "\n" not in str(err)
    else:
        # page checksums: a mutation that slips through touched nothing the rows are made of
        assert atlas.frame.equals(clean.frame)
