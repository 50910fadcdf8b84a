"""The MAPS viewer reads only the atlas: the matrix it draws is the atlas' values, in (layer, head) order."""

from __future__ import annotations

import pytest

from headscope.analyzers.base import HeadValue
from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.errors import HeadscopeError
from headscope.viewers.maps import layer_head_grid, relation_matrix, relation_scores


def make_atlas() -> Atlas:
    values = []
    for layer in range(2):
        for head in range(3):
            values.append(HeadValue(layer, head, "maps_copying", 0.1 * (layer * 3 + head), 30))
            values.append(HeadValue(layer, head, "maps_copying_suppression", 0.05, 30))
            values.append(HeadValue(layer, head, "maps_country_to_capital", 1.0 if (layer, head) == (1, 2) else 0.0, 40))
            values.append(HeadValue(layer, head, "maps_country_to_capital_suppression", 0.0, 40))
    values.append(HeadValue(-1, -1, "maps_copying_n_pairs", 30, 30))
    provenance = Provenance("m", "r", "float32", "transformer-lens", 2, 3, 3, "0")
    return Atlas(rows_frame(values, provenance=provenance, analyzer="maps", probe_suite="s", probe_hash="h", params="{}"))


def test_matrix_is_the_atlas_values():
    atlas = make_atlas()
    wide = relation_scores(atlas)
    assert list(wide.columns) == ["copying", "country_to_capital"]
    assert wide.loc[(1, 2), "country_to_capital"] == 1.0
    figure = relation_matrix(atlas)
    heat = figure.data[0]
    assert list(heat.y) == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    assert heat.z[5][1] == 1.0 and heat.z[4][0] == pytest.approx(0.4)
    supp = relation_scores(atlas, suppression=True)
    assert (supp["copying"] == 0.05).all()
    only = relation_matrix(atlas, min_score=0.9)
    assert list(only.data[0].y) == ["L1H2"]
    grid = layer_head_grid(atlas, "copying")
    assert grid.data[0].z[1][0] == pytest.approx(0.3)


def test_missing_rows_are_one_line_errors():
    atlas = make_atlas()
    with pytest.raises(HeadscopeError, match="not in this atlas"):
        layer_head_grid(atlas, "antonym")
    with pytest.raises(HeadscopeError, match="lower min_score"):
        relation_matrix(atlas, min_score=2.0)
    empty = Atlas(atlas.frame[atlas.frame["analyzer"] == "none"])
    with pytest.raises(HeadscopeError):
        relation_scores(empty)
