"""Shared fixtures: tiny models built from configs, and the real embedded model loaded once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_tiny_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """Llama with GQA: 2 layers, 4 query heads, 2 KV heads, RoPE."""
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """GPT-2: learned positions, fused qkv, 2 layers x 4 heads."""
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_backend(tiny_llama_dir):
    from headscope.engine import load_backend

    return load_backend(str(tiny_llama_dir), quiet=True)


@pytest.fixture(scope="session")
def smollm2_backend():
    """The real embedded model (converted into the headscope cache on first use, ~40 s)."""
    from headscope.engine import load_backend

    return load_backend("smollm2-135m-instruct", quiet=True)
