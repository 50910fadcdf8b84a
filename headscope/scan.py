"""A scan: load a model once, run every requested analyzer over its probes, return an atlas.

Analyzers whose probe suites are identical share one forward pass per batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from headscope._version import __version__
from headscope.analyzers import Analyzer, ScanContext, analyzer_class, expand_names, suite_batches
from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.engine import Backend, Recorder, load_backend
from headscope.errors import HeadscopeError
from headscope.models import DEFAULT_MODEL

# CLI-level knobs that apply to every analyzer whose parameters have a field of that name.
SHARED_KNOBS = ("seq_len", "n_samples", "seed")


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
    backend: str = "transformer-lens",
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    seq_len: int | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    padding_side: str = "right",
    params: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> Atlas:
    """Scan `model` (embedded alias, local folder or hub id) and return its head atlas.

    With `out`, the atlas is also written there (atomically).
    """
    built = build_analyzers(analyzers, shared={"seq_len": seq_len, "n_samples": n_samples, "seed": seed}, params=params)
    loaded = load_backend(model, backend=backend, device=device, dtype=dtype, quiet=not progress)
    atlas = scan_backend(loaded, built, batch_size=batch_size, padding_side=padding_side, progress=progress)
    if out is not None:
        atlas.save(out)
    return atlas


def scan_backend(
    backend: Backend,
    analyzers: Sequence[Analyzer],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> Atlas:
    """Run analyzers on an already-loaded backend (what notebooks and tests use)."""
    if batch_size < 1:
        raise HeadscopeError("--batch-size must be at least 1")
    if padding_side not in ("left", "right"):
        raise HeadscopeError(f"padding side '{padding_side}' is unknown: use 'left' or 'right'")
    torch.manual_seed(0)
    ctx = ScanContext(backend.spec, backend.tokenizer, batch_size=batch_size, padding_side=padding_side,  # type: ignore[arg-type]
                      progress=progress)
    groups: dict[tuple[str, str], tuple[Any, list[Analyzer]]] = {}
    driving: list[tuple[Any, Analyzer]] = []  # analyzers with their own `drive` (decoding, ablations)
    for analyzer in analyzers:
        suite = analyzer.build_suite(ctx)
        if analyzer.drive is not None:
            driving.append((suite, analyzer))
            continue
        key = (suite.name, suite.content_hash)
        groups.setdefault(key, (suite, []))[1].append(analyzer)

    recorder = Recorder(backend, progress=progress)
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
    frames = []
    for suite, analyzer in driving:
        analyzer.start(backend.spec)
        analyzer.drive(backend, ctx)
        frames.append(
            rows_frame(
                analyzer.results(),
                provenance=provenance,
                analyzer=analyzer.name,
                probe_suite=suite.name,
                probe_hash=suite.content_hash,
                params=analyzer.params_json(),
            )
        )
    for (suite_name, suite_hash), (suite, members) in groups.items():
        for analyzer in members:
            analyzer.start(backend.spec)
        label = ",".join(a.name for a in members)
        recorder.record(suite_batches(suite, ctx), members, description=label, total=suite.n_batches(batch_size))
        for analyzer in members:
            frames.append(
                rows_frame(
                    analyzer.results(),
                    provenance=provenance,
                    analyzer=analyzer.name,
                    probe_suite=suite_name,
                    probe_hash=suite_hash,
                    params=analyzer.params_json(),
                )
            )
    return Atlas(pd.concat(frames, ignore_index=True))
