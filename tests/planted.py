"""A 2-layer GPT-2 whose heads are wired by hand, so their roles are known before any score is computed.

Residual layout (d_model 192): token t -> dim t, position p -> dim 64 + p, "previous token" slot 128 + t.
  L0H0 previous-token head: q(pos p) . k(pos p - 1) is large.
  L0H1 duplicate-token head: same token attracts, same position repels (b^2 > a^2), BOS parks the rest.
  L0H0's value/output copies the attended token into the previous-token slot, so
  L1H0 induction head: q(token t) . k(previous-token slot t) is large; BOS parks the rest.
Every other head, MLP and bias is zero. Sequences must stay under 23 tokens (position dims 40..62).
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import build_tiny_model

D_HEAD = 64
TOK, POS, PREV = 0, 64, 128
BOS = 1
PARK = 63  # head dim used to park spare attention on BOS


def _zero_everything(model) -> None:
    for block in model.transformer.h:
        for module in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            module.weight.zero_()
            module.bias.zero_()
    model.transformer.wte.weight.zero_()
    model.transformer.wpe.weight.zero_()


def _wire(model, *, a: float = 1.0, b: float = 1.5, park: float = 4.0, vocab: int = 40, n_pos: int = 23) -> None:
    _zero_everything(model)
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    for t in range(vocab):
        wte[t, TOK + t] = 1.0
    for p in range(wpe.shape[0]):
        if POS + p < PREV:
            wpe[p, POS + p] = 1.0
    q, k, v = 0, 192, 384  # column offsets of Q, K, V in the fused c_attn

    layer0 = model.transformer.h[0].attn
    w0 = layer0.c_attn.weight
    # head 0: previous token
    for p in range(D_HEAD - 1):
        w0[POS + p, q + p] = a
        w0[POS + p, k + p + 1] = a
    for t in range(vocab):
        w0[TOK + t, v + t] = 1.0  # value = the token
        layer0.c_proj.weight[t, PREV + t] = 1.0 / 8.0  # output -> previous-token slot (LN made it ~8)
    # head 1: duplicate token (same token +a^2, same position -b^2), BOS parking
    h1 = D_HEAD
    for t in range(vocab):
        w0[TOK + t, q + h1 + t] = a
        w0[TOK + t, k + h1 + t] = a
    for p in range(n_pos):
        w0[POS + p, q + h1 + 40 + p] = b
        w0[POS + p, k + h1 + 40 + p] = -b
    layer0.c_attn.bias[q + h1 + PARK] = park
    w0[TOK + BOS, k + h1 + PARK] = 1.0

    layer1 = model.transformer.h[1].attn
    w1 = layer1.c_attn.weight
    # head 0: induction (current token vs previous-token slot), BOS parking
    for t in range(vocab):
        w1[TOK + t, q + t] = a
        w1[PREV + t, k + t] = a
    layer1.c_attn.bias[q + PARK] = park
    w1[TOK + BOS, k + PARK] = 1.0


def build_planted_gpt2(folder: Path) -> Path:
    return build_tiny_model(
        "gpt2", folder, vocab_size=40, edit=_wire, n_embd=192, n_head=3, n_layer=2, n_positions=64
    )


PLANTED = {"previous_token_score": (0, 0), "duplicate_token_score": (0, 1), "induction_score": (1, 0)}
