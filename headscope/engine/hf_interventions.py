"""Interventions on a Hugging Face model through plain torch forward hooks (the nnsight backend's `intervene`).

The hooks sit on the real modules, so they act the same in traced runs, untraced prefills and last-token passes,
and are removed when the context exits (the weights are never touched). Where each tensor is edited, matching
the TransformerLens backend's hook points:

  q_raw  output of the attention's `q_norm` (Qwen3, Gemma-3, OLMo-2), else of `q_proj` (Llama, Mistral, Qwen2,
         ...), else the query third of GPT-2's fused `c_attn`: the query before the rotary embedding
  z      input of the output projection (`o_proj`, GPT-2's `c_proj`, GPT-NeoX's `dense`): each head's output
  k_raw, v  output of `k_proj` / `v_proj` per KV head (models without a k norm; GPT-2: the key/value thirds of
         `c_attn`): the key before the rotary embedding, and the value (activation patching, circuits/patching.py)
Other tensors (q and k after rotary, pattern) live inside the attention function: use the TransformerLens backend.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch

from headscope.engine.intervention import Intervention
from headscope.engine.spec import ModelSpec
from headscope.errors import HeadscopeError

SUPPORTED = ("q_raw", "z", "k_raw", "v")
_OUTPUT_PROJECTIONS = ("o_proj", "c_proj", "dense", "out_proj")


def _child(module: torch.nn.Module, names: Sequence[str]) -> tuple[str, torch.nn.Module] | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, torch.nn.Module):
            return name, child
    return None


def _split_heads(flat: torch.Tensor, n_heads: int, heads_first: bool = False) -> torch.Tensor:
    """[batch, pos, head * d] or [batch, pos, head, d] (or already [batch, head, pos, d]) -> [batch, head, pos, d]."""
    if heads_first:
        return flat
    if flat.dim() == 3:
        flat = flat.reshape(*flat.shape[:2], n_heads, -1)
    return flat.transpose(1, 2)


def _merge_heads(edited: torch.Tensor, like: torch.Tensor, heads_first: bool = False) -> torch.Tensor:
    """Inverse of `_split_heads`, back to the layout and dtype of `like`."""
    out = edited if heads_first else edited.transpose(1, 2)
    return out.reshape(like.shape).to(like.dtype)


def query_norm_is_heads_first(model: torch.nn.Module, attention: torch.nn.Module, n_heads: int) -> bool:
    """Whether the attention's `q_norm` sees [batch, head, pos, d] (Gemma-3) rather than [batch, pos, head, d]
    (Qwen3) or [batch, pos, head * d] (OLMo-2): found once by a 2-row forward of n_heads + 1 tokens."""
    norm = getattr(attention, "q_norm", None)
    if not isinstance(norm, torch.nn.Module):
        return False
    seen: list[tuple[int, ...]] = []
    handle = norm.register_forward_hook(lambda module, args, output: seen.append(tuple(output.shape)))
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(input_ids=torch.ones(1, n_heads + 1, dtype=torch.long, device=device))
    finally:
        handle.remove()
    return bool(seen) and len(seen[0]) == 4 and seen[0][1] == n_heads


@contextlib.contextmanager
def hooked_interventions(
    attention_modules: Sequence[torch.nn.Module],
    spec: ModelSpec,
    interventions: Sequence[Intervention],
    current_phase: Callable[[], str],
    *,
    query_norm_heads_first: bool = False,
) -> Iterator[None]:
    """Register one hook per (intervention, layer); each applies its edit only during its phases.

    `query_norm_heads_first`: the q_norm output layout (`query_norm_is_heads_first`)."""
    handles = []
    try:
        for item in interventions:
            if item.tensor not in SUPPORTED:
                raise HeadscopeError(
                    f"the nnsight backend edits only {', '.join(SUPPORTED)} (asked: {item.tensor}): "
                    "use `--backend transformer-lens`"
                )
            for layer in item.layers:
                handles.append(_register(attention_modules[layer], layer, item, spec, current_phase,
                                         query_norm_heads_first))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _register(attention: torch.nn.Module, layer: int, item: Intervention, spec: ModelSpec,
              current_phase: Callable[[], str], query_norm_heads_first: bool) -> torch.utils.hooks.RemovableHandle:
    active = lambda: current_phase() in item.phases  # noqa: E731
    if item.tensor in ("k_raw", "v"):
        return _register_key_value(attention, layer, item, spec, active)

    if item.tensor == "z":
        found = _child(attention, _OUTPUT_PROJECTIONS)
        if found is None:
            raise HeadscopeError(f"no output projection found in layer {layer}'s attention: use `--backend transformer-lens`")

        def edit_z(module: torch.nn.Module, args: tuple) -> tuple | None:
            if not active():
                return None
            flat = args[0]  # [batch, pos, head * d_head]
            edited = item.edit(layer, _split_heads(flat.float(), spec.n_heads))
            return (_merge_heads(edited, flat), *args[1:])

        return found[1].register_forward_pre_hook(edit_z)

    norm = _child(attention, ("q_norm",))
    proj = norm or _child(attention, ("q_proj",))
    if proj is not None:
        first = norm is not None and query_norm_heads_first

        def edit_q(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not active():
                return None
            edited = item.edit(layer, _split_heads(output.float(), spec.n_heads, first))
            return _merge_heads(edited, output, first)

        return proj[1].register_forward_hook(edit_q)

    fused = _child(attention, ("c_attn",))
    if fused is not None and not getattr(attention, "is_cross_attention", False):
        width = spec.n_heads * spec.d_head

        def edit_fused_q(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not active():
                return None
            query = item.edit(layer, _split_heads(output[..., :width].float(), spec.n_heads))
            return torch.cat([_merge_heads(query, output[..., :width]), output[..., width:]], dim=-1)

        return fused[1].register_forward_hook(edit_fused_q)
    raise HeadscopeError(f"cannot find the query projection of layer {layer}'s attention: use `--backend transformer-lens`")


def _register_key_value(attention: torch.nn.Module, layer: int, item: Intervention, spec: ModelSpec,
                        active: Callable[[], bool]) -> torch.utils.hooks.RemovableHandle:
    """k_raw / v edits on the key or value projection's output, [batch, kv_head, pos, d] for the edit."""
    if item.tensor == "k_raw" and isinstance(getattr(attention, "k_norm", None), torch.nn.Module):
        raise HeadscopeError("the nnsight backend cannot edit k_raw of a model with a k norm: use `--backend transformer-lens`")
    found = _child(attention, ("k_proj",) if item.tensor == "k_raw" else ("v_proj",))
    if found is not None:
        def edit_kv(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not active():
                return None
            return _merge_heads(item.edit(layer, _split_heads(output.float(), spec.n_kv_heads)), output)

        return found[1].register_forward_hook(edit_kv)
    fused = _child(attention, ("c_attn",))
    if fused is not None and not getattr(attention, "is_cross_attention", False):
        width = spec.n_heads * spec.d_head
        start = width if item.tensor == "k_raw" else 2 * width

        def edit_fused(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not active():
                return None
            part = output[..., start : start + width]
            edited = _merge_heads(item.edit(layer, _split_heads(part.float(), spec.n_kv_heads)), part)
            return torch.cat([output[..., :start], edited, output[..., start + width :]], dim=-1)

        return fused[1].register_forward_hook(edit_fused)
    raise HeadscopeError(f"cannot find the {item.tensor} projection of layer {layer}'s attention: use `--backend transformer-lens`")
