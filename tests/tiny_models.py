"""Tiny random-init Hugging Face models built from a config and saved to disk, for offline tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def make_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over tokens `t4 ... t{vocab_size-1}` plus four specials (ids 0-3)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def config_for(kind: str, vocab_size: int = 96, **overrides) -> object:
    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "llama":
        cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
        return LlamaConfig(**{**common, **cfg, **overrides})
    if kind == "qwen2":
        cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
        return Qwen2Config(**{**common, **cfg, **overrides})
    if kind == "gpt2":
        cfg = dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)
        return GPT2Config(**{**common, **cfg, **overrides})
    raise ValueError(kind)


MODEL_CLASSES = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "gpt2": GPT2LMHeadModel}


def build_tiny_model(kind: str, folder: Path, *, seed: int = 0, vocab_size: int = 96, edit=None, **overrides) -> Path:
    """Random-init model of `kind`, optionally edited in place by `edit(model)`, saved with its tokenizer."""
    torch.manual_seed(seed)
    config = config_for(kind, vocab_size=vocab_size, **overrides)
    model = MODEL_CLASSES[kind](config).eval()
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(folder)
    make_tokenizer(vocab_size).save_pretrained(folder)
    return folder
