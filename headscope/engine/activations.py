"""What one layer hands an analyzer: per-head tensors, alive only for the duration of the call.

`TENSOR_KINDS` is the one table of tensor kinds: `Needs` has one flag per kind, `LayerActivations` one field per
kind, interventions may edit the per-head kinds, and each backend maps every kind to where it reads it
(docs/developing.md, "Adding a tensor kind"). tests/engine/test_tensor_kinds.py keeps them in step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class TensorKind:
    name: str
    shape: str
    per_head: bool  # split by head: interventions may edit it head by head
    meaning: str


TENSOR_KINDS: tuple[TensorKind, ...] = (
    TensorKind("pattern", "[batch, head, query, key]", True, "post-softmax attention (query = selected rows with rows_only)"),
    TensorKind("q", "[batch, head, pos, d_head]", True, "queries after the rotary embedding"),
    TensorKind("k", "[batch, kv_head, pos, d_head]", True, "keys after the rotary embedding"),
    TensorKind("q_raw", "[batch, head, pos, d_head]", True, "queries before the rotary embedding (after a q norm)"),
    TensorKind("k_raw", "[batch, kv_head, pos, d_head]", True, "keys before the rotary embedding (after a k norm)"),
    TensorKind("v", "[batch, kv_head, pos, d_head]", True, "values"),
    TensorKind("z", "[batch, head, pos, d_head]", True, "per-head output, the input of the output projection"),
    TensorKind("resid_pre", "[batch, pos, d_model]", False, "residual stream entering the layer"),
    TensorKind("q_proj", "[batch, head, pos, d_head]", True,
               "queries as the q projection outputs them: before any q norm and the rotary embedding"),
    TensorKind("k_proj", "[batch, kv_head, pos, d_head]", True,
               "keys as the k projection outputs them: before any k norm and the rotary embedding"),
)
KINDS: tuple[str, ...] = tuple(kind.name for kind in TENSOR_KINDS)
HEAD_KINDS: tuple[str, ...] = tuple(kind.name for kind in TENSOR_KINDS if kind.per_head)


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
    q_proj: bool = False  # q as projected (before a q norm and the rotary; equals q_raw without a q norm)
    k_proj: bool = False
    logits: bool = False

    def __or__(self, other: "Needs") -> "Needs":
        wanted = {f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)}
        # rows_only survives only if every consumer that wants patterns asked for rows only
        rows_only = (self.rows_only or not self.pattern) and (other.rows_only or not other.pattern)
        wanted["rows_only"] = rows_only and wanted["pattern"]
        return Needs(**wanted)

    def kinds(self) -> tuple[str, ...]:
        """The tensor kinds asked for, in table order."""
        return tuple(kind for kind in KINDS if getattr(self, kind))


@dataclass
class LayerActivations:
    """One layer's requested tensors, in fp32 on the model's device; shapes as in `TENSOR_KINDS`.

    GQA: k and v have `n_kv_heads`; query head h reads kv head `h // group_size`.
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
    q_proj: torch.Tensor | None = None
    k_proj: torch.Tensor | None = None
