"""Knocking out heads, the one vocabulary: engine interventions, including a different head set for every batch row.

Modes (Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model Safety"):
  "scale"  multiply the head's query by `eps` before the rotary embedding, so its attention becomes near-uniform
           over the visible keys: the paper's ablation (ydyjya/SafetyHeadAttribution, `mask_type="scale_mask"`,
           `mask_qkv=['q']`; scale 1e-4 for Ships, 1e-5 for Sahara).
  "uniform" zero the head's query (after the rotary embedding), so its attention is uniform over the visible keys:
           the retrieval-head paper's masking (nightdessert/Retrieval_Head, `faiss_attn/source/modeling_llama.py`:
           `query_states[:, h] = 0` for heads in `block_list`).
  "zero"   set the head's output z to 0 (classic zero-ablation).
  "mean"   set the head's output z to its mean over a reference set of prompts (`head_output_means`).
Per-row head sets let one forward pass test many ablations of one prompt (row i ablates `head_sets[i]`; a row
with no heads is the intact model), which is how Ships and Sahara stay affordable: one batched pass per prompt
instead of one pass per (head, prompt).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Collection, Iterable, Iterator, Sequence

import torch

from headscope.engine import Backend, Head, Intervention, LayerActivations, ModelSpec, Needs, ProbeBatch
from headscope.engine.intervention import PHASES
from headscope.errors import HeadscopeError

ABLATION_MODES = ("scale", "uniform", "zero", "mean")
_TENSOR = {"scale": "q_raw", "uniform": "q", "zero": "z", "mean": "z"}  # the tensor each mode edits


@dataclass(frozen=True)
class HeadAblation:
    """How a head is knocked out; `means` [layer, head, d_head] is required by mode "mean"."""

    mode: str = "scale"
    eps: float = 1e-4
    means: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mode not in ABLATION_MODES:
            raise HeadscopeError(f"unknown ablation '{self.mode}': use one of {', '.join(ABLATION_MODES)}")
        if self.mode == "mean" and self.means is None:
            raise HeadscopeError("mean ablation needs head means: compute them with head_output_means(backend, batches)")

    @property
    def tensor(self) -> str:
        return _TENSOR[self.mode]


def _ablate(ablation: HeadAblation, layer: int, tensor: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """Ablate the heads where `hit` (broadcast against tensor [batch, head, pos, d_head]) is True."""
    hit = hit.to(tensor.device)
    if ablation.mode == "scale":
        return tensor * torch.where(hit, ablation.eps, 1.0).to(tensor.dtype)  # x * 1.0 == x: other heads stay exact
    if ablation.mode in ("zero", "uniform"):
        return tensor.masked_fill(hit, 0.0)
    mean = ablation.means[layer].to(tensor.device, tensor.dtype)[None, :, None, :]  # [1, head, 1, d_head]
    return torch.where(hit, mean, tensor)


def check_heads(spec: ModelSpec, heads: Iterable[Head]) -> list[Head]:
    heads = [(int(layer), int(head)) for layer, head in heads]
    bad = [(l, h) for l, h in heads if not (0 <= l < spec.n_layers and 0 <= h < spec.n_heads)]
    if bad:
        raise HeadscopeError(f"heads {bad} do not exist in a {spec.n_layers}x{spec.n_heads} model: fix the head list")
    return heads


def row_ablations(
    ablation: HeadAblation, head_sets: Sequence[Collection[Head]], spec: ModelSpec, *, phases: Iterable[str] = PHASES
) -> list[Intervention]:
    """Interventions under which batch row i has `head_sets[i]` ablated (the batch must have len(head_sets) rows)."""
    mask = torch.zeros(len(head_sets), spec.n_layers, spec.n_heads, dtype=torch.bool)  # [row, layer, head]
    for row, heads in enumerate(head_sets):
        for layer, head in check_heads(spec, heads):
            mask[row, layer, head] = True
    layers = tuple(int(layer) for layer in mask.any(dim=(0, 2)).nonzero().flatten())
    if not layers:
        return []
    n_rows = len(head_sets)

    def edit(layer: int, tensor: torch.Tensor) -> torch.Tensor:  # [batch, head, pos, d_head]
        if tensor.shape[0] != n_rows:
            raise HeadscopeError(f"a per-row ablation of {n_rows} rows met a batch of {tensor.shape[0]}: batch one row per head set")
        return _ablate(ablation, layer, tensor, mask[:, layer, :, None, None])  # hit [row, head, 1, 1]

    return [Intervention(ablation.tensor, layers, edit, frozenset(phases))]


@contextlib.contextmanager
def ablate_heads(
    backend: Backend, heads: Iterable[Head], ablation: HeadAblation = HeadAblation(), *, phases: Iterable[str] = PHASES
) -> Iterator[None]:
    """Inside the block every run/decode of `backend` has `heads` ablated (any batch size); restored exactly on exit."""
    chosen = set(check_heads(backend.spec, heads))
    mask = torch.zeros(backend.spec.n_layers, backend.spec.n_heads, dtype=torch.bool)
    for layer, head in chosen:
        mask[layer, head] = True
    layers = tuple(sorted({layer for layer, _ in chosen}))

    def edit(layer: int, tensor: torch.Tensor) -> torch.Tensor:  # [batch, head, pos, d_head]
        return _ablate(ablation, layer, tensor, mask[None, layer, :, None, None])  # hit [1, head, 1, 1]

    interventions = [Intervention(ablation.tensor, layers, edit, frozenset(phases))] if layers else []
    with backend.intervene(*interventions):
        yield


def head_output_means(backend: Backend, batches: Iterable[ProbeBatch]) -> torch.Tensor:
    """[layer, head, d_head] mean of each head's output z over every real token of `batches` (for mean ablation)."""
    spec = backend.spec
    total = torch.zeros(spec.n_layers, spec.n_heads, spec.d_head, dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    for batch in batches:
        valid = batch.valid.to(backend.device)

        def on_layer(acts: LayerActivations, valid: torch.Tensor = valid) -> None:
            z = acts.z  # [batch, head, pos, d_head]
            total[acts.layer] += (z * valid[:, None, :, None]).sum(dim=(0, 2)).double().cpu()

        backend.run(batch, Needs(z=True), on_layer)
        count += float(valid.sum())
    if count == 0:
        raise HeadscopeError("head means need at least one real token: pass non-empty prompts")
    return (total / count).float()


def random_head_sets(n_layers: int, n_heads: int, k: int, n_sets: int, *, seed: int, exclude: Iterable[Head]) -> list[list[Head]]:
    """`n_sets` sets of `k` heads drawn (seeded) from the heads outside `exclude`: the random baseline of a
    causal check (the same draw for the same arguments)."""
    excluded = set(exclude)
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in excluded]
    if len(pool) < k:
        raise HeadscopeError(f"only {len(pool)} heads lie outside the excluded {len(excluded)}: ask for fewer heads")
    rng = random.Random(seed)
    return [sorted(rng.sample(pool, k)) for _ in range(n_sets)]
