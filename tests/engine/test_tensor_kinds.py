"""The tensor kinds come from one table: Needs, LayerActivations, interventions and both backends follow it."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from headscope.engine import LayerActivations, Needs, ProbeBatch, load_backend
from headscope.engine.activations import HEAD_KINDS, KINDS, TENSOR_KINDS
from headscope.engine.intervention import TENSORS


def test_needs_and_activations_have_one_slot_per_kind():
    assert [f.name for f in fields(Needs) if f.name not in ("rows_only", "logits")] == list(KINDS)
    assert [f.name for f in fields(LayerActivations) if f.name not in ("layer", "step")] == list(KINDS)
    assert TENSORS == HEAD_KINDS == tuple(k.name for k in TENSOR_KINDS if k.per_head)


def test_or_joins_every_kind():
    every = Needs(**{kind: True for kind in KINDS})
    joined = Needs()
    for kind in KINDS:
        joined = joined | Needs(**{kind: True})
    assert joined == every and joined.kinds() == KINDS
    assert (Needs(pattern=True, rows_only=True) | Needs(q=True)).rows_only  # q alone does not need full rows
    assert not (Needs(pattern=True, rows_only=True) | Needs(pattern=True)).rows_only


@pytest.mark.parametrize("backend_name", ["transformer-lens", "nnsight"])
def test_every_backend_hands_over_every_kind(tiny_llama_dir, backend_name):
    backend = load_backend(str(tiny_llama_dir), backend=backend_name, quiet=True)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    seen: dict[int, LayerActivations] = {}
    backend.run(ProbeBatch(ids, torch.ones_like(ids)), Needs(**{kind: True for kind in KINDS}),
                lambda acts: seen.setdefault(acts.layer, acts))
    assert sorted(seen) == list(range(backend.spec.n_layers))
    for acts in seen.values():
        missing = [kind for kind in KINDS if not isinstance(getattr(acts, kind), torch.Tensor)]
        assert not missing, f"{backend_name} did not hand over {missing}"


def test_the_nnsight_read_table_covers_every_kind_in_execution_order():
    from headscope.engine.nnsight_backend import KIND_READS, SITES_IN_ORDER, read_plan

    assert set(KIND_READS) == set(KINDS)
    plan = read_plan(KINDS, has_rotary=True)
    assert [SITES_IN_ORDER.index(site) for _, site, _ in plan] == sorted(SITES_IN_ORDER.index(site) for _, site, _ in plan)
    # without a rotary embedding (GPT-2) the raw q/k are the attention call's own q/k
    flat = {kind: (site, index) for kind, site, index in read_plan(KINDS, has_rotary=False)}
    assert flat["q_raw"] == flat["q"] == ("attention_input", 1) and flat["k_raw"] == flat["k"]
    # fused qkv (no separate q/k projection calls): the projected q/k are the raw ones; separate ones are read first
    fused = {kind: (site, index) for kind, site, index in read_plan(KINDS, has_rotary=True, has_projections=False)}
    assert fused["q_proj"] == fused["q_raw"] and fused["k_proj"] == fused["k_raw"]
    split = read_plan(KINDS, has_rotary=True, has_projections=True)
    assert [kind for kind, site, _ in split if site == "projection_output"] == ["q_proj", "k_proj"]
