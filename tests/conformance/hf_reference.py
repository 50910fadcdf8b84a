"""Brute-force references from Hugging Face's own eager forward pass, written without headscope's math.

Every function takes one unpadded sequence (or a list of them) and reads only `output_attentions`,
`output_hidden_states` and the input of each attention's output projection (the per-head outputs z).
"""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM

OUT_PROJ_NAMES = ("o_proj", "c_proj", "dense", "out_proj")


def eager_model(folder) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32).eval()


def _out_projections(model) -> list[torch.nn.Module]:
    """Each decoder layer's attention output projection, in layer order."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""
        if leaf in OUT_PROJ_NAMES and parent in ("self_attn", "attn", "attention", "self_attention"):
            found.append(module)
    return found


def forward(model, seq: list[int]) -> dict:
    """attentions [layer][head, q, k], hidden [layer][T, d] (entering each layer), z_norm [layer][head, T]."""
    z_inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: z_inputs.append(args[0].detach()))
             for m in _out_projections(model)]
    try:
        with torch.no_grad():
            out = model(torch.tensor([seq]), output_attentions=True, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    n_heads = out.attentions[0].shape[1]
    z_norm = [z[0].reshape(len(seq), n_heads, -1).norm(dim=-1).T for z in z_inputs]  # [head, T]
    return {"attentions": [a[0].double() for a in out.attentions],
            "hidden": [h[0].double() for h in out.hidden_states], "z_norm": z_norm}


def classic_score(attn: torch.Tensor, seq: list[int], kind: str) -> torch.Tensor:
    """TransformerLens detect_head 'mul' score of one sequence with the BOS column excluded: [head]."""
    t = len(seq)
    target = torch.zeros(t, t, dtype=torch.double)
    for q in range(t):
        for k in range(1, q + 1):  # key 0 (BOS) never counts
            if kind == "previous_token":
                target[q, k] = float(k == q - 1)
            elif kind == "duplicate_token":
                target[q, k] = float(k < q and seq[k] == seq[q])
            elif kind == "induction":
                target[q, k] = float(seq[k - 1] == seq[q])
    region = torch.ones(t, t, dtype=torch.double).tril()
    region[:, 0] = 0.0
    a = attn * region
    return (a * target).sum((-2, -1)) / a.sum((-2, -1))


def sink_values(run: dict, seq: list[int], layer: int) -> dict[str, torch.Tensor]:
    """Per head of one sequence: Gu et al. alpha_0, ACT hidden sinks (alpha_j > 0.1, j > 0), row entropy."""
    a = run["attentions"][layer]  # [head, T, T]
    t = len(seq)
    alpha = (a / torch.arange(t, 0, -1, dtype=torch.double)[None, None, :]).sum(-2)  # [head, key]
    hidden = alpha[:, 1:] > 0.1
    column_sum = a.sum(-2)[:, 1:]
    entropies = [torch.zeros(a.shape[0], dtype=a.dtype)]  # row 0: one key, entropy 0, counted (official mean over T rows)
    for i in range(1, t):
        row = a[:, i, : i + 1]
        h = -(torch.where(row > 0, row * row.log(), torch.zeros_like(row))).sum(-1)
        entropies.append(h / math.log(i + 1))
    return {"sink_score": alpha[:, 0], "sink_rate": (alpha[:, 0] > 0.3).double(),
            "hidden_sink_count": hidden.double().sum(-1), "hidden_sink_mass": (column_sum * hidden).sum(-1) / t,
            "row_entropy": torch.stack(entropies).mean(0), "output_norm": run["z_norm"][layer].double().mean(-1)}


def copy_paste(run: dict, prompt: list[int], forced: list[int], start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wu et al. retrieval on a teacher-forced answer: at step s the query is position len(prompt)-1+s; a head
    copies when its argmax key lies in [start, end) and holds the emitted token. Returns (scores [layer, head],
    argmax keys [step, layer, head])."""
    attentions = run["attentions"]
    n_layers, n_heads = len(attentions), attentions[0].shape[0]
    keys = torch.zeros(len(forced), n_layers, n_heads, dtype=torch.long)
    scores = torch.zeros(n_layers, n_heads, dtype=torch.double)
    for step, token in enumerate(forced):
        query = len(prompt) - 1 + step
        for layer in range(n_layers):
            for head in range(n_heads):
                key = int(attentions[layer][head, query, : query + 1].argmax())
                keys[step, layer, head] = key
                if start <= key < end and prompt[key] == token:
                    scores[layer, head] += 1.0 / (end - start)
    return scores, keys


def lookback(run: dict, prompt: list[int], n_steps: int, context_len: int) -> torch.Tensor:
    """Chuang et al. lookback ratio a / (a + b) at each teacher-forced step: a = mean attention of the query that
    predicts the step's token on the first `context_len` keys, b = on the keys after them. [layer, head, step]."""
    attentions = run["attentions"]
    out = torch.zeros(len(attentions), attentions[0].shape[0], n_steps, dtype=torch.double)
    for step in range(n_steps):
        query = len(prompt) - 1 + step
        for layer, a in enumerate(attentions):
            row = a[:, query, : query + 1]
            on_context, on_new = row[:, :context_len].mean(-1), row[:, context_len:].mean(-1)
            out[layer, :, step] = on_context / (on_context + on_new)
    return out


def maps_layer0_hits(model, n_heads: int, n_kv_heads: int, d_head: int, pairs: list[tuple[int, int]], k: int) -> torch.Tensor:
    """MAPS at layer 0 from Hugging Face's weights: M[src] = W_E[src] (v_proj slice of the head's KV group)
    (o_proj columns of the head) lm_head, biases and norms left out (Elhelo & Geva); a pair hits when M[src, dst]
    is at least the row's k-th largest value. Returns [head] share of hits."""
    attn = next(m for name, m in model.named_modules() if name.endswith("layers.0.self_attn"))
    out_proj = getattr(attn, "o_proj", None) or getattr(attn, "out_proj", None) or attn.dense
    w_e = model.get_input_embeddings().weight.double()
    w_v, w_o = attn.v_proj.weight.double(), out_proj.weight.double()  # [kv*d, d_model], [d_model, head*d]
    w_u = model.get_output_embeddings().weight.double()  # [vocab, d_model]
    group = n_heads // n_kv_heads
    hits = torch.zeros(n_heads, dtype=torch.double)
    for head in range(n_heads):
        kv = head // group
        for src, dst in pairs:
            v = w_v[kv * d_head : (kv + 1) * d_head] @ w_e[src]
            row = w_u @ (w_o[:, head * d_head : (head + 1) * d_head] @ v)
            hits[head] += float(row[dst] >= row.topk(k).values[-1])
    return hits / len(pairs)
