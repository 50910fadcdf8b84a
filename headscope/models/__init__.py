"""Model resolution: embedded aliases, local folders and hub ids, all made local before loading."""

from headscope.models.embedded import cache_root, ensure_embedded, is_cached, package_dir
from headscope.models.registry import (
    DEFAULT_MODEL,
    DERIVED_MODELS,
    EMBEDDED_MODELS,
    DerivedModel,
    EmbeddedModel,
    canonical_alias,
)
from headscope.models.resolve import ResolvedModel, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "DERIVED_MODELS",
    "DerivedModel",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "ResolvedModel",
    "cache_root",
    "canonical_alias",
    "ensure_embedded",
    "is_cached",
    "package_dir",
    "resolve_model",
]
