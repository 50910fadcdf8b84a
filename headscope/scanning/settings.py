"""The settings of one scan run: what every process (driver, Ray worker, resumed scan) loads and batches alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from headscope._version import __version__
from headscope.analyzers import ScanContext
from headscope.engine import Backend, load_backend
from headscope.engine.loading import check_device, parse_dtype
from headscope.errors import HeadscopeError
from headscope.models import DEFAULT_MODEL

DEFAULT_SHARD_SIZE = 64


@dataclass(frozen=True)
class RunSettings:
    """Model, backend and batching of a scan; frozen, so a worker or a resumed scan gets exactly these."""

    model: str = DEFAULT_MODEL
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    remote: bool = False
    batch_size: int = 8
    padding_side: str = "right"
    shard_size: int = DEFAULT_SHARD_SIZE

    def __post_init__(self) -> None:  # user mistakes fail before a model is loaded
        if self.batch_size < 1:
            raise HeadscopeError("--batch-size must be at least 1")
        if self.padding_side not in ("left", "right"):
            raise HeadscopeError(f"padding side '{self.padding_side}' is unknown: use 'left' or 'right'")
        if self.shard_size < 1:
            raise HeadscopeError("--shard-size must be at least 1")
        parse_dtype(self.dtype)
        if not self.remote:
            check_device(self.device)

    @classmethod
    def of_backend(cls, backend: Backend, **batching: Any) -> RunSettings:
        """Settings describing an already-loaded backend (notebooks and tests scan one directly)."""
        return cls(model=backend.model_id, backend=backend.name, dtype=str(backend.dtype).removeprefix("torch."), **batching)

    def load(self, *, quiet: bool = True, prefers_bridge: Callable[[str], bool] | None = None) -> Backend:
        return load_backend(self.model, backend=self.backend, device=self.device, dtype=self.dtype, quiet=quiet,
                            remote=self.remote, prefers_bridge=prefers_bridge)

    def context(self, backend: Backend, *, progress: bool = False) -> ScanContext:
        return ScanContext(backend.spec, backend.tokenizer, batch_size=self.batch_size,
                           padding_side=self.padding_side, progress=progress)  # type: ignore[arg-type]

    def fingerprint(self, backend: Backend) -> dict[str, Any]:
        """What a part file must share with this scan to be reused: the loaded model and the batching."""
        return {"model": backend.model_id, "revision": backend.revision, "dtype": str(backend.dtype), "backend": backend.name,
                "batch_size": self.batch_size, "padding_side": self.padding_side, "shard_size": self.shard_size,
                "headscope": __version__}


def prefers_bridge(analyzers: Sequence[Any], architecture: str) -> bool:
    """Whether a scan of `analyzers` on `architecture` belongs on the TransformerLens bridge when `auto` may choose
    (`engine.loading.choose_backend`): it has a streaming pass that reads attention patterns (eager on both
    backends, and the bridge serves them faster: docs/performance.md, classic 4.8 s vs 5.8 s), or an analyzer
    edits a tensor only the bridge can edit (post-rotary q or k: retrieval's `mask_mode=uniform` masking). Every
    other scan (q/k/v, decoding, ablations of q_raw or z, weights) runs faster on nnsight, which uses sdpa where
    it reads no weights (retrieval 1.08x vs 1.44x the plain generate). Sinks is judged by the score source it
    will resolve to on this architecture (q/k where exact, else patterns)."""
    from headscope.analyzers.base import DrivingAnalyzer, StreamingAnalyzer
    from headscope.analyzers.sinks import SinkAnalyzer, resolve_score_source
    from headscope.engine.hf_interventions import SUPPORTED

    for analyzer in analyzers:
        if isinstance(analyzer, SinkAnalyzer):
            p = analyzer.params
            try:
                if resolve_score_source(p.score_source, architecture, p.attn_scale) == "pattern":
                    return True
            except HeadscopeError:  # refused by the analyzer's own check, before any work
                return True
        elif isinstance(analyzer, StreamingAnalyzer) and analyzer.needs.pattern:
            return True
        elif isinstance(analyzer, DrivingAnalyzer) and not analyzer.edits <= set(SUPPORTED):
            return True
    return False
