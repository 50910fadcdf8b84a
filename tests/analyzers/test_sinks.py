"""Sinks analyzer: streaming column sums vs HF eager attentions, planted BOS and non-initial sinks, padding."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoModelForCausalLM

from headscope.analyzers import ScanContext
from headscope.analyzers.sink_math import _stats_by_blocks, stats_from_pattern, stats_from_qk
from headscope.analyzers.sinks import SinkAnalyzer
from headscope.engine import Needs, load_backend, pad_sequences
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.scanning import scan_backend
from tiny_models import build_tiny_model

BOS, EOS = 1, 2
D_HEAD = 16  # tiny llama: 64 / 4 heads
SINK_POS = 9  # where the planted non-initial sink token (EOS) sits


@functools.lru_cache(maxsize=4)
def eager_model(folder):
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def eager_attentions(folder, batch):
    """Brute-force reference: HF eager attention with output_attentions, [batch, head, query, key] per layer."""
    model = eager_model(str(folder))
    with torch.no_grad():
        out = model(batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True, output_hidden_states=True)
    return [a.float() for a in out.attentions], [h.float() for h in out.hidden_states]


def gu_alpha(attn: torch.Tensor) -> torch.Tensor:
    """Gu et al. `compute_attention_sink` on one unpadded sequence: (A / arange(T, 0, -1)).sum(-2) -> [head, key]."""
    t = attn.shape[-1]
    return (attn / torch.arange(t, 0, -1, dtype=attn.dtype)[None, :]).sum(-2)


def random_sequences(n: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        body = torch.randint(4, 96, (lengths[i % len(lengths)] - 1,), generator=g).tolist()
        seq = [BOS] + body
        if len(seq) > SINK_POS:
            seq[SINK_POS] = EOS
        out.append(seq)
    return out


def plant_sinks(model) -> None:
    """Layer 0: head 0 attends to BOS and writes nothing; head 2 attends to the EOS token wherever it sits.

    Embeddings: BOS = 10 e0, EOS = 10 e2, every other token has 10 in dim 1 and 0 in dims 0 and 2. Query row 7
    of a head (the lowest-frequency rotary pair, rotation < 0.03 rad over 64 positions) reads dim 1; key row 7 of
    kv head 0 reads dim 0 (BOS), of kv head 1 reads dim 2 (EOS). All other query rows of heads 0 and 2 are zero,
    so their logits are 16 on the planted key and about 0 elsewhere. kv head 0's values ignore dim 0, so head 0
    copies nothing from BOS.
    """
    emb = model.model.embed_tokens.weight
    emb[:, 0:3] = 0.0
    emb[:, 1] = 10.0
    emb[BOS] = 0.0
    emb[BOS, 0] = 10.0
    emb[EOS] = 0.0
    emb[EOS, 2] = 10.0
    attn = model.model.layers[0].self_attn
    ln = model.model.layers[0].input_layernorm.weight
    ln[:] = 1.0
    q, k, v = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    for head, kv, marker in ((0, 0, 0), (2, 1, 2)):
        q[head * D_HEAD : (head + 1) * D_HEAD] = 0.0
        q[head * D_HEAD + 7, 1] = 1.0
        k[kv * D_HEAD + 7] = 0.0
        k[kv * D_HEAD + 7, marker] = 1.0
    v[0:D_HEAD, 0] = 0.0  # kv head 0 values ignore the BOS marker


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("sinks_planted"), edit=plant_sinks)


@pytest.fixture(scope="module")
def planted_backend(planted_dir):
    return load_backend(str(planted_dir), quiet=True)


class FixedSuite(SinkAnalyzer):
    """The sinks analyzer on given token sequences (the tiny tokenizer cannot read English)."""

    sequences: list[list[int]] = []

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        super().build_suite(ctx)  # validation + tokenizer
        return TokenSuite("fixed", [list(s) for s in self.sequences])


def run_fixed(backend, sequences, *, padding_side="right", batch_size=3, **params):
    analyzer = type("Fixed", (FixedSuite,), {"sequences": sequences})(**params)
    atlas = scan_backend(backend, [analyzer], batch_size=batch_size, padding_side=padding_side, progress=False)
    return atlas, analyzer


@pytest.mark.parametrize("side", ["right", "left"])
def test_streaming_column_sums_match_eager(tiny_llama_dir, tiny_llama_backend, side):
    sequences = random_sequences(3, [23, 17, 11])
    batch = pad_sequences(sequences, 0, side=side)
    attentions, _ = eager_attentions(tiny_llama_dir, batch)
    got: dict[int, tuple] = {}

    def on_layer(acts):
        got[acts.layer] = (
            stats_from_qk(acts.q, acts.k, batch.valid, scale=D_HEAD**-0.5, block_size=4),  # fused kernel (CPU)
            _stats_by_blocks(acts.q, acts.k, batch.valid.bool(), D_HEAD**-0.5, 4),  # the other devices' path
            stats_from_pattern(acts.pattern, batch.valid, block_size=5),
        )

    tiny_llama_backend.run(batch, Needs(pattern=True, q=True, k=True), on_layer)
    valid = batch.valid
    for layer, attn in enumerate(attentions):
        region = valid[:, None, :, None] & valid[:, None, None, :]
        reference = (attn * region).sum(-2).double()  # column sums over real queries
        # row entropies H(A_i) / log(keys visible) of real rows that see more than one key, summed per head
        t = valid.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        visible = (region & causal).sum(-1)  # [batch, 1, query]: real keys at or before each real query
        plogp = torch.where(attn > 0, attn * attn.clamp(min=1e-30).log(), torch.zeros_like(attn))
        used = (visible > 1) & valid[:, None, :]
        entropy = (-plogp.sum(-1) / visible.clamp(min=2).log() * used).sum(-1).double()  # [batch, head]
        for stats in got[layer]:
            torch.testing.assert_close(stats.col_sum, reference, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(stats.entropy_sum, entropy, atol=1e-5, rtol=1e-5)
            assert stats.n_entropy.tolist() == (valid.sum(-1) - 1).tolist()
        # per-sequence Gu alpha on the unpadded attention equals our column mean at the real positions
        for row, seq in enumerate(sequences):
            cols = valid[row].nonzero().flatten()
            expected = gu_alpha(attn[row][:, cols][:, :, cols])
            torch.testing.assert_close(got[layer][0].column_mean[row][:, cols].float(), expected, atol=1e-6, rtol=1e-5)


def test_planted_bos_and_hidden_sink(planted_dir, planted_backend):
    sequences = random_sequences(6, [40, 33, 25])
    atlas, analyzer = run_fixed(planted_backend, sequences)
    wide = atlas.to_frame()
    assert wide.loc[(0, 0), "sink_score"] > 0.95 and wide.loc[(0, 0), "sink_rate"] == 1.0
    assert wide.loc[(0, 2), "sink_score"] < 0.3  # head 2 leaves BOS once the EOS sink is visible
    assert wide.loc[(0, 2), "sink_rate"] == 0.0
    # hidden sink: exactly one per sequence for head 2, at EOS (relative position 9 / (len - 1))
    assert wide.loc[(0, 2), "hidden_sink_count"] == pytest.approx(1.0)
    assert wide.loc[(0, 2), "hidden_sink_mass"] > 0.6
    expected_relpos = sum(SINK_POS / (len(s) - 1) for s in sequences) / len(sequences)
    assert wide.loc[(0, 2), "hidden_sink_relpos"] == pytest.approx(expected_relpos, rel=1e-6)
    assert analyzer.hidden_sink_tokens().get("<eos>", 0) >= len(sequences)
    # head 0 is dormant: all attention on BOS, row entropy near 0, its output (BOS value) near 0
    assert wide.loc[(0, 0), "row_entropy"] < 0.05 and wide.loc[(0, 0), "is_dormant"] == 1.0
    assert wide.loc[(0, 0), "output_norm_rel"] < 0.1 and wide.loc[(0, 0), "dormant_score"] > 0.85
    assert wide.loc[(0, 2), "is_dormant"] == 0.0
    model_rows = atlas.model_metrics().set_index("metric")["value"]
    assert "hidden_sink_token[<eos>]" in model_rows.index


def test_analyzer_matches_gu_reference_and_padding_invariant(planted_dir, planted_backend):
    sequences = random_sequences(5, [30, 21, 14])
    right, _ = run_fixed(planted_backend, sequences, padding_side="right", epsilon=0.3)
    left, _ = run_fixed(planted_backend, sequences, padding_side="left", epsilon=0.3)
    pattern, _ = run_fixed(planted_backend, sequences, score_source="pattern")
    # brute force: one unpadded eager pass per sequence, Gu's formula, averaged over sequences
    alphas0 = []
    for seq in sequences:
        attentions, _ = eager_attentions(planted_dir, pad_sequences([seq], 0))
        alphas0.append(torch.stack([gu_alpha(a[0])[:, 0] for a in attentions]))  # [layer, head]
    alpha0 = torch.stack(alphas0)  # [seq, layer, head]
    for atlas in (right, left, pattern):
        wide = atlas.to_frame()
        for layer in range(2):
            for head in range(4):
                assert wide.loc[(layer, head), "sink_score"] == pytest.approx(float(alpha0[:, layer, head].mean()), abs=1e-5)
                assert wide.loc[(layer, head), "sink_rate"] == pytest.approx(float((alpha0[:, layer, head] > 0.3).float().mean()))
        rate = atlas.model_metrics().set_index("metric").loc["sink_rate", "value"]
        assert rate == pytest.approx(float((alpha0 > 0.3).float().mean()))


def test_massive_activation_rows_match_hidden_states(planted_dir, planted_backend):
    sequences = random_sequences(2, [20])
    atlas, _ = run_fixed(planted_backend, sequences)
    per_layer = atlas.model_metrics().query("layer >= 0")  # one row per layer, layer column set, head -1
    assert set(per_layer["metric"]) == {"massive_max_abs", "massive_ratio", "massive_norm_ratio", "massive_top_is_first",
                                        "massive_outliers", "massive_outliers_on_sinks"}
    assert not atlas.head_rows()["metric"].str.startswith("massive_").any()
    metrics = per_layer.set_index(["metric", "layer"])["value"]
    _, hidden = eager_attentions(planted_dir, pad_sequences(sequences, 0))
    for layer in range(2):
        h = hidden[layer]  # residual stream entering `layer`
        max_abs = h.abs().amax(dim=(1, 2)).mean()
        norms = h.norm(dim=-1)
        ratio = (norms.amax(-1) / norms.median(-1).values).mean()
        assert metrics[("massive_max_abs", layer)] == pytest.approx(float(max_abs), rel=1e-4)
        assert metrics[("massive_norm_ratio", layer)] == pytest.approx(float(ratio), rel=1e-4)


def test_bad_inputs_are_one_line_errors(tiny_llama_backend):
    ctx = ScanContext(tiny_llama_backend.spec, tiny_llama_backend.tokenizer)
    with pytest.raises(HeadscopeError, match="score_source"):
        SinkAnalyzer(score_source="flash").build_suite(ctx)
    with pytest.raises(HeadscopeError, match="exceeds the model's context"):
        SinkAnalyzer(seq_len=10_000).build_suite(ctx)
    with pytest.raises(HeadscopeError, match="cannot load hub dataset 'no-such/dataset'"):
        SinkAnalyzer(dataset="no-such/dataset").build_suite(ctx)
    gemma = ScanContext(
        tiny_llama_backend.spec.__class__(**{**tiny_llama_backend.spec.__dict__, "architecture": "Gemma2ForCausalLM"}),
        tiny_llama_backend.tokenizer,
    )
    with pytest.raises(HeadscopeError, match="not exact on Gemma2ForCausalLM .*soft-capping.*score_source=pattern"):
        SinkAnalyzer(score_source="qk").build_suite(gemma)
    unknown = ScanContext(
        tiny_llama_backend.spec.__class__(**{**tiny_llama_backend.spec.__dict__, "architecture": "NewThingForCausalLM"}),
        tiny_llama_backend.tokenizer,
    )
    with pytest.raises(HeadscopeError, match="not checked against eager attention"):
        SinkAnalyzer(score_source="qk").build_suite(unknown)
    for context, source in ((gemma, "pattern"), (unknown, "pattern"), (ctx, "qk")):  # auto resolves, never refuses
        analyzer = SinkAnalyzer(n_samples=2)
        analyzer.check(context)
        assert analyzer.params.score_source == source and analyzer.needs.pattern == (source == "pattern")


def test_shipped_suite_tokenises_with_bos(tiny_llama_backend):
    ctx = ScanContext(tiny_llama_backend.spec, tiny_llama_backend.tokenizer)
    suite = SinkAnalyzer(n_samples=5).build_suite(ctx)
    assert len(suite) == 5 and all(s[0] == BOS for s in suite.sequences)
    assert all(len(s) <= 64 for s in suite.sequences)


def test_smollm2_streaming_equals_patterns_and_known_sinks(smollm2_backend):
    """Real model, one forward: the q/k path equals TransformerLens' own patterns; known sink facts hold."""
    analyzer = SinkAnalyzer(n_samples=3, seq_len=48)
    ctx = ScanContext(smollm2_backend.spec, smollm2_backend.tokenizer, batch_size=3)
    suite = analyzer.build_suite(ctx)
    batch = pad_sequences(suite.sequences, ctx.pad_token_id)
    analyzer.start(ctx, suite)
    worst = []

    def on_layer(acts):
        analyzer.observe(batch, acts)
        streamed = stats_from_qk(acts.q, acts.k, batch.valid, scale=smollm2_backend.spec.d_head**-0.5, block_size=16)
        full = stats_from_pattern(acts.pattern, batch.valid)
        worst.append(float((streamed.col_sum - full.col_sum).abs().max()))

    smollm2_backend.run(batch, analyzer.needs | Needs(pattern=True), on_layer)
    assert max(worst) < 1e-4  # column sums over up to 48 queries, fp32 softmax
    rows = {(r.layer, r.head, r.metric): r.value for r in analyzer.results()}
    layer_score = [sum(rows[(layer, h, "sink_score")] for h in range(9)) / 9 for layer in range(30)]
    assert layer_score[0] < 0.1 and sum(layer_score[20:]) / 10 > 0.4  # sinks appear past the first layers
    assert rows[(15, -1, "massive_top_is_first")] == 1.0 and rows[(15, -1, "massive_ratio")] > 1000


def test_notebook_runs(tmp_path):
    from notebook_runner import cell_outputs, figure_count, run_notebook

    notebook = run_notebook("attention_sinks.ipynb", tmp_path, parameters={"N_SAMPLES": 2, "SEQ_LEN": 40})
    text = cell_outputs(notebook)
    assert "sink rate" in text and "layers without sinks" in text and "user-prompts:" in text
    assert (tmp_path / "sinks_atlas.parquet").exists()
    assert figure_count(notebook) == 3  # sink-rate curve, head map, massive activations


def test_cli_scan_sinks(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from headscope.atlas import read_atlas
    from headscope.cli import app

    out = tmp_path / "atlas.parquet"
    args = ["scan", str(tiny_llama_dir), "--analyzers", "sinks", "--out", str(out), "--quiet", "--n-samples", "4",
            "--param", "sinks.epsilon=0.5", "--param", "sinks.block_size=7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    atlas = read_atlas(out)
    assert set(atlas.to_frame().columns) >= {"sink_score", "sink_rate", "hidden_sink_count", "dormant_score"}
    assert '"epsilon":0.5' in atlas.frame["params"].iloc[0]
    assert atlas.model_metrics().set_index("metric").loc["n_sequences", "value"] == 4
    bad = CliRunner().invoke(app, ["scan", str(tiny_llama_dir), "-a", "sinks", "--param", "sinks.score_source=flash", "--out", str(out)])
    assert bad.exit_code != 0 and "score_source" in (bad.output + str(bad.exception))


def test_cli_scan_gemma3_classic_and_sinks_runs_exactly(tmp_path):
    """`headscope scan <gemma3> -a classic,sinks` runs (it used to stop asking for score_source=pattern): sinks
    picks the exact pattern path by itself and records it (its values vs eager attention: tests/conformance)."""
    from typer.testing import CliRunner

    from headscope.atlas import read_atlas
    from headscope.cli import app

    folder = build_tiny_model("gemma3", tmp_path / "gemma3")
    out = tmp_path / "atlas.parquet"
    args = ["scan", str(folder), "-a", "classic,sinks", "--out", str(out), "--quiet", "--n-samples", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    atlas = read_atlas(out)
    frame = atlas.frame
    assert '"score_source":"pattern"' in frame.loc[frame["analyzer"] == "sinks", "params"].iloc[0]
    assert {"induction_score", "sink_score"} <= set(atlas.to_frame().columns)
    refused = CliRunner().invoke(app, args + ["--param", "sinks.score_source=qk"])
    message = refused.output + str(refused.exception)
    assert refused.exit_code != 0 and "query_pre_attn_scalar" in message and "\n" not in str(refused.exception)
