"""Select-and-copy analyzer: brute-force reference from HF eager q/k, a planted copying head, suites and errors."""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from headscope.analyzers.select_and_copy import SelectAndCopyAnalyzer
from headscope.errors import HeadscopeError
from headscope.probes.mcqa import MCQAItem, build_prompt, load_mcqa, option_token_positions
from tiny_models import build_tiny_model

N_CONTENT = 8
LETTERS = "ABCD"


def mcqa_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer whose words keep their trailing newline ("c5\\n" is one token, as merges do in BPE)."""
    words = ["<pad>", "<bos>", "<eos>", "<unk>", "Question:", "Answer:", "which?\n", "\n"]
    words += [f"a{j}" for j in range(N_CONTENT)] + [f"c{j}\n" for j in range(N_CONTENT)]
    words += [f"{x}." for x in LETTERS] + list(LETTERS) + [f"{x}\n" for x in LETTERS]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\S+\n?"), behavior="isolated"), pre_tokenizers.Split(" ", behavior="removed")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def write_items(folder: Path, n: int = 24, seed: int = 0) -> Path:
    """Items "a{X} which?" with options c.. of which c{X} is correct; the answer letter cycles A-D."""
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w") as f:
        for i in range(n):
            contents = torch.randperm(N_CONTENT, generator=gen)[:4].tolist()
            answer = i % 4
            target = contents[answer]
            f.write(json.dumps({"question": f"a{target} which?", "choices": [f"c{c}" for c in contents], "answer": answer}) + "\n")
    return folder


def save_model(folder: Path, edit=None) -> Path:
    build_tiny_model("llama", folder, vocab_size=64, edit=edit)
    mcqa_tokenizer().save_pretrained(folder)
    return folder


def plant_copy_head(model: LlamaForCausalLM) -> None:
    """Layer 0 head 0 moves the question's a_X identity to the last token; layer 1 head 0 matches it to c_X.

    q/k live in the lowest-frequency rotary pair (dims 7 and 15), so RoPE barely moves them over 60 tokens.
    """
    tok = mcqa_tokenizer()
    vocab = tok.get_vocab()
    emb = torch.zeros_like(model.model.embed_tokens.weight)
    for word, idx in vocab.items():
        if word.startswith("c") and word.endswith("\n"):
            emb[idx, int(word[1:-1])] = 1.0  # content identity, dims 0-7
        elif word.startswith("a") and word[1:].isdigit():
            emb[idx, 8 + int(word[1:])] = 1.0  # question-form identity, dims 8-15
            emb[idx, 16] = 1.0  # "question token" flag
        elif word == "Answer:":
            emb[idx, 17] = 1.0
        else:
            emb[idx, 40 + idx % 24] = 1.0
    model.model.embed_tokens.weight.copy_(emb)
    for layer in model.model.layers:
        layer.mlp.down_proj.weight.zero_()
        layer.self_attn.o_proj.weight.zero_()
    a0, a1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    a0.q_proj.weight[7].zero_(); a0.q_proj.weight[7, 17] = 3.0  # the answer token looks for ...
    a0.k_proj.weight[7].zero_(); a0.k_proj.weight[7, 16] = 3.0  # ... the question's a_X
    for r in (15,):
        a0.q_proj.weight[r].zero_(); a0.k_proj.weight[r].zero_()
    for j in range(N_CONTENT):
        a0.v_proj.weight[j].zero_(); a0.v_proj.weight[j, 8 + j] = 1.0
        a0.o_proj.weight[24 + j, j] = 1.0  # head 0 writes X into dims 24-31
    a1.q_proj.weight[7].zero_(); a1.q_proj.weight[15].zero_()
    a1.k_proj.weight[7].zero_(); a1.k_proj.weight[15].zero_()
    for j in range(N_CONTENT):
        angle = 2 * math.pi * j / N_CONTENT
        a1.q_proj.weight[7, 24 + j], a1.q_proj.weight[15, 24 + j] = math.cos(angle), math.sin(angle)
        a1.k_proj.weight[7, j], a1.k_proj.weight[15, j] = math.cos(angle), math.sin(angle)


def run_analyzer(model_dir: Path, suite: Path, *, batch_size: int = 5, padding_side: str = "right", **params):
    from headscope.engine import load_backend
    from headscope.scanning import scan_backend

    backend = load_backend(str(model_dir), quiet=True)
    analyzer = SelectAndCopyAnalyzer(suite=str(suite), **params)
    atlas = scan_backend(backend, [analyzer], batch_size=batch_size, padding_side=padding_side, progress=False)
    return analyzer, atlas


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("sc_random"))


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    return write_items(tmp_path_factory.mktemp("sc_suite"))


@functools.lru_cache(maxsize=3)
def _eager_model(model_dir: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()


def reference_scores(model_dir: Path, prompt_ids: list[int], options: list[int]) -> dict[str, torch.Tensor]:
    """[layer, head, option] scores from HF eager: q/k hooked at the projections (and at the per-head q/k norms of
    Qwen3), RoPE applied here with HF's `apply_rotary_pos_emb`, attention from `output_attentions`."""
    model = _eager_model(str(model_dir))
    cfg = model.config
    n_h, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_h
    grabbed: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for name in ("q_proj", "k_proj", "q_norm", "k_norm"):
            if hasattr(layer.self_attn, name):
                hooks.append(getattr(layer.self_attn, name).register_forward_hook(
                    lambda mod, inp, out, key=(i, name): grabbed.__setitem__(key, out.detach())))
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model(ids, output_attentions=True)
        cos, sin = model.model.rotary_emb(torch.zeros(1, len(prompt_ids), cfg.hidden_size), torch.arange(len(prompt_ids))[None])
    for h in hooks:
        h.remove()
    res = {k: torch.zeros(cfg.num_hidden_layers, n_h, len(options), dtype=torch.float64)
           for k in ("qk", "qk_rope", "qk_norope", "attn")}
    for layer in range(cfg.num_hidden_layers):
        q_proj = grabbed[(layer, "q_proj")].view(1, -1, n_h, d).transpose(1, 2)  # [1, head, pos, d]
        k_proj = grabbed[(layer, "k_proj")].view(1, -1, n_kv, d).transpose(1, 2)  # [1, kv, pos, d]
        # what the rotary is applied to: the per-head norms' outputs where the model has them (Qwen3)
        q = grabbed[(layer, "q_norm")].transpose(1, 2) if (layer, "q_norm") in grabbed else q_proj
        k = grabbed[(layer, "k_norm")].transpose(1, 2) if (layer, "k_norm") in grabbed else k_proj
        q_rot, k_rot = sys.modules[type(model).__module__].apply_rotary_pos_emb(q, k, cos, sin)  # the model's own
        for h in range(n_h):
            kv = h // (n_h // n_kv)
            for o, t in enumerate(options):
                res["qk"][layer, h, o] = float(q_proj[0, h, -1] @ k_proj[0, kv, t])  # unscaled, as the paper's code
                res["qk_rope"][layer, h, o] = float(q_rot[0, h, -1] @ k_rot[0, kv, t]) / math.sqrt(d)
                res["qk_norope"][layer, h, o] = float(q[0, h, -1] @ k[0, kv, t]) / math.sqrt(d)
                res["attn"][layer, h, o] = float(out.attentions[layer][0, h, -1, t])
    return res


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_matches_bruteforce_reference(random_model, suite_dir, padding_side):
    analyzer, _ = run_analyzer(random_model, suite_dir, shots=(0, 1), n_samples=6, padding_side=padding_side)
    tokenizer = mcqa_tokenizer()
    items, _ = load_mcqa(str(suite_dir), limit=6)
    for shots in (0, 1):
        for index in (0, 3, 5):
            prompt = build_prompt(tokenizer, items[index], analyzer._demos(items, index, shots), bos_token_id=1)
            ref = reference_scores(random_model, prompt.input_ids, prompt.option_positions)
            for score in ("qk", "qk_rope", "qk_norope", "attn"):
                got = analyzer.item_scores(score, shots)[index]
                torch.testing.assert_close(got, ref[score], atol=1e-4, rtol=1e-4)


def test_option_tokens_are_merged_newlines(suite_dir):
    tokenizer = mcqa_tokenizer()
    items, _ = load_mcqa(str(suite_dir))
    prompt = build_prompt(tokenizer, items[0], bos_token_id=1)
    tokens = tokenizer.convert_ids_to_tokens(prompt.input_ids)
    assert [tokens[p] for p in prompt.option_positions] == [f"{c}\n" for c in items[0].choices]
    assert tokens[prompt.query_position] == "Answer:"


def test_planted_copy_head_is_perfect(tmp_path, suite_dir):
    model_dir = save_model(tmp_path / "planted", edit=plant_copy_head)
    analyzer, atlas = run_analyzer(model_dir, suite_dir, shots=(0,))
    frame = atlas.to_frame().reset_index()
    planted = frame[(frame["layer"] == 1) & (frame["head"] == 0)].iloc[0]
    for score in ("qk", "qk_rope", "qk_norope", "attn"):
        assert planted[f"{score}_accuracy_0shot"] == 1.0
        assert planted[f"{score}_margin_0shot"] > 0
    model = atlas.model_metrics().set_index("metric")["value"]
    assert (model["best_qk_layer_0shot"], model["best_qk_head_0shot"]) == (1.0, 0.0)
    assert model["best_qk_test_accuracy_0shot"] == 1.0
    applied = json.loads(atlas.frame["params"].iloc[0])["applied"]
    assert applied["chat_template"] is False and applied["n_items"] == 24  # the tiny tokenizer has no template
    # the other heads are not copying: none of them is perfect
    others = frame[~((frame["layer"] == 1) & (frame["head"] == 0))]
    assert others["qk_accuracy_0shot"].max() < 1.0


def test_split_is_disjoint_and_rows_complete(random_model, suite_dir):
    analyzer, atlas = run_analyzer(random_model, suite_dir, shots=(0,), n_samples=10, val_fraction=0.3)
    val, test = analyzer.split()
    assert len(val) == 3 and len(test) == 7 and not set(val) & set(test)
    head_metrics = set(atlas.head_rows()["metric"])
    assert {"qk_accuracy_0shot", "qk_rope_margin_0shot", "qk_norope_test_accuracy_0shot", "attn_margin_0shot"} <= head_metrics
    model = atlas.model_metrics().set_index("metric")["value"]
    assert 0.0 <= model["baseline_accuracy_0shot"] <= 1.0
    assert sum(model[f"baseline_share_{x}_0shot"] for x in "ABCD") == pytest.approx(1.0)


def test_offsets_refuse_shared_newline_token():
    with pytest.raises(HeadscopeError, match="one token"):
        option_token_positions([(0, 5), (5, 12)], [6, 9])
    with pytest.raises(HeadscopeError, match="no single token"):
        option_token_positions([(0, 5)], [7])


def test_bad_inputs_are_one_line_errors(tmp_path, suite_dir, random_model):
    with pytest.raises(HeadscopeError, match="HF_HUB_OFFLINE|hub"):
        load_mcqa("hub:cais/mmlu:abstract_algebra:test")
    with pytest.raises(HeadscopeError, match="answer index"):
        MCQAItem("q", ("x", "y"), 5)
    with pytest.raises(HeadscopeError, match="val_fraction"):
        run_analyzer(random_model, suite_dir, val_fraction=1.0)
    with pytest.raises(HeadscopeError, match="unknown probe suite"):
        load_mcqa("no_such_suite")


def test_shipped_suites_are_balanced():
    for name in ("mcqa_synthetic", "mcqa_general"):
        items, _ = load_mcqa(name)
        assert len(items) == 40
        counts = [sum(i.answer == a for i in items) for a in range(4)]
        assert counts == [10, 10, 10, 10]
    synthetic, _ = load_mcqa("mcqa_synthetic")
    assert all(item.choices[item.answer] in item.context for item in synthetic)


def test_smollm2_newline_tokens(smollm2_backend):
    """On the real model: options sit on the newline token (id 198), inside the chat template."""
    from headscope.scanning import scan_backend

    items, _ = load_mcqa("mcqa_synthetic", limit=4)
    prompt = build_prompt(smollm2_backend.tokenizer, items[0], chat_template=True)
    assert [prompt.input_ids[p] for p in prompt.option_positions] == [198] * 4
    assert prompt.text.startswith("<|im_start|>") and prompt.text.endswith("assistant\nAnswer:")
    # the scan itself (qk == attn accuracies, chat template recorded) runs in the notebook test


def test_notebook_runs(tmp_path):
    from notebook_runner import cell_outputs, figure_count, run_notebook

    notebook = run_notebook("select_and_copy.ipynb", tmp_path, parameters={"N_ITEMS": 4})
    text = cell_outputs(notebook)
    assert "baseline (letter logits) accuracy" in text and "best QK head" in text
    assert "accuracies agree on every head: True" in text and "chat_template: True" in text
    assert figure_count(notebook) == 1


def _cli(args: list[str]) -> int:
    """Run the `headscope` entry point in-process; returns its exit code."""
    import sys
    from unittest import mock

    from headscope.cli import main

    with mock.patch.object(sys, "argv", ["headscope", *args]):
        try:
            main()
        except SystemExit as exit_:
            return int(exit_.code or 0)
    return 0


def test_cli_scan_select_and_copy(tmp_path, capsys):
    """The CLI path with --param knobs (a tiny model and a tiny suite keep it quick)."""
    model = save_model(tmp_path / "m")
    suite = write_items(tmp_path / "suite", n=8)
    out = tmp_path / "atlas.parquet"
    code = _cli(["scan", str(model), "--analyzers", "select-and-copy", "--out", str(out),
                 "--param", f"select-and-copy.suite={suite}", "--param", "select-and-copy.shots=0,1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    from headscope.atlas import read_atlas

    atlas = read_atlas(out)
    assert {"qk_accuracy_0shot", "qk_accuracy_1shot"} <= set(atlas.head_rows()["metric"])
    capsys.readouterr()
    code = _cli(["scan", str(model), "--analyzers", "select-and-copy", "--out", str(out),
                 "--param", "select-and-copy.suite=nope", "--quiet"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (the weight-loading bar of transformers may precede it)
    assert code == 2 and last.startswith("error: unknown probe suite 'nope'")


def save_qwen3(folder: Path) -> Path:
    """Tiny random-init Qwen3: per-head q/k RMS norms (random gains) between the projections and the rotary."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=False)
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                norm.weight.copy_(torch.rand_like(norm.weight) * 2 + 0.5)
    model.save_pretrained(folder)
    mcqa_tokenizer().save_pretrained(folder)
    return folder


def test_qk_norm_model_each_score_reads_its_own_tensor(tmp_path, suite_dir):
    """Qwen3 (issue 22 item 5): qk reads the projections (before the q/k norm), qk_norope the norms' outputs, qk_rope
    the rotated ones; each equals the HF reference, and the q/k norm makes qk differ from qk_norope."""
    model_dir = save_qwen3(tmp_path / "qwen3")
    analyzer, _ = run_analyzer(model_dir, suite_dir, shots=(0,), n_samples=4)
    items, _ = load_mcqa(str(suite_dir), limit=4)
    tokenizer = mcqa_tokenizer()
    for index in (0, 3):
        prompt = build_prompt(tokenizer, items[index], [], bos_token_id=1)
        ref = reference_scores(model_dir, prompt.input_ids, prompt.option_positions)
        for score in ("qk", "qk_rope", "qk_norope", "attn"):
            torch.testing.assert_close(analyzer.item_scores(score, 0)[index], ref[score], atol=1e-4, rtol=1e-4)
        # the norm is not a per-option rescaling: pre- and post-norm scores are not proportional
        ratio = ref["qk"] / ref["qk_norope"]
        assert (ratio.std(-1) > 1e-3 * ratio.abs().mean(-1)).any()
