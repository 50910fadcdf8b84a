"""Refused inputs leave the disk as it was: every check runs before the model loads and before `<out>.parts/` exists."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import headscope
import headscope.scanning.settings as settings_module
from headscope.atlas import read_atlas
from headscope.cli import app
from headscope.errors import HeadscopeError

runner = CliRunner()
SMALL = {"seq_len": 21, "n_samples": 2}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` with its kind and size: what a refused run must leave untouched."""
    return {str(p.relative_to(folder)): (stat.S_IFMT(p.lstat().st_mode), p.lstat().st_size) for p in folder.rglob("*")}


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(settings_module, "load_backend", refuse)


def _special(kind: str, tmp_path: Path) -> Path:
    """An output path that exists and must not be replaced (or whose folder cannot hold a file)."""
    if kind == "folder":
        (tmp_path / "existing").mkdir()
        return tmp_path / "existing"
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe")
        return tmp_path / "pipe"
    if kind == "parent-is-file":
        (tmp_path / "file.txt").write_text("mine")
        return tmp_path / "file.txt" / "x.parquet"
    if kind == "link-to-folder":
        (tmp_path / "target").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "target")
        return tmp_path / "link"
    if kind == "name-too-long":
        return tmp_path / ("a" * 250 + ".parquet")
    raise ValueError(kind)


@pytest.mark.parametrize(
    "arguments,expected",
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"shard_size": 0}, "--shard-size"),
        ({"seq_len": 0}, "--seq-len"),
        ({"n_samples": -1}, "--n-samples"),
        ({"seed": 99999999999999999999999}, "--seed"),
        ({"seed": -1}, "--seed"),
        ({"ray_address": "local", "ray_workers": -1}, "--ray-workers"),
        ({"device": "foo"}, "unknown device"),
        ({"device": "CPU"}, "unknown device"),
        ({"device": "cuda:x"}, "unknown device"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"analyzers": "nonsense"}, "unknown analyzer"),
        ({"params": {"induction": {"bogus": 1}}}, "no parameter"),
    ],
)
def test_refused_arguments_touch_nothing(arguments, expected, tiny_llama_dir, tmp_path, no_model_load):
    (tmp_path / "keep.txt").write_text("mine")
    before = _tree(tmp_path)
    kwargs = {"out": tmp_path / "atlas.parquet", "progress": False, **SMALL, **arguments}
    analyzers = kwargs.pop("analyzers", "classic")
    with pytest.raises(HeadscopeError, match=expected):
        headscope.scan(str(tiny_llama_dir), analyzers, **kwargs)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["folder", "fifo", "parent-is-file", "link-to-folder", "name-too-long"])
def test_refused_scan_outputs_touch_nothing(kind, tiny_llama_dir, tmp_path, no_model_load):
    out = _special(kind, tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(HeadscopeError, match="--out"):
        headscope.scan(str(tiny_llama_dir), out=out, progress=False, **SMALL)
    assert _tree(tmp_path) == before


def test_a_refused_probe_suite_leaves_no_parts_folder(tiny_llama_dir, tmp_path):
    """The suite needs the tokenizer, so the model loads; still no parts folder, and the corrected run just works."""
    out = tmp_path / "atlas.parquet"
    with pytest.raises(HeadscopeError, match="context"):
        headscope.scan(str(tiny_llama_dir), out=out, seq_len=100000, n_samples=2, progress=False)
    assert sorted(tmp_path.iterdir()) == []
    headscope.scan(str(tiny_llama_dir), out=out, progress=False, **SMALL)
    assert len(read_atlas(out)) > 0


@pytest.fixture
def atlas_file(tiny_llama_backend, tmp_path) -> Path:
    from headscope.scanning import build_analyzers, scan_backend

    path = tmp_path / "a.parquet"
    scan_backend(tiny_llama_backend, build_analyzers("previous-token", shared=SMALL), progress=False).save(path)
    return path


def _device_node(tmp_path: Path) -> Path:
    """A character device like /dev/null (root can make one; others get a FIFO, refused by the same check)."""
    node = tmp_path / "fakenull"
    if os.geteuid() == 0:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        os.mkfifo(node)
    return node


@pytest.mark.parametrize("command", ["merge", "view"])
@pytest.mark.parametrize("kind", ["device", "folder", "parent-is-file"])
def test_merge_and_view_never_replace_what_is_not_a_file(command, kind, atlas_file, tmp_path):
    out = _device_node(tmp_path) if kind == "device" else _special(kind, tmp_path)
    before = _tree(tmp_path)
    result = runner.invoke(app, [command, str(atlas_file), "-o", str(out)])
    assert isinstance(result.exception, HeadscopeError), result.output
    assert "--out" in str(result.exception) and "\n" not in str(result.exception)
    assert _tree(tmp_path) == before
    if kind == "device":
        assert not stat.S_ISREG(out.lstat().st_mode)


def test_a_symlink_to_a_regular_file_is_replaced_through(atlas_file, tmp_path):
    (tmp_path / "real.parquet").write_bytes(b"old")
    (tmp_path / "link.parquet").symlink_to(tmp_path / "real.parquet")
    result = runner.invoke(app, ["merge", str(atlas_file), "-o", str(tmp_path / "link.parquet")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link.parquet").is_symlink()
    assert len(read_atlas(tmp_path / "real.parquet")) == len(read_atlas(atlas_file))


def test_a_model_that_fails_to_load_leaves_no_folders(tmp_path):
    """`-o new/sub/atlas.parquet`: the folders the scan would create are gone again when it is refused."""
    (tmp_path / "keep.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(HeadscopeError, match="does not exist"):
        headscope.scan(str(tmp_path / "no-such-model"), out=tmp_path / "new" / "sub" / "atlas.parquet", progress=False, **SMALL)
    assert _tree(tmp_path) == before


def test_pickled_weights_that_name_code_are_refused_in_one_line(tiny_llama_dir, tmp_path):
    """A `pytorch_model.bin` whose pickle names a global (here `print`): torch's weights-only loader refuses it
    and nothing runs; the user gets one line naming the fix instead of an unexpected UnpicklingError."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from headscope.engine import load_backend
    from headscope.errors import HeadscopeError

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, folder)
    weights = load_file(folder / "model.safetensors")

    class RunsCode:
        def __reduce__(self):
            return (print, ("this must never print",))

    torch.save({**weights, "extra": RunsCode()}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    for backend in ("transformer-lens", "nnsight"):
        with pytest.raises(HeadscopeError, match="pickle that names code.*safetensors"):
            load_backend(str(folder), backend=backend, quiet=True)
