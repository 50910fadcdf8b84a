"""The conformance matrix: every per-head analyzer x every architecture family x both backends, against a
brute-force reference computed here from Hugging Face's eager outputs (tests/conformance/hf_reference.py).

What each cell must do (exact within a tolerance, or refuse in one line) is declared in
`expectations.py`; docs/conformance.md is rendered from that table and checked by test_conformance_doc.py.
One tiny random-init model per family (2 layers, hidden 64) serves every cell of the family.
"""

from __future__ import annotations

import json
import weakref

import pytest
import torch

from conformance import expectations as ex
from conformance import hf_reference as ref
from headscope.analyzers import DuplicateTokenAnalyzer, InductionAnalyzer, PreviousTokenAnalyzer, ScanContext
from headscope.analyzers.lookback import lookback_ratios
from headscope.analyzers.maps import MapsAnalyzer
from headscope.analyzers.retrieval import RetrievalAnalyzer
from headscope.analyzers.sinks import SinkAnalyzer
from headscope.engine import load_backend
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.scanning import scan_backend
from tiny_models import build_tiny_model

BOS = 1
CLASSIC = {"previous_token": PreviousTokenAnalyzer, "duplicate_token": DuplicateTokenAnalyzer,
           "induction": InductionAnalyzer}
SINK_SEQUENCES = [[BOS, 5, 9, 5, 7, 30, 9, 2, 11, 12, 5, 40], [BOS, 8, 8, 20, 21, 8, 2, 9], [BOS, 33, 34, 35, 36, 2, 37, 38, 33, 34]]
# needle-in-a-haystack in token ids: the needle [50, 51, 52] sits at [6, 9); teacher-forced answer
NEEDLE_PROMPTS = [([BOS, 10, 11, 12, 13, 14, 50, 51, 52, 15, 16, 17, 18, 19, 2, 50], 6, 9)]


@pytest.fixture(scope="module", params=list(ex.FAMILIES))
def family(request, tmp_path_factory):
    """(family, folder, eager HF model) for one architecture family."""
    kind = request.param
    folder = build_tiny_model(kind, tmp_path_factory.mktemp(f"conformance_{kind}"))
    return kind, folder, ref.eager_model(folder)


@pytest.fixture(scope="module", params=ex.BACKENDS)
def cell(request, family):
    """(family, backend name, loaded backend or the HeadscopeError that refused it, folder, eager model)."""
    kind, folder, model = family
    try:
        backend = load_backend(str(folder), backend=request.param, quiet=True)
    except HeadscopeError as err:
        backend = err
    return kind, request.param, backend, folder, model


def _loaded(cell, analyzer: str):
    """The backend, or None after asserting the declared load refusal."""
    kind, name, backend, _, _ = cell
    expected = ex.outcome(kind, analyzer, name)
    if isinstance(backend, HeadscopeError):
        assert expected.kind == "refused" and expected.detail.startswith("backend cannot load"), (kind, name, backend)
        assert expected.detail.split(": ", 1)[1] in str(backend) and "\n" not in str(backend)
        return None
    assert not (expected.kind == "refused" and expected.detail.startswith("backend cannot load")), (kind, name)
    return backend


_RUNS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _forward(model, seq: list[int]) -> dict:
    """ref.forward, once per (model, sequence): both backends' cells compare with the same eager pass. Keyed by
    the model object itself (weakly), never by id(): a freed family's id can come back for the next family."""
    runs = _RUNS.setdefault(model, {})
    if tuple(seq) not in runs:
        runs[tuple(seq)] = ref.forward(model, list(seq))
    return runs[tuple(seq)]


def _check_classic(atlas, analyzers, backend, model, kind, name):
    wide = atlas.to_frame()
    suite = analyzers["induction"].build_suite(ScanContext(backend.spec, backend.tokenizer))
    runs = [_forward(model, seq) for seq in suite.sequences]
    for key in CLASSIC:
        tol = ex.outcome(kind, key, name).tol
        column = CLASSIC[key].metrics[0]
        for layer in range(backend.spec.n_layers):
            expected = torch.stack([ref.classic_score(r["attentions"][layer], s, key) for r, s in zip(runs, suite.sequences)]).mean(0)
            got = torch.tensor([wide.loc[(layer, h), column] for h in range(backend.spec.n_heads)], dtype=torch.double)
            assert torch.allclose(got, expected, atol=tol, rtol=0), (kind, name, key, layer, got, expected)


class _FixedSinks(SinkAnalyzer):
    """The sinks analyzer on fixed token sequences (the tiny word-level tokenizer cannot read English)."""

    def build_suite(self, ctx):
        self.check(ctx)  # validation, and the score source `auto` resolves to
        return TokenSuite("conformance", [list(s) for s in SINK_SEQUENCES])


def test_classic_and_default_sinks(cell):
    """One scan per cell: previous-token, duplicate-token and induction scores = detect_head 'mul' on eager
    attention; default sinks (score_source=auto) = Gu / ACT / Guo definitions on eager attention, and the atlas
    records the source auto chose."""
    backend = _loaded(cell, "induction")
    if backend is None:
        return
    kind, name, _, _, model = cell
    classic = {key: cls(seq_len=13, n_samples=3) for key, cls in CLASSIC.items()}
    atlas = scan_backend(backend, [*classic.values(), _FixedSinks()], batch_size=3, progress=False)
    _check_classic(atlas, classic, backend, model, kind, name)
    params = atlas.frame.loc[atlas.frame["analyzer"] == "sinks", "params"].iloc[0]
    assert f'"score_source":"{ex.sinks_auto_source(kind)}"' in params, (kind, params)
    _check_sinks(atlas, model, kind, name, backend.spec, ex.outcome(kind, "sinks", name).tol)


def test_sinks_qk_path_exact_or_refused(cell):
    """Explicit score_source=qk: exact where declared, else refused in one line naming the reason."""
    backend = _loaded(cell, "sinks[score_source=qk]")
    if backend is None:
        return
    kind, name, _, _, model = cell
    expected = ex.outcome(kind, "sinks[score_source=qk]", name)
    if expected.kind == "refused":
        with pytest.raises(HeadscopeError) as err:
            scan_backend(backend, [_FixedSinks(score_source="qk")], batch_size=3, progress=False)
        assert expected.detail in str(err.value) and "\n" not in str(err.value), (kind, name, err.value)
        if kind not in ex.ASSERTED_SCALE:
            return
        asserted = _FixedSinks(score_source="qk", attn_scale=ex.ASSERTED_SCALE[kind], block_size=5)
        atlas = scan_backend(backend, [asserted], batch_size=3, progress=False)  # the scale the user asserts
        _check_sinks(atlas, model, kind, name, backend.spec, ex.TOL_PATTERN)
        return
    atlas = scan_backend(backend, [_FixedSinks(score_source="qk", block_size=5)], batch_size=3, progress=False)
    _check_sinks(atlas, model, kind, name, backend.spec, expected.tol)


def _check_sinks(atlas, model, kind, name, spec, tol):
    wide = atlas.to_frame()
    runs = [_forward(model, seq) for seq in SINK_SEQUENCES]
    for layer in range(spec.n_layers):
        per_seq = [ref.sink_values(run, seq, layer) for run, seq in zip(runs, SINK_SEQUENCES)]
        for metric in per_seq[0]:
            expected = torch.stack([v[metric] for v in per_seq]).mean(0)
            got = torch.tensor([wide.loc[(layer, h), metric] for h in range(spec.n_heads)], dtype=torch.double)
            scale = ex.TOL_NORM * float(expected.abs().max()) if metric == "output_norm" else tol
            assert torch.allclose(got, expected, atol=max(scale, tol), rtol=0), (kind, name, metric, layer, got, expected)
    per_layer = atlas.model_metrics().query("metric == 'massive_max_abs'").set_index("layer")["value"]
    for layer in range(spec.n_layers):
        hidden = [run["hidden"][layer] for run in runs]
        max_abs = sum(float(h.abs().max()) for h in hidden) / len(hidden)
        assert per_layer[layer] == pytest.approx(max_abs, rel=ex.TOL_NORM), (kind, name, layer)


def test_decoding_analyzers(cell):
    """Retrieval: on a teacher-forced needle answer every head's argmax key at every step and the copy-paste
    scores equal the eager reference (decoding with the KV cache vs one full eager pass). Lookback ratios, on the
    families the matrix declares for it, likewise."""
    backend = _loaded(cell, "retrieval")
    if backend is None:
        return
    kind, name, _, _, model = cell
    analyzer = RetrievalAnalyzer(teacher_forcing=True, max_new_tokens=3, stop_at_eos=False)
    samples = [{"needle_start": s, "needle_end": e, "real_needle": backend.tokenizer.decode(p[s:e])} for p, s, e in NEEDLE_PROMPTS]
    analyzer.reset(backend.spec)
    analyzer.score_suite(backend, TokenSuite("needles", [p for p, _, _ in NEEDLE_PROMPTS], samples))
    expected_scores = []
    for (prompt, start, end), log in zip(NEEDLE_PROMPTS, analyzer.sample_log):
        forced = prompt[start:end]
        scores, keys = ref.copy_paste(_forward(model, prompt + forced[:-1]), prompt, forced, start, end)
        assert log["generated_ids"] == forced and log["kept"], (kind, name, log["response"])
        assert torch.equal(log["argmax_keys"], keys), (kind, name, log["argmax_keys"], keys)
        expected_scores.append(scores)
    assert torch.allclose(analyzer.mean_scores(), torch.stack(expected_scores).mean(0), atol=1e-12)
    if ex.outcome(kind, "lookback", name).kind == "exact":
        _check_lookback(backend, model, kind, name)
    maps = ex.outcome(kind, "maps", name)  # weights only: checked here, with the cell's backend already loaded
    if maps.kind == "exact":
        _check_maps_layer0(backend, model, cell[3])
    elif maps.kind == "refused":
        with pytest.raises(HeadscopeError) as err:
            _check_maps_layer0(backend, model, cell[3])
        assert maps.detail in str(err.value) and "\n" not in str(err.value), (kind, name, err.value)



def _check_lookback(backend, model, kind, name):
    """Lookback ratios of a teacher-forced answer decoded with the KV cache = those of one full eager pass."""
    prompt, start, end = NEEDLE_PROMPTS[0]
    forced, context_len = prompt[start:end], len(prompt) - 2  # the last two prompt tokens are the answer header
    ratios, result = lookback_ratios(backend, prompt, context_len, max_new_tokens=len(forced), forced_tokens=forced)
    assert result.generated_ids == forced
    expected = ref.lookback(_forward(model, prompt + forced[:-1]), prompt, len(forced), context_len)
    assert torch.allclose(torch.from_numpy(ratios), expected, atol=ex.outcome(kind, "lookback", name).tol, rtol=0), kind


MAPS_RELATIONS = {"copying": [(f"t{i}", f"t{i}") for i in range(10, 40)],
                  "next": [(f"t{i}", f"t{i + 1}") for i in range(40, 70)]}


def _check_maps_layer0(backend, model, folder):
    """MAPS layer-0 relation scores (promotion) = the top-k hits of W_E W_V W_O W_U from HF's own weights."""
    suite_dir = folder.parent / f"maps_suite_{backend.name}"
    suite_dir.mkdir(exist_ok=True)
    records = [{"relation": r, "src": s, "dst": d} for r, pairs in MAPS_RELATIONS.items() for s, d in pairs]
    (suite_dir / "data.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
    # layer 0 reads raw embeddings: MLP_0 is not needed (on GPT-OSS it would not run, see docs/conformance.md)
    analyzer = MapsAnalyzer(suite=str(suite_dir), layers=(0,), n_salient=0, k=3, apply_first_mlp=False)
    ctx = ScanContext(backend.spec, backend.tokenizer)
    analyzer.run(backend, analyzer.build_suite(ctx), ctx)
    rows = {(r.head, r.metric): r.value for r in analyzer.results() if r.layer == 0}
    spec = backend.spec
    for relation, pairs in MAPS_RELATIONS.items():
        ids = [(backend.tokenizer.convert_tokens_to_ids(s), backend.tokenizer.convert_tokens_to_ids(d)) for s, d in pairs]
        k = 1 if relation == "copying" else 3
        expected = ref.maps_layer0_hits(model, spec.n_heads, spec.n_kv_heads, spec.d_head, ids, k)
        got = torch.tensor([rows[(h, f"maps_{relation}")] for h in range(spec.n_heads)], dtype=torch.double)
        assert torch.equal(got, expected), (backend.spec.architecture, backend.name, relation, got, expected)
        n_pairs = [r.value for r in analyzer.results() if r.metric == f"maps_{relation}_n_pairs"]
        assert n_pairs == [len(pairs)]  # every word is one token of the tiny vocabulary: no pair was dropped


def test_auto_backend_takes_nnsight_where_the_bridge_has_no_qk(family):
    """`--backend auto` (the CLI default) loads the families whose bridge never fires q/k hooks with nnsight."""
    from headscope.engine.loading import choose_backend

    kind, folder, _ = family
    assert choose_backend(folder) == ("nnsight" if kind in ex.TL_NO_QK else "transformer-lens"), kind
