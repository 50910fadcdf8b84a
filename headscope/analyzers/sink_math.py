"""Streaming attention statistics for sink detection: column sums without the [query, key] pattern.

The sink metric of Gu et al. 2024 (sail-sg/Attention-Sink `eval_sink_open_source.py`) needs only, per head,
the column sums of the causal attention matrix, `sum_{i >= j} A[i, j]`. They are computed here from the
post-RoPE queries and keys without the [query, key] pattern. Row entropies (Guo et al. 2024, active-dormant heads)
come from the same pass.

On CPU both come from two calls of torch's fused causal attention kernel (flash attention for CPU), which
returns each row's log-sum-exp `lse_i` next to its output and never materialises the scores:
  - entropy of row i: H_i = lse_i - scale * q_i . sum_j p_ij k_j, i.e. the kernel's output with the keys as
    values (-sum p log p with log p_ij = scale q_i.k_j - lse_i);
  - column sum j: sum_{i >= j} p_ij = exp(logsumexp_{i >= j}(scale q_i.k_j - lse_i)), the log-sum-exp of a second
    causal call with the roles swapped: keys as queries, [scale q_i, -lse_i] as keys against [k_j, 1], both
    sequences reversed so that "i >= j" becomes the causal "key before query".
Elsewhere (other devices, or a torch without that kernel) the pattern is formed in blocks of query rows,
O(block x T) per head. Both are checked against Hugging Face's eager attention weights in tests/analyzers/test_sinks.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ColumnStats:
    """Per (sequence, head) reductions of one layer's attention, in padded coordinates.

    col_sum     [batch, head, key]  sum over valid queries of A[query, key]
    n_queries   [batch, key]        valid queries that can see each key (i >= j, both real tokens)
    entropy_sum [batch, head]       sum over valid queries (except the first, whose entropy is 0) of H(A_i) / log(keys visible)
    n_entropy   [batch]             how many queries entered entropy_sum
    """

    col_sum: torch.Tensor
    n_queries: torch.Tensor
    entropy_sum: torch.Tensor
    n_entropy: torch.Tensor

    @property
    def column_mean(self) -> torch.Tensor:
        """alpha_j = (1 / #queries seeing j) sum_i A[i, j]  [batch, head, key]; 0 on pads."""
        return self.col_sum / self.n_queries.clamp(min=1)[:, None, :].to(self.col_sum.dtype)


def _block_stats(probs: torch.Tensor, visible: torch.Tensor, row_valid: torch.Tensor, n_visible: torch.Tensor):
    """Reductions of one block of rows. probs [b, h, rows, T]; visible [b, 1, rows, T]; row_valid [b, rows]."""
    probs = probs * visible * row_valid[:, None, :, None]
    col = probs.sum(2)
    plogp = torch.where(probs > 0, probs * probs.clamp(min=1e-30).log(), torch.zeros_like(probs))
    entropy = -plogp.sum(-1)  # [b, h, rows]
    norm = n_visible.to(probs.dtype).log()  # [b, rows]; log(1) = 0 for a query that sees only itself
    use = row_valid & (n_visible > 1)
    entropy = torch.where(use[:, None, :], entropy / norm.clamp(min=1e-12)[:, None, :], torch.zeros_like(entropy))
    return col, entropy.sum(-1), use.sum(-1)


def _masks(valid: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = valid.shape[1]
    rows = torch.arange(start, stop, device=valid.device)
    causal = rows[:, None] >= torch.arange(t, device=valid.device)[None, :]  # [rows, T]
    visible = causal[None] & valid[:, None, :]  # [b, rows, T]
    row_valid = valid[:, start:stop]
    return visible[:, None], row_valid, visible.sum(-1)


def stats_from_qk(
    q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, *, scale: float, block_size: int = 256
) -> ColumnStats:
    """Column sums and row entropies of softmax(q k^T * scale) under the causal + padding mask.

    q [batch, head, pos, d_head] and k [batch, kv_head, pos, d_head], both after RoPE. GQA: query head h reads
    kv head `h // group_size`. Rows of padded queries are dropped; padded keys get no attention. Fused kernel
    per sequence where it serves (CPU, each sequence's real tokens contiguous: left or right padding), else
    blocks of `block_size` query rows.
    """
    valid = valid.to(q.device).bool()
    spans = _real_spans(valid) if _FLASH is not None and q.device.type == "cpu" else None
    if spans is not None:
        return _stats_by_kernel(q, k, valid, spans, scale)
    return _stats_by_blocks(q, k, valid, scale, block_size)


# torch's fused CPU attention, which also returns each row's log-sum-exp (absent: the block path serves)
_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _real_spans(valid: torch.Tensor) -> list[tuple[int, int]] | None:
    """Each sequence's real tokens as [start, stop) ((0, 0) when it has none), or None when one sequence's real
    tokens are not contiguous (neither left nor right padding)."""
    spans = []
    for row in valid:
        real = row.nonzero().flatten()
        if len(real) and int(real[-1] - real[0]) + 1 != len(real):
            return None
        spans.append((int(real[0]), int(real[-1]) + 1) if len(real) else (0, 0))
    return spans


def causal_columns_and_entropies(q: torch.Tensor, k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For one unpadded causal sequence, q and k [1, head, T, d] (k already repeated to every query head):
    column sums [1, head, T] and raw row entropies (nats) [1, head, T] of softmax(scale q k^T), in two kernel calls."""
    q, k = q.contiguous(), k.contiguous()
    out, lse = _FLASH(q, k, k, 0.0, True, scale=scale)  # values = keys: out_i = sum_j p_ij k_j
    entropy = lse - scale * (q * out).sum(-1)
    ones = torch.ones(*k.shape[:-1], 1, dtype=k.dtype)
    as_queries = torch.cat([k, ones], dim=-1).flip(2)  # key j, reversed: query T-1-j
    as_keys = torch.cat([q * scale, -lse[..., None]], dim=-1).flip(2)  # query i, reversed: key T-1-i
    _, column_lse = _FLASH(as_queries, as_keys, as_keys, 0.0, True, scale=1.0)
    return column_lse.flip(2).exp(), entropy.clamp(min=0.0)


def _stats_by_kernel(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, spans: list[tuple[int, int]],
                     scale: float) -> ColumnStats:
    b, n_heads, t, _ = q.shape
    group = n_heads // k.shape[1]
    col_sum = torch.zeros(b, n_heads, t, dtype=torch.float64)
    entropy_sum = torch.zeros(b, n_heads, dtype=torch.float64)
    n_entropy = torch.zeros(b, dtype=torch.long)
    for seq, (lo, hi) in enumerate(spans):
        if hi == lo:
            continue
        keys = k[seq : seq + 1, :, lo:hi]
        keys = keys.repeat_interleave(group, dim=1) if group > 1 else keys
        columns, entropy = causal_columns_and_entropies(q[seq : seq + 1, :, lo:hi].float(), keys.float(), scale)
        col_sum[seq, :, lo:hi] = columns[0].double()
        # rows 1..n-1 normalised by log(keys visible); row 0 sees one key (entropy 0) and is counted by the caller
        norm = torch.arange(2, hi - lo + 1, dtype=torch.float64).log()
        entropy_sum[seq] = (entropy[0, :, 1:].double() / norm).sum(-1)
        n_entropy[seq] = hi - lo - 1
    return ColumnStats(col_sum, _n_queries(valid), entropy_sum, n_entropy)


def _stats_by_blocks(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float, block_size: int) -> ColumnStats:
    """The pattern formed `block_size` query rows at a time (any device, any mask)."""
    b, n_heads, t, _ = q.shape
    group = n_heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1) if group > 1 else k  # [batch, head, pos, d_head]
    col_sum = torch.zeros(b, n_heads, t, dtype=torch.float64, device=q.device)
    entropy_sum = torch.zeros(b, n_heads, dtype=torch.float64, device=q.device)
    n_entropy = torch.zeros(b, dtype=torch.long, device=q.device)
    for start in range(0, t, block_size):
        stop = min(start + block_size, t)
        visible, row_valid, n_visible = _masks(valid, start, stop)
        scores = torch.einsum("bhqd,bhkd->bhqk", q[:, :, start:stop], k) * scale
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked (pad) rows -> 0
        col, ent, n_ent = _block_stats(probs, visible, row_valid, n_visible)
        col_sum += col.double()
        entropy_sum += ent.double()
        n_entropy += n_ent
    return ColumnStats(col_sum, _n_queries(valid), entropy_sum, n_entropy)


def stats_from_pattern(pattern: torch.Tensor, valid: torch.Tensor, *, block_size: int = 256) -> ColumnStats:
    """The same reductions from a full post-softmax pattern [batch, head, query, key] (exact for any model)."""
    b, n_heads, t, _ = pattern.shape
    valid = valid.to(pattern.device).bool()
    col_sum = torch.zeros(b, n_heads, t, dtype=torch.float64, device=pattern.device)
    entropy_sum = torch.zeros(b, n_heads, dtype=torch.float64, device=pattern.device)
    n_entropy = torch.zeros(b, dtype=torch.long, device=pattern.device)
    for start in range(0, t, block_size):
        stop = min(start + block_size, t)
        visible, row_valid, n_visible = _masks(valid, start, stop)
        col, ent, n_ent = _block_stats(pattern[:, :, start:stop], visible, row_valid, n_visible)
        col_sum += col.double()
        entropy_sum += ent.double()
        n_entropy += n_ent
    return ColumnStats(col_sum, _n_queries(valid), entropy_sum, n_entropy)


def _n_queries(valid: torch.Tensor) -> torch.Tensor:
    """[batch, key]: valid queries at or after each valid key (the paper's T - j, counting real tokens only)."""
    counts = valid.long().flip(-1).cumsum(-1).flip(-1)
    return counts * valid.long()


def default_scale(d_head: int) -> float:
    """1 / sqrt(d_head): the attention scaling of Llama, Mistral, Qwen2, GPT-2, GPT-NeoX, OPT."""
    return 1.0 / math.sqrt(d_head)
