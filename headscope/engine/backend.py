"""The backend interface: one forward pass, per-layer callbacks, nothing cached across layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Protocol, Sequence

import torch

from headscope.engine.activations import LayerActivations, Needs
from headscope.engine.batch import ProbeBatch
from headscope.engine.intervention import Intervention
from headscope.engine.spec import ModelSpec
from headscope.engine.weights import ModelWeights
from headscope.errors import HeadscopeError

LayerCallback = Callable[[LayerActivations], None]


@dataclass
class DecodeResult:
    """What greedy decoding produced: the prompt, the new tokens, and each step's next-token logits [step, vocab]."""

    prompt_ids: list[int]
    generated_ids: list[int]
    step_logits: torch.Tensor


@dataclass
class LastTokenOutput:
    """What a forward pass ends in, at each row's last real token (all a next-token analyzer needs).

    logits  [batch, vocab]    next-token logits (fp32)
    hidden  [batch, d_model]  the final representation: the unembedding's input, after the final norm
                              (Hugging Face's `hidden_states[-1]`)
    Only these rows go through the unembedding, so the [batch, pos, vocab] logits are never made.
    """

    logits: torch.Tensor
    hidden: torch.Tensor


def check_resume_inputs(batch: ProbeBatch, start_layer: int, resid: torch.Tensor | None, n_layers: int) -> None:
    """What `last_token(start_layer=...)` requires, checked the same way in every backend."""
    if start_layer == 0:
        return
    if not 0 < start_layer < n_layers:
        raise HeadscopeError(f"start_layer {start_layer} is outside 1..{n_layers - 1}")
    if resid is None or tuple(resid.shape[:2]) != tuple(batch.input_ids.shape):
        raise HeadscopeError("start_layer needs resid [batch, pos, d_model] matching the batch: pass the intact resid_pre")
    if not bool(batch.attention_mask.bool().all()):
        raise HeadscopeError("start_layer needs an unpadded batch: run equal-length rows (e.g. copies of one prompt)")


def last_real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch] index of each row's last real token, for left or right padding."""
    return attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)


class Backend(Protocol):
    """What the engine needs from a model library (TransformerLens bridge, nnsight, ...)."""

    name: str
    spec: ModelSpec
    tokenizer: object
    model_id: str
    revision: str
    dtype: torch.dtype
    device: torch.device

    def run(self, batch: ProbeBatch, needs: Needs, on_layer: LayerCallback) -> torch.Tensor | None:
        """Run `batch` once; call `on_layer` after each layer with the requested tensors.

        Returns logits [batch, pos, vocab] when `needs.logits`, else None.
        """
        ...

    def last_token(self, batch: ProbeBatch, *, start_layer: int = 0, resid: torch.Tensor | None = None) -> LastTokenOutput:
        """One forward pass that returns only the last real token's logits and final hidden state.

        Active interventions (phase "forward") apply; no per-layer tensors are recorded. With `start_layer` > 0
        the layers before it are skipped and `resid` [batch, pos, d_model] (the residual stream entering
        `start_layer`, e.g. from an intact run) is fed in: ablations that start at layer L re-use the intact
        prefix of the network instead of recomputing it. Needs an unpadded batch.
        """
        ...

    def last_token_rows(self, prompt_ids: Sequence[int], n_rows: int) -> LastTokenOutput:
        """`last_token` of `n_rows` copies of one prompt, the prefix computed once (KV cache repeated per row):
        "forward" interventions apply to the last token only (one position), "prefill" ones to the prefix."""
        ...

    def decode(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        needs: Needs,
        on_layer: LayerCallback,
        stop_token_ids: Sequence[int] = (),
        forced_tokens: Sequence[int] | None = None,
        prefill_chunk: int = 512,
    ) -> DecodeResult:
        """Greedy KV-cached decoding of one prompt; `on_layer` sees each step's tensors (acts.step set).

        The prompt is prefilled `prefill_chunk` tokens at a time (memory O(chunk x T), not O(T^2)).
        """
        ...

    def intervene(self, *interventions: Intervention) -> ContextManager[None]:
        """Context in which every run/decode applies `interventions`; the model is exactly restored on exit."""
        ...

    def weights(self) -> ModelWeights:
        """Embedding, unembedding and per-layer OV weights, for parameter-only analyzers (no forward pass)."""
        ...


def select_rows(pattern: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
    """Gather attention rows: pattern [batch, head, query, key], positions [batch, rows] -> [batch, head, rows, key]."""
    b, h, _, k = pattern.shape
    index = query_positions[:, None, :, None].expand(b, h, query_positions.shape[1], k)
    return pattern.gather(2, index)


def pad_to_keys(pattern: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Left-pad decode-step attention [batch, head, query, window] with zeros to [..., n_keys].

    A sliding-window layer's KV cache holds only the last `window` keys, so its attention row covers
    those; the keys before them get exactly zero attention. Padding restores the contract that key
    index i is prompt position i (what retrieval-style analyzers index into).
    """
    missing = n_keys - pattern.shape[-1]
    return torch.nn.functional.pad(pattern, (missing, 0)) if missing > 0 else pattern
