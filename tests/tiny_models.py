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
    if kind in EXTRA_CONFIGS:
        return EXTRA_CONFIGS[kind](common, overrides)
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


# --- Architecture-coverage kinds (nnsight backend parity). Added, not edited: other kinds live above. ---


def _gemma3_config(common: dict, overrides: dict) -> object:
    """Gemma-3 text: GQA (4 query heads, 2 KV heads), head_dim 32 != 64 / 4, sliding window 4 on layer 0,
    q/k RMS norms, query_pre_attn_scalar, embeddings scaled by sqrt(d_model)."""
    from transformers import Gemma3TextConfig

    cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32, sliding_window=4,
               layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
               tie_word_embeddings=True)
    return Gemma3TextConfig(**{**common, **cfg, **overrides})


def _gpt_neox_config(common: dict, overrides: dict) -> object:
    """GPT-NeoX / Pythia: fused qkv, parallel residual, partial rotary (25% of each head's dims)."""
    from transformers import GPTNeoXConfig

    cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=256, tie_word_embeddings=False,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    return GPTNeoXConfig(**{**common, **cfg, **overrides})


def _model_class(name: str):
    import transformers

    return getattr(transformers, name)


EXTRA_CONFIGS = {"gemma3": _gemma3_config, "gpt_neox": _gpt_neox_config}
MODEL_CLASSES.update({"gemma3": _model_class("Gemma3ForCausalLM"), "gpt_neox": _model_class("GPTNeoXForCausalLM")})
ARCHITECTURE_KINDS = ("gpt2", "llama", "qwen2", "gemma3", "gpt_neox")


# --- Conformance-matrix kinds (tests/conformance). Added, not edited: every kind above keeps its config. ---
# One per architecture family headscope is checked on: 2 layers, hidden 64, 4 query heads (2 KV heads where
# the family has GQA). Quirks that change the attention logits are switched ON so the matrix sees them.

_BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256)


def _conformance_config(class_name: str, **cfg):
    def build(common: dict, overrides: dict) -> object:
        import transformers

        return getattr(transformers, class_name)(**{**common, **cfg, **overrides})

    return build


CONFORMANCE_CONFIGS = {
    # sliding window 4, smaller than the probe lengths, so it changes the attention
    "mistral": _conformance_config("MistralConfig", **_BASE, num_key_value_heads=2, sliding_window=4,
                                   tie_word_embeddings=False),
    "qwen3": _conformance_config("Qwen3Config", **_BASE, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
    # logit soft-capping 5 (random-init logits reach it), query_pre_attn_scalar 24 != head_dim
    "gemma2": _conformance_config("Gemma2Config", **_BASE, num_key_value_heads=2, head_dim=16,
                                  query_pre_attn_scalar=24, attn_logit_softcapping=5.0, final_logit_softcapping=30.0,
                                  sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                  tie_word_embeddings=True),
    "opt": _conformance_config("OPTConfig", hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                               max_position_embeddings=256, word_embed_proj_dim=64, do_layer_norm_before=True,
                               tie_word_embeddings=True),
    "phi3": _conformance_config("Phi3Config", **_BASE, num_key_value_heads=2, tie_word_embeddings=False,
                                pad_token_id=0),
    "olmo2": _conformance_config("Olmo2Config", **_BASE, num_key_value_heads=2, tie_word_embeddings=False),
    # attention_multiplier 0.05 != 1/sqrt(16): the logits are q.k * 0.05
    "granite": _conformance_config("GraniteConfig", **_BASE, num_key_value_heads=2, attention_multiplier=0.05,
                                   embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=2.0,
                                   tie_word_embeddings=False),
    # learned per-head sink logits inside the softmax; alternating sliding (window 4) / full layers; MoE MLP
    "gpt_oss": _conformance_config("GptOssConfig", hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=2,
                                   num_experts_per_tok=1, sliding_window=4,
                                   layer_types=["sliding_attention", "full_attention"],
                                   max_position_embeddings=256, tie_word_embeddings=False),
    "gemma": _conformance_config("GemmaConfig", **_BASE, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True),
    "phi": _conformance_config("PhiConfig", **_BASE, partial_rotary_factor=0.5, tie_word_embeddings=False),
    "stablelm": _conformance_config("StableLmConfig", **_BASE, num_key_value_heads=2, tie_word_embeddings=False),
    "gptj": _conformance_config("GPTJConfig", n_embd=64, n_layer=2, n_head=4, n_positions=256, rotary_dim=8,
                                tie_word_embeddings=False),
    "bloom": _conformance_config("BloomConfig", hidden_size=64, n_layer=2, n_head=4, tie_word_embeddings=True),
}
CONFORMANCE_CLASSES = {
    "mistral": "MistralForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "opt": "OPTForCausalLM", "phi3": "Phi3ForCausalLM", "olmo2": "Olmo2ForCausalLM", "granite": "GraniteForCausalLM",
    "gpt_oss": "GptOssForCausalLM", "gemma": "GemmaForCausalLM", "phi": "PhiForCausalLM",
    "stablelm": "StableLmForCausalLM", "gptj": "GPTJForCausalLM", "bloom": "BloomForCausalLM",
}
EXTRA_CONFIGS.update(CONFORMANCE_CONFIGS)
MODEL_CLASSES.update({kind: _model_class(name) for kind, name in CONFORMANCE_CLASSES.items()})
CONFORMANCE_KINDS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2", "gpt_neox", "opt", "phi3",
                     "olmo2", "granite", "gpt_oss", "gemma", "phi", "stablelm", "gptj", "bloom")
