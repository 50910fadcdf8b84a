"""A batch of probe sequences, padded, with what analyzers need to undo the padding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch

PaddingSide = Literal["left", "right"]


@dataclass
class ProbeBatch:
    """Token ids of several probe sequences in one padded tensor.

    `attention_mask` is 1 on real tokens. `query_positions`, when set, names the query rows an analyzer
    wants ([batch, n_rows], padded coordinates); the engine then hands over only those attention rows.
    `samples` carries per-sequence metadata (e.g. where a needle sits), in batch order.
    """

    input_ids: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos]
    query_positions: torch.Tensor | None = None  # [batch, n_rows]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def valid(self) -> torch.Tensor:
        """Boolean [batch, pos]: True on real (non-pad) tokens."""
        return self.attention_mask.bool()

    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    side: PaddingSide = "right",
    samples: list[dict[str, Any]] | None = None,
) -> ProbeBatch:
    """Pad token lists to one tensor; left padding keeps every sequence's end aligned."""
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, cols] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, cols] = 1
    return ProbeBatch(ids, mask, samples=list(samples) if samples is not None else [{} for _ in sequences])
