"""Per-head attention windows (StreamingLLM-style): chosen KV heads see only the first `sink` and the last
`window` keys, every other head keeps full attention.

Why a window and not an ablation: this is what a head-wise KV-cache policy does to a model (DuoAttention's
"streaming heads", RazorAttention's non-retrieval heads, kvpress' `DuoAttentionPress`): the KV cache of a
windowed head would hold only `sink + window` tokens. Masking the keys it would have dropped gives exactly the
attention such a cache computes (softmax over the kept keys), so accuracy under a policy can be measured
without writing a cache.

The rule, for a query at absolute position i and a key at position j (both 0-based, unpadded rows):

    visible(i, j) = j <= i  and  (j < sink  or  i - j < window)

so `window` counts the query's own position (DuoAttention's "recent" tokens include the newest one). A policy
names KV heads (`(layer, kv_head)`); under GQA the window applies to every query head reading that KV head
(`kv_head = head // group_size`), as a compressed cache would force.

Where it acts: the TransformerLens backend edits `hook_attn_scores` (the pre-softmax scores after the causal
mask, [batch, head, query, key]); the nnsight backend (plain Hugging Face modules) replaces the 4-D additive
mask its attention modules receive by a per-head one. Both are hooks alive only inside `backend.intervene`,
so the model is bit-identical afterwards, and heads outside the window keep their exact scores/mask values.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from headscope.engine.intervention import PHASES
from headscope.engine.spec import Head, ModelSpec
from headscope.errors import HeadscopeError


@dataclass(frozen=True)
class AttentionWindow:
    """Restrict the KV heads `kv_heads` ((layer, kv_head) pairs) to `sink` + `window` keys in `phases`."""

    kv_heads: tuple[Head, ...]
    sink: int
    window: int
    phases: frozenset[str] = field(default_factory=lambda: frozenset(PHASES))

    def __post_init__(self) -> None:
        if self.sink < 0 or self.window < 1:
            raise HeadscopeError(f"an attention window needs sink >= 0 and window >= 1 (got {self.sink}, {self.window})")
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise HeadscopeError(f"attention-window phases {sorted(unknown)} are unknown: use {', '.join(PHASES)}")
        object.__setattr__(self, "kv_heads", tuple(sorted({(int(l), int(h)) for l, h in self.kv_heads})))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({layer for layer, _ in self.kv_heads}))

    def check(self, spec: ModelSpec) -> None:
        """Refuse KV heads the model does not have (one line, before any run)."""
        bad = [(l, h) for l, h in self.kv_heads if not (0 <= l < spec.n_layers and 0 <= h < spec.n_kv_heads)]
        if bad:
            raise HeadscopeError(
                f"KV heads {bad[:4]} do not exist in a model of {spec.n_layers} layers x {spec.n_kv_heads} KV heads: "
                "fix the policy (is it for another model?)"
            )

    def query_heads(self, spec: ModelSpec, layer: int) -> torch.Tensor:
        """[n_heads] bool: the query heads of `layer` that read a windowed KV head."""
        chosen = torch.zeros(spec.n_heads, dtype=torch.bool)
        for l, kv in self.kv_heads:
            if l == layer:
                chosen[kv * spec.group_size : (kv + 1) * spec.group_size] = True
        return chosen


def visible_keys(n_queries: int, n_keys: int, sink: int, window: int, device: Any = None) -> torch.Tensor:
    """[query, key] bool: which keys a windowed head may see; the queries are the last `n_queries` positions
    of a sequence of `n_keys` (a cached step sees the whole cache)."""
    query = torch.arange(n_keys - n_queries, n_keys, device=device)[:, None]
    key = torch.arange(n_keys, device=device)[None, :]
    return (key <= query) & ((key < sink) | (query - key < window))


def restrict(values: torch.Tensor, heads: torch.Tensor, sink: int, window: int, fill: float) -> torch.Tensor:
    """Set `values` [batch, head or 1, query, key] to `fill` where a chosen head (`heads` [n_heads] bool) may
    not look; other heads' values are returned unchanged (bit for bit). The result has n_heads heads."""
    n_queries, n_keys = values.shape[-2:]
    keep = visible_keys(n_queries, n_keys, sink, window, values.device)  # [query, key]
    hide = heads.to(values.device)[:, None, None] & ~keep[None]  # [head, query, key]
    values = values.expand(values.shape[0], heads.shape[0], n_queries, n_keys)
    if values.dtype == torch.bool:  # a boolean "may attend" mask
        return values & ~hide[None]
    return values.masked_fill(hide[None], fill)


def score_hooks(windows: Sequence[AttentionWindow], spec: ModelSpec, phase: str) -> list[tuple[str, Callable]]:
    """TransformerLens hooks (`blocks.L.attn.hook_attn_scores`) applying `windows` active in `phase`."""
    hooks: list[tuple[str, Callable]] = []
    for item in windows:
        if phase not in item.phases:
            continue
        for layer in item.layers:
            heads = item.query_heads(spec, layer)

            def hook(scores: torch.Tensor, hook: Any, heads: torch.Tensor = heads, item: AttentionWindow = item) -> torch.Tensor:
                return restrict(scores, heads, item.sink, item.window, torch.finfo(scores.dtype).min)

            hooks.append((f"blocks.{layer}.attn.hook_attn_scores", hook))
    return hooks


def check_bridge_recomputes(bridge: Any, windows: Sequence[AttentionWindow]) -> None:
    """A TransformerLens attention bridge that hands attention to Hugging Face fires `hook_attn_scores` after the
    fact, so an edit there would change nothing: refuse instead of measuring an intact model."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    for layer in sorted({layer for item in windows for layer in item.layers}):
        module = bridge.blocks[layer].attn
        if type(module).forward is AttentionBridge.forward:
            raise HeadscopeError(
                f"the TransformerLens bridge of this model hands layer {layer}'s attention to Hugging Face, so an "
                "attention window cannot act there: use `--backend nnsight`"
            )


@contextlib.contextmanager
def mask_hooks(
    attention_modules: Sequence[torch.nn.Module],
    spec: ModelSpec,
    windows: Sequence[AttentionWindow],
    current_phase: Callable[[], str],
) -> Iterator[None]:
    """Hugging Face attention modules: a pre-hook swaps the [batch, 1, query, key] mask for a per-head one."""
    handles = []
    try:
        for item in windows:
            for layer in item.layers:
                heads = item.query_heads(spec, layer)

                def pre(module: torch.nn.Module, args: tuple, kwargs: dict, heads: torch.Tensor = heads,
                        item: AttentionWindow = item) -> tuple[tuple, dict] | None:
                    if current_phase() not in item.phases:
                        return None
                    mask = kwargs.get("attention_mask")
                    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
                        raise HeadscopeError(
                            "attention windows need the 4-D attention mask of eager attention: load the model with "
                            "attn_implementation='eager' (the default of the nnsight backend)"
                        )
                    fill = torch.finfo(mask.dtype).min if mask.is_floating_point() else 0.0
                    return args, {**kwargs, "attention_mask": restrict(mask, heads, item.sink, item.window, fill)}

                handles.append(attention_modules[layer].register_forward_pre_hook(pre, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def split_windows(items: Iterable[Any]) -> tuple[list[Any], list[AttentionWindow]]:
    """(tensor interventions, attention windows) of what `backend.intervene` was given."""
    items = list(items)
    return [i for i in items if not isinstance(i, AttentionWindow)], [i for i in items if isinstance(i, AttentionWindow)]


def refuse_padding(attention_mask: torch.Tensor, windows: Sequence[AttentionWindow]) -> None:
    """Windows count positions from the row's start: padded rows would shift them, so they are refused."""
    if windows and not bool(attention_mask.bool().all()):
        raise HeadscopeError("attention windows need unpadded rows: run one prompt (or equal-length prompts) per batch")
