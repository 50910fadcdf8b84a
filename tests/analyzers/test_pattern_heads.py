"""Classic pattern heads against TransformerLens' definition (re-derived here with loops) and planted heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.analyzers import DuplicateTokenAnalyzer, InductionAnalyzer, PreviousTokenAnalyzer, ScanContext
from headscope.engine import load_backend
from headscope.probes import TokenSuite
from headscope.scanning import scan_backend
from planted import PLANTED, build_planted_gpt2
from reference import hf_attentions, hf_eager


def detection_pattern_reference(kind: str, tokens: list[int]) -> np.ndarray:
    """TransformerLens head_detector's patterns, one sequence, written out with loops."""
    n = len(tokens)
    pattern = np.zeros((n, n))
    for q in range(n):
        for k in range(q + 1):
            if kind == "previous_token_score":
                pattern[q, k] = k == q - 1
            elif kind == "duplicate_token_score":
                pattern[q, k] = k < q and tokens[k] == tokens[q]
            elif kind == "induction_score":
                pattern[q, k] = k >= 1 and (k - 1) < q and tokens[k - 1] == tokens[q]
    return pattern


def score_reference(attention: np.ndarray, pattern: np.ndarray, exclude_bos: bool, exclude_current: bool, measure: str) -> float:
    attention = attention.copy()
    if measure == "mul":
        if exclude_bos:
            attention[:, 0] = 0
        if exclude_current:
            np.fill_diagonal(attention, 0)
        return float((attention * pattern).sum() / attention.sum())
    diff = np.abs(attention - pattern) * np.tril(np.ones_like(pattern))
    if exclude_bos:
        diff[:, 0] = 0
    if exclude_current:
        np.fill_diagonal(diff, 0)
    return float(1 - diff.sum() / len(pattern))


def brute_force(path, suite: TokenSuite, metric: str, **params) -> np.ndarray:
    model = hf_eager(path)
    per_sample = []
    for tokens in suite.sequences:
        attentions = hf_attentions(model, torch.tensor([tokens]))
        pattern = detection_pattern_reference(metric, tokens)
        per_sample.append(
            [[score_reference(layer[0, h].numpy().astype(np.float64), pattern, **params) for h in range(layer.shape[1])]
             for layer in attentions]
        )
    return np.mean(per_sample, axis=0)  # detect_head averages a list of prompts


ANALYZERS = {
    "previous_token_score": PreviousTokenAnalyzer,
    "duplicate_token_score": DuplicateTokenAnalyzer,
    "induction_score": InductionAnalyzer,
}


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
@pytest.mark.parametrize(
    "exclude_bos,exclude_current,measure", [(False, False, "mul"), (True, False, "mul"), (True, True, "mul"), (False, False, "abs")]
)
def test_scores_equal_brute_force_detect_head(fixture, exclude_bos, exclude_current, measure, request):
    path = request.getfixturevalue(fixture)
    backend = load_backend(str(path), quiet=True)
    params = dict(seq_len=19, n_samples=5, seed=3, exclude_bos=exclude_bos, exclude_current_token=exclude_current, error_measure=measure)
    analyzers = [cls(**params) for cls in ANALYZERS.values()]
    atlas = scan_backend(backend, analyzers, batch_size=2, progress=False)
    suite = analyzers[0].build_suite(ScanContext(backend.spec, backend.tokenizer))
    wide = atlas.to_frame()
    for metric in ANALYZERS:
        expected = brute_force(path, suite, metric, exclude_bos=exclude_bos, exclude_current=exclude_current, measure=measure)
        got = wide[metric].to_numpy().reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert (wide[f"{metric}_std"] >= 0).all()


def test_planted_heads_win_their_metric(tmp_path):
    backend = load_backend(str(build_planted_gpt2(tmp_path)), quiet=True)
    analyzers = [cls(seq_len=21, n_samples=16) for cls in ANALYZERS.values()]
    atlas = scan_backend(backend, analyzers, progress=False)
    for metric, (layer, head) in PLANTED.items():
        top = atlas.top(metric, 2)
        assert (top.loc[0, "layer"], top.loc[0, "head"]) == (layer, head), metric
        assert top.loc[0, "value"] > 0.9, (metric, top.loc[0, "value"])
        assert top.loc[1, "value"] < 0.2, (metric, top.loc[1, "value"])


def test_scores_do_not_depend_on_padding_or_batching(tiny_llama_backend):
    """Sequences of different lengths scored alone, right-padded and left-padded give the same numbers."""
    rng = torch.Generator().manual_seed(7)
    sequences = []
    for length in (6, 11, 9, 15, 7):
        half = torch.randint(4, 96, (length,), generator=rng).tolist()
        sequences.append([1] + half + half)
    suite = TokenSuite("varied", sequences)

    class Fixed(InductionAnalyzer):
        def build_suite(self, ctx):
            return suite

    results = []
    for batch_size, side in ((1, "right"), (5, "right"), (5, "left"), (2, "left")):
        atlas = scan_backend(tiny_llama_backend, [Fixed()], batch_size=batch_size, padding_side=side, progress=False)
        results.append(atlas.to_frame()["induction_score"].to_numpy())
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6)


def test_same_seed_same_scores_other_seed_other_probes(tiny_llama_backend):
    one = scan_backend(tiny_llama_backend, [InductionAnalyzer(seq_len=21, n_samples=4, seed=1)], progress=False)
    two = scan_backend(tiny_llama_backend, [InductionAnalyzer(seq_len=21, n_samples=4, seed=1)], progress=False)
    three = scan_backend(tiny_llama_backend, [InductionAnalyzer(seq_len=21, n_samples=4, seed=2)], progress=False)
    assert one.frame["value"].tolist() == two.frame["value"].tolist()
    assert one.frame["probe_hash"].iloc[0] == two.frame["probe_hash"].iloc[0] != three.frame["probe_hash"].iloc[0]
