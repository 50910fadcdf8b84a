"""Repeated random tokens: the probe of the classic pattern heads (as in TransformerLens' head detector).

Each sequence is [BOS] + r + r with r a run of uniformly drawn non-special tokens: the second copy
lets induction heads look back to the token after the earlier occurrence of the current one.
"""

from __future__ import annotations

import torch

from headscope.errors import HeadscopeError
from headscope.probes.suite import TokenSuite


def repeated_random_tokens(
    *,
    seq_len: int,
    n_samples: int,
    seed: int,
    vocab_size: int,
    bos_token_id: int | None,
    special_ids: set[int] | None = None,
    n_ctx: int | None = None,
) -> TokenSuite:
    """Build `n_samples` sequences of length `seq_len` (BOS included when the model has one)."""
    prefix = [bos_token_id] if bos_token_id is not None else []
    half = (seq_len - len(prefix)) // 2
    if half < 2:
        raise HeadscopeError(f"--seq-len {seq_len} is too short for repeated tokens: use at least {len(prefix) + 4}")
    if n_ctx is not None and seq_len > n_ctx:
        raise HeadscopeError(f"--seq-len {seq_len} exceeds the model's context of {n_ctx} tokens: use a smaller --seq-len")
    if n_samples < 1:
        raise HeadscopeError("--n-samples must be at least 1")
    excluded = torch.tensor(sorted(special_ids or set()), dtype=torch.long)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    if len(excluded):
        allowed[excluded[excluded < vocab_size]] = False
    pool = allowed.nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    picks = pool[torch.randint(len(pool), (n_samples, half), generator=generator)]
    sequences = [prefix + row.tolist() + row.tolist() for row in picks]
    samples = [{"first_copy_start": len(prefix), "half": half} for _ in sequences]
    details = {"seq_len": len(prefix) + 2 * half, "n_samples": n_samples, "seed": seed, "prepend_bos": bool(prefix)}
    return TokenSuite("repeated_random_tokens", sequences, samples, details)
