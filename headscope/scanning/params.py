"""From what a user types to analyzer objects: `--param analyzer.field=value`, `--context-lengths`, shared knobs."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from headscope.analyzers import Analyzer, analyzer_class, expand_names
from headscope.errors import HeadscopeError

# CLI-level knobs that apply to every analyzer whose parameters have a field of that name.
SHARED_KNOBS = ("seq_len", "n_samples", "seed", "context_lengths")


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
