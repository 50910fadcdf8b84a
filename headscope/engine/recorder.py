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
        bar: tqdm | None = None,
    ) -> None:
        """Run every batch once; `bar`, when given, is advanced per batch instead of a bar of our own."""
        needs = Needs()
        for consumer in consumers:
            needs = needs | consumer.needs

        own_bar = bar is None
        bar = bar if bar is not None else tqdm(desc=description, total=total, disable=not self.progress, unit="batch")
        for batch in batches:

            def dispatch(acts: LayerActivations, batch: ProbeBatch = batch) -> None:
                for consumer in consumers:
                    consumer.observe(batch, acts)

            logits = self.backend.run(batch, needs, dispatch)
            if logits is not None:
                for consumer in consumers:
                    if consumer.needs.logits:
                        consumer.observe_logits(batch, logits)
            bar.update(1)
        if own_bar:
            bar.close()
