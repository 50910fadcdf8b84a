"""Reproduce the SmolLM2 select-and-copy figures of docs/analyzers/select_and_copy.md (slow: minutes per suite).

Usage: python benchmarks/select_and_copy.py [mcqa_synthetic mcqa_general]
Prints the model-level rows (baseline, best heads) and the five best heads per score and shot count.
"""

from __future__ import annotations

import sys
import time

from headscope.analyzers import SelectAndCopyAnalyzer
from headscope.engine import load_backend
from headscope.scanning import scan_backend


def main(suites: list[str]) -> None:
    backend = load_backend("smollm2-135m-instruct", quiet=True)
    for suite in suites:
        start = time.perf_counter()
        analyzer = SelectAndCopyAnalyzer(suite=suite)
        atlas = scan_backend(backend, [analyzer], progress=False)
        rows = atlas.model_metrics()
        print(f"{suite}: {time.perf_counter() - start:.0f} s")
        print(rows[~rows.metric.str.contains("share")][["metric", "value", "n_samples"]].to_string(index=False))
        for shots in analyzer.params.shots:
            for score in ("qk", "qk_rope", "qk_norope", "attn"):
                top = atlas.top(f"{score}_accuracy_{shots}shot", 5)[["layer", "head", "value"]].values.tolist()
                print(score, f"{shots}-shot", top)
            print(f"{shots}-shot qk (paper) vs qk_rope:", score_agreement(atlas, f"qk_accuracy_{shots}shot",
                                                                      f"qk_rope_accuracy_{shots}shot"))


def score_agreement(atlas, first: str, second: str, k: int = 10) -> dict[str, float]:
    """How far two per-head metrics choose the same heads: top-k overlap and Spearman rank correlation."""
    wide = atlas.to_frame()
    a, b = wide[first], wide[second]
    overlap = len(set(a.nlargest(k).index) & set(b.nlargest(k).index))
    return {f"top{k}_overlap": overlap / k, "spearman": float(a.rank().corr(b.rank()))}


if __name__ == "__main__":
    main(sys.argv[1:] or ["mcqa_synthetic", "mcqa_general"])
