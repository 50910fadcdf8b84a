"""Turn an embedded GGUF into a plain Hugging Face model directory, once, in the cache.

transformers dequantises the GGUF to fp32 but keeps a `quantization_config` that makes other loaders
(TransformerLens, nnsight) treat the model as quantised; so the weights are copied into a model built
from the config alone and saved with `save_pretrained`. Every later load reads that directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from headscope.atomic import atomic_folder
from headscope.errors import HeadscopeError
from headscope.models.registry import EmbeddedModel


def cache_root() -> Path:
    """Where converted models live: $HEADSCOPE_CACHE, else ~/.cache/headscope."""
    env = os.environ.get("HEADSCOPE_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "headscope"
    return base / "models"


def cached_dir(model: EmbeddedModel) -> Path:
    return cache_root() / model.alias


def is_cached(model: EmbeddedModel) -> bool:
    return (cached_dir(model) / "config.json").is_file() and (cached_dir(model) / ".complete").is_file()


def package_dir(model: EmbeddedModel) -> Path | None:
    """The installed package folder holding (or assembling) the GGUF, found without importing the package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if model.assemble is not None:  # the GGUF is written by the package's hook; its chunk packages must be there
        return folder if all(importlib.util.find_spec(part) is not None for part in model.parts) else None
    return folder if (folder / model.gguf_file).is_file() else None


def assemble_gguf(model: EmbeddedModel, folder: Path) -> Path:
    """Run the package's `assemble` hook to write the GGUF into `folder`; returns the file's path."""
    import importlib

    module_name, _, function_name = (model.assemble or "").partition(":")
    hook = getattr(importlib.import_module(module_name), function_name)
    written = Path(hook(folder / model.gguf_file))
    if not written.is_file():
        raise HeadscopeError(f"{model.distribution} did not write {model.gguf_file}: reinstall it with pip")
    return written


def package_version(model: EmbeddedModel) -> str | None:
    try:
        return version(model.distribution)
    except PackageNotFoundError:
        return None


def ensure_embedded(model: EmbeddedModel, *, quiet: bool = False) -> Path:
    """Return the cached HF directory of `model`, converting the GGUF first if needed."""
    target = cached_dir(model)
    if is_cached(model):
        return target
    source = package_dir(model)
    if source is None:
        raise HeadscopeError(
            f"embedded model '{model.alias}' is not installed: run `{model.install_hint}`"
        )
    if not quiet:
        print(
            f"headscope: converting {model.gguf_file} to a cached fp32 model in {target} (once, ~20 s) ...",
            file=sys.stderr,
            flush=True,
        )
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(staging: Path) -> None:
        _convert(source, model, staging)
        (staging / ".complete").write_text(f"{model.distribution}=={package_version(model)}\n")

    try:
        if model.assemble is not None:  # chunked package: write the GGUF next to the staging dir, then drop it
            source = Path(tempfile.mkdtemp(prefix=f".{model.alias}-gguf-", dir=target.parent))
            assemble_gguf(model, source)
        atomic_folder(target, fill)
    finally:
        if model.assemble is not None and source.name.startswith(f".{model.alias}-gguf-"):
            shutil.rmtree(source, ignore_errors=True)
    if not quiet:
        print(f"headscope: cached in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return target


def _convert(source: Path, model: EmbeddedModel, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=model.gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=model.gguf_file, dtype=torch.float32)
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config._name_or_path = model.hub_id
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
