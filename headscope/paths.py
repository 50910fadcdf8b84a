"""Output paths checked before any work: a refused `-o` is found before a model loads or a parts folder exists.

An output may be absent, or a regular file (or a symlink to one) that the atomic writer replaces; anything
else that exists (a folder, a device node such as /dev/null, a FIFO, a socket) is refused, never replaced.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from headscope.errors import HeadscopeError

_TEMP_AFFIX = 20  # the atomic writer's temp name (".<name>.XXXXXXXX.tmp") and the ".parts" folder add this much


def check_output_path(path: str | Path, *, what: str = "output") -> Path:
    """Return `path` if a file may be (re)written there; else one line naming the fix."""
    target = Path(path)
    try:
        info = target.stat()  # follows a symlink: a link to a regular file is fine, a dangling one is absent
    except FileNotFoundError:
        info = None
    except NotADirectoryError:
        raise HeadscopeError(f"{what} '{target}': a part of its folder path is a file, not a folder: "
                             "choose another path") from None
    except OSError as err:
        raise HeadscopeError(f"{what} '{target}' cannot be checked ({err.strerror}): choose another path") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (device, FIFO or socket)"
        raise HeadscopeError(f"{what} '{target}' is {kind}: give a new or regular file name such as atlas.parquet")
    parent = target.parent
    _check_folder(parent, target, what)
    if len(os.fsencode(target.name)) + _TEMP_AFFIX > _name_max(parent):
        raise HeadscopeError(f"{what} file name '{target.name[:40]}...' is too long for this file system: use a shorter name")
    return target


def _check_folder(parent: Path, target: Path, what: str) -> None:
    """The folder the atomic writer puts its temp file in: must be (or become) a writable folder."""
    existing = parent
    while not existing.exists() and not existing.is_symlink():  # the writer creates missing folders
        if existing == existing.parent:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise HeadscopeError(f"{what} '{target}': '{existing}' is not a folder: choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HeadscopeError(f"{what} '{target}': no permission to write in '{existing}': choose a folder you can write to")


def _name_max(folder: Path) -> int:
    existing = folder
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
