"""Probe suites shipped as data files in `probes/` (inside the wheel as headscope/_data/probes).

Each suite is a folder with `data.jsonl` (or .csv/.parquet) and `CARD.md`; it is loaded with
`datasets` so hub datasets of the same schema load the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from headscope.errors import HeadscopeError

_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def probes_root() -> Path:
    """The folder of shipped suites: inside the installed wheel, else the source checkout's `probes/`."""
    packaged = Path(__file__).resolve().parents[1] / "_data" / "probes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "probes"


def available_suites() -> list[str]:
    root = probes_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _data_files(p)) if root.is_dir() else []


def suite_path(name: str) -> Path:
    candidate = Path(name).expanduser()
    folder = candidate if candidate.is_dir() else probes_root() / name
    if not folder.is_dir():
        known = ", ".join(available_suites()) or "none"
        raise HeadscopeError(f"unknown probe suite '{name}': use one of {known}, or a folder with data.jsonl")
    return folder


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in _DATA_SUFFIXES and p.is_file())


def file_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_suite_records(name: str, *, required: tuple[str, ...] = ()) -> tuple[list[dict], str]:
    """Load a shipped (or local-folder) suite as a list of records plus its content hash."""
    folder = suite_path(name)
    files = _data_files(folder)
    if not files:
        raise HeadscopeError(f"probe suite folder {folder} has no data file: add data.jsonl")
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[files[0].suffix]
    try:
        dataset = load_dataset(kind, data_files=[str(f) for f in files], split="train")
    except Exception as err:
        raise HeadscopeError(f"cannot parse probe suite {folder} ({type(err).__name__}): fix the data file") from None
    if len(dataset) == 0:
        raise HeadscopeError(f"probe suite {folder} is empty: add at least one record")
    missing = [column for column in required if column not in dataset.column_names]
    if missing:
        raise HeadscopeError(f"probe suite {folder} lacks columns {missing}: add them to every record")
    return [dict(row) for row in dataset], file_hash(files)
