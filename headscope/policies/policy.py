"""A head-wise KV-cache policy: which KV heads keep their whole cache ("full"), which keep only `sink` + `window`
tokens ("streaming"), for one model shape, with where the choice came from.

Two on-disk forms:
  policy.json               headscope's own: shape, budget, sink/window, the full KV heads, the per-KV-head scores
                            of the ranking, and provenance (atlas file and hash, rule, metrics, analyzer params).
  full_attention_heads.tsv  DuoAttention's (mit-han-lab/duo-attention, `duo_attn/utils.py`): rows = layers,
  + config.json             columns = KV heads, tab-delimited as `np.savetxt` writes it; `config.json` holds
                            `sink_size` and `recent_size`. DuoAttention loads it with `np.loadtxt` + clip to [0, 1]
                            and binarises with `threshold = np.quantile(gates, sparsity)`, full = gates >= threshold;
                            kvpress' DuoAttentionPress streams the round(n * ratio) lowest gates.
The gates are graded, not 0/1 (a 0/1 matrix does not survive the quantile threshold: its interpolated quantile
is 0 for most budgets, and every head would be full): the kept heads get 1.0 down to 0.75 and the streaming heads
0.25 down to 0.0, in ranking order. Then DuoAttention's binarisation at `sparsity = 1 - budget` (written into
config.json as `sparsity`) selects exactly this policy's heads (the threshold falls in the 0.25-0.75 gap: its
interpolation weight is n_full / n, far above their 1e-6 tie noise), and other sparsities follow the ranking.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headscope.atomic import atomic_write_json, atomic_write_text
from headscope.errors import HeadscopeError
from headscope.policies.rank import Ranking, Shape
from headscope.strict_json import load_json

FORMAT = "headscope-kv-policy"
VERSION = 1
DUO_GATES = "full_attention_heads.tsv"
DUO_CONFIG = "config.json"


@dataclass
class KVPolicy:
    """Full KV heads of one model shape; the rest stream through `sink` + `window` tokens."""

    model: str
    shape: Shape
    budget: float  # fraction of KV heads kept full
    sink: int
    window: int
    full: list[tuple[int, int]]  # (layer, kv_head)
    order: list[tuple[int, int]]  # every KV head, most needed first (the ranking the budget cuts)
    rule: str
    provenance: dict = field(default_factory=dict)
    scores: list[list[float | None]] | None = None  # [layer][kv_head] ranking scores (None = NaN)

    @property
    def streaming(self) -> list[tuple[int, int]]:
        kept = set(self.full)
        return [(l, h) for l in range(self.shape.n_layers) for h in range(self.shape.n_kv_heads) if (l, h) not in kept]

    def at_budget(self, budget: float, *, rule: str | None = None) -> "KVPolicy":
        """The same ranking cut at another budget."""
        check_budget(budget)
        n_full = n_full_heads(budget, self.shape)
        return KVPolicy(self.model, self.shape, budget, self.sink, self.window, sorted(self.order[:n_full]),
                        list(self.order), rule or self.rule, dict(self.provenance), self.scores)

    def lowest(self, budget: float) -> "KVPolicy":
        """The control: the lowest-ranked heads kept full instead."""
        reversed_order = list(reversed(self.order))
        n_full = n_full_heads(budget, self.shape)
        return KVPolicy(self.model, self.shape, budget, self.sink, self.window, sorted(reversed_order[:n_full]),
                        reversed_order, f"lowest-{self.rule}", dict(self.provenance), self.scores)

    def random(self, budget: float, seed: int) -> "KVPolicy":
        """The control: `budget` of the KV heads kept full, drawn with `seed` (the same draw for the same seed)."""
        heads = [(l, h) for l in range(self.shape.n_layers) for h in range(self.shape.n_kv_heads)]
        random.Random(seed).shuffle(heads)
        n_full = n_full_heads(budget, self.shape)
        return KVPolicy(self.model, self.shape, budget, self.sink, self.window, sorted(heads[:n_full]), heads,
                        f"random-seed{seed}", {"seed": seed}, None)

    def gates(self) -> np.ndarray:
        """[layer, kv_head] DuoAttention gates: kept heads 1.0 -> 0.75, streaming heads 0.25 -> 0.0, by rank."""
        gates = np.zeros((self.shape.n_layers, self.shape.n_kv_heads))
        kept = set(self.full)
        full_order = [lh for lh in self.order if lh in kept]
        stream_order = [lh for lh in self.order if lh not in kept]
        for rank, lh in enumerate(full_order):
            gates[lh] = 1.0 - 0.25 * rank / max(len(full_order) - 1, 1)
        for rank, lh in enumerate(stream_order):
            gates[lh] = 0.25 - 0.25 * rank / max(len(stream_order) - 1, 1)
        return gates

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["shape"] = asdict(self.shape)
        payload["full"] = [list(x) for x in self.full]
        payload["order"] = [list(x) for x in self.order]
        return {"format": FORMAT, "version": VERSION, **payload}

    def save(self, folder: str | Path) -> Path:
        """Write policy.json, full_attention_heads.tsv and config.json into `folder`; returns the policy.json path."""
        folder = Path(folder)
        buffer = io.StringIO()
        np.savetxt(buffer, self.gates(), delimiter="\t")
        atomic_write_text(folder / DUO_GATES, buffer.getvalue())
        atomic_write_json(folder / DUO_CONFIG, {"sink_size": self.sink, "recent_size": self.window,
                                                "sparsity": 1.0 - len(self.full) / self.shape.n_kv_total})
        return atomic_write_json(folder / "policy.json", self.to_json())


def n_full_heads(budget: float, shape: Shape) -> int:
    """round(budget x KV heads), as kvpress rounds its compression ratio."""
    return int(round(budget * shape.n_kv_total))


def check_budget(budget: float) -> None:
    if not 0.0 <= budget <= 1.0:
        raise HeadscopeError(f"budget {budget} is outside [0, 1]: give the fraction of KV heads kept full (e.g. 0.25)")


def check_window(sink: int, window: int) -> None:
    if sink < 0 or window < 1:
        raise HeadscopeError(f"sink {sink} / window {window} are invalid: use sink >= 0 and window >= 1 tokens")


def policy_from_ranking(ranking: Ranking, budget: float, *, sink: int = 4, window: int = 128) -> KVPolicy:
    """Keep the round(budget x KV heads) best-ranked KV heads full."""
    check_budget(budget)
    check_window(sink, window)
    order = ranking.order()
    n_full = n_full_heads(budget, ranking.shape)
    scores = [[float(v) if np.isfinite(v) else None for v in row] for row in ranking.scores]  # strict JSON: no inf/NaN
    provenance = {**ranking.provenance, "metrics": list(ranking.metrics), "aggregation": ranking.aggregation}
    return KVPolicy(ranking.model, ranking.shape, budget, sink, window, sorted(order[:n_full]), order,
                    ranking.rule, provenance, scores)


def read_policy(path: str | Path) -> KVPolicy:
    """Read policy.json (or a folder holding one); refuses anything else in one line."""
    path = Path(path)
    if path.is_dir():
        path = path / "policy.json"
    fix = "pass a policy.json written by `headscope policy`"
    if not path.is_file():
        raise HeadscopeError(f"no policy file at {path}: {fix}")
    return policy_from_json(load_json(path.read_bytes(), origin=str(path), fix=fix), origin=str(path))


def policy_from_json(data: Any, *, origin: str) -> KVPolicy:
    """A policy from its parsed JSON (checked: format, version, fields, heads inside the shape, budget, window)."""
    fix = "pass a policy.json written by `headscope policy`"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HeadscopeError(f"{origin} is not a headscope KV policy: {fix}")
    if data.get("version") != VERSION:
        raise HeadscopeError(f"{origin} is policy format version {data.get('version')}, this headscope reads {VERSION}: {fix}")
    try:
        shape = Shape(**{k: int(data["shape"][k]) for k in ("n_layers", "n_heads", "n_kv_heads")})
        full = [(int(l), int(h)) for l, h in data["full"]]
        order = [(int(l), int(h)) for l, h in data["order"]]
        policy = KVPolicy(str(data["model"]), shape, float(data["budget"]), int(data["sink"]), int(data["window"]),
                          full, order, str(data["rule"]), dict(data.get("provenance") or {}), data.get("scores"))
    except (KeyError, TypeError, ValueError) as err:
        raise HeadscopeError(f"{origin} misses or mangles a policy field ({err}): {fix}") from None
    if shape.n_layers < 1 or shape.n_kv_heads < 1 or shape.n_heads % shape.n_kv_heads:
        raise HeadscopeError(f"{origin} has an impossible head layout {shape}: {fix}")
    every = {(l, h) for l in range(shape.n_layers) for h in range(shape.n_kv_heads)}
    if sorted(order) != sorted(every) or not set(full) <= every:
        raise HeadscopeError(f"{origin} names KV heads outside its {shape.n_layers}x{shape.n_kv_heads} shape: {fix}")
    check_budget(policy.budget)
    check_window(policy.sink, policy.window)
    return policy


def describe(policy: KVPolicy) -> str:
    return json.dumps({"model": policy.model, "rule": policy.rule, "budget": policy.budget,
                       "full_kv_heads": len(policy.full), "of": policy.shape.n_kv_total,
                       "sink": policy.sink, "window": policy.window})
