"""What the conformance matrix asserts, cell by cell: the single source of both the tests and docs/conformance.md.

A cell is (family, analyzer, backend). Its outcome is one of
  exact(tol)        headscope's values equal a brute-force reference from Hugging Face eager outputs within `tol`
  refused(reason)   headscope stops up front with a one-line HeadscopeError containing `reason`
  not covered       no test yet (listed so the gap is visible, never counted as passing)
`test_conformance_matrix.py` asserts every exact/refused cell; `test_conformance_doc.py` fails when
docs/conformance.md differs from `render.render()` of this table.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("transformer-lens", "nnsight")
# family -> (Hugging Face architecture, what the tiny config switches on that matters for attention)
FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaForCausalLM", "GQA 4q/2kv, RoPE"),
    "mistral": ("MistralForCausalLM", "GQA, sliding window 4 < probe length"),
    "qwen2": ("Qwen2ForCausalLM", "GQA, q/k/v bias"),
    "qwen3": ("Qwen3ForCausalLM", "GQA, q/k RMS norm"),
    "gemma": ("GemmaForCausalLM", "MQA (1 kv head), scaled embeddings"),
    "gemma2": ("Gemma2ForCausalLM", "logit soft-capping 5, query_pre_attn_scalar 24 != d_head, window 4 on layer 0"),
    "gemma3": ("Gemma3ForCausalLM", "q/k norm, d_head 32, window 4 on layer 0"),
    "gpt2": ("GPT2LMHeadModel", "learned positions, fused qkv"),
    "gpt_neox": ("GPTNeoXForCausalLM", "parallel residual, partial rotary 25%"),
    "gptj": ("GPTJForCausalLM", "parallel residual, rotary on 8 dims"),
    "phi": ("PhiForCausalLM", "parallel residual, partial rotary 50%"),
    "phi3": ("Phi3ForCausalLM", "fused qkv, GQA"),
    "stablelm": ("StableLmForCausalLM", "partial rotary, LayerNorm"),
    "opt": ("OPTForCausalLM", "q pre-scaled inside q_proj, learned positions"),
    "olmo2": ("Olmo2ForCausalLM", "q/k norm over all heads, post-norms"),
    "granite": ("GraniteForCausalLM", "attention_multiplier 0.05 != 1/sqrt(d_head)"),
    "gpt_oss": ("GptOssForCausalLM", "learned per-head sink logits, window 4 on layer 0, MoE"),
    "bloom": ("BloomForCausalLM", "ALiBi position bias"),
}
ANALYZERS = ("previous_token", "duplicate_token", "induction", "sinks", "sinks[score_source=qk]", "retrieval",
             "maps", "lookback", "select_and_copy", "safety")
NOT_COVERED_ANALYZERS = ("select_and_copy", "safety")
# MAPS (weights only) at layer 0, where M = W_E W_V W_O W_U involves no MLP: checked on families with separate
# v/o projections whose tiny tokenizer reads the relation words; layers >= 1 (MLP_0 input) are not covered.
MAPS_FAMILIES = ("llama", "mistral", "gemma2", "olmo2", "granite", "gpt_oss", "opt")
MAPS_REFUSED = {"opt": "cannot find the decoder layers"}  # engine/weights.py reads no OPT layout (one line)
# lookback (attention-row ratios while decoding) is checked on the families whose attention departs from plain
# softmax(q.k/sqrt(d)) in some way, plus Llama; the rest are listed as not covered.
LOOKBACK_FAMILIES = ("llama", "mistral", "gemma2", "gemma3", "opt", "granite", "gpt_oss", "gpt_neox")

# Families a backend refuses to load at all (one line, at load time), and why.
BACKEND_REFUSES = {
    ("bloom", "nnsight"): "no attention module calling transformers' attention interface",
}
# The TransformerLens bridge declares hook_rot_q / hook_rot_k for these but never fires them: no post-rotary q/k.
TL_NO_QK = {"gpt_neox", "gptj", "phi3"}
# Families where softmax(q.k/sqrt(d_head)) of the recorded q/k is exactly eager attention (both backends that
# record q/k). Everything else: sinks' explicit qk path is refused, `auto` takes the exact pattern path.
QK_EXACT = {"llama", "gpt2", "gpt_neox", "gptj", "olmo2", "gemma", "phi", "stablelm"}
QK_REFUSAL = {  # family -> what the one-line refusal names
    "mistral": "sliding-window", "qwen2": "sliding-window", "qwen3": "sliding-window", "phi3": "sliding-window",
    "gemma2": "soft-capping", "gemma3": "query_pre_attn_scalar", "opt": "pre-scaled", "granite": "attention_multiplier",
    "gpt_oss": "sink logits", "bloom": "ALiBi",
}

# Families whose only departure on the tiny config is the scale: `score_source=qk` with `attn_scale` set (the user
# asserts the logits are q.k * attn_scale) is exact there, and the matrix checks it.
ASSERTED_SCALE = {"granite": 0.05, "qwen2": 0.25, "qwen3": 0.25}

TOL_PATTERN = 1e-5  # scores that are means of attention probabilities (fp32)
TOL_NORM = 1e-4  # relative: output norms, residual magnitudes


@dataclass(frozen=True)
class Outcome:
    kind: str  # "exact" | "refused" | "not covered"
    detail: str = ""  # tolerance text, refusal reason, or why not covered
    tol: float = 0.0


def outcome(family: str, analyzer: str, backend: str) -> Outcome:
    """The declared outcome of one cell (what the matrix test asserts and the doc shows)."""
    refused = BACKEND_REFUSES.get((family, backend))
    if refused:
        return Outcome("refused", f"backend cannot load: {refused}")
    if analyzer in NOT_COVERED_ANALYZERS or (analyzer == "lookback" and family not in LOOKBACK_FAMILIES):
        return Outcome("not covered", "no brute-force cell yet")
    if analyzer == "maps":
        if family not in MAPS_FAMILIES:
            return Outcome("not covered", "no brute-force cell yet")
        if family in MAPS_REFUSED:
            return Outcome("refused", MAPS_REFUSED[family])
        return Outcome("exact", "(layer 0, same top-k hits)", 0.0)
    if analyzer == "sinks[score_source=qk]":
        if family not in QK_EXACT:
            return Outcome("refused", QK_REFUSAL[family])
        if backend == "transformer-lens" and family in TL_NO_QK:
            return Outcome("refused", "never fired the hooks for q, k")
        return Outcome("exact", "1e-5", TOL_PATTERN)
    return Outcome("exact", "1e-5", TOL_PATTERN)


def sinks_auto_source(family: str) -> str:
    """Which score source `score_source=auto` must pick (and record) for this family."""
    return "qk" if family in QK_EXACT - {"gpt_neox", "gptj"} else "pattern"

# What each q/k refusal means, measured on the tiny models (max |softmax(q.k/sqrt(d)) - eager| in parentheses).
QK_WHY = {
    "mistral": "sliding-window attention: keys older than the window get no attention (0.2 on window 4)",
    "qwen2": "optional sliding-window layers (use_sliding_window / layer_types); exact on a full-attention config",
    "qwen3": "optional sliding-window layers (use_sliding_window / layer_types); exact on a full-attention config",
    "phi3": "config.sliding_window (Phi-3-mini: 2047); the TransformerLens bridge also fires no q/k hooks",
    "gemma2": "logit soft-capping and query_pre_attn_scalar scaling, sliding layers (0.21)",
    "gemma3": "query_pre_attn_scalar scaling and sliding layers (0.62 on the window-4 layer)",
    "opt": "q is multiplied by 1/sqrt(d_head) inside q_proj: nnsight's recorded q carries it, so the scale "
           "would be applied twice (0.017); TransformerLens' hook_q does not",
    "granite": "logits are q.k * attention_multiplier (0.016 at 0.05 vs 1/sqrt(16)); "
               "`attn_scale=<attention_multiplier>` with `score_source=qk` asserts the scale and is exact",
    "gpt_oss": "a learned per-head sink logit joins each softmax row (0.5), plus sliding layers",
    "bloom": "ALiBi position bias added to the logits (0.17)",
}
NOT_COVERED_WHY = ("no brute-force cell yet. MAPS is checked at layer 0 only (M = W_E W_V W_O W_U, the head's "
                   "top-k hits equal those of the same product formed from Hugging Face's v/o projection and "
                   "lm_head weights) on " + ", ".join(MAPS_FAMILIES) + "; layers >= 1 read MLP_0's input, which is "
                   "family-specific (the OLMo-2 norm is issue 22 item 3; on GPT-OSS the MoE MLP_0 raises a "
                   "ValueError, so the cell runs with apply_first_mlp=false); select-and-copy's primary score is being "
                   "settled (issue 22 item 5); safety runs one ablated forward per head. lookback is checked on "
                   + ", ".join(LOOKBACK_FAMILIES) + " only (not covered elsewhere). Their own tests "
                   "(tests/analyzers) cover Llama, most on SmolLM2.")
