"""A tiny Llama with a planted copy-paste head, and hand-built needle prompts over its word-level vocabulary."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from tiny_models import build_tiny_model

CHAIN = list(range(10, 22))  # c_0 .. c_11: the planted head looks for successor(c_j) = c_{j+1}
NEEDLE = CHAIN[1:9]  # the answer span: 8 tokens
# head-dim slots whose rotary frequency is ~0 with rope_theta = 1e15 (pairs i, i + 8 for i >= 2)
SLOTS = [2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15]
D_HEAD = 16


def plant_successor_head(model) -> None:
    """Layer 0, query head 0 attends to the earlier position holding successor(current token).

    Chain tokens get a one-hot embedding direction j; head 0's query of c_j lands in slot j+1 and every key of
    c_j in slot j, so q(c_j) . k(c_{j+1}) is large and all other scores are ~0. Fed c_{j} while the answer
    c_{j+1} is due, the head points at the needle position holding exactly that token: a perfect copy-paste head.
    """
    emb = model.model.embed_tokens.weight
    emb[:, : len(CHAIN)] = 0
    for j, token in enumerate(CHAIN):
        emb[token, j] = 8.0
    attn = model.model.layers[0].self_attn
    wq, wk = attn.q_proj.weight, attn.k_proj.weight
    wq[0:D_HEAD] = 0
    wk[0:D_HEAD] = 0
    wq[D_HEAD : 2 * D_HEAD][SLOTS] = 0  # head 1 shares kv head 0: keep it blind to the planted key slots
    scale = 1.8
    for j in range(len(CHAIN) - 1):
        wq[SLOTS[j + 1], j] = scale
    for j in range(len(CHAIN)):
        wk[SLOTS[j], j] = scale


def build_planted(folder: Path) -> Path:
    return build_tiny_model("llama", folder, edit=plant_successor_head,
                            rope_parameters={"rope_type": "default", "rope_theta": 1e15})


def needle_prompt(seed: int = 0, before: int = 20, after: int = 30) -> tuple[list[int], dict]:
    """[BOS] hay needle hay c_0: decoding from c_0 should reproduce the needle."""
    rng = random.Random(seed)
    hay = [rng.randrange(30, 96) for _ in range(before + after)]
    prompt = [1] + hay[:before] + NEEDLE + hay[before:] + [CHAIN[0]]
    start = 1 + before
    sample = {"needle_start": start, "needle_end": start + len(NEEDLE), "real_needle": " ".join(f"t{t}" for t in NEEDLE),
              "needle_id": f"planted-{seed}", "context_length": len(prompt), "depth": 0.0}
    return prompt, sample
