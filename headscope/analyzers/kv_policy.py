"""kv-policy: needle-in-a-haystack accuracy under a head-wise KV-cache policy (docs/policies.md).

A driving analyzer so the evaluation lands in the atlas as model-level rows (layer = head = -1) with the scan's
provenance, and the explorer shows it: full cache, the policy's ranking cut at each budget, the lowest-ranked
heads kept instead, and random policies of the same budget (seeds 0..random_seeds-1, mean and spread).
The work itself is `headscope.policies.evaluate.evaluate_policy`; the policy file is read in `build_suite`
(refused there, before any model run, when it does not fit the model) and travels in the suite's details.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext
from headscope.analyzers.metrics import MetricDoc
from headscope.engine import Backend
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.needle_haystack import SUITE, depth_grid, needle_haystack_suite
from headscope.probes.request_prompts import answer_stop_ids


@dataclass(frozen=True)
class KVPolicyParams:
    policy: str = ""  # policy.json (or its folder) written by `headscope policy`
    context_lengths: tuple[int, ...] = (2000,)
    budgets: tuple[float, ...] = (0.1, 0.25, 0.5)  # fractions of KV heads kept full
    n_samples: int = 4  # needles per context length (depths spread over 10-90%)
    random_seeds: int = 3  # random policies per budget (seeds 0..n-1)
    lowest: bool = True  # also the control that keeps the lowest-ranked heads full
    seed: int = 0  # needle placement
    max_new_tokens: int = 32
    prefill_chunk: int = 512
    buffer: int = 200
    chat_template: bool = True
    rouge_threshold: float = 0.5
    source: str = SUITE


class KVPolicyAnalyzer(DrivingAnalyzer):
    name = "kv-policy"
    Params = KVPolicyParams
    metrics = (
        "kv_policy_accuracy_{condition}_ctx{length}", "kv_policy_recall_{condition}_ctx{length}",
        "kv_policy_accuracy_std_{condition}_ctx{length}", "kv_policy_cache_bytes_{condition}_ctx{length}",
    )
    description = "needle accuracy and KV-cache bytes under a head-wise KV policy vs full, random and lowest-ranked"
    metric_docs = {
        "kv_policy_accuracy_{condition}_ctx{length}": MetricDoc(
            "share of needles answered (ROUGE-1 recall > 0.5) with the condition's streaming heads windowed"),
        "kv_policy_recall_{condition}_ctx{length}": MetricDoc("mean ROUGE-1 recall of the needle answers"),
        "kv_policy_accuracy_std_{condition}_ctx{length}": MetricDoc("spread (std) of accuracy over random seeds", "neither"),
        "kv_policy_cache_bytes_{condition}_ctx{length}": MetricDoc("KV-cache bytes the condition needs at that length", "lower"),
    }

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        from headscope.policies.evaluate import check_lengths
        from headscope.policies.policy import check_budget, read_policy

        p = self.params
        if not p.policy:
            raise HeadscopeError("kv-policy needs a policy: --param kv-policy.policy=PATH/policy.json (from `headscope policy`)")
        policy = read_policy(p.policy)
        spec = ctx.spec
        shape = policy.shape
        if (shape.n_layers, shape.n_heads, shape.n_kv_heads) != (spec.n_layers, spec.n_heads, spec.n_kv_heads):
            raise HeadscopeError(
                f"the policy is for {shape.n_layers} layers x {shape.n_heads} heads / {shape.n_kv_heads} KV heads, the model "
                f"has {spec.n_layers} x {spec.n_heads} / {spec.n_kv_heads}: make the policy from this model's atlas")
        for budget in p.budgets:
            check_budget(budget)
        if not p.budgets:
            raise HeadscopeError("kv-policy needs at least one budget (e.g. --param kv-policy.budgets=0.1,0.25,0.5)")
        if p.n_samples < 1 or p.random_seeds < 1 or p.max_new_tokens < 1:
            raise HeadscopeError("kv-policy needs n_samples, random_seeds and max_new_tokens of at least 1")
        check_lengths(p.context_lengths, p.max_new_tokens, spec.n_ctx)
        suite = needle_haystack_suite(ctx.tokenizer, context_lengths=p.context_lengths,
                                      depths=depth_grid(p.n_samples, 10, 90), seed=p.seed, buffer=p.buffer,
                                      chat_template=p.chat_template, source=p.source)
        raw = Path(p.policy if Path(p.policy).is_file() else Path(p.policy) / "policy.json").read_bytes()
        details = {**suite.details, "policy": policy.to_json(), "policy_sha256": hashlib.sha256(raw).hexdigest()}
        return TokenSuite(suite.name, suite.sequences, suite.samples, details)

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        from headscope.policies.evaluate import check_policy_fits, evaluate_policy
        from headscope.policies.policy import policy_from_json

        p = self.params
        policy = policy_from_json(suite.details["policy"], origin="the scan's policy")
        check_policy_fits(policy, backend)
        suites = {}
        for length in p.context_lengths:
            picked = [i for i, s in enumerate(suite.samples) if s["context_length"] == length]
            suites[length] = TokenSuite(suite.name, [suite.sequences[i] for i in picked],
                                        [suite.samples[i] for i in picked], suite.details)
        self.evaluation = evaluate_policy(
            backend, policy, suites, budgets=p.budgets, random_seeds=tuple(range(p.random_seeds)), lowest=p.lowest,
            max_new_tokens=p.max_new_tokens, prefill_chunk=p.prefill_chunk, pass_threshold=p.rouge_threshold,
            stop_token_ids=answer_stop_ids(backend.tokenizer, end_of_turn=True, newline=True))

    def results(self) -> list[HeadValue]:
        return [HeadValue(-1, -1, metric, value, n) for metric, (value, n) in self.evaluation.metric_values().items()]

    def side_output(self) -> dict[str, Any] | None:
        evaluation = getattr(self, "evaluation", None)
        if evaluation is None:
            return None
        return {"model": evaluation.model, "rule": evaluation.rule, "sink": evaluation.sink,
                "window": evaluation.window, "rows": evaluation.rows}
