"""KV-cached decoding equals a plain full forward on the same tokens, on both backends and every covered
architecture, with the prompt prefilled in chunks. This is the check that caught transformers 5.25's rename
of `past_key_values` to `cache` (TransformerLens' attention bridges then never wrote the cache): keep it.

The reference is Hugging Face's own eager forward of the whole sequence, written here, not headscope code."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURE_KINDS, build_tiny_model
from transformers import AutoModelForCausalLM

from headscope.engine import Needs, load_backend
from headscope.engine import hf_cache
from headscope.errors import HeadscopeError

BACKENDS = ("transformer-lens", "nnsight")
PROMPT = [1] + list(range(30, 50))  # 21 tokens: prefilled in chunks of 7 (20 tokens), then 6 decoded


@pytest.fixture(scope="module", params=ARCHITECTURE_KINDS)
def model_dir(request, tmp_path_factory):
    return request.param, build_tiny_model(request.param, tmp_path_factory.mktemp(f"decode_{request.param}"))


def _full_forward_logits(folder, tokens: list[int]) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_step_logits_and_rows_equal_the_full_forward(model_dir, backend_name):
    kind, folder = model_dir
    try:
        backend = load_backend(str(folder), backend=backend_name, quiet=True)
    except HeadscopeError:
        pytest.skip(f"{backend_name} does not adapt {kind} (refused up front, as the backend matrix documents)")
    rows: dict[tuple[int, int], torch.Tensor] = {}
    result = backend.decode(PROMPT, max_new_tokens=6, needs=Needs(pattern=True), prefill_chunk=7,
                            on_layer=lambda acts: rows.__setitem__((acts.step, acts.layer), acts.pattern.clone()))
    tokens = PROMPT + result.generated_ids[:-1]
    full = _full_forward_logits(folder, tokens)
    steps = len(result.generated_ids)
    assert steps == 6
    # every step's logits are the full forward's at that position: a cache that was not written fails here
    torch.testing.assert_close(result.step_logits, full[len(PROMPT) - 1 :][:steps], atol=1e-4, rtol=1e-4)
    assert result.generated_ids == full[len(PROMPT) - 1 :][:steps].argmax(-1).tolist()
    for (step, _layer), row in rows.items():
        assert row.shape == (1, backend.spec.n_heads, 1, len(PROMPT) + step)
        torch.testing.assert_close(row.sum(-1), torch.ones(1, backend.spec.n_heads, 1))


class _CacheThatForgets:
    """Wraps a real cache but drops every update: the failure mode of an unknown cache layout."""

    def __init__(self, cache):
        self._cache = cache

    def update(self, key, value, layer_idx, *args, **kwargs):
        return key, value

    def __getattr__(self, name):
        return getattr(self._cache, name)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_cache_that_is_not_written_stops_with_one_line(tiny_llama_dir, backend_name, monkeypatch):
    backend = load_backend(str(tiny_llama_dir), backend=backend_name, quiet=True)
    real_new_cache = hf_cache.new_cache
    monkeypatch.setattr(hf_cache, "new_cache", lambda config: _CacheThatForgets(real_new_cache(config)))
    with pytest.raises(HeadscopeError, match="KV cache holds 0 tokens where .* were fed.*requirements.lock"):
        backend.decode(PROMPT, max_new_tokens=3, needs=Needs(pattern=True), on_layer=lambda acts: None)


def test_cache_keyword_follows_the_installed_transformers(tiny_llama_dir):
    import inspect

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    parameters = inspect.signature(model.forward).parameters
    expected = "cache" if "cache" in parameters else "past_key_values"
    assert hf_cache.cache_keyword(model) == expected
    assert hf_cache.cache_kwargs(model, "C") == {expected: "C", "use_cache": True}
