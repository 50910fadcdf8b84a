"""Sinks viewer: figures built from a hand-written atlas, values checked against the rows."""

from __future__ import annotations

import pandas as pd
import pytest

from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.analyzers.base import HeadValue
from headscope.errors import HeadscopeError
from headscope.viewers.sinks import head_map, hidden_sink_tokens, massive_activation_curve, save_html, sink_rate_curve


def toy_atlas() -> Atlas:
    rows = []
    for layer in range(3):
        for head in range(2):
            rows.append(HeadValue(layer, head, "sink_rate", float(layer == 2 or head == 1), 4))
            rows.append(HeadValue(layer, head, "sink_score", 0.1 * layer + 0.01 * head, 4))
    for layer in range(3):
        rows.append(HeadValue(layer, -1, "massive_ratio", 10.0**layer, 4))  # per-layer model-level rows
        rows.append(HeadValue(layer, -1, "massive_top_is_first", layer / 2, 4))
    rows.append(HeadValue(-1, -1, "hidden_sink_token[Ġthe]", 0.25, 4))
    rows.append(HeadValue(-1, -1, "hidden_sink_token[.]", 0.5, 4))
    prov = Provenance("toy", "r", "float32", "test", 3, 2, 1, "0")
    return Atlas(rows_frame(rows, provenance=prov, analyzer="sinks", probe_suite="s", probe_hash="h", params="{}"))


def test_figures_show_the_atlas_values(tmp_path):
    atlas = toy_atlas()
    curve = sink_rate_curve(atlas)
    assert list(curve.data[0].y) == [0.5, 0.5, 1.0]
    assert list(curve.data[1].y) == pytest.approx([0.005, 0.105, 0.205])
    grid = head_map(atlas, "sink_score")
    assert grid.data[0].z[2][1] == pytest.approx(0.21)
    massive = massive_activation_curve(atlas)
    assert list(massive.data[0].y) == [1.0, 10.0, 100.0] and list(massive.data[1].y) == [0.0, 0.5, 1.0]
    frame = atlas.frame.copy()  # an atlas written before the layer column: `massive_ratio.L<n>`, layer -1
    older = frame["head"].eq(-1) & frame["layer"].ge(0)
    frame.loc[older, "metric"] = frame.loc[older, "metric"] + ".L" + frame.loc[older, "layer"].astype(str)
    frame.loc[older, "layer"] = -1
    assert list(massive_activation_curve(Atlas(frame)).data[0].y) == [1.0, 10.0, 100.0]
    tokens = hidden_sink_tokens(atlas)
    assert tokens["token"].tolist() == [".", " the"]  # readable text, not raw BPE
    html = save_html(curve, tmp_path / "curve.html").read_text()
    assert "plotly" in html.lower() and len(html) > 1_000_000  # plotly.js inlined


def test_missing_rows_are_clear_errors():
    atlas = toy_atlas()
    with pytest.raises(HeadscopeError, match="not among the sinks rows"):
        head_map(atlas, "no_such_metric")
    other = Atlas(atlas.frame.assign(analyzer="induction"))
    with pytest.raises(HeadscopeError, match="--analyzers sinks"):
        sink_rate_curve(other)
