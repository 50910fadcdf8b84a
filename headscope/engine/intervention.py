"""Interventions: edit a named per-head tensor at chosen layers while the model runs (ablations, masking, scaling).

An intervention never touches weights: it is a forward hook active only inside `backend.intervene(...)`,
so leaving the context restores the model exactly (bit-identical logits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from headscope.engine.activations import HEAD_KINDS

# (layer, tensor) -> tensor of the same shape, laid out as the kind's shape in TENSOR_KINDS
HeadEdit = Callable[[int, torch.Tensor], torch.Tensor]

TENSORS = HEAD_KINDS  # the per-head tensor kinds an intervention may edit
PHASES = ("forward", "prefill", "decode")


@dataclass(frozen=True)
class Intervention:
    """Apply `edit` to tensor `tensor` of every layer in `layers`, during the given phases.

    Phases: "forward" (a plain `run`), "prefill" (the prompt part of `decode`), "decode" (its one-token steps).
    """

    tensor: str
    layers: tuple[int, ...]
    edit: HeadEdit
    phases: frozenset[str] = field(default_factory=lambda: frozenset(PHASES))

    def __post_init__(self) -> None:
        if self.tensor not in TENSORS:
            raise ValueError(f"intervention tensor '{self.tensor}' is unknown: use one of {', '.join(TENSORS)}")
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"intervention phases {sorted(unknown)} are unknown: use {', '.join(PHASES)}")
