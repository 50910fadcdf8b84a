"""Copy-suppression (negative) heads: heads that push down the logit of a token they attend to.

McDougall et al. 2023, "Copy Suppression: Comprehensively Understanding an Attention Head"; official code
callummcdougall/SERI-MATS-2023-Streamlit-pages, `transformer_lens/rs/callum2/utils.py` (`get_effective_embedding`)
and `ov_qk_circuits/section_41_42.ipynb` (section 3.1, OV circuit). Two measurements per head:

* OV-only suppression score (weights): M = W_EE · W_V W_O · W_U with the effective embedding
  W_EE = W_E + MLP_0(ln2_0(W_E)) (block 0 with attention and positions removed) and W_U with the final norm's gain
  folded in (the notebook loads gpt2-small with `fold_ln=True`; `center_unembed` only shifts a row by a constant
  and leaves ranks alone). For source token i, rank M[i, i] within row i ascending (0 = most suppressed); the
  scores are the share of tokens with rank < 10 and with rank in the bottom 5% of the vocabulary (the notebook
  prints rank < 10 and the count above 5%). Under GQA each query head uses the W_V of its KV group.
* Direct logit effect on the attended token (a run on natural text): for every (query, key) pair whose attention
  exceeds 10%, the key not being the first real token (BOS), the head's output at the query, z W_O, projected on
  the centred, norm-folded unembedding of the key's token: negative = the head suppresses what it attends to.

Departures: the notebook ranks all 50,257 rows of M on a GPU; here `n_tokens` rows (a seeded sample of non-special
tokens; 0 = the whole vocabulary) are ranked against the whole vocabulary. The dynamic check in the paper ranks the
attended token among the head's whole direct logit attribution; here the effect itself is averaged (and its sign
counted), which needs no vocabulary-wide product per query; the final norm's per-position scale is left out (it is
positive, so signs are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, head_rows, suite_batches
from headscope.analyzers.metrics import MetricDoc
from headscope.engine import Backend, LayerActivations, ModelSpec, ModelWeights, Needs
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.natural_text import natural_text_suite


@dataclass(frozen=True)
class CopySuppressionParams:
    n_tokens: int = 2000  # rows of M ranked (seeded sample of non-special tokens); 0: the whole vocabulary
    seed: int = 0
    top_rank: int = 10  # "rank < 10"
    bottom_fraction: float = 0.05  # "bottom 5%"
    block_size: int = 512  # rows of M formed at once
    dynamic: bool = True  # also run natural text and measure the direct logit effect on attended tokens
    seq_len: int = 64
    n_samples: int = 16
    prepend_bos: bool = True
    attention_threshold: float = 0.1  # pairs with attention > 10%
    exclude_bos: bool = True  # the first real token is never a counted key


def ov_self_ranks(
    X: torch.Tensor, W_V: torch.Tensor, W_O: torch.Tensor, W_U: torch.Tensor, token_ids: torch.Tensor, *, block_size: int = 512
) -> torch.Tensor:
    """Ascending rank of M[i, token_i] within row i of M = X W_V W_O W_U, for every row of X [n, d_model].

    rank = number of entries of the row strictly smaller than the diagonal one (0 = the most negative).
    """
    right = W_O @ W_U  # [d_head, vocab]
    ranks = torch.empty(len(token_ids), dtype=torch.long)
    for start in range(0, len(token_ids), block_size):
        stop = min(start + block_size, len(token_ids))
        rows = (X[start:stop] @ W_V) @ right  # [block, vocab]
        own = rows[torch.arange(stop - start), token_ids[start:stop].to(rows.device)]
        ranks[start:stop] = (rows < own[:, None]).sum(-1).cpu()
    return ranks


class CopySuppressionAnalyzer(DrivingAnalyzer):
    """OV-only suppression scores from the weights, plus the direct logit effect on attended tokens from a run."""

    name = "copy-suppression"
    Params = CopySuppressionParams
    metrics = ("copy_suppression_ov_rank10", "copy_suppression_ov_bottom5", "copy_suppression_dla",
               "copy_suppression_dla_negative", "copy_suppression_pairs")
    description = "how strongly a head's OV suppresses the token it reads, and its direct effect on attended tokens"
    metric_docs = {
        "copy_suppression_ov_rank10": MetricDoc("share of tokens whose own logit is among the 10 most suppressed by the head's OV (McDougall et al.)"),
        "copy_suppression_ov_bottom5": MetricDoc("share of tokens whose own logit is in the bottom 5% of the head's OV row"),
        "copy_suppression_dla": MetricDoc("mean direct logit effect of the head on the token it attends to (>10% attention); negative = suppression", "lower"),
        "copy_suppression_dla_negative": MetricDoc("share of attended (>10%) tokens whose logit the head lowers"),
        "copy_suppression_pairs": MetricDoc("query-key pairs with attention > 10% (BOS excluded) behind the dla", "neither"),
    }

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if p.n_tokens < 0 or p.top_rank < 1 or not 0 < p.bottom_fraction <= 1 or p.block_size < 1:
            raise HeadscopeError("copy-suppression: n_tokens >= 0, top_rank >= 1, 0 < bottom_fraction <= 1, block_size >= 1")
        if not 0 <= p.attention_threshold < 1:
            raise HeadscopeError("copy-suppression.attention_threshold must be in [0, 1)")
        vocab = min(ctx.spec.d_vocab, len(ctx.tokenizer)) if hasattr(ctx.tokenizer, "__len__") else ctx.spec.d_vocab
        ordinary = torch.tensor([i for i in range(vocab) if i not in ctx.special_ids], dtype=torch.long)
        if p.n_tokens and p.n_tokens < len(ordinary):
            g = torch.Generator().manual_seed(p.seed)
            ordinary = ordinary[torch.randperm(len(ordinary), generator=g)[: p.n_tokens]].sort().values
        if p.dynamic:
            if p.seq_len > ctx.spec.n_ctx:
                raise HeadscopeError(f"copy-suppression.seq_len {p.seq_len} exceeds the model's context {ctx.spec.n_ctx}: lower it")
            suite = natural_text_suite(ctx.tokenizer, seq_len=p.seq_len, n_samples=p.n_samples,
                                       bos_token_id=ctx.spec.bos_token_id, prepend_bos=p.prepend_bos)
        else:
            suite = TokenSuite("copy_suppression_weights_only", [], [], {})
        details = {**suite.details, "ov_tokens": ordinary.tolist()}
        return TokenSuite(suite.name, suite.sequences, suite.samples, details)

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        weights = backend.weights()
        self.run_on_weights(weights, backend.spec, torch.tensor(suite.details["ov_tokens"], dtype=torch.long),
                            progress=ctx.progress)
        if self.params.dynamic and suite.sequences:
            self.run_dynamic(backend, suite, ctx, weights)
        else:
            self._dla = None  # weights only: no dynamic rows

    def run_on_weights(self, weights: ModelWeights, spec: ModelSpec, tokens: torch.Tensor, *, progress: bool = False) -> None:
        """The OV-only scores of every head for the rows `tokens`."""
        p = self.params
        self._spec, self._n_tokens = spec, len(tokens)
        W_U = weights.W_U_folded()
        vocab = W_U.shape[1]
        raw = weights.W_E[tokens.to(weights.W_E.device)]
        X = raw + weights.first_mlp(raw)  # W_EE: block 0 with attention and positions zero-ablated
        bottom = max(1, int(p.bottom_fraction * vocab))
        rank10 = torch.zeros(spec.n_layers, spec.n_heads, dtype=torch.float64)
        bottom5 = torch.zeros_like(rank10)
        for layer in tqdm(range(spec.n_layers), desc="copy-suppression OV", disable=not progress, unit="layer"):
            W_V, W_O = weights.W_V(layer), weights.W_O(layer)
            for head in range(spec.n_heads):
                ranks = ov_self_ranks(X, W_V[spec.kv_head(head)], W_O[head], W_U, tokens, block_size=p.block_size)
                rank10[layer, head] = (ranks < p.top_rank).double().mean()
                bottom5[layer, head] = (ranks < bottom).double().mean()
        self._ov = (rank10, bottom5)

    def run_dynamic(self, backend: Backend, suite: TokenSuite, ctx: ScanContext, weights: ModelWeights) -> None:
        """Sum, negative count and count of the direct logit effect on attended tokens, per head."""
        p, spec = self.params, backend.spec
        W_U = weights.W_U_folded()
        U = W_U - W_U.mean(dim=1, keepdim=True)  # centred unembedding (center_unembed)
        total = torch.zeros(spec.n_layers, spec.n_heads, dtype=torch.float64)
        negative, count = torch.zeros_like(total), torch.zeros_like(total)
        W_O = {layer: weights.W_O(layer) for layer in range(spec.n_layers)}
        batches = list(suite_batches(suite, ctx))
        for batch in tqdm(batches, desc="copy-suppression run", disable=not ctx.progress, unit="batch"):
            ids = batch.input_ids
            valid = batch.valid

            def on_layer(acts: LayerActivations) -> None:
                pattern, z = acts.pattern, acts.z  # [batch, head, query, key], [batch, head, pos, d_head]
                device = pattern.device
                out = torch.einsum("bhqd,hdm->bhqm", z, W_O[acts.layer].to(device))  # the head's output
                key_dirs = U.to(device)[:, ids.to(device)].permute(1, 0, 2)  # [batch, d_model, key]
                effect = torch.einsum("bhqm,bmk->bhqk", out, key_dirs)  # logit effect on each key's token
                v = valid.to(device)
                t = v.shape[1]
                keep = v[:, :, None] & v[:, None, :] & torch.ones(t, t, dtype=torch.bool, device=device).tril()
                if p.exclude_bos:
                    first = v.float().argmax(dim=1)
                    keep[torch.arange(len(first), device=device), :, first] = False
                chosen = keep[:, None] & (pattern > p.attention_threshold)  # [batch, head, query, key]
                total[acts.layer] += (effect * chosen).sum((0, 2, 3)).double().cpu()
                negative[acts.layer] += ((effect < 0) & chosen).sum((0, 2, 3)).double().cpu()
                count[acts.layer] += chosen.sum((0, 2, 3)).double().cpu()

            backend.run(batch, Needs(pattern=True, z=True), on_layer)
        n = count.clamp(min=1)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        self._dla = (torch.where(count > 0, total / n, nan), torch.where(count > 0, negative / n, nan), count)

    def results(self) -> list[HeadValue]:
        rank10, bottom5 = self._ov
        tables = {"copy_suppression_ov_rank10": (rank10, self._n_tokens),
                  "copy_suppression_ov_bottom5": (bottom5, self._n_tokens)}
        if self._dla is None:
            return head_rows(tables)
        dla, negative, count = self._dla
        per_head = count.long()
        rows = head_rows({**tables, "copy_suppression_dla": (dla, 0), "copy_suppression_dla_negative": (negative, 0),
                          "copy_suppression_pairs": (count, 0)})
        # n_samples of the dynamic rows: the attention pairs behind each head's number
        return [r if r.metric.startswith("copy_suppression_ov")
                else HeadValue(r.layer, r.head, r.metric, r.value, int(per_head[r.layer, r.head])) for r in rows]

    def side_output(self) -> dict[str, Any] | None:
        return {"analyzer": self.name, "effective_embedding": "W_E + MLP_0(ln2_0(W_E))",
                "unembedding": "W_U with the final norm gain folded in", "n_tokens": self._n_tokens}
