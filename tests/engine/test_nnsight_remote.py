"""`--remote` (NDIF through nnsight): nothing is sent from here; the request is built and inspected, and
the serialized trace is run through nnsight's local simulation of the server."""

from __future__ import annotations

import pytest
import torch

from headscope.engine import Needs, load_backend, pad_sequences
from headscope.engine.nnsight_backend import NDIF_KEY_VARIABLE, build_remote_request, require_ndif_key
from headscope.errors import HeadscopeError

NEEDS = Needs(pattern=True, rows_only=True, q=True, k=True, q_raw=True, v=True, z=True, resid_pre=True, logits=True)


@pytest.fixture(scope="module")
def nn_llama(tiny_llama_dir):
    return load_backend(str(tiny_llama_dir), backend="nnsight", quiet=True)


def _batch():
    batch = pad_sequences([[1, 5, 6, 7, 8, 9, 10], [1, 12, 13, 14]], 0)
    batch.query_positions = torch.tensor([[2, 6], [1, 3]])
    return batch


def test_missing_key_is_one_line(monkeypatch):
    monkeypatch.delenv(NDIF_KEY_VARIABLE, raising=False)
    with pytest.raises(HeadscopeError, match=NDIF_KEY_VARIABLE) as err:
        require_ndif_key()
    assert "\n" not in str(err.value)
    with pytest.raises(HeadscopeError, match=NDIF_KEY_VARIABLE):
        load_backend("meta-llama/Llama-3.1-8B", backend="nnsight", remote=True)


def test_remote_refuses_what_it_cannot_run(monkeypatch, tiny_llama_dir):
    monkeypatch.setenv(NDIF_KEY_VARIABLE, "test-key")
    with pytest.raises(HeadscopeError, match="nnsight"):
        load_backend("meta-llama/Llama-3.1-8B", backend="transformer-lens", remote=True)
    with pytest.raises(HeadscopeError, match="hub id"):
        load_backend(str(tiny_llama_dir), backend="nnsight", remote=True)


def test_request_is_built_not_sent(monkeypatch, nn_llama):
    monkeypatch.setenv(NDIF_KEY_VARIABLE, "test-key")
    request = build_remote_request(nn_llama, _batch(), NEEDS, model_key="nnsight.modeling.transformers.TransformersModel:tiny")
    assert request["api_key"] == "test-key"
    assert request["model_key"].endswith(":tiny")
    assert '"model_key":"nnsight.modeling.transformers.TransformersModel:tiny"' in request["metadata"]
    assert request["host"].startswith("https://")
    assert isinstance(request["blob"], bytes) and len(request["blob"]) > 100


def test_serialized_trace_matches_local_run(nn_llama):
    """The body shipped to the server, run by nnsight's local simulation, hands over the same tensors."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    batch = _batch()
    local, remote = [], []
    local_logits = nn_llama.run(batch, NEEDS, local.append)
    encoding = nn_llama._encoding(batch.input_ids, batch.attention_mask)
    remote_logits = nn_llama._run_remote(
        encoding, NEEDS, remote.append, batch.query_positions, backend=LocalSimulationBackend(nn_llama.model)
    )
    torch.testing.assert_close(remote_logits, local_logits, atol=0, rtol=0)
    assert [a.layer for a in remote] == [a.layer for a in local] == [0, 1]
    for a, b in zip(local, remote):
        for field in ("pattern", "q", "k", "q_raw", "v", "z", "resid_pre"):
            torch.testing.assert_close(getattr(b, field), getattr(a, field), atol=0, rtol=0)
        assert b.pattern.shape == (2, 4, 2, 7)  # rows selected on the server
