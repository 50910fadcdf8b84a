"""Side outputs: the JSON an analyzer writes beside an atlas (`<atlas stem>.<analyzer>.json`) and its public reader.

Atlas rows hold numbers per head; what a notebook needs next (the lookback answers and detector, retrieval's
per-sample log, safety's per-request top heads) lives here. Reading never executes code: strict JSON only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from headscope.errors import HeadscopeError
from headscope.strict_json import MAX_BYTES, load_json


def side_output_path(atlas_path: str | Path, analyzer: str) -> Path:
    """Where an analyzer's extras go beside an atlas: atlas.parquet -> atlas.<analyzer>.json."""
    path = Path(atlas_path)
    return path.with_name(f"{path.stem}.{analyzer}.json")


def read_side_output(atlas_path: str | Path, analyzer: str) -> dict[str, Any]:
    """The side output `headscope.scan(..., out=atlas_path)` wrote for `analyzer`.

    Args:
        atlas_path: the atlas file the scan wrote (`out=`).
        analyzer: the analyzer's name, e.g. "lookback", "retrieval", "safety".

    Returns:
        The JSON object as a dict (what each analyzer stores is listed in docs/scans.md, "Side outputs").

    Raises:
        HeadscopeError: the file is missing, too large, or not a strict JSON object (one line, naming the fix).
    """
    path = side_output_path(atlas_path, analyzer)
    fix = f"rerun headscope.scan(..., analyzers=[{analyzer!r}], out={str(atlas_path)!r})"
    if not path.is_file():
        raise HeadscopeError(f"no {analyzer} side output at {path}: {fix}")
    if path.stat().st_size > MAX_BYTES:  # refused before it is read into memory
        raise HeadscopeError(f"side output {path} is larger than {MAX_BYTES} bytes: {fix}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise HeadscopeError(f"side output {path} is not UTF-8 text: {fix}") from None
    data = load_json(text, origin=f"side output {path}", fix=fix, what="a JSON side output")
    if not isinstance(data, dict):
        raise HeadscopeError(f"side output {path} is not a JSON object: {fix}")
    return data


def finite(value: Any) -> Any:
    """`value` with NaN/inf floats as None, so the strict reader accepts what a scan wrote."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
