"""Scan overhead on the embedded model: scan time / bare forward time, and peak memory vs run_with_cache.

Each measurement runs in a fresh subprocess; its peak RSS (VmHWM) is reset after loading and a warm-up
so the reported memory is what the first run of the measured mode adds on top of the loaded model. Usage:

    python benchmarks/scan_overhead.py [--batch 4] [--seq-len 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from memory import peak_mb, reset_peak, rss_mb  # benchmarks/memory.py (scripts run from this folder)

MODES = ("forward", "scan", "run_with_cache")




def measure(mode: str, batch_size: int, seq_len: int, repeats: int) -> dict:
    import torch

    from headscope.analyzers import DuplicateTokenAnalyzer, InductionAnalyzer, PreviousTokenAnalyzer, ScanContext, suite_batches
    from headscope.engine import Recorder, load_backend

    torch.set_grad_enabled(False)
    backend = load_backend("smollm2-135m-instruct", quiet=True)
    analyzers = [cls(seq_len=seq_len, n_samples=batch_size) for cls in (PreviousTokenAnalyzer, DuplicateTokenAnalyzer, InductionAnalyzer)]
    ctx = ScanContext(backend.spec, backend.tokenizer, batch_size=batch_size)
    suite = analyzers[0].build_suite(ctx)
    batch = next(suite_batches(suite, ctx))
    bridge = backend.bridge

    def once() -> None:
        if mode == "forward":
            bridge(batch.input_ids, attention_mask=batch.attention_mask, return_type=None)
        elif mode == "scan":
            for a in analyzers:
                a.start(ctx, suite)
            Recorder(backend, progress=False).record([batch], analyzers)
        else:
            _, cache = bridge.run_with_cache(
                batch.input_ids, attention_mask=batch.attention_mask, names_filter=lambda n: n.endswith("hook_pattern")
            )
            del cache

    import gc

    gc.collect()
    loaded = rss_mb()
    reset_peak()
    once()  # warm-up; its peak is the memory figure (later runs reuse the freed heap)
    peak = peak_mb() - loaded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return {"mode": mode, "median_s": statistics.median(times), "peak_extra_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch, args.seq_len, args.repeats)))
        return
    results = {}
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--batch", str(args.batch), "--seq-len", str(args.seq_len),
             "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    patterns_gb = 30 * 9 * args.seq_len**2 * args.batch * 4 / 2**30
    print(f"SmolLM2-135M fp32, batch {args.batch} x {args.seq_len} tokens, median of {args.repeats}")
    for mode in MODES:
        r = results[mode]
        print(f"  {mode:15s} {r['median_s']:7.2f} s   peak extra RSS {r['peak_extra_mb']:8.0f} MB")
    ratio = results["scan"]["median_s"] / results["forward"]["median_s"]
    mem_ratio = results["scan"]["peak_extra_mb"] / max(results["run_with_cache"]["peak_extra_mb"], 1)
    print(f"scan / bare forward time: {ratio:.2f}x")
    print(f"scan / run_with_cache(all patterns) peak extra memory: {mem_ratio:.2f}x "
          f"(all patterns would be {patterns_gb:.2f} GB)")


if __name__ == "__main__":
    main()
