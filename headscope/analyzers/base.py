"""What every analyzer is: a probe suite it builds, the tensors it needs, a reduction, and atlas rows."""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch

from headscope.engine import LayerActivations, ModelSpec, Needs, ProbeBatch, pad_sequences
from headscope.engine.batch import PaddingSide
from headscope.probes import TokenSuite


@dataclass(frozen=True)
class HeadValue:
    """One number about one head: becomes one atlas row (layer = head = -1: a model-level number)."""

    layer: int
    head: int
    metric: str
    value: float
    n_samples: int


@dataclass
class ScanContext:
    """What an analyzer may know about the model it scans (never the backend itself)."""

    spec: ModelSpec
    tokenizer: Any
    batch_size: int = 8
    padding_side: PaddingSide = "right"
    progress: bool = False  # analyzers that drive the model themselves may show a progress bar

    @property
    def pad_token_id(self) -> int:
        for candidate in (self.spec.pad_token_id, getattr(self.tokenizer, "eos_token_id", None), 0):
            if isinstance(candidate, int):
                return candidate
        return 0

    @property
    def special_ids(self) -> set[int]:
        return set(getattr(self.tokenizer, "all_special_ids", []) or [])


class Analyzer(ABC):
    """Base of every analyzer. Subclasses set `name`, `Params` and `metrics` and implement the reduction."""

    name: ClassVar[str]
    Params: ClassVar[type]
    metrics: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    # An analyzer that must drive the model itself (decoding, ablations) defines
    # `drive(self, backend, ctx) -> None`; scan then calls it (after `start`) instead of the shared recorder pass.
    # None: the analyzer is fed by the recorder (observe / observe_logits).
    drive: ClassVar[Callable[..., None] | None] = None

    def __init__(self, params: Any | None = None, **overrides: Any) -> None:
        base = params if params is not None else self.Params()
        self.params = dataclasses.replace(base, **overrides) if overrides else base

    @property
    @abstractmethod
    def needs(self) -> Needs: ...

    @abstractmethod
    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        """The probes this analyzer runs on; analyzers with equal suites share one forward pass."""

    @abstractmethod
    def start(self, spec: ModelSpec) -> None:
        """Reset accumulators for a model of this shape."""

    @abstractmethod
    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        """Reduce one layer of one batch; called inside the forward pass."""

    def observe_logits(self, batch: ProbeBatch, logits: torch.Tensor) -> None:
        """Reduce the batch's logits (only called when `needs.logits`)."""

    @abstractmethod
    def results(self) -> list[HeadValue]:
        """The rows this analyzer contributes to the atlas."""

    def params_json(self) -> str:
        return json.dumps(dataclasses.asdict(self.params), sort_keys=True, separators=(",", ":"))


def suite_batches(suite: TokenSuite, ctx: ScanContext) -> Iterator[ProbeBatch]:
    """Padded batches of a suite, in suite order."""
    for start in range(0, len(suite.sequences), ctx.batch_size):
        stop = start + ctx.batch_size
        yield pad_sequences(
            suite.sequences[start:stop], ctx.pad_token_id, side=ctx.padding_side, samples=suite.samples[start:stop]
        )


class RunningMoments:
    """Per-head running sum and sum of squares over samples: mean and std without keeping the samples."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.total_sq = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.count = torch.zeros(n_layers, dtype=torch.long)

    def add(self, layer: int, per_sample: torch.Tensor) -> None:
        """per_sample: [sample, head]."""
        values = per_sample.detach().to(torch.float64).cpu()
        self.total[layer] += values.sum(0)
        self.total_sq[layer] += (values**2).sum(0)
        self.count[layer] += values.shape[0]

    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)[:, None]

    def std(self) -> torch.Tensor:
        n = self.count.clamp(min=1)[:, None].to(torch.float64)
        variance = (self.total_sq - self.total**2 / n) / (n - 1).clamp(min=1)
        return variance.clamp(min=0).sqrt()
