"""Retrieval heads (Wu et al. 2024): planted head, brute-force reference over HF eager attentions, SmolLM2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from retrieval_fixtures import NEEDLE, build_planted, needle_prompt  # noqa: E402

from headscope.analyzers.retrieval import RetrievalAnalyzer  # noqa: E402
from headscope.analyzers.retrieval_scoring import copy_paste_scores  # noqa: E402
from headscope.engine import load_backend  # noqa: E402
from headscope.errors import HeadscopeError  # noqa: E402
from headscope.probes import TokenSuite  # noqa: E402
from headscope.probes.needle_haystack import locate_needle, rouge1_recall  # noqa: E402


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory) -> Path:
    return build_planted(tmp_path_factory.mktemp("planted_retrieval"))


@pytest.fixture(scope="module")
def planted_backend(planted_dir):
    return load_backend(str(planted_dir), quiet=True)


def _suite(n: int = 3) -> TokenSuite:
    pairs = [needle_prompt(seed) for seed in range(n)]
    return TokenSuite("planted", [p for p, _ in pairs], [s for _, s in pairs])


def _brute_force(model, prompt, sample, *, forced=None, max_new_tokens=8):
    """Reference without KV cache: one full eager forward per step, attention rows from output_attentions."""
    ids = list(prompt)
    generated, argmax = [], []
    with torch.no_grad():
        for step in range(max_new_tokens if forced is None else len(forced)):
            out = model(torch.tensor([ids]), output_attentions=True)
            rows = torch.stack([a[0, :, -1] for a in out.attentions])  # [layer, head, key]
            token = int(out.logits[0, -1].argmax()) if forced is None else int(forced[step])
            generated.append(token)
            argmax.append(rows)
            ids.append(token)
    start, end = sample["needle_start"], sample["needle_end"]
    n_layers, n_heads = argmax[0].shape[:2]
    scores = [[0.0] * n_heads for _ in range(n_layers)]
    for step, rows in enumerate(argmax):
        for layer in range(n_layers):
            for head in range(n_heads):
                key = int(rows[layer, head].argmax())
                if start <= key < end and prompt[key] == generated[step]:
                    scores[layer][head] += 1.0 / (end - start)
    return generated, argmax, torch.tensor(scores, dtype=torch.float64)


def test_planted_copy_paste_head_scores_one_and_others_near_zero(planted_backend):
    analyzer = RetrievalAnalyzer(teacher_forcing=True)
    analyzer.reset(planted_backend.spec)
    analyzer.score_suite(planted_backend, _suite(3))
    scores = analyzer.mean_scores()
    assert len(analyzer._kept) == 3
    assert scores[0, 0] == pytest.approx(1.0)
    others = scores.clone()
    others[0, 0] = 0
    assert others.max() < 0.3, others
    rows = {(r.layer, r.head, r.metric): r.value for r in analyzer.results()}
    assert rows[(0, 0, "is_retrieval")] == 1.0 and rows[(-1, -1, "teacher_forced")] == 1.0


def test_engine_matches_brute_force_eager_attentions(planted_backend, planted_dir, tiny_llama_backend, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    # planted model, teacher forcing: non-trivial scores
    model = AutoModelForCausalLM.from_pretrained(planted_dir, attn_implementation="eager").eval()
    analyzer = RetrievalAnalyzer(teacher_forcing=True)
    analyzer.reset(planted_backend.spec)
    suite = _suite(2)
    analyzer.score_suite(planted_backend, suite)
    for prompt, sample, log in zip(suite.sequences, suite.samples, analyzer.sample_log):
        gen, _, expected = _brute_force(model, prompt, sample, forced=prompt[sample["needle_start"]:sample["needle_end"]])
        assert log["generated_ids"] == gen
        torch.testing.assert_close(log["scores"], expected)
    assert expected.sum() > 0.9

    # random model, greedy decoding: same tokens and the same argmax key wherever the row has a clear maximum
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    analyzer = RetrievalAnalyzer(max_new_tokens=6, rouge_threshold=-1.0)  # keep every sample
    analyzer.reset(tiny_llama_backend.spec)
    prompt, sample = needle_prompt(7)
    sample = {**sample, "needle_start": 1, "needle_end": len(prompt) - 1}  # the whole context counts as needle
    analyzer.score_suite(tiny_llama_backend, TokenSuite("random", [prompt], [sample]))
    log = analyzer.sample_log[0]
    gen, rows, expected = _brute_force(model, prompt, sample, max_new_tokens=6)
    assert log["generated_ids"] == gen
    clear = 0
    for step, step_rows in enumerate(rows):
        top2 = step_rows.topk(2, dim=-1).values  # [layer, head, 2]
        margin_ok = (top2[..., 0] - top2[..., 1]) > 1e-5
        same = log["argmax_keys"][step] == step_rows.argmax(-1)
        assert bool(same[margin_ok].all())
        clear += int(margin_ok.sum())
    assert clear > 0.5 * len(rows) * rows[0].shape[0] * rows[0].shape[1]
    torch.testing.assert_close(log["scores"], expected)


def test_copy_paste_scores_counts_repeats_and_checks_the_token():
    prompt = [5, 6, 7, 8, 9]
    # step 0 copies 7 from key 2; step 1 points into the span but the token differs; step 2 repeats the copy
    keys = torch.tensor([[[2]], [[3]], [[2]]])
    scores = copy_paste_scores(keys, [7, 1, 7], prompt, 1, 4)
    assert float(scores[0, 0]) == pytest.approx(2 / 3)
    assert float(copy_paste_scores(keys, [7, 1, 7], prompt, 3, 5)[0, 0]) == 0.0  # key 2 outside [3, 5)


def test_locate_needle_first_window_over_ninety_percent():
    prompt = [1, 2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 3, 10, 11]
    assert locate_needle(prompt, list(range(10, 20))) == (2, 12)
    assert locate_needle(prompt, [40, 41]) == (-1, -1)
    assert rouge1_recall("rent a small boat", "You should rent a boat.") == pytest.approx(0.75)


def test_bad_parameters_are_one_line_errors(tiny_llama_backend):
    from headscope.analyzers.base import ScanContext

    ctx = ScanContext(tiny_llama_backend.spec, tiny_llama_backend.tokenizer)
    with pytest.raises(HeadscopeError, match="exceed the model's context"):
        RetrievalAnalyzer(context_lengths=(100000,)).build_suite(ctx)
    with pytest.raises(HeadscopeError, match="mask_mode"):
        RetrievalAnalyzer(mask_mode="bogus").build_suite(ctx)


@pytest.mark.slow
def test_smollm2_copy_heads_and_masking_them_breaks_retrieval(smollm2_backend):
    """One 1K-token prompt SmolLM2 answers (museum needle at 22% depth, seed 0): measured at 1K over 10 prompts,
    7 pass the ROUGE filter and masking the top-10 heads drops retrieval accuracy 0.70 -> 0.00 (random: 0.37)."""
    from headscope.analyzers.base import ScanContext
    from headscope.probes.request_prompts import answer_stop_ids
    from headscope.circuits import retrieval_masking_check

    analyzer = RetrievalAnalyzer(context_lengths=(1000,), n_samples=3, max_new_tokens=30)
    full = analyzer.build_suite(ScanContext(smollm2_backend.spec, smollm2_backend.tokenizer))
    assert full.samples[2]["needle_id"] == "museum-closed" and full.samples[2]["chat_template"]
    suite = TokenSuite(full.name, full.sequences[2:3], full.samples[2:3])
    analyzer.reset(smollm2_backend.spec)
    analyzer.score_suite(smollm2_backend, suite)
    assert analyzer.sample_log[0]["kept"], analyzer.sample_log[0]["response"]
    scores = analyzer.mean_scores()
    assert float(scores.max()) > 0.3  # some head copies a good share of the needle
    check = retrieval_masking_check(smollm2_backend, suite, scores, 10, random_sets=1, max_new_tokens=30,
                                    stop_token_ids=answer_stop_ids(smollm2_backend.tokenizer, newline=True))
    assert check.unmasked[0] > 0.5
    assert check.top[0] < 0.5 and check.top[0] <= check.random[0][0], (check.top, check.random)


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    from notebook_runner import cell_outputs, run_notebook

    notebook = run_notebook("retrieval_heads.ipynb", tmp_path)
    text = cell_outputs(notebook)
    assert "kept_samples" in text and "top-5 masked" in text
    assert (tmp_path / "retrieval_atlas.parquet").exists()
    side = json.loads((tmp_path / "retrieval_atlas.retrieval.json").read_text())
    assert len(side["samples"]) == 3 and side["masking"]["k"] == 5


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    from headscope.probes.needle_haystack import load_needle_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HeadscopeError, match="offline.*use the shipped suite"):
        load_needle_source("hf:nobody/no-such-needles")


def test_parse_context_lengths():
    from headscope.scanning import parse_lengths

    assert parse_lengths("1k,2k, 4k") == (1000, 2000, 4000)
    assert parse_lengths("1500,2.5k") == (1500, 2500)
    with pytest.raises(HeadscopeError, match="context-lengths"):
        parse_lengths("long")


def test_cli_scan_retrieval_on_a_tiny_model(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from headscope import read_side_output
    from headscope.atlas import read_atlas
    from headscope.cli import app

    out = tmp_path / "atlas.parquet"
    args = ["scan", str(tiny_llama_dir), "--analyzers", "retrieval", "--context-lengths", "0.23k", "--n-samples", "1",
            "--param", "retrieval.buffer=20", "--param", "retrieval.max_new_tokens=3", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    atlas = read_atlas(out)
    metrics = atlas.model_metrics().set_index("metric")["value"]
    assert metrics["total_samples"] == 1 and metrics["chat_template"] == 0.0  # the tiny tokenizer has no template
    assert set(atlas.frame.query("layer >= 0")["metric"]) == {"retrieval_score", "retrieval_score_std", "is_retrieval"}
    side = read_side_output(out, "retrieval")  # the per-sample log, JSON without the tensors
    assert len(side["samples"]) == 1 and {"response", "rouge1_recall", "kept", "depth"} <= set(side["samples"][0])
    assert "scores" not in side["samples"][0] and len(side["mean_scores"]) == 2

    too_long = CliRunner().invoke(app, ["scan", str(tiny_llama_dir), "--analyzers", "retrieval", "--context-lengths", "1k",
                                        "--out", str(out), "--quiet"])
    assert too_long.exit_code != 0 and "exceed the model's context" in str(too_long.exception)
