"""q_proj / k_proj: the q and k projections' own outputs (before a q/k norm and the rotary), on both backends,
against forward hooks on the Hugging Face modules themselves. Gemma-3, Qwen3 and OLMo-2 normalise q/k (Gemma-3
and Qwen3 per head, OLMo-2 over all heads at once), so there the kinds differ from q_raw/k_raw; on Llama they equal
them (the select-and-copy tests check the Llama case)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headscope.engine import LayerActivations, Needs, ProbeBatch, load_backend
from tiny_models import build_tiny_model, make_tokenizer


def _save_qnorm_model(kind: str, folder: Path) -> Path:
    """Tiny random-init Qwen3 or OLMo-2 (q/k norms with random gains), saved with the tiny tokenizer."""
    from transformers import Olmo2Config, Olmo2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = {"qwen3": (Qwen3Config, Qwen3ForCausalLM), "olmo2": (Olmo2Config, Olmo2ForCausalLM)}[kind]
    torch.manual_seed(0)
    config = config_cls(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                        pad_token_id=0, tie_word_embeddings=False)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "q_norm" in name or "k_norm" in name:
                param.copy_(torch.rand_like(param) * 2 + 0.5)
    model.save_pretrained(folder)
    make_tokenizer(96).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("projection_kinds")
    dirs = {kind: _save_qnorm_model(kind, root / kind) for kind in ("qwen3", "olmo2")}  # built once: ~0.1 s each
    dirs["gemma3"] = build_tiny_model("gemma3", root / "gemma3")
    return dirs


def hf_projections(folder: Path, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per layer, the q_proj / k_proj module outputs of an eager HF forward, split into heads [batch, head, pos, d]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    d = model.config.head_dim
    seen: list[dict[str, torch.Tensor]] = [{} for _ in model.model.layers]
    handles = []
    for layer, block in enumerate(model.model.layers):
        for name in ("q_proj", "k_proj"):
            def hook(module, args, out, layer=layer, name=name):
                seen[layer][name] = out.detach().unflatten(-1, (-1, d)).transpose(1, 2)
            handles.append(getattr(block.self_attn, name).register_forward_hook(hook))
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return seen


# Each q/k-norm layout once per backend (OLMo-2's all-head norm on both; per-head norms: Gemma-3 on nnsight, Qwen3
# on TransformerLens). Llama (no norm): the select-and-copy brute-force test checks q_proj . k_proj against HF hooks;
# tests/engine/test_tensor_kinds.py checks every kind arrives on both backends.
CASES = [("olmo2", "nnsight"), ("gemma3", "nnsight"), ("olmo2", "transformer-lens"), ("qwen3", "transformer-lens")]


@pytest.mark.parametrize(("kind", "backend_name"), CASES)
def test_projection_kinds_equal_the_modules_outputs(model_dirs, kind, backend_name):
    ids = torch.tensor([[1, 5, 17, 9, 33, 8, 40]])
    try:
        backend = load_backend(str(model_dirs[kind]), backend=backend_name, quiet=True)
    except Exception as err:  # noqa: BLE001 - the TL bridge may not adapt every family; say which
        pytest.fail(f"{backend_name} cannot load tiny {kind}: {err}")
    got: dict[int, LayerActivations] = {}
    backend.run(ProbeBatch(ids, torch.ones_like(ids)), Needs(q_proj=True, k_proj=True, q_raw=True, k_raw=True),
                lambda acts: got.setdefault(acts.layer, acts))
    reference = hf_projections(model_dirs[kind], ids)
    for layer, expected in enumerate(reference):
        torch.testing.assert_close(got[layer].q_proj, expected["q_proj"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[layer].k_proj, expected["k_proj"], rtol=1e-5, atol=1e-5)
        # the q/k norm sits between the projections and what the rotary rotates
        assert not torch.allclose(got[layer].q_proj, got[layer].q_raw, atol=1e-3)
        assert not torch.allclose(got[layer].k_proj, got[layer].k_raw, atol=1e-3)
