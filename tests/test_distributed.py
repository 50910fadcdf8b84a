"""Sharded scans on a local Ray with two workers give the single-process atlas."""

from __future__ import annotations

import pytest

import headscope

ray = pytest.importorskip("ray", reason="Ray is the optional extra headscope[ray]")


def test_local_ray_two_workers_equals_single_process(tiny_llama_dir, tmp_path):
    common = dict(seq_len=21, n_samples=8, shard_size=2, progress=False)
    single = headscope.scan(str(tiny_llama_dir), **common)
    distributed = headscope.scan(str(tiny_llama_dir), out=tmp_path / "ray.parquet", ray_address="local", ray_workers=2, **common)
    assert distributed.frame.equals(single.frame)
    assert (tmp_path / "ray.parquet").is_file() and not (tmp_path / "ray.parquet.parts").exists()
    assert not ray.is_initialized()  # the local Ray we started is shut down again
