"""Load a backend for a model name: resolve it locally, then hand it to the chosen library."""

from __future__ import annotations

import torch

from headscope.engine.backend import Backend
from headscope.errors import HeadscopeError
from headscope.models import resolve_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
BACKENDS = ("transformer-lens",)


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise HeadscopeError(f"unknown dtype '{name}': use one of float32, bfloat16, float16") from None


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HeadscopeError(f"device '{device}' asked for but no CUDA GPU is visible: use `--device cpu`")
    if device == "mps" and not torch.backends.mps.is_available():
        raise HeadscopeError("device 'mps' asked for but MPS is not available: use `--device cpu`")
    return device


def load_backend(
    model: str,
    *,
    backend: str = "transformer-lens",
    device: str = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
    quiet: bool = False,
) -> Backend:
    """Resolve `model` (alias, folder or hub id) and load it behind `backend`."""
    torch_dtype = parse_dtype(dtype)
    check_device(device)
    if backend not in BACKENDS:
        raise HeadscopeError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    resolved = resolve_model(model, revision=revision, quiet=quiet)
    from headscope.engine.transformer_lens_backend import TransformerLensBackend

    return TransformerLensBackend(
        resolved.path, model_id=resolved.model_id, revision=resolved.revision, device=device, dtype=torch_dtype
    )
