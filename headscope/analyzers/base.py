"""What every analyzer is: a probe suite it builds, a reduction (streaming) or a run (driving), and atlas rows."""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator, Mapping

import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.engine import Backend, LayerActivations, ModelSpec, Needs, ProbeBatch, pad_sequences
from headscope.engine.batch import PaddingSide
from headscope.errors import HeadscopeError
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
    prompts: tuple[str, ...] | None = None  # the user's own texts (only for analyzers with accepts_prompts)

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
    """What every analyzer shares: a name, a Params dataclass, declared metrics, a suite, rows and extras.

    An analyzer is either streaming (`StreamingAnalyzer`: the scanner runs the suite once and hands it each
    layer's tensors) or driving (`DrivingAnalyzer`: it runs the model itself, e.g. decoding or ablations).
    The scanner owns the lifecycle; an analyzer never calls its own `build_suite`.

    `metrics` declares every metric name the analyzer writes, as patterns whose `{placeholders}` stand for
    a run-dependent part (`qk_accuracy_{shots}shot`); `tests/analyzers/test_metric_contract.py` holds every
    analyzer and every viewer to them.
    """

    name: ClassVar[str]
    Params: ClassVar[type]
    metrics: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    # one-line meaning and direction per declared pattern (keys are patterns of `metrics`); shown by the viewers
    metric_docs: ClassVar[Mapping[str, MetricDoc]] = {}
    # True where the definition holds on any text, so a user's prompts may replace the built-in suite
    # (`headscope.scan(..., prompts=...)`; the scanner tokenises them, see headscope/probes/user_texts.py)
    accepts_prompts: ClassVar[bool] = False

    def __init__(self, params: Any | None = None, **overrides: Any) -> None:
        base = params if params is not None else self.Params()
        self.params = dataclasses.replace(base, **overrides) if overrides else base

    @abstractmethod
    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        """The probes this analyzer runs on, built once per scan.

        Anything the analyzer later needs from its probes (answers, relation sizes) must live in the suite's
        samples or details: the suite is what travels to Ray workers and to a resumed scan, not the analyzer.
        Streaming analyzers with equal suites share one forward pass.
        """

    @abstractmethod
    def results(self) -> list[HeadValue]:
        """The rows this analyzer contributes to the atlas."""

    def side_output(self) -> dict[str, Any] | None:
        """Optional JSON-serialisable extras that do not fit atlas rows (e.g. readable token mappings).

        They come back with the atlas (`ScanResult.side_outputs`); `scan(out=...)` writes them beside it as
        `<atlas stem>.<analyzer>.json`.
        """
        return None

    def params_json(self) -> str:
        return json.dumps(dataclasses.asdict(self.params), sort_keys=True, separators=(",", ":"))


class StreamingAnalyzer(Analyzer):
    """Reduces per-layer tensors of a shared forward pass: start, observe every batch, then results.

    With `shardable = True` the accumulators are additive: `state()` after a shard and `merge_states` of the
    shards' states in order give exactly the results of one uninterrupted pass (resume and Ray rely on it).
    A non-shardable analyzer runs its whole suite as one unit of work.
    """

    shardable: ClassVar[bool] = False

    @property
    @abstractmethod
    def needs(self) -> Needs: ...

    @abstractmethod
    def start(self, ctx: ScanContext, suite: TokenSuite) -> None:
        """Fresh accumulators for the probes of `suite` (a shard of it, or the whole suite before a merge)."""

    @abstractmethod
    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        """Reduce one layer of one batch; called inside the forward pass."""

    def observe_logits(self, batch: ProbeBatch, logits: torch.Tensor) -> None:
        """Reduce the batch's logits (only called when `needs.logits`)."""

    def state(self) -> dict[str, torch.Tensor]:
        """Accumulators after the probes observed since `start` (shardable analyzers only)."""
        raise NotImplementedError(f"{type(self).__name__} is not shardable")

    def merge_states(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Replace the accumulators by the combination of shard states (called after `start`)."""
        raise NotImplementedError(f"{type(self).__name__} is not shardable")


class DrivingAnalyzer(Analyzer):
    """Runs the model itself (decoding, ablations, weights only) in one `run`; never sharded."""

    @property
    def edits(self) -> frozenset[str]:
        """The per-head tensor kinds its interventions edit with these params (engine.intervention.TENSORS): `auto`
        keeps a scan on a backend that can edit them all (the nnsight backend edits q_raw, z, k_raw, v)."""
        return frozenset()

    @abstractmethod
    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        """Everything this analyzer measures, on the suite `build_suite` made; `results` reads it afterwards."""


def head_rows(
    tables: Mapping[str, tuple[Any, int | torch.Tensor]], *, layers: Iterable[int] | None = None
) -> list[HeadValue]:
    """One row per (layer, head, metric) from per-metric [layer, head] tables, layer-major then head.

    `tables` maps a metric to (values [layer, head], n_samples), n_samples being one count or one per layer.
    """
    if not tables:
        return []
    first = next(iter(tables.values()))[0]
    chosen = range(first.shape[0]) if layers is None else layers
    rows = []
    for layer in chosen:
        for head in range(first.shape[1]):
            for metric, (values, n) in tables.items():
                count = int(n[layer]) if hasattr(n, "__len__") else int(n)
                rows.append(HeadValue(layer, head, metric, float(values[layer, head]), count))
    return rows


def chosen_layers(param: str, layers: Iterable[Any], n_layers: int) -> list[int]:
    """A `layers` parameter as layer numbers, refused in one line when not numbers or not in the model."""
    try:
        chosen = [int(layer) for layer in layers]
    except ValueError:
        raise HeadscopeError(f"{param} {list(layers)} must be layer numbers, e.g. 0,5,12") from None
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise HeadscopeError(f"{param} {bad} out of range: this model has layers 0-{n_layers - 1}")
    return chosen


def suite_batches(suite: TokenSuite, ctx: ScanContext) -> Iterator[ProbeBatch]:
    """Padded batches of a suite, in suite order."""
    for start in range(0, len(suite.sequences), ctx.batch_size):
        stop = start + ctx.batch_size
        batch = pad_sequences(
            suite.sequences[start:stop], ctx.pad_token_id, side=ctx.padding_side, samples=suite.samples[start:stop]
        )
        batch.query_positions = _query_positions(batch)
        yield batch


def _query_positions(batch: ProbeBatch) -> torch.Tensor | None:
    """Rows named by every sample's `query_positions` (unpadded coordinates), shifted into padded ones.

    Suites whose samples carry `query_positions` (e.g. the last token of an MCQA prompt) get only those attention
    rows from the engine under `Needs(rows_only=True)`.
    """
    if not batch.samples or not all("query_positions" in s for s in batch.samples):
        return None
    rows = [list(s["query_positions"]) for s in batch.samples]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every sample of a suite must name the same number of query_positions")
    first_real = batch.valid.float().argmax(dim=1)  # 0 with right padding
    return torch.tensor(rows, dtype=torch.long) + first_real[:, None]


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

    def state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {f"{prefix}total": self.total.clone(), f"{prefix}total_sq": self.total_sq.clone(), f"{prefix}count": self.count.clone()}

    def load_states(self, states: list[dict[str, torch.Tensor]], prefix: str = "") -> None:
        """Sum shard accumulators in order (float64 sums: exact for the counts, deterministic for the rest)."""
        self.total.zero_()
        self.total_sq.zero_()
        self.count.zero_()
        for state in states:
            self.total += state[f"{prefix}total"]
            self.total_sq += state[f"{prefix}total_sq"]
            self.count += state[f"{prefix}count"]

    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)[:, None]

    def std(self) -> torch.Tensor:
        n = self.count.clamp(min=1)[:, None].to(torch.float64)
        variance = (self.total_sq - self.total**2 / n) / (n - 1).clamp(min=1)
        return variance.clamp(min=0).sqrt()
