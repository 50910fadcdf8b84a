"""Every analyzer gives the local atlas under Ray (two local workers) and after an interrupted, resumed scan."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import headscope
from headscope.atlas import Atlas, read_atlas
from headscope.scanning import side_output_path

ray = pytest.importorskip("ray", reason="Ray is the optional extra headscope[ray]")

SMOLLM2 = "smollm2-135m-instruct"
# (analyzers, scan keywords): small sizes; the tokenizer-dependent analyzers need a real tokenizer (SmolLM2)
CASES = {
    "classic": ("classic", dict(seq_len=21, n_samples=8, shard_size=2)),
    "sinks": ("sinks", dict(seq_len=16, n_samples=4, batch_size=2)),
    "select-and-copy": ("select-and-copy", dict(params={"select-and-copy": {"n_samples": 4}})),
    "maps": ("maps", dict(params={"maps": {"layers": (0,), "relations": ("copying",), "n_salient": 2, "n_mappings": 2}})),
    "retrieval": ("retrieval", dict(context_lengths=(300,), params={"retrieval": {"n_samples": 1, "max_new_tokens": 4}})),
    "lookback": ("lookback", dict(params={"lookback": {"n_samples": 2, "max_new_tokens": 4, "n_bootstrap": 5}})),
    "safety": ("safety", dict(params={"safety": {"n_samples": 2, "sahara_steps": 0, "top_k": 3}})),
    "positional": ("positional", dict(seq_len=16, n_samples=4, batch_size=2, shard_size=2)),
}


def assert_same_atlas(got: Atlas, expected: Atlas) -> None:
    """Same rows in the same order, same provenance; values equal up to float noise of other thread counts."""
    a, b = got.frame, expected.frame
    columns = [c for c in b.columns if c != "value"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy(), rtol=1e-6, atol=1e-6, equal_nan=True)


def _model(name: str, tiny_llama_dir) -> str:
    return str(tiny_llama_dir) if name == "classic" else SMOLLM2


@pytest.fixture(scope="module")
def references(tiny_llama_dir, tmp_path_factory):
    """One local scan per case (atlas on disk, with side outputs)."""
    folder = tmp_path_factory.mktemp("reference")
    out = {}
    for name, (analyzers, kwargs) in CASES.items():
        path = folder / f"{name}.parquet"
        atlas = headscope.scan(_model(name, tiny_llama_dir), analyzers, out=path, progress=False, **kwargs)
        out[name] = (atlas, path)
    return out


def test_local_ray_two_workers_equals_single_process(tiny_llama_dir, tmp_path):
    """The scan starts its own local Ray and shuts it down again."""
    common = dict(seq_len=21, n_samples=8, shard_size=2, progress=False)
    single = headscope.scan(str(tiny_llama_dir), **common)
    distributed = headscope.scan(str(tiny_llama_dir), out=tmp_path / "ray.parquet", ray_address="local", ray_workers=2, **common)
    assert distributed.frame.equals(single.frame)
    assert (tmp_path / "ray.parquet").is_file() and not (tmp_path / "ray.parquet.parts").exists()
    assert not ray.is_initialized()  # the local Ray we started is shut down again


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; scans reuse it instead of starting their own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("name", list(CASES))
def test_every_analyzer_on_ray_equals_local(name, references, local_ray, tiny_llama_dir, tmp_path):
    analyzers, kwargs = CASES[name]
    expected, expected_path = references[name]
    out = tmp_path / "ray.parquet"
    got = headscope.scan(_model(name, tiny_llama_dir), analyzers, out=out, ray_address="local", ray_workers=2,
                         progress=False, **kwargs)
    assert_same_atlas(got, expected)
    assert_same_atlas(read_atlas(out), read_atlas(expected_path))
    _assert_same_side_outputs(out, expected_path, expected)


class _Killed(BaseException):
    """Stands for a kill: raised past every handler, as KeyboardInterrupt would be."""


@pytest.mark.parametrize("name", list(CASES))
def test_every_analyzer_resumes_from_its_parts(name, references, tiny_llama_dir, tmp_path, monkeypatch):
    """Killed once every part is written (the atlas not yet): the resumed scan reads all parts, runs nothing."""
    import headscope.scanning.api as api
    import headscope.scanning.execute as execute

    analyzers, kwargs = CASES[name]
    expected, expected_path = references[name]
    out = tmp_path / "atlas.parquet"
    with monkeypatch.context() as patch:
        patch.setattr(Atlas, "save", lambda self, path: (_ for _ in ()).throw(_Killed()))
        with pytest.raises(_Killed):
            headscope.scan(_model(name, tiny_llama_dir), analyzers, out=out, progress=False, **kwargs)
    assert not out.exists() and any((tmp_path / "atlas.parquet.parts").iterdir())

    def must_not_run(*args, **kw):
        raise AssertionError("a finished part was recomputed")

    monkeypatch.setattr(execute, "run_task", must_not_run)
    got = api.scan(_model(name, tiny_llama_dir), analyzers, out=out, resume=True, progress=False, **kwargs)
    assert_same_atlas(got, expected)
    _assert_same_side_outputs(out, expected_path, expected)
    assert not (tmp_path / "atlas.parquet.parts").exists()


def test_killed_mid_scan_resumes_the_rest(references, tiny_llama_dir, tmp_path, monkeypatch):
    """Streaming and driving analyzers together, killed after the first finished task: the rest runs on resume."""
    import headscope.scanning.execute as execute

    kwargs = dict(seq_len=16, n_samples=4, batch_size=2, shard_size=2,
                  params={"maps": {"layers": (0,), "relations": ("copying",), "n_salient": 2, "n_mappings": 2}})
    names = "previous-token,sinks,maps"
    expected = headscope.scan(SMOLLM2, names, progress=False, **kwargs)
    real = execute.run_task
    calls = []

    def killed_on_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise _Killed()
        return real(*args, **kw)

    out = tmp_path / "atlas.parquet"
    with monkeypatch.context() as patch:
        patch.setattr(execute, "run_task", killed_on_second)
        with pytest.raises(_Killed):
            headscope.scan(SMOLLM2, names, out=out, progress=False, **kwargs)
    assert len(list((tmp_path / "atlas.parquet.parts").iterdir())) == 1
    got = headscope.scan(SMOLLM2, names, out=out, resume=True, progress=False, **kwargs)
    assert_same_atlas(got, expected)


def _assert_same_side_outputs(out, expected_path, expected: Atlas) -> None:
    for name in expected.analyzers:
        want, have = side_output_path(expected_path, name), side_output_path(out, name)
        assert want.is_file() == have.is_file(), name
        if want.is_file():
            _assert_same_json(json.loads(have.read_text()), json.loads(want.read_text()))


def _assert_same_json(have, want, where: str = "") -> None:
    """Equal structure and strings; floats to the atlas rows' tolerance (shards batch rows differently, so float32
    sums may round differently in the last bits)."""
    assert type(have) is type(want), where
    if isinstance(want, dict):
        assert have.keys() == want.keys(), where
        for key in want:
            _assert_same_json(have[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(have) == len(want), where
        for i, (h, w) in enumerate(zip(have, want)):
            _assert_same_json(h, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert have == pytest.approx(want, rel=1e-6, abs=1e-6, nan_ok=True), where
    else:
        assert have == want, where
