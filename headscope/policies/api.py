"""One-call entry points for `headscope policy` and `headscope evaluate-policy` (and notebooks)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from headscope.atlas import Atlas, read_atlas
from headscope.policies.evaluate import PolicyEvaluation, check_lengths
from headscope.policies.policy import KVPolicy, check_budget, policy_from_ranking, read_policy
from headscope.policies.rank import rank_kv_heads

if TYPE_CHECKING:
    from headscope.engine import Backend


def make_policy(atlas_path: str | Path, *, out: str | Path | None = None, rule: str = "retrieval",
                aggregation: str = "max", budget: float = 0.25, sink: int = 4, window: int = 128,
                model: str | None = None, metric: str | None = None, direction: str = "higher") -> KVPolicy:
    """Rank the KV heads of one model in the atlas at `atlas_path`, keep `budget` of them full, and (with `out`)
    write policy.json + DuoAttention's full_attention_heads.tsv and config.json into that folder."""
    from headscope import __version__

    check_budget(budget)
    atlas = read_atlas(atlas_path)
    ranking = rank_kv_heads(atlas, rule=rule, aggregation=aggregation, model=model, metric=metric, direction=direction)
    ranking.provenance.update({
        "atlas": str(atlas_path),
        "atlas_sha256": hashlib.sha256(Path(atlas_path).read_bytes()).hexdigest(),
        "direction": direction,
        "headscope_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    policy = policy_from_ranking(ranking, budget, sink=sink, window=window)
    if out is not None:
        policy.save(out)
    return policy


def evaluate(model: "str | Backend", policy_path: str | Path, *, out: str | Path | None = None,
             context_lengths: Sequence[int] = (2000,), budgets: Sequence[float] = (0.1, 0.25, 0.5),
             n_needles: int = 4, random_seeds: int = 3, max_new_tokens: int = 32, backend: str = "auto",
             device: str = "cpu", dtype: str = "float32", progress: bool = True,
             **params: Any) -> tuple[Atlas, PolicyEvaluation]:
    """Run the kv-policy analyzer on `model` (an id, or an already loaded backend to reuse) and return the atlas of
    its model-level rows (also written to `out` with the side output beside it) and the evaluation (`table()`,
    `figure()`). Bad inputs are refused before the model loads or runs."""
    from headscope.atomic import atomic_write_json
    from headscope.engine import load_backend
    from headscope.paths import check_output_path
    from headscope.scanning import RunSettings, build_analyzers, execute_scan, side_output_path

    read_policy(policy_path)  # refused here, before the model loads, when the file is not a policy
    for budget in budgets:
        check_budget(budget)
    check_lengths(list(context_lengths), max_new_tokens, 10**9)
    if out is not None:
        check_output_path(out, what="--out")
    settings = {"policy": str(policy_path), "context_lengths": tuple(int(n) for n in context_lengths),
                "budgets": tuple(float(b) for b in budgets), "n_samples": int(n_needles),
                "random_seeds": int(random_seeds), "max_new_tokens": int(max_new_tokens), **params}
    built = build_analyzers(["kv-policy"], params={"kv-policy": settings})
    loaded = load_backend(model, backend=backend, device=device, dtype=dtype, quiet=not progress) if isinstance(model, str) else model
    run = RunSettings(model=loaded.model_id, backend=loaded.name, device=str(loaded.device),
                      dtype=str(loaded.dtype).removeprefix("torch."))
    result = execute_scan(loaded, built, run, progress=progress, exemplars=False)
    side = result.side_outputs["kv-policy"]
    if out is not None:
        result.atlas.save(out)
        atomic_write_json(side_output_path(out, "kv-policy"), side)
    return result.atlas, evaluation_from_side_output(side)


def evaluation_from_side_output(data: dict[str, Any]) -> PolicyEvaluation:
    """The PolicyEvaluation a kv-policy scan wrote as `<atlas>.kv-policy.json`."""
    return PolicyEvaluation(str(data["model"]), str(data["rule"]), int(data["sink"]), int(data["window"]),
                            list(data["rows"]))
