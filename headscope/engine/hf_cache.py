"""The one place that knows how Hugging Face's KV cache is spelled in the transformers versions we allow.

Why this exists: transformers 5.25 renamed `past_key_values` to `cache` throughout its modelling code. Models
take `cache=` (the old keyword still works, with a deprecation warning, until 5.40), outputs carry `.cache`, and
every decoder layer now hands `cache=` to its attention module. TransformerLens 4.3's re-implemented attention
bridges (Llama, Qwen, Gemma, GPT-2, ... in `TransformerBridge`) still look for `past_key_values` or
`layer_past` in those keyword arguments, find nothing, and never write the new keys and values into the cache:
each cached step then attends to itself alone and decoding returns fluent-looking garbage, with no error.

Both backends build their own `DynamicCache`, hand it over under the model's own keyword (`cache_kwargs`),
and check after every cached forward that it grew by exactly the tokens fed (`expect_cache_length`): a future
change of the cache layout stops with one clear error instead of decoding garbage. `alias_cache_for_bridge`
is the shim that lets the bridge's attention modules see the cache under the name they read.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from headscope.errors import HeadscopeError

# Keyword names of the KV cache in a model's forward, newest first (5.25+ `cache`, before it `past_key_values`).
_CACHE_KEYWORDS = ("cache", "past_key_values")
# Names TransformerLens' attention bridges read the cache under (`_update_kv_cache`).
_BRIDGE_READS = ("past_key_values", "layer_past")


def new_cache(config: Any) -> Any:
    """An empty dynamic KV cache shaped by `config` (sliding-window layers keep only their window)."""
    from transformers import DynamicCache

    return DynamicCache(config=config)


def cache_keyword(hf_model: torch.nn.Module) -> str:
    """The keyword under which `hf_model.forward` takes its KV cache in the installed transformers."""
    parameters = inspect.signature(hf_model.forward).parameters
    for name in _CACHE_KEYWORDS:
        if name in parameters:
            return name
    raise HeadscopeError(
        f"{type(hf_model).__name__}.forward takes its KV cache under none of {', '.join(_CACHE_KEYWORDS)} "
        "with this transformers version: install the tested versions (pip install -r requirements.lock)"
    )


def cache_kwargs(hf_model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Keyword arguments that make one forward of `hf_model` read and extend `cache`."""
    return {cache_keyword(hf_model): cache, "use_cache": True}


def last_logits_only(hf_model: torch.nn.Module) -> dict[str, Any]:
    """Keyword arguments that make `hf_model` unembed only the last position (a prefill discards its logits:
    [pos, vocab] of them cost as much as a few decoder layers), or none where its forward has no such option."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(hf_model.forward).parameters else {}


def hold_skipped_layers(cache: Any, layers: range, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Give `layers` (skipped by a resumed pass, so never computed) placeholder entries of `shape` [batch,
    kv_head, pos, d_head]: the model reads the cache's length from its first layer, and a continuation that skips
    the same layers never reads them. Zero-stride tensors: no memory."""
    placeholder = torch.zeros((), dtype=dtype).expand(*shape)
    for layer in layers:
        cache.update(placeholder, placeholder, layer)


def drop_last(cache: Any, tokens: int) -> None:
    """Drop the last `tokens` tokens of every layer (a shared prefix's cache, back to the prefix for the next
    continuation); every layer must hold them (`hold_skipped_layers` pads the skipped ones). A negative count means
    "remove" in every transformers version we allow (5.25 refuses a positive one)."""
    if tokens:
        cache.crop(-tokens)


def cache_length(cache: Any) -> int:
    """Tokens held by `cache` (all layers agree; a sliding-window layer still counts every token seen)."""
    return int(cache.get_seq_length())


def expect_cache_length(cache: Any, expected: int) -> None:
    """Refuse to go on when a cached forward did not store exactly the tokens it was fed."""
    got = cache_length(cache)
    if got != expected:
        import transformers

        raise HeadscopeError(
            f"the KV cache holds {got} tokens where {expected} were fed (transformers "
            f"{transformers.__version__} changed how the cache is passed): decoding would be wrong, so it stops; "
            "install the tested versions with pip install -r requirements.lock"
        )


def alias_cache_for_bridge(bridge: torch.nn.Module) -> list[Any]:
    """Let TransformerLens' re-implemented attention bridges find a cache passed as `cache=`.

    A forward pre-hook on each such module copies `cache` to `past_key_values` when neither name the bridge
    reads is set. Bridges that delegate to the Hugging Face module are left alone (it reads `cache` itself).
    Returns the hook handles; on transformers that still pass `past_key_values` the hook never fires a change.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    def add_alias(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if kwargs.get("cache") is None or any(kwargs.get(name) is not None for name in _BRIDGE_READS):
            return None
        return args, {**kwargs, "past_key_values": kwargs["cache"]}

    handles = []
    for module in bridge.modules():
        if isinstance(module, AttentionBridge) and type(module).forward is not AttentionBridge.forward:
            handles.append(module.register_forward_pre_hook(add_alias, with_kwargs=True))
    return handles
