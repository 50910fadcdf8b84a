"""The one atomic writer: readers see the old file (or folder) or the whole new one, never half of it.

Atlases, reports, scan parts and side outputs go through `atomic_write`: the bytes go to a temp file beside
the target, are fsynced, take the umask's permissions (mkstemp makes 0600) and are renamed over the target.
Model folders (converted embedded models, tuned variants) go through `atomic_folder` the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from headscope.paths import check_output_path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(temp_path)` to fill a temp file beside `path`, fsync it, then rename it over `path`."""
    target = check_output_path(path)
    if target.is_symlink():  # write through a link to a regular file: the link stays, its target gets the bytes
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write(temp)
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """JSON (never pickle), UTF-8, one-space indent."""
    return atomic_write_text(path, json.dumps(payload, ensure_ascii=False, indent=1))


def atomic_folder(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Call `fill(staging)` on a fresh folder beside `path`, then swap it in place of `path` (a stale one is dropped)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        fill(staging)
        if target.exists():  # a stale, incomplete or outdated earlier build
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
