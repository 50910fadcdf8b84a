"""Ray local speed-up: the same sharded scan of the embedded model with 1 and with 2 Ray workers.

Usage: python benchmarks/ray_speedup.py [--n-samples 64] [--shard-size 8]
Prints wall times (Ray start and model loads included, then excluded) and the 2-vs-1 ratio.
"""

from __future__ import annotations

import argparse
import time

import headscope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    common = dict(n_samples=args.n_samples, shard_size=args.shard_size, progress=False)
    timings = {}
    start = time.perf_counter()
    reference = headscope.scan(args.model, **common)
    timings["in-process"] = time.perf_counter() - start
    for workers in (1, 2):
        start = time.perf_counter()
        atlas = headscope.scan(args.model, ray_address="local", ray_workers=workers, **common)
        timings[f"ray x{workers}"] = time.perf_counter() - start
        assert atlas.frame.equals(reference.frame), "Ray atlas differs from the in-process one"
    for name, seconds in timings.items():
        print(f"{name:12s} {seconds:7.1f} s")
    print(f"speed-up, 2 workers vs 1: {timings['ray x1'] / timings['ray x2']:.2f}x")


if __name__ == "__main__":
    main()
