"""Resolve what the user typed (alias, local folder, hub id) to a local model directory.

Order: embedded alias (or one derived from it, built on first use), local Hugging Face directory, hub id.
TransformerLens retries the hub many times when handed an id without a local tokenizer, so everything is
made local first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from headscope.errors import HeadscopeError
from headscope.models.embedded import ensure_embedded, package_version
from headscope.models.registry import DERIVED_MODELS, EMBEDDED_MODELS, canonical_alias


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load from disk, with the provenance an atlas records."""

    path: Path
    model_id: str  # what the atlas calls the model
    revision: str  # commit hash, package version, or "local"
    source: str  # "embedded" | "local" | "hub"


def resolve_model(name: str, *, revision: str | None = None, quiet: bool = False) -> ResolvedModel:
    """Find `name` on disk (converting or downloading it if it has to)."""
    if not name or not name.strip():
        raise HeadscopeError("no model given: pass an embedded alias (see `headscope models`), a folder, or a hub id")
    alias = canonical_alias(name)
    if alias in DERIVED_MODELS:
        from headscope.models.derived import ensure_derived

        path, derived_revision = ensure_derived(DERIVED_MODELS[alias], quiet=quiet)
        return ResolvedModel(path, alias, derived_revision, "embedded")
    if alias is not None:
        spec = EMBEDDED_MODELS[alias]
        path = ensure_embedded(spec, quiet=quiet)
        return ResolvedModel(path, alias, f"{spec.distribution}=={package_version(spec)}", "embedded")

    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise HeadscopeError(f"'{name}' is a path but holds no config.json: point at a Hugging Face model folder")
        return ResolvedModel(local.resolve(), _local_model_id(local), _local_revision(local), "local")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise HeadscopeError(f"model folder '{name}' does not exist: check the path, or see `headscope models`")
    return _resolve_hub(name, revision)


def _local_model_id(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HeadscopeError(f"cannot read {path / 'config.json'} ({err}): is this a Hugging Face model folder?") from None
    named = config.get("_name_or_path") or ""
    return named if named and not Path(named).is_absolute() else path.resolve().name


def _local_revision(path: Path) -> str:
    for candidate in (path / ".commit", path / "refs" / "main"):
        if candidate.is_file():
            return candidate.read_text().strip()
    return "local"


def _resolve_hub(repo_id: str, revision: str | None) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
        )
    except Exception as err:  # network, auth, or unknown repo: all one line for the user
        reason = type(err).__name__
        raise HeadscopeError(
            f"cannot fetch '{repo_id}' from the Hugging Face hub ({reason}): check the id and your network, "
            "or pass a local folder or an embedded alias (see `headscope models`)"
        ) from None
    commit = Path(folder).name
    return ResolvedModel(Path(folder), repo_id, revision or commit, "hub")
