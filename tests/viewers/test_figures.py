"""Viewers draw exactly what the atlas says, and never need the model stack."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.errors import HeadscopeError
from headscope.viewers import (
    compare_map,
    head_card,
    head_map,
    layer_profile,
    metric_scatter,
    rank_plot,
    render_report,
    role_summary,
    role_table,
)


class V:
    def __init__(self, layer, head, metric, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, 8


def synthetic(model="m", n_layers=4, n_heads=6, n_kv=2, seed=0) -> Atlas:
    rng = np.random.default_rng(seed)
    prov = Provenance(model, "r", "float32", "transformer-lens", n_layers, n_heads, n_kv, "0.1.0")
    frames = []
    for analyzer, metric in (("induction", "induction_score"), ("previous-token", "previous_token_score")):
        values = [V(l, h, metric, float(rng.uniform(0, 0.2))) for l in range(n_layers) for h in range(n_heads)]
        frames.append(rows_frame(values, provenance=prov, analyzer=analyzer, probe_suite="s", probe_hash="h", params="{}"))
    frames.append(rows_frame([V(-1, -1, "baseline_accuracy", 0.25)], provenance=prov, analyzer="select-and-copy",
                             probe_suite="s", probe_hash="h", params="{}"))
    atlas = Atlas(__import__("pandas").concat(frames, ignore_index=True))
    frame = atlas.frame
    frame.loc[(frame.metric == "induction_score") & (frame["layer"] == 2) & (frame["head"] == 3), "value"] = 0.9
    frame.loc[(frame.metric == "previous_token_score") & (frame["layer"] == 1) & (frame["head"] == 0), "value"] = 0.8
    return Atlas(frame)


def test_head_map_is_the_pivot_with_kv_groups_and_full_hover():
    atlas = synthetic()
    figure = head_map(atlas, "induction_score")
    expected = atlas.to_frame()["induction_score"].to_numpy().reshape(4, 6)
    np.testing.assert_array_equal(np.array(figure.data[0].z), expected)
    assert len(figure.layout.shapes) == 1 and figure.layout.shapes[0].x0 == 2.5  # one boundary between 2 KV groups
    hover = figure.data[0].text[2][3]
    assert "L2H3" in hover and "kv head 1" in hover and "previous_token_score" in hover and "induction" in hover


def test_roles_follow_the_thresholds_and_skip_absent_metrics():
    table = role_table(synthetic())
    assert set(zip(table["layer"], table["head"], table["role"])) == {(2, 3, "induction"), (1, 0, "previous-token")}
    summary = role_summary(synthetic())  # one trace (colour) per role, at its heads
    assert {t.name: (list(t.x), list(t.y)) for t in summary.data} == {"previous-token (1)": ([0], [1]), "induction (1)": ([3], [2])}


def _sink_atlas(scores: list[float]) -> Atlas:
    prov = Provenance("m", "r", "float32", "transformer-lens", 1, len(scores), 1, "0.1.0")
    return Atlas(rows_frame([V(0, h, "sink_score", v) for h, v in enumerate(scores)], provenance=prov,
                            analyzer="sinks", probe_suite="s", probe_hash="h", params="{}"))


def test_sink_role_marks_heads_beyond_the_models_typical_head():
    # 8 of 12 heads pass Gu et al.'s epsilon 0.3: only those above the model's 75th percentile (0.825) are "sink"
    common = [0.1, 0.2, 0.25, 0.28, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99]
    table = role_table(_sink_atlas(common))
    assert sorted(table.loc[table["role"] == "sink", "head"]) == [9, 10, 11]
    assert "75th-percentile" in table["rule"].iloc[0]
    # where sinks are rare, epsilon decides: the quantile (0.2) lies below it
    rare = [0.0, 0.05, 0.1, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2, 0.2, 0.35, 0.9]
    table = role_table(_sink_atlas(rare))
    assert sorted(table.loc[table["role"] == "sink", "head"]) == [10, 11]


def test_head_card_ranks_every_metric():
    card = head_card(synthetic(), 2, 3)
    cells = card.data[0].cells.values
    assert list(cells[1]) == ["induction_score", "previous_token_score"]
    assert cells[3][0] == "1 / 24"
    assert "induction" in card.layout.title.text
    with pytest.raises(HeadscopeError, match="outside"):
        head_card(synthetic(), 9, 0)


def test_profiles_scatter_rank():
    atlas = synthetic()
    profile = layer_profile(atlas, "induction_score")
    assert profile.data[0].y[2] == pytest.approx(0.9)
    assert len(metric_scatter(atlas, "induction_score", "previous_token_score").data[0].x) == 24
    assert rank_plot(atlas, "induction_score").data[0].y[0] == pytest.approx(0.9)


def test_compare_same_shape_is_a_difference_map_and_other_shapes_use_depth():
    a, b = synthetic("a", seed=0), synthetic("b", seed=1)
    figure = compare_map(a, b, "induction_score")
    diff = np.array(figure.data[2].z)
    np.testing.assert_allclose(diff, a.to_frame()["induction_score"].to_numpy().reshape(4, 6)
                               - b.to_frame()["induction_score"].to_numpy().reshape(4, 6))
    other = compare_map(a, synthetic("c", n_layers=7, n_heads=3, n_kv=1), "induction_score")
    assert other.data[0].x[-1] == 1.0 and other.data[2].x[-1] == 1.0 and len(other.data[2].x) == 7


def test_report_is_self_contained():
    text = render_report(synthetic(), compare=synthetic("b", seed=2))
    assert text.count("<script") >= 3 and not re.search(r'<script[^>]*src="https?:', text)  # nothing fetched
    assert "plotly.js v" in text or "Plotly" in text  # the library itself is inlined
    assert "Model-level results" in text and "Compare: m vs b" in text


def test_viewers_import_without_torch():
    code = "import sys, headscope.viewers, headscope.atlas; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_head_card_ranks_a_missing_value_last():
    frame = synthetic().frame
    frame.loc[(frame.metric == "induction_score") & (frame["layer"] == 0) & (frame["head"] == 0), "value"] = np.nan
    atlas = Atlas(frame)
    cells = head_card(atlas, 0, 0).data[0].cells.values
    assert cells[3][0] == "last (no value)"
    assert head_card(atlas, 2, 3).data[0].cells.values[3][0] == "1 / 23"  # the missing head is not counted


def test_a_flag_gets_two_colours_and_layer_zero_is_on_top():
    frame = synthetic().frame
    frame.loc[frame.metric == "induction_score", "value"] = (frame.loc[frame.metric == "induction_score", "value"] > 0.1).astype(float)
    figure = head_map(Atlas(frame), "induction_score")
    assert list(figure.data[0].colorbar.ticktext) == ["0: no", "1: yes"] and figure.layout.yaxis.autorange == "reversed"
