"""The shape of a model as analyzers see it: layers, heads, and the GQA grouping."""

from __future__ import annotations

from dataclasses import dataclass

Head = tuple[int, int]  # (layer, head): how every analyzer, circuit and intervention names one attention head


@dataclass(frozen=True)
class ModelSpec:
    """Head layout of a loaded model; every analyzer and atlas row is indexed by it."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int
    n_ctx: int
    bos_token_id: int | None
    pad_token_id: int | None
    architecture: str

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The KV head whose keys/values query head `head` reads: `head // group_size`."""
        return head // self.group_size
