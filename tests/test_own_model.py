"""Your own model and prompts: a loaded HF model, TransformerBridge or nnsight LanguageModel scans like the same
model by path; a user's texts reach the analyzers that accept them (brute-force sink score on those texts)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import headscope
from headscope.atlas import read_atlas
from headscope.cli import app
from headscope.errors import HeadscopeError
from headscope.probes.user_texts import prompts_digest, read_prompt_file

KW = dict(progress=False, n_samples=3, seq_len=16)
ANALYZERS = "sinks,previous-token"
TEXTS = ["t5 t9 t12 t40 t9 t12 t7 t33", "t50 t51 t52 t5 t50 t51", "t8 t8 t8 t90 t91 t8 t60 t61 t62 t63 t64"]


def values(atlas) -> pd.Series:
    return atlas.frame.set_index(["analyzer", "metric", "layer", "head"])["value"].sort_index()


def assert_same_values(a, b) -> None:
    va, vb = values(a), values(b)
    assert list(va.index) == list(vb.index)
    np.testing.assert_allclose(va.to_numpy(), vb.to_numpy(), rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.fixture(scope="module")
def hf_parts(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval(), AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def test_loaded_hf_model_scans_like_its_path(tiny_llama_dir, hf_parts):
    model, tokenizer = hf_parts
    assert model.config._attn_implementation == "sdpa"  # transformers' default: no weights, switched for the scan
    by_path = headscope.scan(str(tiny_llama_dir), ANALYZERS, backend="nnsight", **KW)
    by_object = headscope.scan(model, ANALYZERS, tokenizer=tokenizer, **KW)
    assert_same_values(by_object, by_path)
    assert model.config._attn_implementation == "sdpa"  # restored
    row = by_object.frame.iloc[0]
    assert (row["model"], row["revision"], row["backend"]) == (tiny_llama_dir.name, "in-memory:LlamaForCausalLM", "nnsight")


def test_bridge_and_language_model_scan_like_their_path(tiny_llama_dir, hf_parts):
    from nnsight import LanguageModel
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(tiny_llama_dir))
    assert_same_values(headscope.scan(bridge, ANALYZERS, **KW),
                       headscope.scan(str(tiny_llama_dir), ANALYZERS, backend="transformer-lens", **KW))
    lazy = LanguageModel(str(tiny_llama_dir), tokenizer=hf_parts[1])  # meta weights until dispatched
    by_lm = headscope.scan(lazy, ANALYZERS, **KW)
    assert_same_values(by_lm, headscope.scan(hf_parts[0], ANALYZERS, tokenizer=hf_parts[1], **KW))
    assert by_lm.frame["backend"].iloc[0] == "nnsight"


def test_user_prompts_reach_the_sink_score(tiny_llama_dir, hf_parts):
    """sink_score = mean over texts of Gu et al.'s alpha_0 (column mean of the first key), from HF eager attentions."""
    model, tokenizer = hf_parts
    atlas = headscope.scan(model, "sinks", tokenizer=tokenizer, prompts=TEXTS, **KW)
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), attn_implementation="eager").eval()
    alphas = []
    with torch.no_grad():
        for text in TEXTS:
            ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=True)["input_ids"]
            out = eager(torch.tensor([ids[:16]]), output_attentions=True)
            alphas.append(torch.stack([a[0, :, :, 0].mean(-1) for a in out.attentions]))  # [layer, head]
    expected = torch.stack(alphas).mean(0)
    rows = atlas.head_rows()
    got = rows[rows["metric"] == "sink_score"].pivot(index="layer", columns="head", values="value")
    np.testing.assert_allclose(got.to_numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    assert set(atlas.frame["probe_suite"]) == {f"user-prompts:{prompts_digest(TEXTS)}"}  # provenance: the texts' hash
    assert atlas.frame.query("metric == 'n_sequences'")["value"].item() == len(TEXTS)  # every text, not n_samples


def test_dataset_prompts_equal_a_list(hf_parts):
    from datasets import Dataset

    model, tokenizer = hf_parts
    table = Dataset.from_dict({"id": [1, 2, 3], "body": TEXTS})  # one text column: detected
    assert_same_values(headscope.scan(model, "duplicate-token", tokenizer=tokenizer, prompts=table, **KW),
                       headscope.scan(model, "duplicate-token", tokenizer=tokenizer, prompts=TEXTS, **KW))
    two = Dataset.from_dict({"a": TEXTS, "b": TEXTS})
    with pytest.raises(HeadscopeError, match="pass prompt_column"):
        headscope.scan(model, "sinks", tokenizer=tokenizer, prompts=two, **KW)


@pytest.mark.parametrize("call, message", [
    (dict(model="/nonexistent", analyzers="induction", prompts=TEXTS), "cannot run on your prompts .its score needs sequences that repeat"),
    (dict(model="/nonexistent", analyzers="retrieval", prompts=TEXTS), "needle"),
    (dict(model="/nonexistent", analyzers="sinks", prompts=["ok", "  "]), "item 1 is blank"),
    (dict(model="/nonexistent", analyzers="sinks", prompts="a file.txt"), "read_prompt_file"),
    (dict(model="/nonexistent", analyzers="sinks", tokenizer=object()), "tokenizer= goes with a loaded"),
    (dict(model=torch.nn.Linear(2, 2), analyzers="sinks"), "cannot scan a Linear"),
])
def test_refusals_come_before_any_loading(call, message):
    with pytest.raises(HeadscopeError, match=message):
        headscope.scan(progress=False, **call)


def test_loaded_model_refuses_resume_ray_and_a_missing_tokenizer(hf_parts, tmp_path):
    model, tokenizer = hf_parts
    with pytest.raises(HeadscopeError, match="--resume needs the model by name"):
        headscope.scan(model, "sinks", tokenizer=tokenizer, out=tmp_path / "a.parquet", resume=True)
    with pytest.raises(HeadscopeError, match="--ray needs the model by name"):
        headscope.scan(model, "sinks", tokenizer=tokenizer, ray_address="local")
    with pytest.raises(HeadscopeError, match="pass tokenizer="):
        headscope.scan(model, "sinks", progress=False)


def test_prompt_files_are_read_strictly(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first text\nsecond text\n")
    assert read_prompt_file(txt) == ["first text", "second text"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": t, "n": 1}) for t in TEXTS) + "\n")
    assert read_prompt_file(jsonl, column="body") == TEXTS
    parquet = tmp_path / "p.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(parquet)
    assert read_prompt_file(parquet) == TEXTS
    bad = {"blank.txt": ("a\n\nb\n", "line 2 is blank"), "q.jsonl": ('{"text": "a"}\n[1]\n', "line 2 is not a JSON object"),
           "r.jsonl": ('{"text": "a"}\n{"text": "a", "text": "b"}\n', "line 2 is not"),
           "s.jsonl": ('{"txt": "a"}\n', "no non-empty text field 'text'"), "p.csv": ("text\na\n", "use a .txt")}
    for name, (content, message) in bad.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(HeadscopeError, match=message):
            read_prompt_file(tmp_path / name)
    pd.DataFrame({"text": [1, 2]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(HeadscopeError, match="not text"):
        read_prompt_file(tmp_path / "n.parquet")


def test_cli_scans_a_prompt_file(tiny_llama_dir, tmp_path):
    prompts = tmp_path / "mine.txt"
    prompts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "atlas.parquet"
    runner = CliRunner()
    done = runner.invoke(app, ["scan", str(tiny_llama_dir), "-a", "sinks", "--prompts", str(prompts), "-o", str(out), "-q",
                               "--seq-len", "16"])
    assert done.exit_code == 0, done.output
    assert set(read_atlas(out).frame["probe_suite"]) == {f"user-prompts:{prompts_digest(TEXTS)}"}
    refused = runner.invoke(app, ["scan", str(tiny_llama_dir), "-a", "induction", "--prompts", str(prompts), "-o",
                                  str(tmp_path / "b.parquet")])
    assert isinstance(refused.exception, HeadscopeError)  # main() prints it as one line, exit 2
    assert "cannot run on your prompts" in str(refused.exception) and not (tmp_path / "b.parquet").exists()
    (tmp_path / "bad.txt").write_text("one\n\n")
    bad = runner.invoke(app, ["scan", str(tiny_llama_dir), "--prompts", str(tmp_path / "bad.txt")])
    assert isinstance(bad.exception, HeadscopeError) and "line 2 is blank" in str(bad.exception)
