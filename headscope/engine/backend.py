"""The backend interface: one forward pass, per-layer callbacks, nothing cached across layers."""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from headscope.engine.activations import LayerActivations, Needs
from headscope.engine.batch import ProbeBatch
from headscope.engine.spec import ModelSpec

LayerCallback = Callable[[LayerActivations], None]


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


def select_rows(pattern: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
    """Gather attention rows: pattern [batch, head, query, key], positions [batch, rows] -> [batch, head, rows, key]."""
    b, h, _, k = pattern.shape
    index = query_positions[:, None, :, None].expand(b, h, query_positions.shape[1], k)
    return pattern.gather(2, index)
