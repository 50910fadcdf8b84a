"""Lookback Lens: ratios vs a brute-force eager reference, a planted context head, the detector and its file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from headscope.analyzers.lookback import LookbackLensAnalyzer, lookback_ratios
from headscope.analyzers.lookback_detector import LookbackDetector, span_features, two_fold_evaluation
from headscope.errors import HeadscopeError
from headscope.probes.grounded_qa import GroundedItem, build_prompt, contains_gold, load_grounded_items, load_hub_items
from tiny_models import build_tiny_model


def eager_reference(model_dir: Path, prompt: list[int], generated: list[int], context_len: int) -> np.ndarray:
    """Ratios [layer, head, step] recomputed from HF eager full attentions of prompt + generated tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    ids = torch.tensor([prompt + generated[:-1]])
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    n_prompt = len(prompt)
    ratios = np.zeros((len(out.attentions), out.attentions[0].shape[1], len(generated)))
    for layer, attention in enumerate(out.attentions):  # [1, head, query, key]
        for step in range(len(generated)):
            query = n_prompt - 1 + step  # step 0: the prompt's last row; step i: the i-th generated token's row
            row = attention[0, :, query, : query + 1].double()
            a = row[:, :context_len].mean(-1)
            b = row[:, context_len:].mean(-1)  # answer header + generated so far (header alone at step 0)
            ratios[layer, :, step] = (a / (a + b)).numpy()
    # greedy choices agree with the reference model
    assert out.logits[0, n_prompt - 1 :].argmax(-1).tolist()[: len(generated) - 1] == generated[:-1]
    return ratios


def test_ratios_match_eager_full_attention(tiny_llama_dir, tiny_llama_backend):
    generator = torch.Generator().manual_seed(3)
    prompt = torch.randint(4, 96, (14,), generator=generator).tolist()
    context_len = 10  # 4 header tokens
    ratios, result = lookback_ratios(tiny_llama_backend, prompt, context_len, max_new_tokens=6)
    assert ratios.shape == (2, 4, len(result.generated_ids)) == (2, 4, 6)
    reference = eager_reference(tiny_llama_dir, prompt, result.generated_ids, context_len)
    np.testing.assert_allclose(ratios, reference, atol=1e-5)
    assert ((ratios > 0) & (ratios < 1)).all()


CONTEXT_IDS = list(range(10, 30))


def plant_context_heads(model) -> None:
    """Layer 0: head 0 attends only to context tokens (ids 10-29), head 2 only to the others.

    Embedding dim 0 is 1 for every token (the query), dim 1 marks context tokens, dim 2 the rest. The heads read
    them into head dimension 7, whose rotary frequency is ~3e-4 rad per position, so scores ignore position.
    """
    embed = model.model.embed_tokens.weight
    context = torch.zeros(embed.shape[0], dtype=torch.bool)
    context[CONTEXT_IDS] = True
    embed[:, 0] = 1.0
    embed[:, 1] = context.float()
    embed[:, 2] = (~context).float()
    attention = model.model.layers[0].self_attn
    d = 16
    for head, kv_head, marker in ((0, 0, 1), (2, 1, 2)):
        attention.q_proj.weight[head * d : (head + 1) * d] = 0
        attention.q_proj.weight[head * d + 7, 0] = 3.0
        attention.k_proj.weight[kv_head * d : (kv_head + 1) * d] = 0
        attention.k_proj.weight[kv_head * d + 7, marker] = 3.0


def test_planted_context_head_has_ratio_one(tmp_path):
    from headscope.engine import load_backend

    folder = build_tiny_model("llama", tmp_path / "planted", edit=plant_context_heads)
    backend = load_backend(str(folder), quiet=True)
    prompt = CONTEXT_IDS[:12] + [40, 41, 42]  # 12 context tokens, 3 header tokens
    forced = [60, 61, 62, 63, 64]  # generated tokens are not context
    ratios, result = lookback_ratios(backend, prompt, 12, max_new_tokens=5, forced_tokens=forced)
    assert result.generated_ids == forced
    np.testing.assert_allclose(ratios[0, 0], 1.0, atol=1e-6)  # only context: a > 0, b = 0
    np.testing.assert_allclose(ratios[0, 2], 0.0, atol=1e-6)  # never context: a = 0
    assert not np.isclose(ratios[0, 1], 1.0, atol=1e-3).all()  # an unplanted head is not


def test_context_must_leave_a_header(tiny_llama_backend):
    with pytest.raises(HeadscopeError, match="answer header"):
        lookback_ratios(tiny_llama_backend, [5, 6, 7, 8], 4, max_new_tokens=2)


def test_span_features_layout_and_windows():
    ratios = np.arange(2 * 3 * 10, dtype=float).reshape(2, 3, 10)  # [layer, head, token]
    features, labels, owners = span_features([ratios, ratios[:, :, :5]], [1, 0], span="predefined")
    assert features.shape == (2, 6) and labels.tolist() == [1, 0] and owners.tolist() == [0, 1]
    layer, head = 1, 2
    assert features[0, layer * 3 + head] == ratios[layer, head].mean()
    windows, labels, owners = span_features([ratios, ratios[:, :, :5]], [1, 0], span="sliding_window", window=8)
    assert windows.shape == (3, 6)  # 10 - 8 + 1 windows of the first answer, none of the 5-token one
    assert labels.tolist() == [1, 1, 1] and owners.tolist() == [0, 0, 0]
    np.testing.assert_allclose(windows[2, layer * 3 + head], ratios[layer, head, 2:10].mean())


def synthetic_spans(n: int = 80, n_layers: int = 2, n_heads: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.uniform(0.2, 0.6, (n, n_layers * n_heads))
    features[:, 4] += 0.25 * labels  # layer 1, head 1 looks back more on faithful spans
    return features, labels


def test_two_fold_protocol_matches_official_steps():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    features, labels = synthetic_spans()
    evaluation = two_fold_evaluation(features, labels, n_bootstrap=200)
    x1, x2, y1, y2 = train_test_split(features, labels, test_size=0.5, random_state=42)
    expected = np.mean([
        roc_auc_score(y2, LogisticRegression(max_iter=1000).fit(x1, y1).predict_proba(x2)[:, 1]),
        roc_auc_score(y1, LogisticRegression(max_iter=1000).fit(x2, y2).predict_proba(x1)[:, 1]),
    ])
    assert evaluation.auroc == pytest.approx(expected, abs=1e-12)
    assert evaluation.ci_low <= evaluation.auroc <= evaluation.ci_high
    assert evaluation.auroc > 0.8


def test_detector_json_round_trip_gives_identical_predictions(tmp_path):
    from sklearn.linear_model import LogisticRegression

    features, labels = synthetic_spans()
    detector = LookbackDetector.fit(features, labels, n_layers=2, n_heads=3)
    reference = LogisticRegression(max_iter=1000).fit(features, labels).predict_proba(features)[:, 1]
    np.testing.assert_allclose(detector.predict_proba(features), reference, rtol=0, atol=1e-12)
    loaded = LookbackDetector.load(detector.save(tmp_path / "detector.json"))
    assert np.array_equal(loaded.predict_proba(features), detector.predict_proba(features))
    assert loaded.head_weights.shape == (2, 3) and np.argmax(np.abs(loaded.head_weights)) == 4
    assert json.loads((tmp_path / "detector.json").read_text())["feature_index"] == "layer * n_heads + head"


def test_detector_checks_head_layout():
    features, labels = synthetic_spans()
    detector = LookbackDetector.fit(features, labels, n_layers=2, n_heads=3)
    detector.check_layout(2, 3)
    with pytest.raises(HeadscopeError, match="2 layers x 3 heads"):
        detector.check_layout(30, 9)
    with pytest.raises(HeadscopeError, match="2 layers x 3 heads"):
        detector.score_ratios(np.full((30, 9, 12), 0.5))
    assert detector.score_ratios(np.full((2, 3, 12), 0.5)).shape == (1,)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_loading_never_executes_code(tmp_path):
    marker = tmp_path / "executed"
    pickled = tmp_path / "detector.pkl"
    pickled.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(HeadscopeError, match="not a headscope lookback detector"):
        LookbackDetector.load(pickled)
    assert not marker.exists()
    sneaky = tmp_path / "sneaky.json"
    sneaky.write_text(json.dumps({"format": "headscope-lookback-detector", "version": 1, "n_layers": 1, "n_heads": 1,
                                  "coef": ["__import__('os').system('touch %s')" % marker], "intercept": 0.0}))
    with pytest.raises(HeadscopeError, match="damaged"):
        LookbackDetector.load(sneaky)
    assert not marker.exists()
    with pytest.raises(HeadscopeError, match="does not exist"):
        LookbackDetector.load(tmp_path / "missing.json")


def test_labelling_rule():
    assert contains_gold("The bridge was built by Mara Tollen.", ("Mara Tollen",))
    assert contains_gold("It is 7210 km long", ("7,210 kilometres", "7210"))
    assert contains_gold("the Treaty of Morwen!", ("Treaty of Morwen",))
    assert not contains_gold("The capital of Castavia is Lemberg.", ("Nordhaven",))
    assert not contains_gold("It has 857 beds", ("57",))  # whole words only


def test_shipped_suite_golds_are_document_spans():
    items, digest = load_grounded_items("grounded_qa")
    assert 40 <= len(items) <= 60 and len(digest) == 16
    assert {i.task for i in items} == {"qa", "summary"}
    assert all(i.answers[0] in i.document for i in items)
    assert len(load_grounded_items("grounded_qa", n_samples=5)[0]) == 5


def test_prompt_split_on_smollm2_chat_template(smollm2_backend):
    tokenizer = smollm2_backend.tokenizer
    item = GroundedItem("x", "qa", "The cat is called Pepper.", "What is the cat called?", ("Pepper",))
    ids, context_len = build_prompt(tokenizer, item, chat_template=True)
    assert tokenizer.decode(ids[:context_len]).endswith("#Question#: What is the cat called?")
    assert tokenizer.decode(ids[context_len:]) == "<|im_end|>\n<|im_start|>assistant\n"
    raw, raw_context = build_prompt(tokenizer, item, chat_template=False)
    assert tokenizer.decode(raw[raw_context:]) == "\n#Answer#:"


def test_hub_loader_fails_offline_with_a_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HeadscopeError, match="connect to the internet"):
        load_hub_items("headscope-test/definitely-not-cached-squad:validation", n_samples=3)


def test_scan_drives_decoding_and_writes_rows(tiny_llama_backend, tmp_path):
    from headscope.scanning import scan_backend

    suite = tmp_path / "tiny_suite"
    suite.mkdir()
    records = [{"id": f"q{i}", "task": "qa", "document": " ".join(f"t{10 + i + j}" for j in range(6)),
                "question": f"t{50 + i}", "answers": [f"t{12 + i}"]} for i in range(3)]
    (suite / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    analyzer = LookbackLensAnalyzer(suite=str(suite), max_new_tokens=3, n_bootstrap=20)
    atlas = scan_backend(tiny_llama_backend, [analyzer], progress=False)
    frame = atlas.frame
    ratio = frame[frame.metric == "lookback_ratio"]
    assert len(ratio) == 2 * 4 and ratio.value.between(0, 1).all()
    model = frame[frame.layer == -1].set_index("metric").value
    assert model["n_items"] == 3 and model["n_faithful"] + model["n_hallucinated"] == 3
    assert len(analyzer.generations()) == 3
    side = json.loads(json.dumps(analyzer.side_output(), allow_nan=False))  # strict JSON: NaN would fail here
    assert side["generations"] == json.loads(json.dumps(analyzer.generations()))
    if analyzer.detector is None:
        assert side["detector"] is None
    else:
        assert LookbackDetector.from_json(json.dumps(side["detector"])).coef.tolist() == analyzer.detector.coef.tolist()


def test_smollm2_answers_and_ratios(smollm2_backend):
    """The real model: two items, a few greedy tokens; the answer is text and every ratio is a share."""
    analyzer = LookbackLensAnalyzer(n_samples=2, max_new_tokens=4, n_bootstrap=0)
    from headscope.scanning import scan_backend

    atlas = scan_backend(smollm2_backend, [analyzer], progress=False)
    ratio = atlas.frame[atlas.frame.metric == "lookback_ratio"]
    assert len(ratio) == 30 * 9 and ratio.value.between(0, 1).all()
    assert all(g["n_tokens"] >= 1 and g["answer"].strip() for g in analyzer.generations())


def test_notebook_runs(tmp_path, tiny_llama_dir):
    from notebook_runner import cell_outputs, run_notebook

    notebook = run_notebook("lookback_lens.ipynb", tmp_path,
                            parameters={"MODEL": str(tiny_llama_dir), "N_ITEMS": 4, "MAX_NEW_TOKENS": 6})
    assert "lookback_ratio" in cell_outputs(notebook)
    side = json.loads((tmp_path / "lookback_atlas.lookback.json").read_text())
    assert len(side["generations"]) == 4 and {"answer", "faithful", "gold"} <= set(side["generations"][0])


def test_cli_scan_lookback(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from headscope.atlas import read_atlas
    from headscope.cli import app

    suite = tmp_path / "cli_suite"
    suite.mkdir()
    records = [{"id": f"q{i}", "task": "summary", "document": f"t{20 + i} t{21 + i} t{22 + i}",
                "question": "", "answers": [f"t{20 + i}"]} for i in range(2)]
    (suite / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "atlas.parquet"
    result = CliRunner().invoke(app, [
        "scan", str(tiny_llama_dir), "--analyzers", "lookback", "--out", str(out), "--quiet",
        "--param", f"lookback.suite={suite}", "--param", "lookback.max_new_tokens=2",
        "--param", "lookback.span=sliding_window", "--param", "lookback.window=1",
    ])
    assert result.exit_code == 0, result.output
    frame = read_atlas(out).frame
    assert set(frame.analyzer) == {"lookback"}
    assert frame[(frame.layer == -1) & (frame.metric == "n_items")].value.item() == 2
    bad = CliRunner().invoke(app, ["scan", str(tiny_llama_dir), "--analyzers", "lookback", "--out", str(out),
                                   "--quiet", "--param", "lookback.span=everything"])
    assert bad.exit_code != 0 and "predefined" in str(bad.exception) + bad.output


def bos_adding_tokenizer():
    """The tiny word-level tokenizer plus a post-processor that prepends <bos> (as Llama's does), no chat template."""
    from tokenizers import processors

    from tiny_models import make_tokenizer

    tokenizer = make_tokenizer(96)
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 1)])
    assert not getattr(tokenizer, "chat_template", None)
    return tokenizer


def test_base_tokenizer_keeps_bos_and_ratios_match_eager(tiny_llama_dir, tiny_llama_backend, tmp_path):
    """Issue 22 item 2: chat_template=True (the default) on a tokenizer without a template must still add BOS."""
    from headscope.analyzers.base import ScanContext

    tokenizer = bos_adding_tokenizer()
    suite = tmp_path / "bos_suite"
    suite.mkdir()
    record = {"id": "b", "task": "qa", "document": "t10 t11 t12 t13", "question": "t50", "answers": ["t12"]}
    (suite / "data.jsonl").write_text(json.dumps(record) + "\n")
    built = LookbackLensAnalyzer(suite=str(suite), max_new_tokens=3).build_suite(
        ScanContext(spec=tiny_llama_backend.spec, tokenizer=tokenizer))
    ids, context_len = built.sequences[0], built.samples[0]["context_len"]
    assert ids[0] == tokenizer.bos_token_id == 1 and ids.count(1) == 1
    # the context is BOS + the raw text; the header follows without a second BOS
    assert ids[1:context_len] == tokenizer(tokenizer.decode(ids[1:context_len]), add_special_tokens=False)["input_ids"]
    ratios, result = lookback_ratios(tiny_llama_backend, ids, context_len, max_new_tokens=3)
    np.testing.assert_allclose(ratios, eager_reference(tiny_llama_dir, ids, result.generated_ids, context_len), atol=1e-5)
