"""What the explorer shows, computed from the atlas: ranks by declared direction with NaN last, 0/1 flags, meanings,
per-layer model-level metrics as curves (not rows), readable token names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.atlas.tokens import readable_metric
from headscope.viewers.explorer import layer_curves, model_level_table, render_explorer
from headscope.viewers.explorer_data import atlas_entry, model_level_frames


class V:
    def __init__(self, layer, head, metric, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, 4


PROV = Provenance("m", "r", "float32", "transformer-lens", 2, 3, 3, "0")
DOCS = {"score": {"analyzer": "a", "meaning": "how much", "direction": "higher"},
        "entropy": {"analyzer": "a", "meaning": "spread", "direction": "lower"},
        "flag": {"analyzer": "b", "meaning": "1 = has it", "direction": "flag"}}


def atlas() -> Atlas:
    score = [0.5, np.nan, 0.9, 0.1, 0.9, 0.2]  # L0H1 has no value
    entropy = [0.3, 0.1, 0.2, 0.9, 0.8, 0.7]
    flag = [0, 1, 0, 0, 1, 0]
    heads = [(l, h) for l in range(2) for h in range(3)]
    frames = [rows_frame([V(l, h, metric, v) for (l, h), v in zip(heads, values)], provenance=PROV, analyzer=analyzer,
                         probe_suite="s", probe_hash="h", params="{}")
              for analyzer, metric, values in (("a", "score", score), ("a", "entropy", entropy), ("b", "flag", flag))]
    levels = [V(-1, -1, f"massive_ratio.L{layer}", 10.0 ** layer) for layer in range(2)]
    levels += [V(-1, -1, "kept", 7.0), V(-1, -1, "hidden_sink_token[Ġthe]", 0.5)]
    frames.append(rows_frame(levels, provenance=PROV, analyzer="b", probe_suite="s", probe_hash="h", params="{}"))
    return Atlas(pd.concat(frames, ignore_index=True), metric_docs=DOCS)


def test_ranks_follow_the_declared_direction_and_nan_ranks_last():
    entry = atlas_entry(atlas(), "mine")
    score, entropy = entry["metrics"]["score"], entry["metrics"]["entropy"]
    assert score["ranks"] == [[3, None, 1], [5, 1, 4]]  # ties share the best rank; NaN has none
    assert score["n_values"] == 5 and score["n_nan"] == 1 and score["values"][0][1] is None
    assert entropy["ranks"] == [[3, 1, 2], [6, 5, 4]]  # lower = stronger
    assert entry["groups"] == [{"analyzer": "a", "metrics": ["entropy", "score"]}, {"analyzer": "b", "metrics": ["flag"]}]
    assert score["meaning"] == "how much" and entry["metrics"]["flag"]["binary"] and not score["binary"]


def test_per_layer_model_metrics_become_curves_and_the_rest_a_table():
    scalars, per_layer = model_level_frames(atlas(), "m")
    assert list(per_layer["metric"]) == ["massive_ratio", "massive_ratio"] and list(per_layer["layer"]) == [0, 1]
    assert set(scalars["metric"]) == {"kept", "hidden_sink_token[Ġthe]"}
    curves = layer_curves(per_layer, {})
    assert list(curves.data[0].x) == [0, 1] and list(curves.data[0].y) == [1.0, 10.0]
    table = model_level_table(scalars)
    assert 'hidden_sink_token[" the"]' in table and "Ġ" not in table
    assert "&lt;b&gt;" in model_level_table(scalars.assign(metric="<b>"))  # names are escaped


def test_readable_metric_names():
    assert readable_metric("hidden_sink_token[Ġthe]") == 'hidden_sink_token[" the"]'
    assert readable_metric("hidden_sink_token[Ċ]") == 'hidden_sink_token["\\n"]'
    assert readable_metric("massive_ratio.L3") == "massive_ratio.L3"


def test_rendered_data_has_no_nan_literals():
    text = render_explorer(atlas())
    payload = text.split('id="atlas-data">', 1)[1].split("</script>", 1)[0]
    assert "NaN" not in payload  # JSON.parse refuses NaN: missing values travel as null


def test_notebook_view_lists_top_heads_and_escapes_names():
    planted = atlas()
    frame = planted.frame.copy()
    frame.loc[frame["metric"] == "entropy", "metric"] = "<i>entropy</i>"
    text = Atlas(frame, metric_docs=DOCS)._repr_html_()
    assert "&lt;i&gt;entropy&lt;/i&gt;" in text and "<i>" not in text
    score_row = next(line for line in planted._repr_html_().split("<tr>") if ">score<" in line)
    assert "L0H2 (0.9), L1H1 (0.9), L0H0 (0.5)" in score_row  # NaN head never listed
    flag_row = next(line for line in planted._repr_html_().split("<tr>") if ">flag<" in line)
    assert "2 flagged: L0H1, L1H1" in flag_row
