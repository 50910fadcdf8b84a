"""The recorder: runs probe batches once and fans each layer's tensors out to every consumer.

Consumers (analyzers) reduce what they are handed inside the callback; the recorder keeps nothing.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from headscope.engine.activations import LayerActivations, Needs
from headscope.engine.backend import Backend
from headscope.engine.batch import ProbeBatch


class LayerConsumer(Protocol):
    """Anything that reduces per-layer activations of a batch (analyzers implement this)."""

    needs: Needs

    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None: ...

    def observe_logits(self, batch: ProbeBatch, logits: torch.Tensor) -> None: ...


class Recorder:
    """Drives a backend over batches for a group of consumers sharing one probe suite."""

    def __init__(self, backend: Backend, *, progress: bool = True) -> None:
        self.backend = backend
        self.progress = progress

    def record(
        self,
        batches: Iterable[ProbeBatch],
        consumers: Sequence[LayerConsumer],
        *,
        description: str = "scanning",
        total: int | None = None,
    ) -> None:
        needs = Needs()
        for consumer in consumers:
            needs = needs | consumer.needs

        for batch in tqdm(batches, desc=description, total=total, disable=not self.progress, unit="batch"):

            def dispatch(acts: LayerActivations, batch: ProbeBatch = batch) -> None:
                for consumer in consumers:
                    consumer.observe(batch, acts)

            logits = self.backend.run(batch, needs, dispatch)
            if logits is not None:
                for consumer in consumers:
                    if consumer.needs.logits:
                        consumer.observe_logits(batch, logits)
