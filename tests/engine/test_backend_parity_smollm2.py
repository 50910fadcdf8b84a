"""Backend parity on the real embedded model (SmolLM2-135M-Instruct, Llama, GQA 9/3): same tensors, same
atlas, same top heads from the TransformerLens and nnsight backends."""

from __future__ import annotations

import pytest
import torch

from headscope.engine import Needs, load_backend, pad_sequences
from headscope.scanning import build_analyzers, scan_backend

pytestmark = pytest.mark.slow
TOL = 1e-4


@pytest.fixture(scope="module")
def nnsight_smollm2():
    return load_backend("smollm2-135m-instruct", backend="nnsight", quiet=True)


def test_spec(smollm2_backend, nnsight_smollm2):
    assert nnsight_smollm2.spec == smollm2_backend.spec
    assert (nnsight_smollm2.spec.n_layers, nnsight_smollm2.spec.n_heads, nnsight_smollm2.spec.n_kv_heads) == (30, 9, 3)


def test_tensors(smollm2_backend, nnsight_smollm2):
    ids = smollm2_backend.tokenizer("The cat sat on the mat. The cat sat on the")["input_ids"]
    batch = pad_sequences([[1, *ids], [1, *ids[:6]]], 0)
    valid = batch.attention_mask.bool()
    needs = Needs(pattern=True, q=True, k=True, q_raw=True, v=True, z=True, resid_pre=True, logits=True)
    seen = {}
    for name, backend in (("tl", smollm2_backend), ("nn", nnsight_smollm2)):
        layers = {}
        logits = backend.run(batch, needs, lambda a, layers=layers: layers.__setitem__(a.layer, a))
        seen[name] = (layers, logits)
    (tl_layers, tl_logits), (nn_layers, nn_logits) = seen["tl"], seen["nn"]
    assert float((tl_logits - nn_logits)[valid].abs().max()) < TOL
    for layer in range(30):
        a, b = nn_layers[layer], tl_layers[layer]
        for field in ("q", "k", "q_raw", "v", "z"):  # [batch, head, pos, d]
            diff = (getattr(a, field) - getattr(b, field)).abs().transpose(1, 2)[valid]
            assert float(diff.max()) < TOL, (layer, field)
        assert float((a.resid_pre - b.resid_pre)[valid].abs().max()) < TOL
        rows = (a.pattern - b.pattern).abs()[0]  # the unpadded sequence
        assert float(rows.max()) < TOL, layer


def test_atlas_and_top_heads(smollm2_backend, nnsight_smollm2):
    atlases = [
        scan_backend(b, build_analyzers("classic", shared={"n_samples": 2, "seq_len": 41, "seed": 0}), batch_size=2, progress=False)
        for b in (smollm2_backend, nnsight_smollm2)
    ]
    values = [a.frame.set_index(["analyzer", "metric", "layer", "head"])["value"].sort_index() for a in atlases]
    assert float((values[0] - values[1]).abs().max()) < TOL
    for metric in ("previous_token_score", "duplicate_token_score", "induction_score"):
        tops = [list(zip(a.top(metric, 5)["layer"], a.top(metric, 5)["head"])) for a in atlases]
        assert tops[0] == tops[1], metric
    assert set(atlases[0].frame["backend"]) == {"transformer-lens"}
    assert set(atlases[1].frame["backend"]) == {"nnsight"}  # provenance names the backend that ran
