"""Time and peak memory of the two backends side by side, on the embedded SmolLM2 (or any model).

Each backend runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own; on CUDA the
peak allocated GPU memory is reported too. Measured per backend: load, one classic scan (the three
pattern analyzers on their shared repeated-token suite, one forward pass per batch), and greedy KV-cached
decoding that hands every step's pattern to a callback.

    PYTHONPATH=. python benchmarks/backends.py                       # SmolLM2, CPU, defaults
    PYTHONPATH=. python benchmarks/backends.py --model gemma3-270m --n-samples 8 --decode 16

Prints a table and the nnsight / transformer-lens ratios; `--json` writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("transformer-lens", "nnsight")


def measure(backend_name: str, args: argparse.Namespace) -> dict[str, float]:
    """Run inside the child process: load, scan, decode; return seconds and peak memory."""
    import torch

    from headscope.engine import Needs, load_backend
    from headscope.scanning import build_analyzers, scan_backend

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    backend = load_backend(args.model, backend=backend_name, device=args.device, quiet=True)
    load_s = time.perf_counter() - started
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    analyzers = build_analyzers("classic", shared={"n_samples": args.n_samples, "seq_len": args.seq_len, "seed": 0})
    started = time.perf_counter()
    atlas = scan_backend(backend, analyzers, batch_size=args.batch_size, progress=False)
    scan_s = time.perf_counter() - started

    prompt = list(range(10, 10 + args.prompt_len))
    if backend.spec.bos_token_id is not None:
        prompt[0] = backend.spec.bos_token_id
    rows = []
    started = time.perf_counter()
    backend.decode(prompt, max_new_tokens=args.decode, needs=Needs(pattern=True), on_layer=lambda a: rows.append(a.pattern.shape))
    decode_s = time.perf_counter() - started
    top = atlas.top("induction_score", 3) if hasattr(atlas, "top") else None
    result = {
        "load_s": load_s,
        "scan_s": scan_s,
        "decode_s": decode_s,
        "decode_ms_per_token": 1000 * decode_s / max(1, args.decode),
        "peak_rss_after_load_mib": rss_loaded,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.device.startswith("cuda"):
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if top is not None:
        result["top_induction"] = [f"L{int(r.layer)}H{int(r.head)}" for r in top.itertuples()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=101)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--decode", type=int, default=32, help="greedy tokens to decode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", choices=BACKENDS, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()

    if args.one:
        print(json.dumps(measure(args.one, args)))
        return

    results = {}
    for name in BACKENDS:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--one", name], capture_output=True, text=True, check=False
        )
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])

    tl, nn = results["transformer-lens"], results["nnsight"]
    print(f"model {args.model} on {args.device}: classic scan of {args.n_samples} x {args.seq_len} tokens "
          f"(batch {args.batch_size}); greedy decode of {args.decode} tokens after a {args.prompt_len}-token prompt")
    print(f"{'':28}{'transformer-lens':>18}{'nnsight':>12}{'ratio nn/tl':>13}")
    for key in [k for k in tl if not k.startswith("top")]:
        ratio = nn[key] / tl[key] if tl[key] else float("nan")
        print(f"{key:28}{tl[key]:>18.2f}{nn[key]:>12.2f}{ratio:>13.2f}")
    print(f"top induction heads: TL {tl.get('top_induction')}  nnsight {nn.get('top_induction')}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
