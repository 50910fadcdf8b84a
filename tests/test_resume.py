"""Scans that survive: kill -9 mid-scan, resume, and get exactly the uninterrupted atlas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import headscope
from headscope.atlas import read_atlas
from headscope.errors import HeadscopeError

N_SAMPLES = 80  # one part per sequence: enough parts for a kill to land mid-scan


def _scan_command(model_dir, out):
    return [sys.executable, "-m", "headscope.cli", "scan", str(model_dir), "-o", str(out), "-q", "--seq-len", "21",
            "--n-samples", str(N_SAMPLES), "--shard-size", "1", "--batch-size", "1"]


def test_kill_then_resume_equals_uninterrupted(tiny_llama_dir, tmp_path):
    reference = headscope.scan(str(tiny_llama_dir), out=tmp_path / "reference.parquet", seq_len=21, n_samples=N_SAMPLES,
                               shard_size=1, batch_size=1, progress=False)
    out = tmp_path / "atlas.parquet"
    parts = tmp_path / "atlas.parquet.parts"
    started = time.perf_counter()
    process = subprocess.Popen(_scan_command(tiny_llama_dir, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 120:
            done = [p for p in parts.glob("*.safetensors")] if parts.is_dir() else []
            if len(done) >= 8:
                break
            assert process.poll() is None, "the scan ended before it could be killed"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_after = time.perf_counter() - started
    finished_parts = len(list(parts.glob("*.safetensors")))
    assert not out.exists() and 8 <= finished_parts < N_SAMPLES

    with pytest.raises(HeadscopeError, match="--resume"):
        headscope.scan(str(tiny_llama_dir), out=out, seq_len=21, n_samples=N_SAMPLES, shard_size=1, batch_size=1, progress=False)

    resume_started = time.perf_counter()
    done = subprocess.run(_scan_command(tiny_llama_dir, out) + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = read_atlas(out)
    assert resumed.frame.equals(read_atlas(tmp_path / "reference.parquet").frame)
    assert resumed.frame["value"].to_numpy().tobytes() == reference.frame["value"].to_numpy().tobytes()
    assert not parts.exists()  # cleaned up once the atlas is written
    print(f"killed after {killed_after:.1f} s with {finished_parts}/{N_SAMPLES} parts; resume took "
          f"{time.perf_counter() - resume_started:.1f} s")


def test_leftover_parts_need_resume_and_resume_needs_out(tiny_llama_dir, tmp_path):
    (tmp_path / "atlas.parquet.parts").mkdir()
    with pytest.raises(HeadscopeError, match="--resume"):
        headscope.scan(str(tiny_llama_dir), out=tmp_path / "atlas.parquet", seq_len=21, n_samples=4, progress=False)
    with pytest.raises(HeadscopeError, match="needs --out"):
        headscope.scan(str(tiny_llama_dir), resume=True, progress=False)


def test_a_foreign_part_with_the_right_name_is_refused(tiny_llama_dir, tmp_path):
    from headscope.analyzers import ScanContext
    from headscope.engine import load_backend
    from headscope.scanning import PartCache, TaskOutput, build_analyzers, plan_scan

    backend = load_backend(str(tiny_llama_dir), quiet=True)
    analyzers = build_analyzers("classic", shared={"seq_len": 21, "n_samples": 4})
    groups = plan_scan(analyzers, ScanContext(backend.spec, backend.tokenizer), 2)
    task = groups[0].tasks[0]
    PartCache(tmp_path / "atlas.parquet.parts", {"model": "another-model"}).save(task, TaskOutput(states={}))
    with pytest.raises(HeadscopeError, match="different scan"):
        headscope.scan(str(tiny_llama_dir), out=tmp_path / "atlas.parquet", resume=True, seq_len=21, n_samples=4,
                       shard_size=2, progress=False)


def test_sharding_does_not_change_scores(tiny_llama_dir):
    one = headscope.scan(str(tiny_llama_dir), seq_len=21, n_samples=12, shard_size=64, progress=False)
    many = headscope.scan(str(tiny_llama_dir), seq_len=21, n_samples=12, shard_size=5, progress=False)
    import numpy as np

    np.testing.assert_allclose(many.frame["value"], one.frame["value"], rtol=1e-12, atol=1e-14)


def test_same_seed_byte_identical_values(tiny_llama_dir, tmp_path):
    paths = [tmp_path / f"{i}.parquet" for i in range(2)]
    for path in paths:
        headscope.scan(str(tiny_llama_dir), out=path, seq_len=21, n_samples=6, seed=5, progress=False)
    values = [read_atlas(p).frame["value"].to_numpy().tobytes() for p in paths]
    assert values[0] == values[1]
