"""Attention sinks: first-token sink heads, hidden (non-initial) sinks, dormant heads, massive activations.

Definitions matched (official code, read with the search tool):
- Gu et al. 2024, "When Attention Sink Emerges in Language Models" (sail-sg/Attention-Sink,
  `eval_sink_open_source.py` `compute_attention_sink`): per (sample, layer, head) the column mean
  `alpha_j = 1/(T - j) * sum_{i >= j} A[i, j]`; a head sinks on a sample when `alpha_0 > epsilon` (0.3); the
  sink rate is the share of (sample, layer, head) that do. Prompts are truncated to T = 64.
- Yu et al. 2024, ACT (GATECH-EIC/ACT, `models/llama_modelling_aug.py`): the same column mean with threshold
  0.1 (`THRES` in scripts/calibration.sh); every column above it except the first is a hidden sink.
- Guo et al. 2024, active-dormant heads (GuoTianYu2000/Active-Dormant-Attention): a dormant head's rows have
  low normalised entropy `H(A_i) / log(i + 1)` (almost all attention on the sink) and it writes almost nothing.
- Sun et al. 2024, massive activations: a few residual activations on sink tokens are orders of magnitude above
  the median.
With left padding or variable lengths the divisor `T - j` counts valid queries only, and "position 0" is each
sequence's first real token.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.base import HeadValue, RunningMoments, ScanContext, StreamingAnalyzer, head_rows
from headscope.analyzers.sink_math import ColumnStats, default_scale, stats_from_pattern, stats_from_qk
from headscope.engine import LayerActivations, Needs, ProbeBatch
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.natural_text import natural_text_suite

# The q/k path computes softmax(q.k / sqrt(d_head)) under a causal mask from the hooked post-RoPE q and k. It is
# used only where that IS the model's attention: architectures the conformance matrix (tests/conformance,
# docs/conformance.md) checks against Hugging Face's eager attention on both backends. `score_source=auto`
# (the default) takes it there and the exact pattern path everywhere else.
QK_EXACT = frozenset({
    "LlamaForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM", "GPTJForCausalLM", "Olmo2ForCausalLM",
    "GemmaForCausalLM", "PhiForCausalLM", "StableLmForCausalLM",
})
# Architectures whose attention logits are not `q . k / sqrt(d_head)` of the hooked q and k, or not over every
# earlier key, and why (each checked against eager attention where transformers has the model).
QK_UNSUPPORTED = {
    "BloomForCausalLM": "ALiBi position bias",
    "MptForCausalLM": "ALiBi position bias",
    "FalconForCausalLM": "ALiBi in some checkpoints",
    "GPTNeoForCausalLM": "no 1/sqrt(d_head) scaling and local attention layers",
    "Gemma2ForCausalLM": "query_pre_attn_scalar, logit soft-capping and sliding windows",
    "Gemma3ForCausalLM": "query_pre_attn_scalar and sliding windows",
    "Gemma3ForConditionalGeneration": "query_pre_attn_scalar and sliding windows",
    "GraniteForCausalLM": "logits scaled by attention_multiplier",
    "GraniteMoeForCausalLM": "logits scaled by attention_multiplier",
    "GptOssForCausalLM": "learned per-head sink logits inside the softmax and sliding windows",
    "OPTForCausalLM": "q is pre-scaled inside q_proj (the nnsight q carries the scale)",
    "DeepseekV2ForCausalLM": "multi-head latent attention with a yarn mscale",
    "DeepseekV3ForCausalLM": "multi-head latent attention with a yarn mscale",
    "MistralForCausalLM": "sliding-window attention",
    "MixtralForCausalLM": "sliding-window attention",
    "Qwen2ForCausalLM": "optional sliding-window layers (use_sliding_window / layer_types)",
    "Qwen3ForCausalLM": "optional sliding-window layers (use_sliding_window / layer_types)",
    "Phi3ForCausalLM": "sliding-window attention (config.sliding_window)",
}
# Exact on the q/k path, but the TransformerLens bridge fires no post-rotary q/k hooks for them (nnsight does):
# `auto` takes the pattern path there, which every backend serves.
QK_NNSIGHT_ONLY = frozenset({"GPTNeoXForCausalLM", "GPTJForCausalLM"})
SCORE_SOURCES = ("auto", "qk", "pattern")


def resolve_score_source(requested: str, architecture: str, attn_scale: float) -> str:
    """The score source a scan uses: `auto` -> `qk` where it is exact (or `attn_scale` asserts the logits' scale),
    else `pattern`; an explicit `qk` where it is not exact is refused (one line naming why), never approximated."""
    if requested not in SCORE_SOURCES:
        raise HeadscopeError(f"unknown sinks.score_source '{requested}': use 'auto', 'qk' or 'pattern'")
    if requested == "auto":
        exact = architecture in QK_EXACT and architecture not in QK_NNSIGHT_ONLY
        return "qk" if exact or attn_scale != 0.0 else "pattern"
    if requested == "qk" and architecture not in QK_EXACT and attn_scale == 0.0:
        why = QK_UNSUPPORTED.get(architecture, "not checked against eager attention (docs/conformance.md)")
        raise HeadscopeError(
            f"sinks.score_source=qk is not exact on {architecture} ({why}): "
            "use --param sinks.score_source=pattern (or auto, the default)"
        )
    return requested


@dataclass(frozen=True)
class SinkParams:
    seq_len: int = 64  # Gu et al. token_length
    n_samples: int = 64
    seed: int = 0  # unused by the shipped suite (kept for the shared --seed knob)
    epsilon: float = 0.3  # Gu et al. sink threshold on alpha_0
    hidden_threshold: float = 0.1  # ACT THRES on alpha_j, j > 0
    hidden_min_queries: int = 1  # official: every column; >1 ignores the last columns seen by few queries
    prepend_bos: bool = True
    # auto: qk where the conformance matrix shows it exact, else pattern (the atlas records the resolved one);
    # qk: streaming column sums from q/k; pattern: full eager patterns (exact for any model)
    score_source: Literal["auto", "qk", "pattern"] = "auto"
    attn_scale: float = 0.0  # 0: 1/sqrt(d_head); set: you assert the logits are q.k * attn_scale (qk path)
    block_size: int = 256  # query rows per block on the qk path
    dormant_entropy: float = 0.2  # tau_row: mean normalised row entropy below this (and sink > epsilon)
    massive_factor: float = 10.0  # a position is a residual-norm outlier above factor x median norm
    top_tokens: int = 10  # hidden-sink token strings written as model-level rows
    dataset: str = ""  # hub dataset name instead of the shipped natural_text suite (needs network)
    dataset_split: str = "train"
    dataset_column: str = "text"


class SinkAnalyzer(StreamingAnalyzer):
    """Per head: first-token sink score and rate, hidden sinks, row entropy, output norm, dormant score."""

    name = "sinks"
    Params = SinkParams
    accepts_prompts = True  # Gu et al. measure natural text: any texts will do
    metrics = (
        "sink_score",
        "sink_score_std",
        "sink_rate",
        "hidden_sink_count",
        "hidden_sink_mass",
        "hidden_sink_relpos",
        "row_entropy",
        "output_norm",
        "output_norm_rel",
        "dormant_score",
        "is_dormant",
        "sink_heads",  # model-level rows from here on (massive_*: one per layer, layer column set, head -1)
        "n_sequences",
        "hidden_sink_token[{token}]",
        "massive_max_abs",
        "massive_ratio",
        "massive_norm_ratio",
        "massive_top_is_first",
        "massive_outliers",
        "massive_outliers_on_sinks",
    )
    description = "attention parked on the first token (Gu et al.), hidden sinks (ACT), dormant heads, massive activations"
    metric_docs = {
        "sink_score": MetricDoc("mean attention every query puts on the first token (alpha_0, Gu et al.)"),
        "sink_score_std": MetricDoc("spread of sink_score over sequences", "neither"),
        "sink_rate": MetricDoc("share of sequences where alpha_0 exceeds epsilon (0.3): the head sinks"),
        "hidden_sink_count": MetricDoc("non-initial key columns with mean attention above 0.1 (ACT hidden sinks)"),
        "hidden_sink_mass": MetricDoc("attention mass on hidden (non-initial) sinks"),
        "hidden_sink_relpos": MetricDoc("mean relative position of the hidden sinks (0 = start, 1 = end); "
                                        "empty where a head has none", "neither"),
        "row_entropy": MetricDoc("normalised entropy of attention rows: low = attention on few keys", "lower"),
        "output_norm": MetricDoc("mean norm of the head's output", "neither"),
        "output_norm_rel": MetricDoc("output norm over the layer's median head: low = writes little", "lower"),
        "dormant_score": MetricDoc("sink score times how little the head writes (1 - output_norm_rel)"),
        "is_dormant": MetricDoc("1 = dormant: low row entropy and sink score above epsilon (Guo et al.)", "flag"),
        "sink_heads": MetricDoc("heads with sink_rate above 0.5"),
        "n_sequences": MetricDoc("probe sequences measured", "neither"),
        "hidden_sink_token[{token}]": MetricDoc("share of hidden-sink detections falling on this token", "neither"),
        "massive_max_abs": MetricDoc("largest |activation| of the residual stream entering the layer"),
        "massive_ratio": MetricDoc("largest |activation| over the median |activation| (Sun et al.)"),
        "massive_norm_ratio": MetricDoc("largest position norm over the median position norm"),
        "massive_top_is_first": MetricDoc("share of sequences whose largest-norm position is the first token"),
        "massive_outliers": MetricDoc("positions above massive_factor x the median norm", "neither"),
        "massive_outliers_on_sinks": MetricDoc("share of those outlier positions that are sink positions"),
    }

    @property
    def needs(self) -> Needs:
        pattern = self.params.score_source != "qk"  # an unresolved `auto` asks for the exact patterns
        return Needs(pattern=pattern, q=not pattern, k=not pattern, z=True, resid_pre=True)

    def check(self, ctx: ScanContext) -> None:
        """Refuse bad parameters before any work, and resolve `score_source=auto` for this architecture (the
        resolved source replaces it in the params the atlas records)."""
        p = self.params
        source = resolve_score_source(p.score_source, ctx.spec.architecture, p.attn_scale)
        if source != p.score_source:
            self.params = p = dataclasses.replace(p, score_source=source)
        if p.seq_len > ctx.spec.n_ctx:
            raise HeadscopeError(f"sinks.seq_len {p.seq_len} exceeds the model's context {ctx.spec.n_ctx}: lower it")

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        self.check(ctx)
        p = self.params
        return natural_text_suite(
            ctx.tokenizer,
            seq_len=p.seq_len,
            n_samples=p.n_samples,
            bos_token_id=ctx.spec.bos_token_id,
            prepend_bos=p.prepend_bos,
            dataset=p.dataset,
            split=p.dataset_split,
            column=p.dataset_column,
        )

    def start(self, ctx: ScanContext, suite: TokenSuite) -> None:
        spec = self._spec = ctx.spec
        self._tokenizer = ctx.tokenizer
        self._scale = self.params.attn_scale or default_scale(spec.d_head)
        n_l, n_h = spec.n_layers, spec.n_heads
        self._alpha0 = RunningMoments(n_l, n_h)  # per-sample alpha at the first real token
        self._sinks = RunningMoments(n_l, n_h)  # per-sample 1[alpha_0 > epsilon]
        self._hidden_count = RunningMoments(n_l, n_h)
        self._hidden_mass = RunningMoments(n_l, n_h)
        self._entropy = RunningMoments(n_l, n_h)
        self._out_norm = RunningMoments(n_l, n_h)
        self._relpos_sum = torch.zeros(n_l, n_h, dtype=torch.float64)
        self._relpos_n = torch.zeros(n_l, n_h, dtype=torch.float64)
        self._tokens: Counter[int] = Counter()
        self._massive: dict[int, dict[str, list[float]]] = {layer: {} for layer in range(n_l)}

    # ---- per layer -------------------------------------------------------------------------------
    def layer_stats(self, batch: ProbeBatch, acts: LayerActivations) -> ColumnStats:
        """Column sums and entropies of this layer's attention, from q/k (streaming) or the full pattern."""
        if self.params.score_source != "qk":
            return stats_from_pattern(acts.pattern, batch.valid, block_size=self.params.block_size)
        return stats_from_qk(acts.q, acts.k, batch.valid, scale=self._scale, block_size=self.params.block_size)

    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        p = self.params
        stats = self.layer_stats(batch, acts)
        valid = batch.valid.to(stats.col_sum.device)
        b, n_heads, t = stats.col_sum.shape
        alpha = stats.column_mean  # [batch, head, key]
        first = valid.float().argmax(dim=1)  # first real token per sequence
        rows = torch.arange(b, device=alpha.device)
        alpha0 = alpha[rows, :, first]  # [batch, head]
        n_q = valid.sum(-1).to(torch.float64)  # valid queries per sequence

        hidden = (alpha > p.hidden_threshold) & valid[:, None, :]
        hidden &= (stats.n_queries >= p.hidden_min_queries)[:, None, :]
        hidden[rows, :, first] = False
        hidden_mass = (stats.col_sum * hidden).sum(-1) / n_q[:, None]  # mean row mass on hidden sinks

        self._alpha0.add(acts.layer, alpha0)
        self._sinks.add(acts.layer, (alpha0 > p.epsilon).double())
        self._hidden_count.add(acts.layer, hidden.sum(-1).double())
        self._hidden_mass.add(acts.layer, hidden_mass)
        # mean over all T rows, row 0 (one key, entropy 0) counted, as Active-Dormant-Attention's
        # row_headwise_average_normalized_entropy does: n_entropy counts rows 1..T-1
        self._entropy.add(acts.layer, stats.entropy_sum / (stats.n_entropy + 1)[:, None])

        lengths = valid.sum(-1)
        for seq, head, key in hidden.nonzero().tolist():
            offset = key - int(first[seq])
            self._relpos_sum[acts.layer, head] += offset / max(int(lengths[seq]) - 1, 1)
            self._relpos_n[acts.layer, head] += 1
            self._tokens[int(batch.input_ids[seq, key])] += 1

        z = acts.z  # [batch, head, pos, d_head]: the head's output before o_proj
        norms = z.norm(dim=-1) * valid[:, None, :]
        self._out_norm.add(acts.layer, (norms.sum(-1) / n_q[:, None].to(norms.dtype)))

        self._observe_massive(acts.layer, acts.resid_pre, valid, first, hidden.any(1))

    def _observe_massive(
        self, layer: int, resid: torch.Tensor, valid: torch.Tensor, first: torch.Tensor, hidden_any: torch.Tensor
    ) -> None:
        """Sun et al. massive activations in the residual stream entering `layer`, per sequence."""
        record = self._massive[layer]
        for seq in range(resid.shape[0]):
            h = resid[seq][valid[seq]]  # [real pos, d_model]
            norms = h.norm(dim=-1)
            magnitudes = h.abs()
            top = int(norms.argmax())
            median_norm = float(norms.median().clamp(min=1e-12))
            outliers = (norms > self.params.massive_factor * median_norm).nonzero().flatten()
            sink_positions = hidden_any[seq][valid[seq]].clone()
            sink_positions[0] = True  # the first real token
            on_sink = float(sink_positions[outliers].float().mean()) if len(outliers) else float("nan")
            values = {
                "massive_max_abs": float(magnitudes.max()),
                "massive_ratio": float(magnitudes.max() / magnitudes.median().clamp(min=1e-12)),
                "massive_norm_ratio": float(norms.max()) / median_norm,
                "massive_top_is_first": float(top == 0),
                "massive_outliers": float(len(outliers)),
                "massive_outliers_on_sinks": on_sink,
            }
            for key, value in values.items():
                record.setdefault(key, []).append(value)

    # ---- rows ------------------------------------------------------------------------------------
    def results(self) -> list[HeadValue]:
        p = self.params
        n = self._alpha0.count
        alpha0 = self._alpha0.mean()
        out_norm = self._out_norm.mean()
        median = out_norm.median(dim=1, keepdim=True).values.clamp(min=1e-12)
        out_rel = out_norm / median
        entropy = self._entropy.mean()
        relpos = torch.where(self._relpos_n > 0, self._relpos_sum / self._relpos_n.clamp(min=1), torch.nan)
        per_head = {
            "sink_score": alpha0,
            "sink_score_std": self._alpha0.std(),
            "sink_rate": self._sinks.mean(),
            "hidden_sink_count": self._hidden_count.mean(),
            "hidden_sink_mass": self._hidden_mass.mean(),
            "hidden_sink_relpos": relpos,
            "row_entropy": entropy,
            "output_norm": out_norm,
            "output_norm_rel": out_rel,
            "dormant_score": alpha0 * (1.0 - out_rel).clamp(min=0.0, max=1.0),
            "is_dormant": ((entropy < p.dormant_entropy) & (alpha0 > p.epsilon)).double(),
        }
        rows = head_rows({metric: (table, n) for metric, table in per_head.items()})
        total = int(n.max()) if len(n) else 0
        rows.append(HeadValue(-1, -1, "sink_rate", float(self._sinks.mean().mean()), total))
        rows.append(HeadValue(-1, -1, "sink_heads", float((self._sinks.mean() > 0.5).sum()), total))
        rows.append(HeadValue(-1, -1, "n_sequences", float(total), total))
        rows.extend(self._token_rows(total))
        for layer, record in self._massive.items():
            for key, values in record.items():
                tensor = torch.tensor(values, dtype=torch.float64)
                value = float(tensor.nanmean()) if not torch.isnan(tensor).all() else float("nan")
                rows.append(HeadValue(layer, -1, key, value, len(values)))  # per-layer model-level row
        return rows

    def _token_rows(self, total: int) -> list[HeadValue]:
        """Hidden-sink tokens as `hidden_sink_token[<string>]` = share of all hidden-sink detections."""
        detections = sum(self._tokens.values())
        rows = []
        for token_id, count in self._tokens.most_common(self.params.top_tokens):
            rows.append(HeadValue(-1, -1, f"hidden_sink_token[{token_string(self._tokenizer, token_id)}]", count / detections, total))
        return rows

    def hidden_sink_tokens(self) -> dict[str, int]:
        """All hidden-sink detections by token string (the atlas keeps only the top ones)."""
        return {token_string(self._tokenizer, t): c for t, c in self._tokens.most_common()}


def token_string(tokenizer: Any, token_id: int) -> str:
    """A compact, printable token: its vocabulary form (e.g. 'Ġthe'), or the id when the tokenizer has none."""
    try:
        text = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:
        text = None
    return str(text) if text else str(token_id)
