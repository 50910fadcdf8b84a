"""Per-layer model-level numbers read with the layer in the `layer` column, whichever way an analyzer wrote them."""

from __future__ import annotations

import pandas as pd

from headscope.atlas import Atlas, Provenance, rows_frame

PROV = Provenance("m", "r", "float32", "transformer-lens", 3, 2, 2, "0")


class V:
    def __init__(self, layer, head, metric, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, 1


def test_named_and_column_forms_give_the_same_rows_and_scalars_stay_apart():
    named = [V(-1, -1, f"ratio.L{layer}", 10.0 + layer) for layer in range(3)]
    column = [V(layer, -1, "norm", 20.0 + layer) for layer in range(3)]
    scalars = [V(-1, -1, "auroc", 0.7), V(-1, -1, "token[Ġx]", 0.1)]
    heads = [V(0, 0, "score", 0.5)]
    frame = rows_frame(named + column + scalars + heads, provenance=PROV, analyzer="a", probe_suite="s", probe_hash="h",
                       params="{}")
    atlas = Atlas(pd.DataFrame(frame))
    layers = atlas.layer_metrics()
    assert list(zip(layers["metric"], layers["layer"], layers["value"])) == [
        ("norm", 0, 20.0), ("norm", 1, 21.0), ("norm", 2, 22.0), ("ratio", 0, 10.0), ("ratio", 1, 11.0), ("ratio", 2, 12.0)]
    assert sorted(atlas.scalar_metrics()["metric"]) == ["auroc", "token[Ġx]"]


def test_per_layer_rows_survive_a_file_and_stay_out_of_head_views(tmp_path):
    import pytest

    from headscope.atlas import read_atlas
    from headscope.errors import HeadscopeError

    rows = [V(layer, -1, "norm", 20.0 + layer) for layer in range(3)] + [V(0, 0, "score", 0.5), V(-1, -1, "auroc", 0.7)]
    atlas = Atlas(rows_frame(rows, provenance=PROV, analyzer="a", probe_suite="s", probe_hash="h", params="{}"))
    atlas.save(tmp_path / "a.parquet")
    back = read_atlas(tmp_path / "a.parquet")
    assert list(back.layer_metrics()["layer"]) == [0, 1, 2] and list(back.head_rows()["metric"]) == ["score"]
    assert list(back.to_frame().columns) == ["kv_head", "score"]
    for layer, head in ((-1, 1), (3, -1), (-2, -1)):  # a head without a layer, a layer past n_layers
        bad = Atlas(rows_frame([V(layer, head, "x", 1.0)], provenance=PROV, analyzer="a", probe_suite="s",
                               probe_hash="h", params="{}"))
        bad.save(tmp_path / "bad.parquet")  # writing does not check indices; reading does
        with pytest.raises(HeadscopeError, match="impossible layer/head indices"):
            read_atlas(tmp_path / "bad.parquet")
