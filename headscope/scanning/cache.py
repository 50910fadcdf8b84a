"""Part files of a scan in progress: each finished task, written atomically, read back on `--resume`.

One naming scheme (`Task.part_name`) and two formats: a shard's analyzer states as safetensors (tensors and a
JSON header, nothing executable), or a task's finished rows as Parquet with its side outputs as JSON in the
schema metadata. Each part records the scan's fingerprint; a part of another scan is refused, never mixed in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from headscope.analyzers import HeadValue
from headscope.atomic import atomic_write
from headscope.errors import HeadscopeError
from headscope.scanning.plan import Task, TaskOutput

STATES, ROWS = ".safetensors", ".rows.parquet"
_HEADER = "headscope_part"
_ROW_FIELDS = ("layer", "head", "metric", "value", "n_samples")


def parts_folder(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


class PartCache:
    """One folder of part files for one scan (identified by `fingerprint`)."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint  # the folder is made by the first save: a refused scan leaves no trace

    def save(self, task: Task, output: TaskOutput) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        header = json.dumps({**self.fingerprint, **task.part_meta}, sort_keys=True)
        if output.states is not None:
            flat = {f"{analyzer}/{key}": tensor.contiguous()
                    for analyzer, state in output.states.items() for key, tensor in state.items()}
            atomic_write(self.folder / (task.part_name + STATES), lambda temp: save_file(flat, temp, metadata={_HEADER: header}))
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [{"analyzer": name, **{f: getattr(v, f) for f in _ROW_FIELDS}}
                   for name, values in (output.rows or {}).items() for v in values]
        frame = pd.DataFrame(records, columns=["analyzer", *_ROW_FIELDS])
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(
            {_HEADER.encode(): header.encode(), b"side_outputs": json.dumps(output.side).encode(),
             b"analyzers": json.dumps(list((output.rows or {}).keys())).encode()}
        )
        atomic_write(self.folder / (task.part_name + ROWS), lambda temp: pq.write_table(table, temp))

    def load(self, task: Task) -> TaskOutput | None:
        """The task's saved output, or None when it has not finished; a foreign or broken part is an error."""
        states, rows = self.folder / (task.part_name + STATES), self.folder / (task.part_name + ROWS)
        if states.is_file():
            return self._load_states(states, task)
        if rows.is_file():
            return self._load_rows(rows, task)
        return None

    def _load_states(self, path: Path, task: Task) -> TaskOutput:
        try:
            with safe_open(str(path), framework="pt") as handle:
                recorded = json.loads((handle.metadata() or {}).get(_HEADER, "{}"))
            flat = load_file(str(path))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
            raise _unreadable(path, err) from None
        self._check(path, recorded, task)
        states: dict[str, dict[str, torch.Tensor]] = {a.name: {} for a in task.group.members}
        for key, tensor in flat.items():
            analyzer, name = key.split("/", 1)
            states.setdefault(analyzer, {})[name] = tensor
        return TaskOutput(states=states)

    def _load_rows(self, path: Path, task: Task) -> TaskOutput:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            meta = table.schema.metadata or {}
            recorded = json.loads(meta.get(_HEADER.encode(), b"{}"))
            side = json.loads(meta.get(b"side_outputs", b"{}"))
            names = json.loads(meta.get(b"analyzers", b"[]"))
        except Exception as err:  # foreign or damaged bytes
            raise _unreadable(path, err) from None
        self._check(path, recorded, task)
        frame = table.to_pandas(ignore_metadata=True)
        rows = {name: [HeadValue(int(r.layer), int(r.head), str(r.metric), float(r.value), int(r.n_samples))
                       for r in frame[frame["analyzer"] == name].itertuples()] for name in names}
        return TaskOutput(rows=rows, side=side)

    def _check(self, path: Path, recorded: dict[str, Any], task: Task) -> None:
        if recorded != json.loads(json.dumps({**self.fingerprint, **task.part_meta}, sort_keys=True)):
            raise HeadscopeError(
                f"part {path} belongs to a different scan (model, parameters or probes changed): "
                f"delete {self.folder} or write to another --out"
            )

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _unreadable(path: Path, err: Exception) -> HeadscopeError:
    return HeadscopeError(f"part {path} is unreadable ({type(err).__name__}): delete it and resume again")
