"""Copy suppression (McDougall et al. 2023) against a planted OV = -identity head and references built here.

- planted Llama (GQA): tokens t4..t67 embed as the standard basis, the rest small random vectors; layer 0's KV
  head 0 has W_V = -I (heads 0-1 suppress the token they read), KV head 1 has W_V = I (heads 2-3 copy), W_O = I,
  W_U = W_E^T, the layer-0 MLP is zeroed (so W_EE = W_E) and the final norm has a non-trivial gain;
- OV reference: the full |V| x |V| map of every head from the HF modules (v_proj, o_proj, lm_head, the final norm's
  weight, the layer-0 norm and MLP), the diagonal's rank read off `argsort`;
- dynamic reference: HF eager attentions and the o_proj inputs of the same sequences, each head's output
  projected on the centred, norm-folded unembedding of every key token, pairs with attention > 0.1, BOS excluded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.analyzers.copy_suppression import CopySuppressionAnalyzer
from headscope.engine import load_backend
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.scanning import scan_result
from reference import hf_attentions, hf_eager, hf_o_proj_inputs
from tiny_models import build_tiny_model

SEQUENCES = [[1, 5, 9, 5, 70, 9, 12, 5], [1, 30, 31, 30, 31, 80], [1, 44, 6, 44, 6, 44, 90, 7, 7, 40, 44]]


def plant(model) -> None:
    d = 64
    g = torch.Generator().manual_seed(5)
    E = torch.zeros(96, d)
    E[4:68] = torch.eye(d)
    E[68:96] = 0.2 * torch.randn(28, d, generator=g)
    E[:4] = 0.2 * torch.randn(4, d, generator=g)
    model.model.embed_tokens.weight.copy_(E)
    model.lm_head.weight.copy_(E)
    model.model.norm.weight.copy_(0.5 + torch.rand(d, generator=g))
    block0 = model.model.layers[0]
    block0.mlp.down_proj.weight.zero_()
    block0.self_attn.v_proj.weight.copy_(torch.cat([-torch.eye(d), torch.eye(d)]))
    block0.self_attn.o_proj.weight.copy_(torch.cat([torch.eye(d)] * 4, dim=1))


def fixed(**params) -> CopySuppressionAnalyzer:
    class Fixed(CopySuppressionAnalyzer):
        def build_suite(self, ctx):
            suite = super().build_suite(ctx)
            return TokenSuite("fixed", SEQUENCES, [{} for _ in SEQUENCES], {"ov_tokens": suite.details["ov_tokens"]})

    return Fixed(**params)


def heads_of(model):
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return cfg.num_hidden_layers, n_heads, n_kv, d_head


def ov_reference(model, tokens: list[int], top: int = 10, fraction: float = 0.05) -> np.ndarray:
    n_layers, n_heads, n_kv, d_head = heads_of(model)
    E = model.model.embed_tokens.weight.detach()
    U = model.model.norm.weight.detach()[:, None] * model.lm_head.weight.detach().T
    block0 = model.model.layers[0]
    with torch.no_grad():
        W_EE = E + block0.mlp(block0.post_attention_layernorm(E))
    out = np.zeros((n_layers, n_heads, 2))
    for layer in range(n_layers):
        attn = model.model.layers[layer].self_attn
        V = attn.v_proj.weight.detach().view(n_kv, d_head, -1)
        O = attn.o_proj.weight.detach().view(-1, n_heads, d_head)
        for head in range(n_heads):
            M = W_EE @ V[head // (n_heads // n_kv)].T @ O[:, head].T @ U  # the whole vocabulary map
            ranks = [int((torch.argsort(M[i]) == i).nonzero()) for i in tokens]
            out[layer, head, 0] = np.mean([r < top for r in ranks])
            out[layer, head, 1] = np.mean([r < int(fraction * M.shape[1]) for r in ranks])
    return out


def dla_reference(model, threshold: float = 0.1) -> np.ndarray:
    n_layers, n_heads, _, d_head = heads_of(model)
    U = model.model.norm.weight.detach()[:, None] * model.lm_head.weight.detach().T
    U = U - U.mean(1, keepdim=True)
    total = np.zeros((n_layers, n_heads, 3))  # sum, negatives, count
    for tokens in SEQUENCES:
        ids = torch.tensor([tokens])
        attentions = hf_attentions(model, ids)
        z = hf_o_proj_inputs(model, ids)
        for layer in range(n_layers):
            W_O = model.model.layers[layer].self_attn.o_proj.weight.detach()  # [d_model, heads * d_head]
            for head in range(n_heads):
                part = slice(head * d_head, (head + 1) * d_head)
                out = z[layer][0, :, part] @ W_O[:, part].T  # [pos, d_model]
                for q in range(len(tokens)):
                    for k in range(1, q + 1):
                        if attentions[layer][0, head, q, k] > threshold:
                            effect = float(out[q] @ U[:, tokens[k]])
                            total[layer, head] += (effect, effect < 0, 1)
    return total


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("copy_suppression"), edit=plant, head_dim=64)


@pytest.mark.parametrize("backend,side", [("transformer-lens", "right"), ("nnsight", "left")])
def test_planted_suppression_head_and_references(planted_dir, backend, side):
    loaded = load_backend(str(planted_dir), backend=backend, quiet=True)
    result = scan_result(loaded, [fixed(n_tokens=0)], batch_size=2, padding_side=side, progress=False)
    wide = result.atlas.to_frame()
    for head in (0, 1):  # OV = -I on the basis tokens
        assert wide.loc[(0, head), "copy_suppression_ov_bottom5"] > 0.6
        assert wide.loc[(0, head), "copy_suppression_dla"] < 0
    for head in (2, 3):  # OV = +I: copying, never suppressing
        assert wide.loc[(0, head), "copy_suppression_ov_rank10"] == 0.0
        assert wide.loc[(0, head), "copy_suppression_dla"] > 0
    top = result.atlas.top("copy_suppression_ov_rank10", 2)
    assert {(int(r.layer), int(r.head)) for r in top.itertuples()} == {(0, 0), (0, 1)}

    model = hf_eager(planted_dir)
    tokens = [i for i in range(96) if i not in loaded.tokenizer.all_special_ids]
    expected = ov_reference(model, tokens)
    shape = expected.shape[:2]
    np.testing.assert_allclose(wide["copy_suppression_ov_rank10"].to_numpy().reshape(shape), expected[..., 0])
    np.testing.assert_allclose(wide["copy_suppression_ov_bottom5"].to_numpy().reshape(shape), expected[..., 1])
    dla = dla_reference(model)
    count = dla[..., 2]
    np.testing.assert_array_equal(wide["copy_suppression_pairs"].to_numpy().reshape(shape), count)
    np.testing.assert_allclose(wide["copy_suppression_dla"].to_numpy().reshape(shape), dla[..., 0] / count, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(wide["copy_suppression_dla_negative"].to_numpy().reshape(shape), dla[..., 1] / count)


def test_sampled_rows_and_weights_only(planted_dir):
    loaded = load_backend(str(planted_dir), quiet=True)
    analyzer = fixed(n_tokens=20, seed=3, dynamic=False)
    result = scan_result(loaded, [analyzer], progress=False)
    wide = result.atlas.to_frame()
    tokens = analyzer.build_suite(result_ctx(loaded)).details["ov_tokens"]
    assert len(tokens) == 20 and not set(tokens) & set(loaded.tokenizer.all_special_ids)
    expected = ov_reference(hf_eager(planted_dir), tokens)
    np.testing.assert_allclose(wide["copy_suppression_ov_rank10"].to_numpy().reshape(expected.shape[:2]), expected[..., 0])
    assert "copy_suppression_dla" not in wide.columns and "copy_suppression_pairs" not in wide.columns


def result_ctx(backend):
    from headscope.analyzers import ScanContext

    return ScanContext(backend.spec, backend.tokenizer)


def test_bad_params_are_one_line_errors(tiny_llama_backend):
    for params in ({"n_tokens": -1}, {"bottom_fraction": 0.0}, {"attention_threshold": 1.0}, {"seq_len": 100000}):
        with pytest.raises(HeadscopeError):
            scan_result(tiny_llama_backend, [CopySuppressionAnalyzer(**params)], progress=False)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
def test_folded_unembedding_uses_the_final_norm_gain(kind, tmp_path):
    """RMSNorm weight (Llama), LayerNorm weight (GPT-2), 1 + weight (Gemma-3), each read against HF's module."""
    from headscope.engine import weights_from_hf
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(kind, tmp_path / kind)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    norm = {"llama": lambda: model.model.norm, "gpt2": lambda: model.transformer.ln_f,
            "gemma3": lambda: model.model.norm}[kind]()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.weight.shape) + 0.5)
    cfg = model.config
    n_heads = cfg.num_attention_heads if kind != "gpt2" else cfg.n_head
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    d_head = getattr(cfg, "head_dim", None) or 64 // n_heads
    weights = weights_from_hf(model, n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head)
    expected = (1.0 + norm.weight.detach()) if kind == "gemma3" else norm.weight.detach()
    torch.testing.assert_close(weights.final_norm_gain(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weights.W_U_folded(), expected[:, None] * model.get_output_embeddings().weight.detach().T,
                               rtol=1e-4, atol=1e-4)
