"""Issue 22 item 4: lookback ratios per head with 32 vs 256 new tokens on SmolLM2 (one 256-token greedy decode per
item; its first 32 tokens are what a 32-token run decodes). HF eager generate, as benchmarks/lookback_hf_reference_run.py.

    PYTHONPATH=. python benchmarks/lookback_length.py N_SUMMARY_ITEMS
"""
import sys, time
from pathlib import Path
import numpy as np, torch
from scipy.stats import spearmanr
from transformers import AutoModelForCausalLM, AutoTokenizer
from headscope.probes.request_prompts import answer_stop_ids
from headscope.probes.grounded_qa import build_prompt, load_grounded_items

def top(x, k):
    return set(np.argsort(-x)[:k])

def report(short, long_, lens):
    S, L = np.mean(short, 0).ravel(), np.mean(long_, 0).ravel()
    print("  items", len(lens), "tokens", lens, "over 32:", sum(n > 32 for n in lens),
          "top10 overlap", len(top(S, 10) & top(L, 10)) / 10, "top20", len(top(S, 20) & top(L, 20)) / 20,
          "bottom10", len(top(-S, 10) & top(-L, 10)) / 10,
          "spearman %.3f" % spearmanr(S, L).correlation, "max|d| %.3f mean|d| %.3f" % (np.abs(S - L).max(), np.abs(S - L).mean()),
          "mean ratio 32: %.3f 256: %.3f" % (S.mean(), L.mean()), flush=True)

folder = Path("~/.cache/headscope/models/smollm2-135m-instruct").expanduser()
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
items, _ = load_grounded_items("grounded_qa")
chosen = [i for i in items if i.task == "summary"][: int(sys.argv[1])]
stops = answer_stop_ids(tok)
short, long_, lens = [], [], []
t0 = time.time()
for item in chosen:
    ids, C = build_prompt(tok, item)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=256, do_sample=False, eos_token_id=stops,
                             output_attentions=True, return_dict_in_generate=True, pad_token_id=stops[0])
    r = np.zeros((30, 9, len(out.attentions)))
    for step, layers in enumerate(out.attentions):
        for layer, att in enumerate(layers):
            row = att[0, :, -1, :].double()
            a, b = row[:, :C].mean(-1), row[:, C:].mean(-1)
            r[layer, :, step] = (a / (a + b)).numpy()
    lens.append(r.shape[-1])
    short.append(r[:, :, :32].mean(-1)); long_.append(r.mean(-1))
    print(item.task, item.id, "tokens", r.shape[-1], f"{time.time()-t0:.0f}s", flush=True)
    report(short, long_, lens)
