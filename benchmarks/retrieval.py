"""Retrieval-head scoring at long context: wall time and peak memory per context length.

Each length runs in its own process (peak RSS is per process): load SmolLM2, build one needle-in-a-haystack
prompt, score it (chunked prefill + greedy decoding with per-step attention rows). Reported: prompt tokens,
prefill and decode seconds, peak RSS, and peak RSS above the loaded model. With --compare-chunk, the same
prompt is also run with a one-shot prefill (chunk = prompt length) to show the O(T^2) cost avoided.

    python benchmarks/retrieval.py --lengths 1k,2k,4k,8k
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(length: int, chunk: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from headscope.analyzers.retrieval import RetrievalAnalyzer
    from headscope.analyzers.base import ScanContext
    from headscope.engine import load_backend

    backend = load_backend("smollm2-135m-instruct", quiet=True)
    analyzer = RetrievalAnalyzer(context_lengths=(length,), n_depths=1, n_samples=1, prefill_chunk=chunk)
    ctx = ScanContext(backend.spec, backend.tokenizer)
    suite = analyzer.build_suite(ctx)
    prompt = suite.sequences[0]
    chunk = chunk if chunk > 0 else len(prompt)
    analyzer = RetrievalAnalyzer(context_lengths=(length,), n_depths=1, n_samples=1, prefill_chunk=chunk)
    base = rss_mib()
    t0 = time.perf_counter()
    with torch.inference_mode():
        backend.prefill(torch.tensor([prompt[:-1]]), chunk=chunk)
    prefill_s = time.perf_counter() - t0
    analyzer.reset(backend.spec)
    t1 = time.perf_counter()
    analyzer.score_suite(backend, suite)
    total_s = time.perf_counter() - t1
    log = analyzer.sample_log[0]
    return {
        "context_length": length, "prompt_tokens": len(prompt), "chunk": chunk, "prefill_s": round(prefill_s, 2),
        "score_s": round(total_s, 2), "decode_steps": len(log["generated_ids"]),
        "peak_rss_mib": round(peak_mib()), "peak_over_model_mib": round(peak_mib() - base),
        "kept": bool(log["kept"]), "response": log["response"][:60],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1k,2k,4k,8k")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--compare-chunk", default="", help="lengths also run with a one-shot prefill, e.g. 1k,2k")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.chunk, args.threads)))
        return
    from headscope.scanning import parse_lengths

    runs = [(n, args.chunk) for n in parse_lengths(args.lengths)]
    if args.compare_chunk:
        runs += [(n, 0) for n in parse_lengths(args.compare_chunk)]
    print(f"{'context':>8} {'prompt':>7} {'chunk':>6} {'prefill s':>10} {'score s':>8} {'steps':>6} {'peak RSS MiB':>13} {'over model':>11}")
    for length, chunk in runs:
        out = subprocess.run([sys.executable, __file__, "--one", str(length), "--chunk", str(chunk),
                              "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{length:>8} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['context_length']:>8} {r['prompt_tokens']:>7} {r['chunk']:>6} {r['prefill_s']:>10} {r['score_s']:>8} "
              f"{r['decode_steps']:>6} {r['peak_rss_mib']:>13} {r['peak_over_model_mib']:>11}", flush=True)


if __name__ == "__main__":
    main()
