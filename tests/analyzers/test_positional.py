"""Positional heads (Voita et al. 2019) against Hugging Face eager attentions and a hand-wired offset -2 head.

- brute force: every counted query's argmax (BOS excluded) and mass per offset / absolute position, recomputed
  here with loops from `output_attentions=True`, on sequences of varied length, padded on either side, both
  backends;
- planted: the 2-layer GPT-2 of tests/planted.py (L0H0 attends to the previous token) with L0H2 wired here to
  attend two tokens back; both must be flagged positional with their own offset, and no other head may be.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.analyzers.positional import PositionalAnalyzer
from headscope.engine import load_backend
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.scanning import scan_backend
from planted import D_HEAD, POS, _wire
from reference import hf_attentions, hf_eager
from tiny_models import build_tiny_model

MAX_OFFSET, N_ABS = 3, 2


def random_suite(lengths: tuple[int, ...], vocab: int, seed: int) -> TokenSuite:
    g = torch.Generator().manual_seed(seed)
    return TokenSuite("random", [[1] + torch.randint(4, vocab, (n,), generator=g).tolist() for n in lengths])


def fixed(suite: TokenSuite, **params) -> PositionalAnalyzer:
    class Fixed(PositionalAnalyzer):
        def build_suite(self, ctx):
            return suite

    return Fixed(**params)


def reference(path, suite: TokenSuite) -> dict[str, np.ndarray]:
    """Loops over each sequence alone (no padding): argmax among keys 1..q, for queries q >= 2."""
    model = hf_eager(path)
    out: dict[str, np.ndarray] = {}
    n_rows = 0
    for tokens in suite.sequences:
        attentions = [a[0].numpy().astype(np.float64) for a in hf_attentions(model, torch.tensor([tokens]))]
        n_layers, n_heads = len(attentions), attentions[0].shape[0]
        if not out:
            for name, width in (("argmax_rel", MAX_OFFSET + 1), ("mass_rel", MAX_OFFSET + 1), ("argmax_abs", N_ABS), ("mass_abs", N_ABS)):
                out[name] = np.zeros((n_layers, n_heads, width))
        for q in range(2, len(tokens)):
            n_rows += 1
            for layer in range(n_layers):
                for head in range(n_heads):
                    row = attentions[layer][head, q]
                    k = 1 + int(np.argmax(row[1 : q + 1]))
                    if q - k <= MAX_OFFSET:
                        out["argmax_rel"][layer, head, q - k] += 1
                    if k - 1 < N_ABS:
                        out["argmax_abs"][layer, head, k - 1] += 1
                    for d in range(MAX_OFFSET + 1):
                        if q - d >= 1:
                            out["mass_rel"][layer, head, d] += row[q - d]
                    for index in range(N_ABS):
                        if 1 + index <= q:
                            out["mass_abs"][layer, head, index] += row[1 + index]
    return {name: value / n_rows for name, value in out.items()}


@pytest.mark.parametrize("backend,side", [("transformer-lens", "right"), ("nnsight", "left")])
def test_matches_brute_force_on_eager_attentions(tiny_llama_dir, backend, side):
    suite = random_suite((9, 5, 14, 2), 96, seed=4)
    analyzer = fixed(suite, max_offset=MAX_OFFSET, n_absolute=N_ABS, threshold=0.9)
    atlas = scan_backend(load_backend(str(tiny_llama_dir), backend=backend, quiet=True), [analyzer], batch_size=3,
                         padding_side=side, progress=False)
    wide = atlas.to_frame()
    expected = reference(tiny_llama_dir, suite)
    shape = expected["argmax_rel"].shape[:2]
    for d in range(MAX_OFFSET + 1):
        np.testing.assert_allclose(wide[f"positional_argmax_back{d}"].to_numpy().reshape(shape), expected["argmax_rel"][..., d], atol=1e-9)
        np.testing.assert_allclose(wide[f"positional_mass_back{d}"].to_numpy().reshape(shape), expected["mass_rel"][..., d], atol=1e-5)
    for index in range(N_ABS):
        np.testing.assert_allclose(wide[f"positional_argmax_abs{1 + index}"].to_numpy().reshape(shape), expected["argmax_abs"][..., index], atol=1e-9)
        np.testing.assert_allclose(wide[f"positional_mass_abs{1 + index}"].to_numpy().reshape(shape), expected["mass_abs"][..., index], atol=1e-5)
    best = expected["argmax_rel"][..., 1:].max(-1)
    np.testing.assert_allclose(wide["positional_score"].to_numpy().reshape(shape), best, atol=1e-9)
    np.testing.assert_array_equal(wide["positional_offset"].to_numpy().reshape(shape), -(expected["argmax_rel"][..., 1:].argmax(-1) + 1))
    np.testing.assert_array_equal(wide["is_positional"].to_numpy().reshape(shape), (best >= 0.9).astype(float))


def wire_two_back(model) -> None:
    """tests/planted.py's heads, plus L0H2: query at position p matches the key at position p - 2."""
    _wire(model)
    w0 = model.transformer.h[0].attn.c_attn.weight
    q, k, h2 = 0, 192, 2 * D_HEAD
    for p in range(D_HEAD - 2):
        w0[POS + p, q + h2 + p] = 1.0
        w0[POS + p, k + h2 + p + 2] = 1.0


@pytest.mark.parametrize("backend", ["transformer-lens", "nnsight"])
def test_planted_offset_heads_are_found(tmp_path_factory, backend):
    folder = tmp_path_factory.getbasetemp() / "positional_planted"
    if not (folder / "config.json").exists():
        build_tiny_model("gpt2", folder, vocab_size=40, edit=wire_two_back, n_embd=192, n_head=3, n_layer=2, n_positions=64)
    suite = random_suite((20,) * 6, 40, seed=1)
    atlas = scan_backend(load_backend(str(folder), backend=backend, quiet=True), [fixed(suite)], progress=False)
    wide = atlas.to_frame()
    top = atlas.top("positional_score", 3)
    assert {(int(r.layer), int(r.head)) for r in top.head(2).itertuples()} == {(0, 0), (0, 2)}
    assert top["value"].iloc[1] >= 0.9 and top["value"].iloc[2] < 0.9
    assert wide.loc[(0, 0), "positional_offset"] == -1 and wide.loc[(0, 2), "positional_offset"] == -2
    # query 2 cannot reach two back past the excluded BOS: 18 of the 19 counted queries per sequence
    assert wide.loc[(0, 2), "positional_argmax_back2"] == pytest.approx(18 / 19)
    assert wide.loc[(0, 2), "positional_mass_back2"] > 0.9
    assert wide["is_positional"].sum() == 2


def test_bad_params_are_one_line_errors(tiny_llama_backend):
    for params in ({"max_offset": 0}, {"threshold": 1.5}, {"seq_len": 100000}):
        with pytest.raises(HeadscopeError):
            scan_backend(tiny_llama_backend, [PositionalAnalyzer(**params)], progress=False)


def test_shards_merge_to_one_pass(tiny_llama_dir):
    """Accumulators add up: a scan cut into shards of 2 sequences equals one uninterrupted pass."""
    import headscope

    common = dict(seq_len=12, n_samples=6, batch_size=2, progress=False)
    one = headscope.scan(str(tiny_llama_dir), ["positional"], shard_size=100, **common)
    sharded = headscope.scan(str(tiny_llama_dir), ["positional"], shard_size=2, **common)
    np.testing.assert_allclose(sharded.frame["value"].to_numpy(), one.frame["value"].to_numpy(), atol=1e-12)
    assert one.frame[one.frame["metric"] == "positional_argmax_back0"]["n_samples"].iloc[0] > 0
