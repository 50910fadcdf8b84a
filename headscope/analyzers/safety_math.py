"""The two formulas of safety-head attribution (Zhou et al. 2024), in one place each.

Ships (ydyjya/SafetyHeadAttribution `lib/SHIPS/pd_diff.py`): KL(p_base || p_ablated) of the next-token
distribution, with 1e-12 added to both distributions before the log.
Sahara (`lib/Sahara/svd.py`, `compute_subspace_similarity`): the principal angle, in degrees, between the top-1
left singular vectors of the [query, d_model] last-token representations with and without the ablation:
arccos(|u . u'|).
"""

from __future__ import annotations

import math

import torch

KL_EPSILON = 1e-12


def ships_kl(base_logits: torch.Tensor, ablated_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_base || p_ablated) per row: logits [..., vocab] -> [...] (float64)."""
    base = torch.softmax(base_logits.double(), dim=-1) + KL_EPSILON
    ablated = torch.softmax(ablated_logits.double(), dim=-1) + KL_EPSILON
    return (base * (base / ablated).log()).sum(-1)


def top_left_singular_vector(hidden: torch.Tensor) -> torch.Tensor:
    """u1 of hidden [query, d_model] (length = number of queries), in float64."""
    u, _, _ = torch.linalg.svd(hidden.double(), full_matrices=False)
    return u[:, 0]


def subspace_angle(base_u: torch.Tensor, hidden: torch.Tensor) -> float:
    """Sahara's angle in degrees between `base_u` (u1 of the intact model) and u1 of `hidden`."""
    cosine = float(torch.dot(base_u, top_left_singular_vector(hidden)).abs().clamp(max=1.0))
    return math.degrees(math.acos(cosine))
