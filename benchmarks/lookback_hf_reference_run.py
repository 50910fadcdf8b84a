"""Lookback Lens on SmolLM2 through plain Hugging Face `generate` (eager attention, output_attentions), the way the
official `step01_extract_attns.py` collects ratios, then our detector evaluation. Used for the figures in
docs/analyzers/lookback.md because engine decoding (TransformerLens bridge) was too slow on the shared 2-core machine
to decode all items before the deadline; tests check that engine ratios equal this path to 1e-5.

    PYTHONPATH=. python benchmarks/lookback_hf_reference_run.py [max_new_tokens]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from headscope.probes.request_prompts import answer_stop_ids
from headscope.analyzers.lookback_detector import span_features, two_fold_evaluation
from headscope.engine.loading import load_backend  # noqa: F401  (the embedded model folder is made by the engine)
from headscope.probes.grounded_qa import build_prompt, contains_gold, load_grounded_items


def main() -> None:
    from pathlib import Path

    max_new = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    folder = Path("~/.cache/headscope/models/smollm2-135m-instruct").expanduser()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    items, _ = load_grounded_items("grounded_qa")
    stops = answer_stop_ids(tokenizer)
    start = time.perf_counter()
    ratios, labels, records = [], [], []
    for item in items:
        ids, context_len = build_prompt(tokenizer, item)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=stops,
                                 output_attentions=True, return_dict_in_generate=True, pad_token_id=stops[0])
        generated = out.sequences[0, len(ids):].tolist()
        r = np.zeros((len(out.attentions[0]), out.attentions[0][0].shape[1], len(out.attentions)))
        for step, layers in enumerate(out.attentions):
            for layer, attention in enumerate(layers):  # [1, head, query, key]
                row = attention[0, :, -1, :].double()
                a, b = row[:, :context_len].mean(-1), row[:, context_len:].mean(-1)
                r[layer, :, step] = (a / (a + b)).numpy()
        answer = tokenizer.decode(generated, skip_special_tokens=True)
        faithful = contains_gold(answer, item.answers)
        ratios.append(r)
        labels.append(int(faithful))
        records.append({"id": item.id, "answer": answer, "gold": item.answers[0], "faithful": faithful})
    elapsed = time.perf_counter() - start
    summary = {"items": len(items), "faithful": int(sum(labels)), "hallucinated": len(labels) - int(sum(labels)),
               "steps": int(sum(r.shape[-1] for r in ratios)), "decode_s": round(elapsed, 1)}
    for span in ("predefined", "sliding_window"):
        for split in ("span", "item"):
            features, y, owners = span_features(ratios, labels, span=span, window=8)
            ev = two_fold_evaluation(features, y, owners=owners, split_by=split)
            summary[f"{span}/{split}"] = {"n_spans": ev.n_spans, "n_faithful_spans": int(y.sum()),
                                          "auroc": round(ev.auroc, 3), "ci95": [round(ev.ci_low, 3), round(ev.ci_high, 3)],
                                          "folds": [round(f, 3) for f in ev.fold_aurocs],
                                          "train_auroc": round(ev.train_auroc, 3), "baseline_auroc": round(ev.baseline_auroc, 3)}
    print(json.dumps(records, indent=0))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
