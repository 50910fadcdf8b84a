"""Read-only access to the weights that parameter-only analyses (MAPS, OV/QK circuits) are made of.

Analyzers never see a backend's model object; they ask `backend.weights()` for a `ModelWeights`, which
exposes, in TransformerLens' unfolded ("no processing") layout:

  W_E  [vocab, d_model]                    the token embedding
  W_U  [d_model, vocab]                    the unembedding (no final norm folded in)
  W_V(layer)  [kv_head, d_model, d_head]   value weights per KV head (GQA: query head h reads kv_head(h))
  W_O(layer)  [head, d_head, d_model]      output weights per query head
  first_mlp(x) [n, d_model] -> [n, d_model] layer 0's pre-MLP norm followed by its MLP (no residual added, no
                                           post-MLP norm, as the official MAPS code's blocks[0].mlp(ln2(x)))

`weights_from_hf(model)` builds one from any Hugging Face `PreTrainedModel`, so every backend that wraps
HF modules (the TransformerLens bridge's `original_model`, nnsight's `_module`) shares it. Tensors are
views of the model's parameters where the layout allows (no copy) and are cast to fp32 on access.
Supported layouts: separate q/k/v/o projections (Llama, Mistral, Qwen2/3, Gemma, OLMo, ...), GPT-2's fused
Conv1D `c_attn`/`c_proj`, and GPT-NeoX's fused `query_key_value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from headscope.errors import HeadscopeError


@dataclass
class _LayerModules:
    attention: nn.Module
    pre_mlp_norm: nn.Module | None
    mlp: nn.Module | None


class ModelWeights:
    """Embedding, unembedding and per-layer OV weights of a loaded model, fp32, read-only."""

    def __init__(
        self,
        *,
        W_E: torch.Tensor,
        W_U: torch.Tensor,
        W_V: Callable[[int], torch.Tensor],
        W_O: Callable[[int], torch.Tensor],
        first_mlp: Callable[[torch.Tensor], torch.Tensor] | None,
        n_layers: int,
        n_heads: int,
        n_kv_heads: int,
        layout: str,
        final_norm_gain: Callable[[], torch.Tensor | None] | None = None,
    ) -> None:
        self._W_E = W_E  # [vocab, d_model]
        self._W_U = W_U  # [d_model, vocab]
        self._W_V = W_V
        self._W_O = W_O
        self._first_mlp = first_mlp
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.layout = layout
        self._final_norm_gain = final_norm_gain

    @property
    def W_E(self) -> torch.Tensor:
        """[vocab, d_model], fp32 (a view for fp32 models)."""
        return self._W_E.float()

    @property
    def W_U(self) -> torch.Tensor:
        """[d_model, vocab], fp32 (a view for fp32 models)."""
        return self._W_U.float()

    @property
    def d_vocab(self) -> int:
        return int(self._W_U.shape[1])

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def W_V(self, layer: int) -> torch.Tensor:
        """[kv_head, d_model, d_head], fp32."""
        return self._W_V(layer).float()

    def W_O(self, layer: int) -> torch.Tensor:
        """[head, d_head, d_model], fp32."""
        return self._W_O(layer).float()

    def W_VO(self, layer: int, head: int) -> torch.Tensor:
        """The head's OV matrix [d_model, d_model]; GQA: W_V of kv_head = head // group_size."""
        return self.W_V(layer)[head // self.group_size] @ self.W_O(layer)[head]

    def first_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """Layer 0's pre-MLP norm then MLP on `x` [n, d_model] (no residual), fp32 out."""
        if self._first_mlp is None:
            raise HeadscopeError(f"this model's layer-0 MLP could not be located ({self.layout}): pass apply_first_mlp=false")
        return self._first_mlp(x).float()

    def final_norm_gain(self) -> torch.Tensor | None:
        """The final norm's per-channel gain [d_model] (Gemma's 1 + w included), or None if it is not found."""
        gain = self._final_norm_gain() if self._final_norm_gain is not None else None
        return None if gain is None else gain.float()

    def W_U_folded(self) -> torch.Tensor:
        """[d_model, vocab]: W_U with the final norm's gain folded in (TransformerLens `fold_ln`), biases left out;
        plain W_U when the final norm is not found. Ranks of a row of x · W_U_folded are what the logits rank."""
        gain = self.final_norm_gain()
        return self.W_U if gain is None else gain.to(self._W_U.device)[:, None] * self.W_U


def _decoder_layers(model: nn.Module) -> tuple[Any, str]:
    """The list of decoder blocks and the layout family, found by the usual HF attribute paths."""
    for path, family in (
        ("model.layers", "separate"),
        ("model.language_model.layers", "separate"),
        ("transformer.h", "gpt2"),
        ("gpt_neox.layers", "neox"),
    ):
        node = _submodule(model, path)
        if isinstance(node, (nn.ModuleList, list)):
            return node, family
    raise HeadscopeError(
        f"cannot find the decoder layers of {type(model).__name__}: weight access supports Llama-style, GPT-2 and "
        "GPT-NeoX layouts; use a model of one of those families"
    )


def _layer_modules(block: nn.Module, family: str) -> _LayerModules:
    if family == "gpt2":
        return _LayerModules(block.attn, getattr(block, "ln_2", None), getattr(block, "mlp", None))
    if family == "neox":
        return _LayerModules(block.attention, getattr(block, "post_attention_layernorm", None), getattr(block, "mlp", None))
    attention = getattr(block, "self_attn", None) or getattr(block, "attention", None)
    if attention is None:
        raise HeadscopeError(f"cannot find the attention module of {type(block).__name__}: unsupported layout")
    return _LayerModules(attention, _pre_mlp_norm(block), getattr(block, "mlp", None))


def _pre_mlp_norm(block: nn.Module) -> nn.Module | None:
    """The norm the MLP reads the residual stream through, for a block with separate attention modules.

    Llama-style: `post_attention_layernorm` (named for where it sits, it normalises the MLP input). Gemma-2/3 and
    AFMoE name the MLP's input norm `pre_feedforward_layernorm` / `pre_mlp_layernorm`, and their
    `post_attention_layernorm` normalises the attention output. OLMo-2/3, FlexOlmo and EXAONE-4 are post-norm
    blocks (no `input_layernorm`, a `post_feedforward_layernorm`): `post_attention_layernorm` normalises the
    attention output and the MLP reads the un-normalised residual, so the pre-MLP norm is the identity.
    """
    for name in ("pre_feedforward_layernorm", "pre_mlp_layernorm"):
        if getattr(block, name, None) is not None:
            return getattr(block, name)
    if getattr(block, "input_layernorm", None) is None and getattr(block, "post_feedforward_layernorm", None) is not None:
        return nn.Identity()
    return getattr(block, "post_attention_layernorm", None)


def weights_from_hf(model: nn.Module, *, n_heads: int, n_kv_heads: int, d_head: int) -> ModelWeights:
    """A `ModelWeights` over the parameters of a Hugging Face causal LM (no copy for fp32 models)."""
    layers, family = _decoder_layers(model)
    embeddings = model.get_input_embeddings()
    unembedding = model.get_output_embeddings()
    if embeddings is None or unembedding is None:
        raise HeadscopeError(f"{type(model).__name__} has no input/output embedding: weight access needs a causal LM")
    W_E = embeddings.weight.detach()
    W_U = unembedding.weight.detach().T  # lm_head is [vocab, d_model]; tied models share W_E
    d_model = int(W_E.shape[1])
    modules = [_layer_modules(block, family) for block in layers]

    def W_V(layer: int) -> torch.Tensor:
        attn = modules[layer].attention
        if family == "gpt2":
            # Conv1D computes x @ weight with weight [d_model, 3 * d_model]; the value block is the last third.
            value = attn.c_attn.weight.detach()[:, 2 * n_heads * d_head :]
            return value.reshape(d_model, n_heads, d_head).permute(1, 0, 2)
        if family == "neox":
            # query_key_value.weight [3 * d_model, d_model], rows laid out as [head, (q, k, v), d_head].
            fused = attn.query_key_value.weight.detach().reshape(n_heads, 3, d_head, d_model)
            return fused[:, 2].transpose(1, 2)
        if not hasattr(attn, "v_proj"):
            raise HeadscopeError(f"{type(attn).__name__} has no v_proj: unsupported attention layout for weight access")
        # v_proj.weight [n_kv_heads * d_head, d_model] (x @ weight.T)
        return attn.v_proj.weight.detach().reshape(n_kv_heads, d_head, d_model).transpose(1, 2)

    def W_O(layer: int) -> torch.Tensor:
        attn = modules[layer].attention
        if family == "gpt2":
            return attn.c_proj.weight.detach().reshape(n_heads, d_head, d_model)  # Conv1D weight [in, out]
        out = attn.dense if family == "neox" else getattr(attn, "o_proj", None)
        if out is None:
            raise HeadscopeError(f"{type(attn).__name__} has no o_proj: unsupported attention layout for weight access")
        # Linear weight [d_model, n_heads * d_head]
        return out.weight.detach().T.reshape(n_heads, d_head, d_model)

    first = modules[0] if modules else None
    first_mlp = None
    if first is not None and first.pre_mlp_norm is not None and first.mlp is not None:
        norm, mlp = first.pre_mlp_norm, first.mlp
        param = next(mlp.parameters())

        def first_mlp(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return mlp(norm(x.to(device=param.device, dtype=param.dtype)))

    final_norm = _final_norm(model)

    def final_norm_gain() -> torch.Tensor | None:
        return None if final_norm is None else norm_gain(final_norm, d_model)

    return ModelWeights(
        final_norm_gain=final_norm_gain,
        W_E=W_E,
        W_U=W_U,
        W_V=W_V,
        W_O=W_O,
        first_mlp=first_mlp,
        n_layers=len(layers),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        layout=family,
    )


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    """`model.<path>` (dotted), or None when the model has no such attribute."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied before the unembedding, by the usual HF attribute paths (None when absent)."""
    for path in ("model.norm", "model.language_model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        node = _submodule(model, path)
        if isinstance(node, nn.Module):
            return node
    return None


def norm_gain(norm: nn.Module, d_model: int) -> torch.Tensor:
    """A norm's per-channel gain: LayerNorm's weight; for RMS norms read off the module itself (Gemma adds 1 to
    its weight) as norm(c * e_i)_i / sqrt(d_model), with c large enough that eps does not matter."""
    if isinstance(norm, nn.LayerNorm):
        return norm.weight.detach().float() if norm.weight is not None else torch.ones(d_model)
    param = next(norm.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    with torch.inference_mode():
        probe = torch.eye(d_model, device=device, dtype=torch.float32) * 1e3
        out = norm(probe.to(dtype)).float()
    return out.diagonal().cpu() / d_model**0.5
