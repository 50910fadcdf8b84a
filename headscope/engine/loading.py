"""Load a backend for a model name: resolve it locally, then hand it to the chosen library.

Backends: `transformer-lens` (TransformerLens' `TransformerBridge`), `nnsight` (any Hugging Face causal LM,
also remote on NDIF), and `auto`, which takes the bridge where it adapts the architecture fully and
nnsight otherwise.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Callable

import torch

from headscope.engine.backend import Backend
from headscope.errors import HeadscopeError
from headscope.models import resolve_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
BACKENDS = ("auto", "transformer-lens", "nnsight")

# Architectures the TransformerLens bridge adapts but with hook points that never fire: `auto` sends them to
# nnsight. GPT-NeoX: hook_rot_q / hook_rot_k exist but the bridge never calls them (TL 4.3), so there is no
# post-rotary q/k.
TL_INCOMPLETE = {"GPTNeoXForCausalLM": "no post-rotary q/k hooks"}
# Same for GPT-J and Phi-3 (TL 4.x bridge): hook_rot_q / hook_rot_k never fire (tests/conformance).
TL_INCOMPLETE.update({"GPTJForCausalLM": "no post-rotary q/k hooks", "Phi3ForCausalLM": "no post-rotary q/k hooks"})


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise HeadscopeError(f"unknown dtype '{name}': use one of float32, bfloat16, float16") from None


_DEVICE = re.compile(r"cpu|mps|cuda(:[0-9]{1,3})?")


def check_device(device: str) -> str:
    """Refuse a device torch cannot name or this machine lacks, before a model is loaded."""
    if not _DEVICE.fullmatch(device):
        raise HeadscopeError(f"unknown device '{device}': use cpu, cuda, cuda:N or mps (lower case)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HeadscopeError(f"device '{device}' asked for but no CUDA GPU is visible: use `--device cpu`")
    if device == "mps" and not torch.backends.mps.is_available():
        raise HeadscopeError("device 'mps' asked for but MPS is not available: use `--device cpu`")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise HeadscopeError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
                             "numbered from cuda:0")
    return device


def load_backend(
    model: str,
    *,
    backend: str = "transformer-lens",
    device: str = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
    quiet: bool = False,
    remote: bool = False,
    prefers_bridge: Callable[[str], bool] | None = None,
) -> Backend:
    """Resolve `model` (alias, folder or hub id) and load it behind `backend`.

    `remote=True` runs the model on NDIF through nnsight: `model` must be a hub id NDIF hosts, nothing is
    downloaded but its config and tokenizer, and the key comes from $NDIF_API_KEY.
    `prefers_bridge(architecture)`: whether the scan belongs on the bridge on this architecture (pattern-reading
    streaming passes, or edits only the bridge makes); with `auto`, a scan that does not goes to nnsight.
    """
    torch_dtype = parse_dtype(dtype)
    check_device(device)
    if backend not in BACKENDS:
        raise HeadscopeError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if remote:
        return _load_remote(model, backend=backend, dtype=torch_dtype, revision=revision)
    resolved = resolve_model(model, revision=revision, quiet=quiet)
    if backend == "auto":
        backend = choose_backend(resolved.path, prefers_bridge)
    try:
        if backend == "nnsight":
            from headscope.engine.nnsight_backend import NNsightBackend

            return NNsightBackend(
                resolved.path, model_id=resolved.model_id, revision=resolved.revision, device=device, dtype=torch_dtype
            )
        from headscope.engine.transformer_lens_backend import TransformerLensBackend

        return TransformerLensBackend(
            resolved.path, model_id=resolved.model_id, revision=resolved.revision, device=device, dtype=torch_dtype
        )
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met code in a .bin: nothing of it ran
        raise HeadscopeError(
            f"the weights in {resolved.path} are a pickle that names code (torch refused to load it, nothing ran): "
            "use a copy saved as safetensors from a source you trust"
        ) from None


def choose_backend(path: Path, prefers_bridge: Callable[[str], bool] | None = None) -> str:
    """`auto`: the TransformerLens bridge when it fully adapts the model's architecture, else nnsight.

    Except for scans the bridge does not serve better (`prefers_bridge(architecture)` is False: sinks from q/k,
    decoding, ablations of q_raw or z, weights) on a model whose sdpa attention computes what eager does: those go to
    nnsight, which runs every pass that reads no weights with sdpa, while the bridge always computes eager
    attention (measured in docs/performance.md; both backends agree on every analyzer: docs/conformance.md).
    """
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    try:
        config = json.loads((Path(path) / "config.json").read_text())
        architectures = config.get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return "nnsight"
    supported = ArchitectureAdapterFactory._adapters
    if architectures and all(a in supported and a not in TL_INCOMPLETE for a in architectures):
        if prefers_bridge is not None and not any(prefers_bridge(a) for a in architectures) \
                and all(sdpa_matches_eager(a, config) for a in architectures):
            return "nnsight"
        return "transformer-lens"
    return "nnsight"


def sdpa_matches_eager(architecture: str, config: dict) -> bool:
    """From the config alone: the model class supports sdpa, and nothing in its attention that sdpa drops is
    set (logit soft-capping, learned sinks, GPT-2's upcast path). The loaded model is checked again per pass
    (`nnsight_backend.sdpa_serves`)."""
    import transformers

    cls = getattr(transformers, architecture, None)
    if cls is None or not getattr(cls, "_supports_sdpa", False):
        return False
    text = config.get("text_config") or config
    return not (text.get("attn_logit_softcapping") or text.get("reorder_and_upcast_attn")
                or architecture in SDPA_REFUSED)


# Attention with learned sinks (an extra softmax column sdpa does not add): kept on eager attention.
SDPA_REFUSED = frozenset({"GptOssForCausalLM"})


def _load_remote(model: str, *, backend: str, dtype: torch.dtype, revision: str | None) -> Backend:
    """A meta-loaded nnsight model whose forward passes run on NDIF."""
    if backend == "transformer-lens":
        raise HeadscopeError("--remote runs through nnsight: use `--backend nnsight` (or auto) with --remote")
    from headscope.engine.nnsight_backend import NNsightBackend, require_ndif_key

    require_ndif_key()
    if Path(model).expanduser().exists() or model.count("/") != 1:
        raise HeadscopeError(f"--remote needs a Hugging Face hub id that NDIF hosts (e.g. meta-llama/Llama-3.1-8B), not '{model}'")
    return NNsightBackend(model, model_id=model, revision=revision or "main", dtype=dtype, remote=True)
