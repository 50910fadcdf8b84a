"""Executing a plan: run the tasks not cached yet (here or on Ray), merge shard states, assemble the atlas.

Results are always assembled the same way (states merged in shard order, rows as the task returned them), so a
resumed, sharded or distributed scan gives the same numbers as one uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from headscope._version import __version__
from headscope.analyzers import (
    Analyzer,
    DrivingAnalyzer,
    HeadValue,
    ScanContext,
    StreamingAnalyzer,
    suite_batches,
)
from headscope.analyzers.metrics import check_declared, doc_for
from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.engine import Backend, Recorder
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.scanning.cache import PartCache
from headscope.scanning.exemplars import record_exemplars
from headscope.scanning.plan import Group, Mode, Task, TaskOutput, plan_scan
from headscope.scanning.settings import RunSettings


@dataclass
class ScanResult:
    """The atlas and the analyzers' side outputs (by analyzer name), which do not fit atlas rows."""

    atlas: Atlas
    side_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_task(backend: Backend, ctx: ScanContext, members: Sequence[Analyzer], probes: TokenSuite, mode: Mode,
             bar: tqdm | None = None) -> TaskOutput:
    """Run one task from fresh analyzer state: the same code in this process and on a Ray worker."""
    torch.manual_seed(0)  # a task's randomness does not depend on where, or after what, it runs
    if isinstance(members[0], DrivingAnalyzer):
        (analyzer,) = members
        analyzer.run(backend, probes, ctx)
        return _rows_output(members)
    streaming = [a for a in members if isinstance(a, StreamingAnalyzer)]
    for analyzer in streaming:
        analyzer.start(ctx, probes)
    Recorder(backend, progress=False).record(suite_batches(probes, ctx), streaming, bar=bar)
    if mode == "states":
        return TaskOutput(states={a.name: a.state() for a in streaming})
    return _rows_output(members)


def _rows_output(members: Sequence[Analyzer]) -> TaskOutput:
    side = {a.name: payload for a in members if (payload := a.side_output()) is not None}
    return TaskOutput(rows={a.name: a.results() for a in members}, side=side)


class Executor(Protocol):
    """Runs tasks, in this process or on Ray workers, yielding each task's output as it finishes."""

    def run(self, tasks: list[Task], progress: bool) -> Iterator[tuple[Task, TaskOutput]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs tasks one after another on the backend already loaded here, on the scan's own analyzers."""

    def __init__(self, backend: Backend, ctx: ScanContext) -> None:
        self.backend, self.ctx = backend, ctx

    def run(self, tasks: list[Task], progress: bool) -> Iterator[tuple[Task, TaskOutput]]:
        bar, group = None, None
        try:
            for task in tasks:
                if task.group is not group:
                    if bar is not None:
                        bar.close()
                    group, bar = task.group, self._bar(task.group, tasks, progress)
                yield task, run_task(self.backend, self.ctx, group.members, task.probes(), task.mode, bar)
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, group: Group, tasks: list[Task], progress: bool) -> tqdm | None:
        if group.driving:
            return None  # driving analyzers show their own progress
        total = sum(math.ceil((t.stop - t.start) / self.ctx.batch_size) for t in tasks if t.group is group)
        return tqdm(total=total, desc=group.label.replace("+", ","), unit="batch", disable=not progress)

    def close(self) -> None:
        pass


def execute_scan(backend: Backend, analyzers: Sequence[Analyzer], settings: RunSettings, *, progress: bool = True,
            cache: PartCache | None = None, executor: Executor | None = None, exemplars: bool = True,
            prompts: tuple[str, ...] | None = None) -> ScanResult:
    """Plan, run what the cache lacks, merge, and return the atlas with the side outputs (and, with `exemplars`,
    every head's pattern on two short texts: `headscope.atlas.exemplars`)."""
    torch.manual_seed(0)
    ctx = settings.context(backend, progress=progress)
    ctx.prompts = prompts  # the user's texts: analyzers that accept them run on these instead of their probes
    groups = plan_scan(analyzers, ctx, settings.shard_size)
    if not groups:
        raise HeadscopeError("no analyzer produced rows: pass at least one analyzer")
    if cache:
        cache.claim([t for g in groups for t in g.tasks])
    done: dict[int, TaskOutput] = {}
    pending = []
    for task in (t for g in groups for t in g.tasks):
        cached = cache.load(task) if cache else None
        if cached is None:
            pending.append(task)
        else:
            done[id(task)] = cached
    for task, output in (executor or LocalExecutor(backend, ctx)).run(pending, progress):
        if cache:
            cache.save(task, output)
        done[id(task)] = output

    provenance = _provenance(backend)
    frames, side, docs = [], {}, {}
    for group in groups:
        outputs = [done[id(task)] for task in group.tasks]
        for analyzer, values, payload in _merge(group, outputs, ctx):
            check_declared(analyzer.name, analyzer.metrics, {v.metric for v in values})
            docs.update(_metric_docs(analyzer, {v.metric for v in values}))
            frames.append(rows_frame(values, provenance=provenance, analyzer=analyzer.name, probe_suite=group.suite.name,
                                     probe_hash=group.suite.content_hash, params=analyzer.params_json()))
            if payload is not None:
                side[analyzer.name] = payload
    exemplars = record_exemplars(backend) if exemplars else None
    return ScanResult(Atlas(pd.concat(frames, ignore_index=True), metric_docs=docs, exemplars=exemplars), side)


def _metric_docs(analyzer: Analyzer, written: set[str]) -> dict[str, dict[str, str]]:
    """The declared meaning and direction of each metric written, keyed by the concrete name (for the atlas)."""
    out = {}
    for metric in sorted(written):
        doc = doc_for(analyzer.metrics, analyzer.metric_docs, metric)
        if doc is not None:
            out[metric] = {"analyzer": analyzer.name, "meaning": doc.meaning, "direction": doc.direction}
    return out


def _merge(group: Group, outputs: list[TaskOutput], ctx: ScanContext
           ) -> Iterator[tuple[Analyzer, list[HeadValue], dict[str, Any] | None]]:
    """Each member's rows and side output: shard states merged in shard order, or the rows a task returned."""
    for analyzer in group.members:
        if group.mode == "states":
            assert isinstance(analyzer, StreamingAnalyzer)
            analyzer.start(ctx, group.suite)
            analyzer.merge_states([output.states[analyzer.name] for output in outputs])  # type: ignore[index]
            yield analyzer, analyzer.results(), analyzer.side_output()
        else:
            (output,) = outputs
            yield analyzer, output.rows[analyzer.name], output.side.get(analyzer.name)  # type: ignore[index]


def _provenance(backend: Backend) -> Provenance:
    return Provenance(
        model=backend.model_id, revision=backend.revision, dtype=str(backend.dtype).removeprefix("torch."),
        backend=backend.name, n_layers=backend.spec.n_layers, n_heads=backend.spec.n_heads,
        n_kv_heads=backend.spec.n_kv_heads, headscope_version=__version__,
    )


def scan_backend(backend: Backend, analyzers: Sequence[Analyzer], *, batch_size: int = 8, padding_side: str = "right",
                 progress: bool = True, shard_size: int | None = None) -> Atlas:
    """Run analyzers on an already-loaded backend (what notebooks and tests use); `scan_result` keeps side outputs."""
    return scan_result(backend, analyzers, batch_size=batch_size, padding_side=padding_side, progress=progress,
                       shard_size=shard_size).atlas


def scan_result(backend: Backend, analyzers: Sequence[Analyzer], *, batch_size: int = 8, padding_side: str = "right",
                progress: bool = True, shard_size: int | None = None) -> ScanResult:
    """`scan_backend` returning the atlas together with the side outputs."""
    batching: dict[str, Any] = {"batch_size": batch_size, "padding_side": padding_side}
    if shard_size is not None:
        batching["shard_size"] = shard_size
    return execute_scan(backend, analyzers, RunSettings.of_backend(backend, **batching), progress=progress)
