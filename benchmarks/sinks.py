"""Streaming column sums (sinks analyzer, score_source=qk) vs materialising the full [head, query, key] pattern.

Synthetic q/k of SmolLM2's shape (9 heads, 3 KV heads, d_head 64); prints time and peak-memory ratios.
Run: PYTHONPATH=. python benchmarks/sinks.py [T]
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import torch

from headscope.analyzers.sink_math import stats_from_pattern, stats_from_qk


def full_pattern(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    t = q.shape[2]
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    mask = torch.ones(t, t, dtype=torch.bool).tril()[None, None] & valid[:, None, None, :]
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)


def measure(fn) -> tuple[float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak


def main(t: int = 2048) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(1, 9, t, 64), torch.randn(1, 3, t, 64)
    valid = torch.ones(1, t, dtype=torch.bool)
    scale = 64**-0.5
    torch.set_num_threads(max(1, torch.get_num_threads()))
    streamed = measure(lambda: stats_from_qk(q, k, valid, scale=scale, block_size=256))
    full = measure(lambda: stats_from_pattern(full_pattern(q, k, valid, scale), valid, block_size=t))
    # tracemalloc does not see torch's allocator; report the analytic pattern size too
    print(f"T={t}: streaming {streamed[0]:.2f}s, full pattern {full[0]:.2f}s, time ratio {full[0] / streamed[0]:.2f}x")
    print(f"full pattern per layer: {9 * t * t * 4 / 2**20:.0f} MiB; streaming block: {9 * 256 * t * 4 / 2**20:.0f} MiB "
          f"(ratio {t / 256:.0f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2048)
