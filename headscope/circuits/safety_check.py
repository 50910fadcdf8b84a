"""The causal check of safety-head attribution: do the top Ships heads carry refusal?

Ablate the top-k Ships heads, and separately `random_sets` sets of k random heads (drawn, seeded, from outside
the top k), greedy-decode held-out harmful requests, and compare refusal rates (refusals detected by
`headscope.probes.safety.is_refusal`). As the paper's generation check (`ships_generate`), the ablation acts on
every position and every decoding step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from headscope.circuits.ablation import HeadAblation, ablate_heads, random_head_sets
from headscope.circuits.refusal import generate_responses
from headscope.engine import Backend, Head
from headscope.errors import HeadscopeError
from headscope.probes.safety import refusal_rate



@dataclass
class RefusalCheck:
    """Refusal rate on the same requests: intact, top-k heads ablated, and each random set ablated."""

    k: int
    top_heads: list[Head]
    random_heads: list[list[Head]]
    intact: float
    top: float
    random: list[float] = field(default_factory=list)
    responses: dict[str, list[str]] = field(default_factory=dict)

    @property
    def random_mean(self) -> float:
        return sum(self.random) / len(self.random) if self.random else float("nan")

    def as_metrics(self) -> dict[str, float]:
        return {"refusal_rate_intact": self.intact, f"refusal_rate_ablate_top{self.k}": self.top,
                f"refusal_rate_ablate_random{self.k}": self.random_mean}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["top_heads"] = [f"{l}-{h}" for l, h in self.top_heads]
        out["random_heads"] = [[f"{l}-{h}" for l, h in heads] for heads in self.random_heads]
        return out


def refusal_ablation_check(
    backend: Backend,
    requests: Sequence[str],
    top_heads: Sequence[Head],
    *,
    ablation: HeadAblation = HeadAblation(),
    random_sets: int = 3,
    seed: int = 0,
    exclude: Sequence[Head] = (),
    max_new_tokens: int = 32,
    style: str = "chat",
) -> RefusalCheck:
    """Refusal rate on `requests` intact, with `top_heads` ablated, and with as many random heads ablated."""
    if not requests:
        raise HeadscopeError("the refusal check needs at least one harmful request")
    k = len(top_heads)
    random_heads = random_head_sets(backend.spec.n_layers, backend.spec.n_heads, k, random_sets, seed=seed, exclude=list(exclude) or list(top_heads))

    def rate(heads: Sequence[Head], label: str, responses: dict[str, list[str]]) -> float:
        with ablate_heads(backend, heads, ablation):
            texts = generate_responses(backend, list(requests), max_new_tokens=max_new_tokens, style=style)
        responses[label] = texts
        return refusal_rate(texts)

    responses: dict[str, list[str]] = {}
    intact = rate([], "intact", responses)
    top = rate(top_heads, f"top{k}", responses)
    randoms = [rate(heads, f"random{i}", responses) for i, heads in enumerate(random_heads)]
    return RefusalCheck(k, list(top_heads), random_heads, intact, top, randoms, responses)
