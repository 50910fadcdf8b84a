"""Part files of a scan in progress: each finished task, written atomically, read back on `--resume`.

One naming scheme (`Task.part_name`) and two formats: a shard's analyzer states as safetensors (tensors and a
JSON header, nothing executable), or a task's finished rows as Parquet with its side outputs as JSON in the
schema metadata. Each part records the scan's fingerprint; a part of another scan is refused, never mixed in.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from headscope.analyzers import HeadValue
from headscope.atomic import atomic_write
from headscope.errors import HeadscopeError
from headscope.strict_json import load_json
from headscope.scanning.plan import Task, TaskOutput

STATES, ROWS = ".safetensors", ".rows.parquet"
_HEADER = "headscope_part"
_ROW_FIELDS = ("layer", "head", "metric", "value", "n_samples")
LOCK = ".lock"
# what `Task.part_name` + a suffix looks like: the only files a cache ever deletes
_PART = re.compile(r"[A-Za-z0-9_+-]+\.[0-9a-f]+\.part[0-9]{4}of[0-9]{4}(\.safetensors|\.rows\.parquet)")


def parts_folder(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def is_part_file(path: Path) -> bool:
    """A finished part this scan's naming scheme wrote (not a temp file, the lock, or a user's own file)."""
    return path.is_file() and _PART.fullmatch(path.name) is not None


class PartCache:
    """One folder of part files for one scan (identified by `fingerprint`)."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any], *, force: bool = False) -> None:
        self.folder = folder
        self.fingerprint = fingerprint  # the folder is made by the first save: a refused scan leaves no trace
        self.force = force  # discard parts of a scan with other parameters instead of refusing
        self.mine: set[str] = set()  # part file names of this scan's plan: all that `remove` may delete

    def claim(self, tasks: Sequence[Task]) -> None:
        """Adopt the folder for this plan: parts of a scan with other parameters are refused (naming what
        differs), or deleted with `force`; files that are not parts are never touched."""
        self.mine = {t.part_name + ext for t in tasks for ext in (STATES, ROWS)}
        if not self.folder.is_dir():
            return
        foreign = sorted(p for p in self.folder.iterdir() if _PART.fullmatch(p.name) and p.name not in self.mine)
        if not foreign:
            return
        if not self.force:
            differs = _differences(_header(foreign[0]), self.fingerprint, tasks, foreign[0].name)
            raise HeadscopeError(
                f"{self.folder} holds {len(foreign)} part(s) of a scan with other parameters ({differs}): "
                "rerun with those parameters to resume it, or add --force to discard them"
            )
        for path in foreign:
            path.unlink(missing_ok=True)

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
                recorded = _strict((handle.metadata() or {}).get(_HEADER, "{}"), dict)
            flat = load_file(str(path))
        except (SafetensorError, OSError, ValueError, HeadscopeError) as err:
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
            recorded = _strict(meta.get(_HEADER.encode(), b"{}"), dict)
            side = _strict(meta.get(b"side_outputs", b"{}"), dict)
            names = _strict(meta.get(b"analyzers", b"[]"), list)
            if not all(isinstance(name, str) for name in names):
                raise ValueError("analyzer names are not strings")
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
        """Delete this scan's part files (and its writer's leftover temp files), then the folder if nothing else is in it."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            stem = path.name[1:].rsplit(".", 2)[0] if path.name.startswith(".") and path.name.endswith(".tmp") else None
            if path.name in self.mine or stem in self.mine:
                path.unlink(missing_ok=True)
        _remove_if_empty(self.folder)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold `folder/.lock` (an flock: the kernel drops it when the holder dies, so a kill -9 leaves no stale lock)
    while a scan writes parts there; a second writer is refused at once. The folder goes if it is left empty."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again when left empty
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HeadscopeError(f"another scan is writing in {folder}: wait for it to finish, or use another --out") from None
        try:
            yield
        finally:
            (folder / LOCK).unlink(missing_ok=True)
    finally:
        os.close(handle)
        for created in [folder, *made]:  # deepest first: a refused or finished scan leaves no empty folders
            _remove_if_empty(created)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # something is still in it: parts to resume, or a file we did not write
        pass


def _header(path: Path) -> dict[str, Any]:
    """The fingerprint a part records, read without loading its tensors or rows ({} when unreadable)."""
    try:
        if path.name.endswith(STATES):
            with safe_open(str(path), framework="pt") as handle:
                return json.loads((handle.metadata() or {}).get(_HEADER, "{}"))
        import pyarrow.parquet as pq

        return json.loads((pq.read_schema(path).metadata or {}).get(_HEADER.encode(), b"{}"))
    except Exception:  # a damaged part: it differs in everything
        return {}


def _differences(recorded: dict[str, Any], fingerprint: dict[str, Any], tasks: Sequence[Task], name: str) -> str:
    """What differs between a recorded part and this scan: fingerprint fields, analyzer parameters, probes."""
    label = name.split(".", 1)[0]
    task = next((t for t in tasks if t.group.label == label), tasks[0] if tasks else None)
    expected: dict[str, Any] = {**fingerprint, **(task.part_meta if task else {})}
    if not isinstance(recorded, dict) or not recorded:
        return "unreadable part header"
    out = [f"{key}: {recorded.get(key)!r} -> {expected.get(key)!r}"
           for key in sorted(set(fingerprint) | {"suite"}) if recorded.get(key) != expected.get(key)]
    before, after = recorded.get("params") or {}, expected.get("params") or {}
    for analyzer in sorted(set(before) | set(after)) if isinstance(before, dict) else []:
        old, new = _loads(before.get(analyzer)), _loads(after.get(analyzer))
        out += [f"{analyzer}.{field}: {old.get(field)!r} -> {new.get(field)!r}"
                for field in sorted(set(old) | set(new)) if old.get(field) != new.get(field)]
    if label != (task.group.label if task else None):
        out.append(f"analyzers: {label} not in this scan")
    return ", ".join(out) or "shard layout"


def _loads(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _strict(raw: str | bytes, kind: type) -> Any:
    """A part's JSON (header, side outputs, names): bounded and finite like every file we read, of the expected kind."""
    value = load_json(raw, origin="part metadata", fix="delete the part")
    if not isinstance(value, kind):
        raise ValueError(f"part metadata is not a {kind.__name__}")
    return value


def _unreadable(path: Path, err: Exception) -> HeadscopeError:
    return HeadscopeError(f"part {path} is unreadable ({type(err).__name__}): delete it and resume again")
