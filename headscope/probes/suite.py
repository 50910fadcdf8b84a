"""A probe suite: the token sequences an analyzer runs on, with a content hash for provenance."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenSuite:
    """Tokenised probes. The hash covers the exact token ids, so two atlases with equal hashes saw equal inputs."""

    name: str
    sequences: list[list[int]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # how it was built (seed, lengths), for the atlas params

    def __post_init__(self) -> None:
        if not self.samples:
            self.samples = [{} for _ in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(json.dumps(self.sequences, separators=(",", ":")).encode())
        return digest.hexdigest()[:16]

    def n_batches(self, batch_size: int) -> int:
        return (len(self.sequences) + batch_size - 1) // batch_size
