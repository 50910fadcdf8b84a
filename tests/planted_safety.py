"""A tiny Llama in which one head alone makes the model "refuse", so Ships' top head is known in advance.

Residual dims: 0 = "trigger present" (token t10), 1 = a constant every token carries, 2 = "refuse".
Planted head L1H2 (KV head 1): its query reads the constant, its key reads the trigger, so it attends to the
trigger; its value carries the trigger and its output writes "refuse" (dim 2). The unembedding reads dim 2 for
the refusal token t20 and the constant for the answer token t30. With the head intact p(t20) ~ 1 on any prompt
holding t10; scaling its query by eps spreads its attention uniformly, dim 2 shrinks ~n-fold and t30 wins.
RoPE is made negligible (rope_theta 1e12, signal in each head's lowest-frequency pair: dims 7 and 15).
Every other weight keeps its random init, so the other heads are present but not steering.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import build_tiny_model

TRIGGER, REFUSAL, ANSWER = 10, 20, 30
PLANTED_HEAD = (1, 2)
D_HEAD = 16


def _wire(model) -> None:
    embed = model.model.embed_tokens.weight
    embed[:, 1] = 1.0
    embed[TRIGGER, 0] = 2.0
    attention = model.model.layers[1].self_attn
    head, kv_head = PLANTED_HEAD[1], PLANTED_HEAD[1] // 2
    q_rows = slice(head * D_HEAD, (head + 1) * D_HEAD)
    kv_rows = slice(kv_head * D_HEAD, (kv_head + 1) * D_HEAD)
    attention.q_proj.weight[q_rows] = 0.0
    attention.q_proj.weight[head * D_HEAD + 7, 1] = 1.0
    attention.k_proj.weight[kv_rows] = 0.0
    attention.k_proj.weight[kv_head * D_HEAD + 7, 0] = 1.0
    attention.v_proj.weight[kv_rows] = 0.0
    attention.v_proj.weight[kv_head * D_HEAD + 0, 0] = 1.0
    attention.o_proj.weight[:, q_rows] = 0.0
    attention.o_proj.weight[2, head * D_HEAD + 0] = 0.5
    lm_head = model.lm_head.weight
    lm_head[REFUSAL] = 0.0
    lm_head[ANSWER] = 0.0
    lm_head[REFUSAL, 2] = 5.0
    lm_head[ANSWER, 1] = 5.0


def build_planted_refusal_llama(folder: Path) -> Path:
    return build_tiny_model("llama", folder, edit=_wire,
                            rope_parameters={"rope_type": "default", "rope_theta": 1e12})


def harmful_prompt(seed: int, length: int = 8) -> list[int]:
    """Word ids of a prompt holding the trigger once, at a seeded position, never last."""
    generator = torch.Generator().manual_seed(seed)
    words = (torch.randint(40, 90, (length,), generator=generator)).tolist()
    words[int(torch.randint(0, length - 1, (1,), generator=generator))] = TRIGGER
    return [1] + words  # BOS first
