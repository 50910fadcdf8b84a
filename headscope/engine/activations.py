"""What one layer hands an analyzer: per-head tensors, alive only for the duration of the call."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Needs:
    """The per-layer tensors an analyzer asks for. The engine records nothing else.

    `pattern` is the post-softmax attention; with `rows_only`, only the rows named by the batch's
    `query_positions` are kept, so memory is O(rows x T) instead of O(T^2) per layer.
    `q`/`k` are taken after the rotary embedding (what the attention scores are made of).
    """

    pattern: bool = False
    rows_only: bool = False
    q: bool = False
    k: bool = False
    q_raw: bool = False  # q before the rotary embedding (equals q without rotary)
    k_raw: bool = False
    v: bool = False
    z: bool = False
    resid_pre: bool = False
    logits: bool = False

    def __or__(self, other: "Needs") -> "Needs":
        # rows_only survives only if every consumer that wants patterns asked for rows only
        rows_only = (self.rows_only or not self.pattern) and (other.rows_only or not other.pattern)
        return Needs(
            pattern=self.pattern or other.pattern,
            rows_only=rows_only and (self.pattern or other.pattern),
            q=self.q or other.q,
            k=self.k or other.k,
            q_raw=self.q_raw or other.q_raw,
            k_raw=self.k_raw or other.k_raw,
            v=self.v or other.v,
            z=self.z or other.z,
            resid_pre=self.resid_pre or other.resid_pre,
            logits=self.logits or other.logits,
        )


@dataclass
class LayerActivations:
    """One layer's requested tensors, in fp32 on the model's device.

    Shapes (GQA: k and v have `n_kv_heads`; query head h reads kv head `h // group_size`):
      pattern   [batch, head, query, key]   (query = selected rows when rows_only)
      q         [batch, head, pos, d_head]   after rotary embedding
      k, v      [batch, kv_head, pos, d_head] (k after rotary embedding)
      q_raw, k_raw  as q and k, before the rotary embedding
      z         [batch, head, pos, d_head]   per-head output, the input of the output projection
      resid_pre [batch, pos, d_model]
    """

    layer: int
    step: int | None = None  # decoding step (None in a plain forward pass)
    pattern: torch.Tensor | None = None
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    q_raw: torch.Tensor | None = None
    k_raw: torch.Tensor | None = None
    v: torch.Tensor | None = None
    z: torch.Tensor | None = None
    resid_pre: torch.Tensor | None = None
