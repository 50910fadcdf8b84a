"""Part files of a scan in progress: finished shards, written atomically, read back on `--resume`.

A part holds either the accumulator state of the analyzers of one probe shard (safetensors: tensors and a
JSON header, nothing executable) or the finished rows of an analyzer that cannot be sharded (Parquet).
Each part records the scan's fingerprint; a part from another scan is refused, never silently mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from headscope.errors import HeadscopeError


def parts_folder(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class PartStore:
    """One folder of part files for one scan (identified by `fingerprint`)."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)

    def _atomic(self, name: str, write) -> None:
        handle, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
        os.close(handle)
        try:
            write(temp)
            with open(temp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(temp, self.folder / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _check(self, name: str, recorded: dict[str, Any], expected: dict[str, Any]) -> None:
        if recorded != {**self.fingerprint, **expected}:
            raise HeadscopeError(
                f"part {self.folder / name} belongs to a different scan (model, parameters or probes changed): "
                f"delete {self.folder} or write to another --out"
            )

    # --- shard states -------------------------------------------------------------------------
    def save_states(self, name: str, states: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]) -> None:
        flat = {f"{analyzer}/{key}": tensor.contiguous() for analyzer, state in states.items() for key, tensor in state.items()}
        header = {"headscope_part": json.dumps({**self.fingerprint, **meta}, sort_keys=True)}
        self._atomic(name, lambda path: save_file(flat, path, metadata=header))

    def load_states(self, name: str, meta: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]] | None:
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                recorded = json.loads((handle.metadata() or {}).get("headscope_part", "{}"))
            flat = load_file(str(path))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
            raise HeadscopeError(f"part {path} is unreadable ({type(err).__name__}): delete it and resume again") from None
        self._check(name, recorded, meta)
        states: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in flat.items():
            analyzer, field = key.split("/", 1)
            states.setdefault(analyzer, {})[field] = tensor
        return states

    # --- finished rows -----------------------------------------------------------------------
    def save_rows(self, name: str, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(
            {b"headscope_part": json.dumps({**self.fingerprint, **meta}, sort_keys=True).encode()}
        )
        self._atomic(name, lambda path: pq.write_table(table, path))

    def load_rows(self, name: str, meta: dict[str, Any]) -> pd.DataFrame | None:
        import pyarrow.parquet as pq

        path = self.folder / name
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            recorded = json.loads((table.schema.metadata or {}).get(b"headscope_part", b"{}"))
        except Exception as err:  # foreign or damaged bytes
            raise HeadscopeError(f"part {path} is unreadable ({type(err).__name__}): delete it and resume again") from None
        self._check(name, recorded, meta)
        return table.to_pandas(ignore_metadata=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
