"""Lookback Lens overhead: KV-cached decoding with the per-step ratio reduction vs the same decoding without hooks.

Prints a ratio (timings on a shared CPU are noisy; the ratio is what to compare). Usage:
    PYTHONPATH=. python benchmarks/lookback.py [model] [n_items] [max_new_tokens]
"""

from __future__ import annotations

import sys
import time

from headscope.analyzers.lookback import lookback_ratios
from headscope.probes.request_prompts import answer_stop_ids
from headscope.engine import Needs, load_backend
from headscope.probes.grounded_qa import build_prompt, load_grounded_items


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m-instruct"
    n_items = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    max_new = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    backend = load_backend(model, quiet=True)
    items, _ = load_grounded_items("grounded_qa", n_samples=n_items)
    prompts = [build_prompt(backend.tokenizer, item) for item in items]
    stops = answer_stop_ids(backend.tokenizer)

    start, steps = time.perf_counter(), 0
    for ids, _ in prompts:
        result = backend.decode(ids, max_new_tokens=max_new, needs=Needs(), on_layer=lambda acts: None,
                                stop_token_ids=stops)
        steps += len(result.generated_ids)
    plain = time.perf_counter() - start

    start, lookback_steps = time.perf_counter(), 0
    for ids, context_len in prompts:
        ratios, _ = lookback_ratios(backend, ids, context_len, max_new_tokens=max_new, stop_token_ids=stops)
        lookback_steps += ratios.shape[-1]
    lookback = time.perf_counter() - start
    print(f"{model}: {n_items} items, {steps} steps; plain decode {plain:.1f} s ({plain / steps:.3f} s/step), "
          f"with lookback ratios {lookback:.1f} s ({lookback / max(lookback_steps, 1):.3f} s/step); "
          f"ratio {lookback / plain:.2f}x")


if __name__ == "__main__":
    main()
