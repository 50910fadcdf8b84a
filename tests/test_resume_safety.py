"""--resume never loses an interrupted scan: other parameters are refused (or discarded with --force), cleanup
deletes only the scan's own parts, and a lock keeps a second writer out."""

from __future__ import annotations

from pathlib import Path

import pytest

import headscope
import headscope.scanning.settings as settings_module
from headscope.atlas import Atlas, read_atlas
from headscope.errors import HeadscopeError

SCAN = {"seq_len": 21, "n_samples": 4, "shard_size": 1, "progress": False}


def _interrupted(model_dir: Path, out: Path, monkeypatch) -> list[str]:
    """A scan whose every part was written but whose atlas write failed: the parts stay for --resume."""
    def fail(self, path):
        raise RuntimeError("disk gone")

    with monkeypatch.context() as patch:
        patch.setattr(Atlas, "save", fail)
        with pytest.raises(RuntimeError):
            headscope.scan(str(model_dir), out=out, **SCAN)
    return sorted(p.name for p in Path(f"{out}.parts").iterdir())


def test_resume_with_other_parameters_is_refused_then_forced(tiny_llama_dir, tmp_path, monkeypatch):
    out = tmp_path / "atlas.parquet"
    parts = _interrupted(tiny_llama_dir, out, monkeypatch)
    assert len(parts) == 4
    with pytest.raises(HeadscopeError, match=r"n_samples: 4 -> 2.*--force") as refused:
        headscope.scan(str(tiny_llama_dir), out=out, resume=True, **{**SCAN, "n_samples": 2})
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in Path(f"{out}.parts").iterdir()) == parts  # nothing discarded
    with pytest.raises(HeadscopeError, match="--force goes with --resume"):
        headscope.scan(str(tiny_llama_dir), out=out, force=True, **SCAN)
    forced = headscope.scan(str(tiny_llama_dir), out=out, resume=True, force=True, **{**SCAN, "n_samples": 2})
    assert set(forced.frame["n_samples"]) == {2} and not Path(f"{out}.parts").exists()


def test_cleanup_deletes_only_its_own_parts(tiny_llama_dir, tmp_path, monkeypatch):
    out = tmp_path / "atlas.parquet"
    parts = _interrupted(tiny_llama_dir, out, monkeypatch)
    folder = Path(f"{out}.parts")
    (folder / "notes.txt").write_text("mine")
    (folder / "sub").mkdir()
    resumed = headscope.scan(str(tiny_llama_dir), out=out, resume=True, **SCAN)
    assert len(read_atlas(out)) == len(resumed)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "sub"]  # the parts went, the user's files stayed
    assert not set(parts) & {p.name for p in folder.iterdir()}


def test_a_second_writer_is_refused_before_the_model_loads(tiny_llama_dir, tmp_path, monkeypatch):
    from headscope.scanning.cache import locked

    out = tmp_path / "atlas.parquet"
    folder = Path(f"{out}.parts")
    folder.mkdir()

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although another scan holds the parts folder")

    monkeypatch.setattr(settings_module, "load_backend", refuse)
    with locked(folder):
        with pytest.raises(HeadscopeError, match="another scan is writing"):
            headscope.scan(str(tiny_llama_dir), out=out, resume=True, **SCAN)
        assert (folder / ".lock").exists()  # the refused writer did not take the lock away
    assert not folder.exists()  # released and empty: gone
