"""Checks of a scan's arguments that need no model: run before the model loads and before a parts folder exists."""

from __future__ import annotations

from pathlib import Path

from headscope.errors import HeadscopeError
from headscope.paths import check_output_path
from headscope.scanning.cache import parts_folder

SEED_LIMIT = 2**63  # torch and numpy generators take seeds in [0, 2**63)


def check_numbers(*, seq_len: int | None, n_samples: int | None, seed: int | None, ray_workers: int | None) -> None:
    """Counts positive, the seed in the generators' range: a refused number never reaches a tokenizer or Ray."""
    for flag, value in (("--seq-len", seq_len), ("--n-samples", n_samples), ("--ray-workers", ray_workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HeadscopeError(f"{flag} must be a whole number of at least 1 (got {value!r})")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT):
        raise HeadscopeError(f"--seed must be a whole number from 0 to {SEED_LIMIT - 1} (got {seed!r})")


def check_out(out: Path, *, resume: bool) -> None:
    """The atlas path may be written, and its parts folder is either absent or (with --resume) a folder."""
    check_output_path(out, what="--out")
    parts = parts_folder(out)
    if parts.is_symlink() or (parts.exists() and not parts.is_dir()):
        raise HeadscopeError(f"{parts} exists and is not a folder of scan parts: move it away or choose another --out")
    if parts.exists() and not resume:
        raise HeadscopeError(f"{parts} holds parts of an interrupted scan: add --resume to continue it, "
                             "or delete the folder")
