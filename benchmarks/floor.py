"""Every analyzer next to its floor: scan time / the bare model's own work on the same inputs, and peak memory.

Floors (what the model itself must do to serve the analyzer, nothing of headscope in it):
  sdpa      plain Hugging Face forward, sdpa attention, of every batch of the analyzer's suite
            (analyzers that need only q/k/v/rows: sinks, select-and-copy)
  eager     the same forward with eager attention and `output_attentions=True` (full-pattern analyzers:
            previous-token, duplicate-token, induction)
  generate  plain greedy `generate` of every prompt, exactly `max_new_tokens` new tokens (decoding analyzers:
            retrieval, lookback; they may stop earlier, so their ratio is, if anything, flattered)
  rows      sdpa forwards, last position's logits only, of as many ablated rows as the Ships search runs
            (n_layers x n_heads per prompt, `rows_per_pass` per forward) plus one intact row (safety)
  params    reading every parameter once (a float copy of each tensor; MAPS)

Each cell runs in its own process; the model is loaded, the suite built, and the peak RSS (VmHWM) reset before
the first run, so "peak +MB" is what the first run adds above the loaded model. When that first run took under
`--short-s` seconds it counts as a warm-up and the time is the median of `--repeats` more runs; otherwise the
first run's time is reported ("1 run"). The long-context table runs each (analyzer, length) once. Usage:

    python benchmarks/floor.py                       # both tables, markdown on stdout
    python benchmarks/floor.py --only previous-token,sinks --repeats 3
    python benchmarks/floor.py --long-only --lengths 1024,4096 --long-analyzers sinks,retrieval
    python benchmarks/floor.py --quick               # smaller suites, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from memory import peak_mb, reset_peak, rss_mb  # benchmarks/memory.py (scripts run from this folder)

MODEL = "smollm2-135m-instruct"

# analyzer -> (floor, params for the ratio table, params for --quick)
CELLS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "previous-token": ("eager", {"seq_len": 512, "n_samples": 4}, {"seq_len": 128, "n_samples": 4}),
    "duplicate-token": ("eager", {"seq_len": 512, "n_samples": 4}, {"seq_len": 128, "n_samples": 4}),
    "induction": ("eager", {"seq_len": 512, "n_samples": 4}, {"seq_len": 128, "n_samples": 4}),
    "classic": ("eager", {"seq_len": 512, "n_samples": 4}, {"seq_len": 128, "n_samples": 4}),
    "sinks": ("sdpa", {"seq_len": 512, "n_samples": 4}, {"seq_len": 128, "n_samples": 4}),
    "select-and-copy": ("sdpa", {"n_samples": 16}, {"n_samples": 4}),
    "retrieval": ("generate", {"context_lengths": (1000,), "n_samples": 2, "max_new_tokens": 16},
                  {"context_lengths": (300,), "n_samples": 1, "max_new_tokens": 8}),
    "lookback": ("generate", {"n_samples": 4, "max_new_tokens": 16}, {"n_samples": 2, "max_new_tokens": 8}),
    "safety": ("rows", {"n_samples": 2, "sahara_steps": 0}, {"n_samples": 2, "sahara_steps": 0}),
    "maps": ("params", {}, {}),
}
LONG_ANALYZERS = ("sinks", "retrieval", "lookback", "previous-token")
LENGTHS = (1024, 4096, 8192, 16384, 32768)
# Full-pattern analyzers hold [head, T, T] per layer (eager attention): beyond this the cell is not run.
# Long cells' floors: one sequence, so a full-pattern cell is compared with the eager forward as before.
LONG_FLOOR: dict[str, str] = {}
LONG_MAX = {"previous-token": 4096, "duplicate-token": 4096, "induction": 4096, "classic": 4096}


# --- memory ------------------------------------------------------------------------------------------------


# --- one cell (child process) --------------------------------------------------------------------------------
def make_analyzers(name: str, params: dict[str, Any]) -> list:
    """The analyzers of `name` (a group expands), each given the params it has."""
    from headscope.analyzers.registry import analyzer_class, expand_names

    analyzers = []
    for member in expand_names(name):
        cls = analyzer_class(member)
        fields = set(cls.Params.__dataclass_fields__)
        analyzers.append(cls(**{k: v for k, v in params.items() if k in fields}))
    return analyzers


def build(name: str, params: dict[str, Any], backend: Any, batch_size: int, long_len: int = 0,
          analyzers: list | None = None) -> tuple[list, Any, Any]:
    """The analyzers of `name`, their context and their (shared) suite."""
    from headscope.analyzers import ScanContext

    analyzers = analyzers if analyzers is not None else make_analyzers(name, params)
    ctx = ScanContext(backend.spec, backend.tokenizer, batch_size=batch_size)
    suite = analyzers[0].build_suite(ctx)
    if long_len and name == "sinks":
        suite = long_text_suite(suite, long_len)
    if long_len and name == "lookback":
        suite = long_document_suite(suite, ctx, long_len)
    return analyzers, ctx, suite


def long_text_suite(suite: Any, length: int) -> Any:
    """One sequence of exactly `length` tokens: the shipped natural texts (each shorter than that) end to end,
    repeated, BOS kept only at the front; without this a sinks cell would measure a short text at every length."""
    from headscope.probes import TokenSuite

    first, rest = suite.sequences[0], [s[1:] for s in suite.sequences]
    ids = list(first)
    while len(ids) < length:
        for seq in rest:
            ids.extend(seq)
    return TokenSuite(f"{suite.name}-{length}", [ids[:length]], [suite.samples[0]], suite.details)


def long_document_suite(suite: Any, ctx: Any, length: int) -> Any:
    """The first grounded item with its document lengthened to `length` prompt tokens (the shipped natural texts
    inserted at the end of the context, whose length grows with them): lookback then decodes over `length` keys."""
    from headscope.probes import TokenSuite
    from headscope.probes.natural_text import natural_text_suite

    ids, sample = list(suite.sequences[0]), dict(suite.samples[0])
    texts = natural_text_suite(ctx.tokenizer, seq_len=512, n_samples=64, bos_token_id=None, prepend_bos=False)
    filler = [token for seq in texts.sequences for token in seq]
    need = max(length - len(ids), 0)
    filler = (filler * (need // max(len(filler), 1) + 1))[:need]
    end = sample["context_len"]
    sample["context_len"] = end + need
    return TokenSuite(f"{suite.name}-{length}", [ids[:end] + filler + ids[end:]], [sample], suite.details)


def lift_context(spec: Any, hf_config: Any, n_ctx: int) -> Any:
    """`--stretch-context`: let a model run past its trained context (RoPE computes any position): its outputs
    there mean nothing, but time and memory are what a model of this size with that context costs."""
    import dataclasses

    if n_ctx <= spec.n_ctx:
        return spec
    hf_config.max_position_embeddings = n_ctx
    return dataclasses.replace(spec, n_ctx=n_ctx)


def scan_once(backend: Any, analyzers: list, ctx: Any, suite: Any) -> None:
    from headscope.scanning.execute import run_task

    run_task(backend, ctx, analyzers, suite, "rows")


def floor_once(kind: str, hf: Any, analyzers: list, ctx: Any, suite: Any) -> None:
    import torch

    from headscope.analyzers import suite_batches

    with torch.inference_mode():
        if kind in ("sdpa", "eager"):  # logits of the last position only: no analyzer here reads the others
            for batch in suite_batches(suite, ctx):
                hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=kind == "eager",
                   use_cache=False, logits_to_keep=1)
        elif kind == "generate":
            n_new = analyzers[0].params.max_new_tokens
            for ids in suite.sequences:
                hf.generate(torch.tensor([list(ids)]), max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                            pad_token_id=ctx.pad_token_id)
        elif kind == "rows":
            spec = ctx.spec
            rows_per_pass = analyzers[0].params.rows_per_pass
            for ids in suite.sequences:
                prompt = torch.tensor([list(ids)])
                hf(input_ids=prompt, logits_to_keep=1, use_cache=False)
                remaining = spec.n_layers * spec.n_heads
                while remaining:
                    rows = min(rows_per_pass, remaining)
                    hf(input_ids=prompt.expand(rows, -1), logits_to_keep=1, use_cache=False)
                    remaining -= rows
        elif kind == "params":
            for tensor in hf.state_dict().values():
                tensor.float().clone()
        else:
            raise ValueError(kind)


def child(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    import torch

    from headscope.engine import load_backend

    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    name, what = args.analyzer, args.child
    floor_kind, params, quick = CELLS[name]
    params = dict(quick if args.quick else params)
    if args.length:  # long-context cell
        params = {"seq_len": args.length, "n_samples": 1, "context_lengths": (args.length,), "max_new_tokens": 8}
        floor_kind = LONG_FLOOR.get(floor_kind, floor_kind)
    analyzers = make_analyzers(name, params)
    if what == "scan":  # `auto` resolved as `headscope.scan` resolves it, from what the analyzers read
        from headscope.scanning.settings import prefers_bridge

        backend = load_backend(args.model, backend=args.backend, quiet=True,
                               prefers_bridge=lambda architecture: prefers_bridge(analyzers, architecture))
        if args.stretch_context:
            hf_config = backend.bridge.original_model.config if hasattr(backend, "bridge") else backend.model._module.config
            backend.spec = lift_context(backend.spec, hf_config, args.stretch_context)
    else:  # the bare Hugging Face model, nothing of headscope's engine around it
        from types import SimpleNamespace

        from transformers import AutoModelForCausalLM, AutoTokenizer

        from headscope.engine.nnsight_backend import spec_from_config
        from headscope.models import resolve_model

        path = resolve_model(args.model, quiet=True).path
        attn = "eager" if floor_kind == "eager" else "sdpa"
        hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = hf.config
        spec = spec_from_config(config, config.get_text_config(), tokenizer)
        if args.stretch_context:
            spec = lift_context(spec, config, args.stretch_context)
        backend = SimpleNamespace(spec=spec, tokenizer=tokenizer, name=f"hf {attn}")
    analyzers, ctx, suite = build(name, params, backend, args.batch, args.length, analyzers)
    if what == "scan":
        once = lambda: scan_once(backend, analyzers, ctx, suite)  # noqa: E731
    else:
        once = lambda: floor_once(floor_kind, hf, analyzers, ctx, suite)  # noqa: E731
    gc.collect()
    loaded = rss_mb()
    reset_peak()
    start = time.perf_counter()
    once()  # the first run: its peak is the memory figure; one-time costs (lazy init, allocator growth) land here
    first = time.perf_counter() - start
    peak = peak_mb() - loaded
    times, warmed = [first], False
    if first < args.short_s and not args.length:
        warmed = True
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
    return {"analyzer": name, "what": what, "floor": floor_kind, "median_s": statistics.median(times), "n": len(times), "warmed": warmed,
            "tokens": sum(len(seq) for seq in suite.sequences),
            "peak_extra_mb": peak, "loaded_mb": loaded, "backend": getattr(backend, "name", "?")}


# --- parent ----------------------------------------------------------------------------------------------------
def run_cell(args: argparse.Namespace, analyzer: str, what: str, length: int = 0) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", what, "--analyzer", analyzer, "--model", args.model,
               "--backend", args.backend, "--batch", str(args.batch), "--repeats", str(args.repeats),
               "--short-s", str(args.short_s), "--length", str(length), "--threads", str(args.threads),
               "--stretch-context", str(args.stretch_context)] + (["--quick"] if args.quick else [])
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished in {args.timeout:.0f} s"}
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return {"error": lines[-1][:160] if lines else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch
    import transformers

    from importlib.metadata import version

    tl = version("transformer-lens")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import os

    return (f"{cpu}, {os.cpu_count()} cores, {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, transformer_lens {tl}; "
            f"load average before: {load}")


def fmt_s(cell: dict[str, Any]) -> str:
    if "error" in cell:
        return f"error: {cell['error']}"
    return f"{cell['median_s']:.2f} s" + (f" (median of {cell['n']})" if cell["warmed"] else " (1 run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--backend", default="auto", help="backend of the scan cells (floors are plain HF)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per cell (0: torch's default); 1 is "
                        "steadier on a machine other work shares")
    parser.add_argument("--short-s", type=float, default=30.0, help="repeat a cell only when its first run is shorter")
    parser.add_argument("--only", default=",".join(CELLS), help="comma list of analyzers for the ratio table")
    parser.add_argument("--quick", action="store_true", help="smaller suites (a smoke run)")
    parser.add_argument("--long-only", action="store_true")
    parser.add_argument("--no-long", action="store_true")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--long-analyzers", default=",".join(LONG_ANALYZERS))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a cell is given up")
    parser.add_argument("--long-floor", action="store_true", help="also time each long cell's floor (doubles the run)")
    parser.add_argument("--stretch-context", type=int, default=0, help="lift the model's position limit to this many "
                        "tokens (RoPE models: time and memory are real, outputs past the trained context are not)")
    parser.add_argument("--child", choices=("scan", "floor"))
    parser.add_argument("--analyzer")
    parser.add_argument("--length", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    print(f"Machine: {machine()}\n")
    print(f"Model {args.model} fp32, scan backend `{args.backend}`, batch {args.batch}, "
          f"torch threads {args.threads or 'default'}"
          f"{' (quick sizes)' if args.quick else ''}.\n")
    if not args.long_only:
        print("| analyzer | inputs | floor | floor time | scan time | ratio | scan peak +MB | floor peak +MB |")
        print("|---|---|---|---|---|---|---|---|")
        for name in [n.strip() for n in args.only.split(",") if n.strip()]:
            kind, params, quick = CELLS[name]
            floor, scan = run_cell(args, name, "floor"), run_cell(args, name, "scan")
            ratio = (f"{scan['median_s'] / floor['median_s']:.2f}x" if "error" not in scan and "error" not in floor
                     else "-")
            inputs = ", ".join(f"{k}={v}" for k, v in (quick if args.quick else params).items()) or "weights"
            peak = lambda c: f"{c['peak_extra_mb']:.0f}" if "error" not in c else "-"  # noqa: E731
            inputs += f" ({scan['tokens']} tokens)" if "tokens" in scan else ""
            print(f"| {name} ({scan.get('backend', '?')}) | {inputs} | {kind} | {fmt_s(floor)} | {fmt_s(scan)} | "
                  f"{ratio} | {peak(scan)} | {peak(floor)} |", flush=True)
    if not args.no_long:
        lengths = [int(n) for n in args.lengths.split(",") if n.strip()]
        print("\nLong context (one sequence, one run each; retrieval decodes 8 tokens):\n")
        print("| analyzer | " + " | ".join(f"{n} tokens" for n in lengths) + " |")
        print("|---|" + "---|" * len(lengths))
        for name in [n.strip() for n in args.long_analyzers.split(",") if n.strip()]:
            cells = []
            for length in lengths:
                if length > LONG_MAX.get(name, length):
                    cells.append("not run (O(T²) patterns)")
                    continue
                cell = run_cell(args, name, "scan", length)
                text = fmt_s(cell) if "error" in cell else f"{cell['median_s']:.1f} s, +{cell['peak_extra_mb']:.0f} MB"
                if args.long_floor and "error" not in cell:
                    floor = run_cell(args, name, "floor", length)
                    text += (f" (floor {floor['median_s']:.1f} s, +{floor['peak_extra_mb']:.0f} MB: "
                             f"{cell['median_s'] / floor['median_s']:.2f}x)" if "error" not in floor else f" (floor: {fmt_s(floor)})")
                cells.append(text)
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
