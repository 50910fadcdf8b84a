"""Backends around a model the user already holds: a Hugging Face `PreTrainedModel` (with its tokenizer), a
TransformerLens `TransformerBridge` or an nnsight `LanguageModel`. Nothing is reloaded or copied: the object runs as
it is, on its own device and dtype, so a notebook can scan the model it is working on.

Patterns need eager attention: a Hugging Face model loaded with sdpa/flash attention is switched to eager for the
scan and switched back afterwards (`adopt_model` is a context manager for that reason).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from headscope.engine.backend import Backend
from headscope.errors import HeadscopeError


def is_model_object(model: Any) -> bool:
    """True for a loaded model (anything but a name or a path)."""
    return not isinstance(model, (str, Path))


def describe(model: Any) -> str:
    return type(model).__name__


@contextlib.contextmanager
def adopt_model(model: Any, *, tokenizer: Any = None) -> Iterator[Backend]:
    """A backend running `model` in place; a Hugging Face model's attention implementation is restored on exit."""
    from transformers import PreTrainedModel

    kind = _kind(model)
    if kind == "bridge":
        if tokenizer is not None:
            raise HeadscopeError("a TransformerBridge brings its own tokenizer: leave tokenizer= out")
        yield _bridge_backend(model)
        return
    if kind == "nnsight":
        if tokenizer is not None:
            raise HeadscopeError("an nnsight LanguageModel brings its own tokenizer: leave tokenizer= out")
        if not getattr(model, "dispatched", True):
            model.dispatch()  # a lazily built LanguageModel holds meta weights until dispatched
        hf_model = model._module
        wrapper = model
    else:
        assert isinstance(model, PreTrainedModel)
        if tokenizer is None:
            raise HeadscopeError(f"scanning a loaded {describe(model)} needs its tokenizer: pass tokenizer=<its tokenizer>")
        from nnsight import TransformersModel

        hf_model = model
        wrapper = TransformersModel(model, tokenizer=tokenizer, task="text-generation")
    before = hf_model.config._attn_implementation
    if before != "eager":
        hf_model.set_attn_implementation("eager")
    try:
        yield _nnsight_backend(wrapper, hf_model)
    finally:
        if before != "eager":
            hf_model.set_attn_implementation(before)


def _kind(model: Any) -> str:
    """bridge, nnsight or hf; anything else is refused in one line."""
    from transformers import PreTrainedModel

    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TransformerLens is a dependency
        TransformerBridge = ()  # type: ignore[assignment,misc]
    if isinstance(model, TransformerBridge):
        return "bridge"
    try:
        from nnsight.modeling.transformers import TransformersModel
    except ImportError:  # pragma: no cover - nnsight is a dependency
        TransformersModel = ()  # type: ignore[assignment,misc]
    if isinstance(model, TransformersModel):
        return "nnsight"
    if isinstance(model, PreTrainedModel):
        if not hasattr(model, "lm_head") and not hasattr(model, "get_output_embeddings"):
            raise HeadscopeError(f"{describe(model)} has no language-model head: load it with AutoModelForCausalLM")
        return "hf"
    raise HeadscopeError(f"cannot scan a {describe(model)}: pass a model name or folder, a transformers "
                         "PreTrainedModel (+ tokenizer=), a TransformerBridge or an nnsight LanguageModel")


def model_id_of(name_or_path: str, fallback: str) -> str:
    """The atlas's `model` for a loaded model: its folder name (as a scan by path records), hub id, or class."""
    if not name_or_path:
        return fallback
    path = Path(name_or_path).expanduser()
    return path.name if path.is_dir() else name_or_path


def _first_parameter(module: torch.nn.Module) -> torch.Tensor:
    try:
        return next(module.parameters())
    except StopIteration:
        raise HeadscopeError("the model has no parameters: pass a loaded model") from None


def _bridge_backend(bridge: Any) -> Backend:
    from headscope.engine.transformer_lens_backend import TransformerLensBackend

    hf = bridge.original_model
    name = str(getattr(bridge.cfg, "model_name", "") or getattr(hf.config, "name_or_path", ""))
    weight = _first_parameter(hf)
    return TransformerLensBackend(Path(name or "."), model_id=model_id_of(name, describe(hf)),
                                  revision=f"in-memory:{describe(hf)}", device=str(weight.device), dtype=weight.dtype,
                                  loaded=bridge)


def _nnsight_backend(wrapper: Any, hf_model: Any) -> Backend:
    from headscope.engine.nnsight_backend import NNsightBackend

    name = str(getattr(hf_model.config, "name_or_path", "") or "")
    weight = _first_parameter(hf_model)
    if weight.device.type == "meta":
        raise HeadscopeError("the model's weights are on the meta device: load or dispatch it before scanning")
    return NNsightBackend(name or ".", model_id=model_id_of(name, describe(hf_model)),
                          revision=f"in-memory:{describe(hf_model)}", device=str(weight.device), dtype=weight.dtype,
                          loaded=wrapper)
