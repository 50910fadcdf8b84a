"""Ships on the embedded SmolLM2: one batched pass per prompt (with and without prefix reuse) vs the official
one-forward-per-(head, prompt) loop, on the same prompt, in one run; prints times per head and the ratios.

The official loop is timed on a sample of heads spread over all layers (every head costs one full forward there)
and extrapolated to all 270; the batched variants score every head. KLs are compared where both exist.
Run: .venv/bin/python benchmarks/safety.py [n_loop_heads]
"""

from __future__ import annotations

import sys
import time

import torch

from headscope.analyzers.safety import SafetyHeadAnalyzer, _copies
from headscope.analyzers.safety_math import ships_kl
from headscope.circuits.ablation import HeadAblation, ablate_heads
from headscope.engine import load_backend
from headscope.probes.request_prompts import request_prompt_ids
from headscope.probes.safety import load_safety_requests


def batched(backend, prompt: list[int], *, reuse_prefix: bool) -> tuple[float, torch.Tensor]:
    analyzer = SafetyHeadAnalyzer(reuse_prefix=reuse_prefix, rows_per_pass=64)
    analyzer.reset(backend.spec)
    started = time.perf_counter()
    analyzer.score_ships(backend, [prompt], HeadAblation("scale", 1e-4))
    return time.perf_counter() - started, analyzer.kl[0]


def one_by_one(backend, prompt: list[int], heads: list[tuple[int, int]]) -> tuple[float, dict]:
    started = time.perf_counter()
    base = backend.last_token(_copies(prompt, 1)).logits[0]
    scores = {}
    for head in heads:
        with ablate_heads(backend, [head], HeadAblation("scale", 1e-4)):
            scores[head] = float(ships_kl(base, backend.last_token(_copies(prompt, 1)).logits[0]))
    return time.perf_counter() - started, scores


def main(n_loop_heads: int = 30) -> None:
    torch.set_num_threads(2)
    backend = load_backend("smollm2-135m-instruct", quiet=True)
    request = load_safety_requests(kind="harmful", split="train", n_samples=1)[0][0].request
    prompt = request_prompt_ids(backend.tokenizer, request)
    spec = backend.spec
    n_heads = spec.n_layers * spec.n_heads
    heads = [(layer, (layer * 7) % spec.n_heads) for layer in range(spec.n_layers)][:n_loop_heads]
    backend.last_token(_copies(prompt, 1))  # warm-up

    loop_time, loop_scores = one_by_one(backend, prompt, heads)
    plain_time, plain_kl = batched(backend, prompt, reuse_prefix=False)
    reuse_time, reuse_kl = batched(backend, prompt, reuse_prefix=True)
    loop_all = loop_time / len(heads) * n_heads
    worst = max(abs(loop_scores[h] - float(reuse_kl[h])) / max(loop_scores[h], 1e-9) for h in heads)
    print(f"prompt: {len(prompt)} tokens, {n_heads} heads, {torch.get_num_threads()} threads")
    print(f"one forward per head (official): {loop_all:7.1f} s  (timed {len(heads)} heads, extrapolated)")
    print(f"batched, full passes:            {plain_time:7.1f} s  {loop_all / plain_time:5.2f}x faster")
    print(f"batched + prefix reuse:          {reuse_time:7.1f} s  {loop_all / reuse_time:5.2f}x faster")
    print(f"max relative KL difference vs the loop: {worst:.2e}; full vs reuse: {(plain_kl - reuse_kl).abs().max():.2e}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
