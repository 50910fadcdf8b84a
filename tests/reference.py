"""Independent references: what Hugging Face itself computes, with eager attention."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def hf_eager(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()


def hf_attentions(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per-layer attention patterns [batch, head, query, key] from `output_attentions=True`."""
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        kwargs["position_ids"] = position_ids
    with torch.no_grad():
        out = model(input_ids, output_attentions=True, **kwargs)
    return [a.float() for a in out.attentions]


def hf_o_proj_inputs(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """What each layer's output projection receives ([batch, pos, heads * d_head]): the true per-head z."""
    captured: list[torch.Tensor] = []
    layers = model.model.layers if hasattr(model, "model") else model.transformer.h
    handles = []
    for layer in layers:
        proj = layer.self_attn.o_proj if hasattr(layer, "self_attn") else layer.attn.c_proj
        handles.append(proj.register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach().clone())))
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return captured
