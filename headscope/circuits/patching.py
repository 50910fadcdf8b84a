"""Activation patching: set chosen heads' tensors in a target run to values from a source run or to a given mean.

A patch replaces head `head` of a per-head tensor kind (`z`, the output projection's input per query head, or
`q`, `k`, `q_raw`, `k_raw`, `v`; k/v kinds are indexed by KV head) at layer `layer`, at chosen positions of chosen
batch rows. It rides on the engine's interventions (`backend.intervene`), so the model is exactly restored when the
context exits, and it works on every backend that edits that kind (the nnsight backend edits q_raw, k_raw, v and z;
TransformerLens every kind). Used by the function-vector analyzer (Todd et al. 2024): the mean output of a head at
the last token of clean prompts, patched into the last token of corrupted prompts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from headscope.engine import Backend, Head, Intervention, LayerActivations, ModelSpec, Needs, ProbeBatch
from headscope.engine.backend import last_real_positions
from headscope.errors import HeadscopeError

PATCHABLE = ("z", "q", "k", "q_raw", "k_raw", "v")
_KV_KINDS = ("k", "k_raw", "v")


@dataclass(frozen=True)
class HeadPatch:
    """Set head `head` of the patched tensor at layer `layer` to `value`.

    value  [d_head]: one vector (e.g. a mean) at every patched row and position; or [rows, n_pos, d_head]: one
           value per patched row (in the order of `rows`, or of the batch when `rows` is None) and position.
    rows   the batch rows patched (None: every row), so one batch can hold a different patch in every row.
    """

    layer: int
    head: int
    value: torch.Tensor
    rows: tuple[int, ...] | None = None


def n_heads_of(spec: ModelSpec, tensor: str) -> int:
    """How many heads the tensor kind has: KV heads for k, k_raw and v, query heads otherwise."""
    return spec.n_kv_heads if tensor in _KV_KINDS else spec.n_heads


def check_patches(spec: ModelSpec, patches: Sequence[HeadPatch], tensor: str) -> None:
    """Refuse bad patches before any run: unknown kind, heads outside the model, values of the wrong width."""
    if tensor not in PATCHABLE:
        raise HeadscopeError(f"cannot patch tensor '{tensor}': use one of {', '.join(PATCHABLE)}")
    heads = n_heads_of(spec, tensor)
    for patch in patches:
        if not (0 <= patch.layer < spec.n_layers and 0 <= patch.head < heads):
            raise HeadscopeError(f"head ({patch.layer}, {patch.head}) of '{tensor}' does not exist in a "
                                 f"{spec.n_layers}x{heads} model: fix the head list")
        if patch.value.dim() not in (1, 3) or patch.value.shape[-1] != spec.d_head:
            raise HeadscopeError(f"a patch value must be [d_head] or [rows, positions, d_head] with d_head "
                                 f"{spec.d_head}; got {tuple(patch.value.shape)}")
        if patch.rows is not None and patch.value.dim() == 3 and patch.value.shape[0] != len(patch.rows):
            raise HeadscopeError(f"a patch of {len(patch.rows)} rows has values for {patch.value.shape[0]} rows")


def last_positions(batch: ProbeBatch) -> torch.Tensor:
    """[batch, 1]: each row's last real token (left or right padding), the usual patch position."""
    return last_real_positions(batch.attention_mask)[:, None]


def patch_edit(patches: Sequence[HeadPatch], positions: torch.Tensor | None) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """The intervention edit: a copy of the layer's [batch, head, pos, d_head] tensor with the patches written in."""
    by_layer: dict[int, list[HeadPatch]] = {}
    for patch in patches:
        by_layer.setdefault(patch.layer, []).append(patch)

    def edit(layer: int, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        n_rows, n_pos = tensor.shape[0], tensor.shape[2]
        if positions is not None and positions.shape[0] != n_rows:
            raise HeadscopeError(f"patch positions name {positions.shape[0]} rows but the batch has {n_rows}")
        for patch in by_layer.get(layer, ()):
            rows = range(n_rows) if patch.rows is None else patch.rows
            value = patch.value.to(tensor.device, tensor.dtype)
            for index, row in enumerate(rows):
                if not 0 <= row < n_rows:
                    raise HeadscopeError(f"patch row {row} is outside a batch of {n_rows} rows")
                cols = positions[row].to(tensor.device) if positions is not None else slice(None)
                if positions is not None and bool(((cols < 0) | (cols >= n_pos)).any()):
                    raise HeadscopeError(f"patch positions {cols.tolist()} are outside a sequence of {n_pos}")
                width = n_pos if positions is None else len(cols)
                if value.dim() == 3 and value.shape[1] != width:
                    raise HeadscopeError(f"a patch holds {value.shape[1]} positions where the target run patches {width}: "
                                         "pass matching source and target positions")
                out[row, patch.head, cols] = value if value.dim() == 1 else value[index]
        return out

    return edit


@contextlib.contextmanager
def patch_heads(
    backend: Backend,
    patches: Sequence[HeadPatch],
    *,
    tensor: str = "z",
    positions: torch.Tensor | None = None,
    phases: Iterable[str] = ("forward",),
) -> Iterator[None]:
    """Inside the block, every run of `backend` has `patches` written into `tensor`; exactly restored on exit.

    positions: None patches every position (values [d_head] or [rows, pos, d_head]); a LongTensor [batch, n]
    patches row r at positions[r] only (e.g. `last_positions(batch)`).
    """
    patches = list(patches)
    check_patches(backend.spec, patches, tensor)
    layers = tuple(sorted({patch.layer for patch in patches}))
    items = [Intervention(tensor, layers, patch_edit(patches, positions), frozenset(phases))] if layers else []
    with backend.intervene(*items):
        yield


def record_heads(backend: Backend, batch: ProbeBatch, *, tensor: str = "z",
                 positions: torch.Tensor | None = None) -> torch.Tensor:
    """[layer, batch, head, n_pos, d_head] of `tensor` in a run of `batch` (all positions, or row r at positions[r]);
    active interventions apply, so a source run may itself be patched."""
    if tensor not in PATCHABLE:
        raise HeadscopeError(f"cannot record tensor '{tensor}' for patching: use one of {', '.join(PATCHABLE)}")
    spec = backend.spec
    n_pos = batch.input_ids.shape[1] if positions is None else positions.shape[1]
    out = torch.zeros(spec.n_layers, batch.input_ids.shape[0], n_heads_of(spec, tensor), n_pos, spec.d_head)

    def keep(acts: LayerActivations) -> None:
        values = getattr(acts, tensor)  # [batch, head, pos, d_head]
        if positions is not None:
            index = positions.to(values.device)[:, None, :, None].expand(-1, values.shape[1], -1, values.shape[3])
            values = values.gather(2, index)
        out[acts.layer] = values.float().cpu()

    backend.run(batch, Needs(**{tensor: True}), keep)
    return out


def mean_heads(backend: Backend, batches: Iterable[ProbeBatch], *, tensor: str = "z",
               positions_of: Callable[[ProbeBatch], torch.Tensor] = last_positions) -> torch.Tensor:
    """[layer, head, d_head]: each head's mean `tensor` over every row of `batches` at `positions_of(batch)`
    (default: the last real token), e.g. the function-vector paper's mean head output over clean prompts."""
    total: torch.Tensor | None = None
    count = 0
    for batch in batches:
        recorded = record_heads(backend, batch, tensor=tensor, positions=positions_of(batch)).double()
        summed = recorded.sum(dim=(1, 3))  # [layer, head, d_head]
        total = summed if total is None else total + summed
        count += recorded.shape[1] * recorded.shape[3]
    if total is None or count == 0:
        raise HeadscopeError("head means need at least one prompt: pass non-empty batches")
    return (total / count).float()


@contextlib.contextmanager
def patch_from_source(
    backend: Backend,
    source: ProbeBatch,
    heads: Iterable[Head],
    *,
    tensor: str = "z",
    source_positions: torch.Tensor | None = None,
    target_positions: torch.Tensor | None = None,
) -> Iterator[None]:
    """Run `source` once and patch `heads`' values from it into every run inside the block (row r of the target
    gets row r of the source; positions pair up in order). Shapes must agree: equal rows and position counts."""
    chosen = [(int(layer), int(head)) for layer, head in heads]
    check_patches(backend.spec, [HeadPatch(l, h, torch.zeros(backend.spec.d_head)) for l, h in chosen], tensor)
    recorded = record_heads(backend, source, tensor=tensor, positions=source_positions)
    patches = [HeadPatch(layer, head, recorded[layer, :, head]) for layer, head in chosen]
    with patch_heads(backend, patches, tensor=tensor, positions=target_positions):
        yield
