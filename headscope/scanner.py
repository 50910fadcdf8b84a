"""A scan: load a model once, run every requested analyzer over its probes, return an atlas.

Analyzers whose probe suites are identical share one forward pass per batch. A suite is cut into shards
(`shard_size` sequences); each finished shard's analyzer state can be written as a part file, so a killed
scan resumes where it stopped, and shards can run on Ray workers. Results are always assembled by merging
shard states in shard order, so a resumed, sharded or distributed scan gives the same numbers as one
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from headscope._version import __version__
from headscope.analyzers import Analyzer, HeadValue, ScanContext, analyzer_class, expand_names, suite_batches
from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.engine import Backend, Recorder, load_backend
from headscope.errors import HeadscopeError
from headscope.models import DEFAULT_MODEL
from headscope.parts import PartStore, parts_folder, short_hash
from headscope.probes import TokenSuite

# CLI-level knobs that apply to every analyzer whose parameters have a field of that name.
SHARED_KNOBS = ("seq_len", "n_samples", "seed", "context_lengths")
DEFAULT_SHARD_SIZE = 64


def parse_param_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse `analyzer.field=value` strings (CLI `--param`) into typed per-analyzer overrides.

    Values take the type of the field's default: int, float, bool (true/false), str, or a comma list
    for tuple/list fields.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise HeadscopeError(f"--param '{item}' is not of the form analyzer.field=value (e.g. induction.exclude_bos=false)")
        key, raw = item.split("=", 1)
        name, field_name = key.split(".", 1)
        cls = analyzer_class(name)
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        if field_name not in fields:
            raise HeadscopeError(f"analyzer '{cls.name}' has no parameter '{field_name}': it takes {sorted(fields)}")
        default = getattr(cls.Params(), field_name)
        out.setdefault(cls.name, {})[field_name] = _coerce(raw, default, item)
    return out


def parse_lengths(text: str) -> tuple[int, ...]:
    """'1k,2k,4k' or '1000,2500' -> token counts (k = 1000, as the needle-in-a-haystack grids count)."""
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        try:
            value = float(item[:-1]) * 1000 if item.endswith("k") else float(item)
        except ValueError:
            raise HeadscopeError(f"--context-lengths item '{item}' is not a length: write e.g. 1k,2k,4k or 1000,2000") from None
        if value < 1 or value != int(value):
            raise HeadscopeError(f"--context-lengths item '{item}' must be a positive whole number of tokens")
        out.append(int(value))
    if not out:
        raise HeadscopeError("--context-lengths is empty: write e.g. 1k,2k,4k")
    return tuple(out)


def _coerce(raw: str, default: Any, item: str) -> Any:
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (tuple, list)):
            kind = type(default[0]) if default else str
            values = [kind(v.strip()) for v in raw.split(",") if v.strip()]
            return type(default)(values)
        if default is None:
            return raw
        return type(default)(raw)
    except (ValueError, TypeError):
        raise HeadscopeError(f"--param '{item}': cannot read '{raw}' as {type(default).__name__}") from None


def build_analyzers(
    names: Sequence[str] | str,
    *,
    shared: dict[str, Any] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> list[Analyzer]:
    """Instantiate analyzers by name, applying shared knobs and per-analyzer parameter overrides."""
    shared = {k: v for k, v in (shared or {}).items() if v is not None}
    params = params or {}
    analyzers = []
    for name in expand_names(names):
        cls = analyzer_class(name)
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        overrides = {k: v for k, v in shared.items() if k in fields}
        specific = params.get(name, {})
        unknown = set(specific) - fields
        if unknown:
            raise HeadscopeError(f"analyzer '{name}' has no parameter(s) {sorted(unknown)}: it takes {sorted(fields)}")
        overrides.update(specific)
        analyzers.append(cls(**overrides))
    return analyzers


def scan(
    model: str = DEFAULT_MODEL,
    analyzers: Sequence[str] | str = "classic",
    *,
    out: str | Path | None = None,
    backend: str = "auto",
    remote: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    seq_len: int | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    padding_side: str = "right",
    params: dict[str, dict[str, Any]] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    progress: bool = True,
    context_lengths: Sequence[int] | None = None,
) -> Atlas:
    """Scan `model` (embedded alias, local folder or hub id) and return its head atlas.

    With `out`, the atlas is also written there (atomically), and finished shards are kept in
    `<out>.parts/` until the atlas is written; `resume=True` reuses them after an interruption.
    `ray_address` ("local" or a cluster address) runs the shards on Ray workers. `backend` is auto,
    transformer-lens or nnsight; `remote` runs the model on NDIF through nnsight.
    """
    shared = {"seq_len": seq_len, "n_samples": n_samples, "seed": seed,
              "context_lengths": tuple(context_lengths) if context_lengths else None}
    built = build_analyzers(analyzers, shared=shared, params=params)
    if resume and out is None:
        raise HeadscopeError("--resume needs --out: the parts of an interrupted scan live next to its atlas")
    if remote and ray_address is not None:
        raise HeadscopeError("--remote and --ray exclude each other: NDIF already runs the model remotely")
    loaded = load_backend(model, backend=backend, device=device, dtype=dtype, quiet=not progress, remote=remote)
    store = None
    if out is not None:
        folder = parts_folder(Path(out))
        if folder.exists() and not resume:
            raise HeadscopeError(f"{folder} holds parts of an interrupted scan: add --resume to continue it, or delete the folder")
        store = PartStore(folder, _fingerprint(loaded, batch_size, padding_side, shard_size))
    executor: Executor | None = None
    if ray_address is not None:
        from headscope.distributed import RayExecutor

        executor = RayExecutor(
            ray_address, model=model, backend=backend, device=device, dtype=dtype, workers=ray_workers,
            batch_size=batch_size, padding_side=padding_side,
        )
    extras: dict[str, dict[str, Any]] = {}
    try:
        atlas = scan_backend(
            loaded, built, batch_size=batch_size, padding_side=padding_side, progress=progress,
            shard_size=shard_size, parts=store, executor=executor, side_outputs=extras,
        )
    finally:
        if executor is not None:
            executor.close()
    if out is not None:
        atlas.save(out)
        for name, payload in extras.items():
            write_side_output(side_output_path(out, name), payload)
        if store is not None:
            store.remove()
    return atlas


def _fingerprint(backend: Backend, batch_size: int, padding_side: str, shard_size: int) -> dict[str, Any]:
    return {
        "model": backend.model_id, "revision": backend.revision, "dtype": str(backend.dtype), "backend": backend.name,
        "batch_size": batch_size, "padding_side": padding_side, "shard_size": shard_size, "headscope": __version__,
    }


# --- planning ---------------------------------------------------------------------------------------------
@dataclass
class Shard:
    """A contiguous slice of one suite, run for every analyzer of its group."""

    suite: TokenSuite
    members: list[Analyzer]
    index: int
    count: int
    start: int
    stop: int

    @property
    def label(self) -> str:
        return "+".join(sorted(a.name for a in self.members))

    @property
    def part_name(self) -> str:
        return f"{self.label}.{self.suite.content_hash}.shard{self.index:04d}of{self.count:04d}.safetensors"

    @property
    def part_meta(self) -> dict[str, Any]:
        return {"suite": self.suite.content_hash, "shard": [self.index, self.count, self.start, self.stop],
                "params": {a.name: a.params_json() for a in self.members}}

    def sub_suite(self) -> TokenSuite:
        s = self.suite
        return TokenSuite(s.name, s.sequences[self.start : self.stop], s.samples[self.start : self.stop], s.details)


@dataclass
class Group:
    suite: TokenSuite
    members: list[Analyzer]
    shardable: bool
    shards: list[Shard] = field(default_factory=list)


def plan_groups(analyzers: Sequence[Analyzer], ctx: ScanContext, shard_size: int) -> tuple[list[Group], list[Analyzer]]:
    """Group recorder analyzers by identical suite and cut each suite into shards; list the self-driven ones."""
    if shard_size < 1:
        raise HeadscopeError("--shard-size must be at least 1")
    by_suite: dict[tuple[str, str], Group] = {}
    driven = []
    for analyzer in analyzers:
        if analyzer.drives_model:
            driven.append(analyzer)
            continue
        suite = analyzer.build_suite(ctx)
        if len(suite) == 0:
            raise HeadscopeError(f"analyzer '{analyzer.name}' built an empty probe suite: check its parameters")
        key = (suite.name, suite.content_hash)
        by_suite.setdefault(key, Group(suite, [], True)).members.append(analyzer)
    groups = list(by_suite.values())
    for group in groups:
        for analyzer in group.members:
            analyzer.start(ctx.spec)
        group.shardable = all(a.state() is not None for a in group.members)
        size = shard_size if group.shardable else len(group.suite)
        count = math.ceil(len(group.suite) / size)
        group.shards = [
            Shard(group.suite, group.members, i, count, i * size, min((i + 1) * size, len(group.suite))) for i in range(count)
        ]
    return groups, driven


# --- execution ----------------------------------------------------------------------------------------------
class Executor(Protocol):
    """Runs shards and self-driven analyzers: in this process, or on Ray workers."""

    def run_shards(self, shards: list[Shard], progress: bool) -> Iterator[tuple[Shard, dict[str, dict[str, torch.Tensor]]]]: ...

    def run_whole(self, shard: Shard, progress: bool) -> dict[str, list[HeadValue]]: ...

    def run_driven(self, analyzer: Analyzer) -> list[HeadValue]: ...

    def close(self) -> None: ...


def run_shard(backend: Backend, ctx: ScanContext, shard: Shard, bar: tqdm | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Observe one shard from fresh accumulators; return each analyzer's state."""
    for analyzer in shard.members:
        analyzer.start(backend.spec)
    Recorder(backend, progress=False).record(suite_batches(shard.sub_suite(), ctx), shard.members, bar=bar)
    return {a.name: a.state() for a in shard.members}


class LocalExecutor:
    def __init__(self, backend: Backend, ctx: ScanContext) -> None:
        self.backend, self.ctx = backend, ctx

    def run_shards(self, shards, progress):
        total = sum(math.ceil((s.stop - s.start) / self.ctx.batch_size) for s in shards)
        label = shards[0].label if shards else ""
        with tqdm(total=total, desc=label.replace("+", ","), unit="batch", disable=not progress) as bar:
            for shard in shards:
                yield shard, run_shard(self.backend, self.ctx, shard, bar)

    def run_whole(self, shard, progress):
        total = math.ceil((shard.stop - shard.start) / self.ctx.batch_size)
        with tqdm(total=total, desc=shard.label.replace("+", ","), unit="batch", disable=not progress) as bar:
            run_shard(self.backend, self.ctx, shard, bar)
        return {a.name: a.results() for a in shard.members}

    def run_driven(self, analyzer):
        analyzer.start(self.backend.spec)
        analyzer.drive(self.backend, self.ctx)
        return analyzer.results()

    def close(self) -> None:
        pass


def scan_backend(
    backend: Backend,
    analyzers: Sequence[Analyzer],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    parts: PartStore | None = None,
    executor: Executor | None = None,
    side_outputs: dict[str, dict[str, Any]] | None = None,
) -> Atlas:
    """Run analyzers on an already-loaded backend (what notebooks and tests use).

    With `side_outputs` (a dict), each analyzer's `side_output()` extras are stored in it by analyzer name.
    """
    if batch_size < 1:
        raise HeadscopeError("--batch-size must be at least 1")
    if padding_side not in ("left", "right"):
        raise HeadscopeError(f"padding side '{padding_side}' is unknown: use 'left' or 'right'")
    torch.manual_seed(0)
    ctx = ScanContext(backend.spec, backend.tokenizer, batch_size=batch_size, padding_side=padding_side,  # type: ignore[arg-type]
                      progress=progress)
    executor = executor or LocalExecutor(backend, ctx)
    provenance = Provenance(
        model=backend.model_id,
        revision=backend.revision,
        dtype=str(backend.dtype).removeprefix("torch."),
        backend=backend.name,
        n_layers=backend.spec.n_layers,
        n_heads=backend.spec.n_heads,
        n_kv_heads=backend.spec.n_kv_heads,
        headscope_version=__version__,
    )

    def frame_of(analyzer: Analyzer, values: list[HeadValue], suite_name: str, suite_hash: str) -> pd.DataFrame:
        return rows_frame(values, provenance=provenance, analyzer=analyzer.name, probe_suite=suite_name,
                          probe_hash=suite_hash, params=analyzer.params_json())

    groups, driven = plan_groups(analyzers, ctx, shard_size)
    frames: list[pd.DataFrame] = []
    for group in groups:
        suite = group.suite
        if not group.shardable:
            shard = group.shards[0]
            metas = {a.name: {"analyzer": a.name, "params": a.params_json(), "suite": suite.content_hash} for a in group.members}
            names = {a.name: f"{a.name}.{short_hash(a.params_json())}.{suite.content_hash}.rows.parquet" for a in group.members}
            cached = {a.name: parts.load_rows(names[a.name], metas[a.name]) if parts else None for a in group.members}
            if any(frame is None for frame in cached.values()):
                values = executor.run_whole(shard, progress)
                cached = {a.name: frame_of(a, values[a.name], suite.name, suite.content_hash) for a in group.members}
                if parts:
                    for name, frame in cached.items():
                        parts.save_rows(names[name], frame, metas[name])
            frames.extend(cached[a.name] for a in group.members)
            continue
        states: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        pending = []
        for shard in group.shards:
            loaded = parts.load_states(shard.part_name, shard.part_meta) if parts else None
            if loaded is None:
                pending.append(shard)
            else:
                states[shard.index] = loaded
        for shard, shard_states in executor.run_shards(pending, progress):
            if parts:
                parts.save_states(shard.part_name, shard_states, shard.part_meta)
            states[shard.index] = shard_states
        for analyzer in group.members:
            analyzer.start(backend.spec)
            analyzer.merge_states([states[i][analyzer.name] for i in range(len(group.shards))])
            frames.append(frame_of(analyzer, analyzer.results(), suite.name, suite.content_hash))
            _collect_side_output(analyzer, side_outputs)

    for analyzer in driven:
        meta = {"analyzer": analyzer.name, "params": analyzer.params_json()}
        name = f"{analyzer.name}.{short_hash(analyzer.params_json())}.rows.parquet"
        frame = parts.load_rows(name, meta) if parts else None
        side_name = name.replace(".rows.parquet", ".side.json")
        if frame is None:
            suite = analyzer.build_suite(ctx)
            frame = frame_of(analyzer, executor.run_driven(analyzer), suite.name, suite.content_hash)
            payload = analyzer.side_output() if isinstance(executor, LocalExecutor) else None
            if parts:
                if payload is not None:
                    write_side_output(parts.folder / side_name, payload)
                parts.save_rows(name, frame, meta)
            if payload is not None and side_outputs is not None:
                side_outputs[analyzer.name] = payload
        elif parts and (parts.folder / side_name).is_file() and side_outputs is not None:
            side_outputs[analyzer.name] = json.loads((parts.folder / side_name).read_text(encoding="utf-8"))
        frames.append(frame)
    if not frames:
        raise HeadscopeError("no analyzer produced rows: pass at least one analyzer")
    return Atlas(pd.concat(frames, ignore_index=True))


def _collect_side_output(analyzer: Analyzer, side_outputs: dict[str, dict[str, Any]] | None) -> None:
    if side_outputs is None:
        return
    payload = analyzer.side_output()
    if payload is not None:
        side_outputs[analyzer.name] = payload


def side_output_path(atlas_path: str | Path, analyzer: str) -> Path:
    """Where an analyzer's extras go beside an atlas: atlas.parquet -> atlas.<analyzer>.json."""
    path = Path(atlas_path)
    return path.with_name(f"{path.stem}.{analyzer}.json")


def write_side_output(path: Path, payload: dict[str, Any]) -> Path:
    """Atomic JSON write (never pickle): temp file beside the target, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as sink:
            json.dump(payload, sink, ensure_ascii=False, indent=1)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
