"""What docs/scans.md promises about numbers: other thread counts (and Ray) change values only by float noise,
and `merge` collapses rows of one provenance within MERGE_RTOL/MERGE_ATOL, refusing anything further apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.atlas import Atlas, Provenance, merge_atlases, rows_frame
from headscope.errors import HeadscopeError


class _V:
    def __init__(self, layer, head, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, "induction_score", value, 3


def _atlas(values) -> Atlas:
    prov = Provenance("m", "r", "float32", "transformer-lens", 2, 2, 2, "0.1.0")
    return Atlas(rows_frame([_V(i // 2, i % 2, v) for i, v in enumerate(values)], provenance=prov,
                            analyzer="induction", probe_suite="s", probe_hash="h", params="{}"))


def test_merge_collapses_float_noise_keeping_the_first_value():
    a = _atlas([0.25, 1.5, np.nan, 0.0])
    noisy = _atlas([0.25 * (1 + 3e-7), 1.5 - 2e-6, np.nan, 4e-7])  # what another thread count gives
    merged = merge_atlases([a, noisy])
    assert len(merged) == 4
    np.testing.assert_array_equal(merged.frame.sort_values(["layer", "head"])["value"].to_numpy(),
                                  a.frame.sort_values(["layer", "head"])["value"].to_numpy())


@pytest.mark.parametrize("other", [[0.25 + 1e-3, 1.5, np.nan, 0.0], [0.25, 1.5, 0.1, 0.0], [0.25, 1.5 * (1 + 1e-4), np.nan, 0.0]])
def test_merge_refuses_values_beyond_the_tolerance(other):
    with pytest.raises(HeadscopeError, match="conflicting rows"):
        merge_atlases([_atlas([0.25, 1.5, np.nan, 0.0]), _atlas(other)])


def test_thread_counts_give_values_within_the_merge_tolerance(smollm2_backend):
    from headscope.atlas.atlas import MERGE_ATOL, MERGE_RTOL
    from headscope.scanning import build_analyzers, scan_backend

    threads = torch.get_num_threads()
    atlases = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            analyzers = build_analyzers("classic", shared={"seq_len": 32, "n_samples": 2})
            atlases.append(scan_backend(smollm2_backend, analyzers, progress=False))
    finally:
        torch.set_num_threads(threads)
    one, two = (a.frame["value"].to_numpy() for a in atlases)
    np.testing.assert_allclose(one, two, rtol=MERGE_RTOL, atol=MERGE_ATOL, equal_nan=True)
    assert len(merge_atlases(atlases)) == len(atlases[0])
