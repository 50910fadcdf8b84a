"""MAPS speed: the blocked, factorised scorer vs forming each head's source rows through the full W_O W_U chain.

Prints ratios (the machine is shared; absolute seconds vary): blocked/factorised time relative to the naive
route `(X W_V W_O) W_U` + full `torch.topk` (what the official `ov_project` + `calc_relation_score` do), on a few
SmolLM2 heads and the shipped relations. Run: `python benchmarks/maps.py`.
"""

from __future__ import annotations

import time

import torch

from headscope.analyzers.base import ScanContext
from headscope.analyzers.maps import MapsAnalyzer, relations_from_suite, topk_hits
from headscope.engine import load_backend


def main(layers: tuple[int, ...] = (3, 15), heads: tuple[int, ...] = (0, 4, 8)) -> None:
    backend = load_backend("smollm2-135m-instruct", quiet=True)
    weights = backend.weights()
    analyzer = MapsAnalyzer()
    relations = relations_from_suite(analyzer.build_suite(ScanContext(backend.spec, backend.tokenizer)))
    src = torch.cat([r.src for r in relations])
    dst = torch.cat([r.dst for r in relations])
    ks = torch.cat([torch.full((len(r.src),), r.k) for r in relations])
    sources, pair_row = torch.unique(src, return_inverse=True)
    X_all = weights.first_mlp(weights.W_E[src])
    X_unique = weights.first_mlp(weights.W_E[sources])
    naive = fast = 0.0
    for layer in layers:
        W_V, W_O = weights.W_V(layer), weights.W_O(layer)
        for head in heads:
            g = backend.spec.kv_head(head)
            start = time.perf_counter()
            rows = X_all @ (W_V[g] @ W_O[head]) @ weights.W_U  # per pair, as ov_project
            for sign in (1.0, -1.0):
                for k in (1, 10):
                    (torch.topk(sign * rows, k).indices == dst[:, None]).any(1)
            naive += time.perf_counter() - start
            start = time.perf_counter()
            topk_hits(X_unique @ W_V[g], W_O[head] @ weights.W_U, pair_row, dst, ks)
            fast += time.perf_counter() - start
    print(f"{len(src)} pairs, {len(sources)} distinct sources, {len(layers) * len(heads)} heads")
    print(f"naive per head {naive / (len(layers) * len(heads)):.2f} s; blocked {fast / (len(layers) * len(heads)):.2f} s; "
          f"ratio naive/blocked = {naive / fast:.2f}")


if __name__ == "__main__":
    main()
