"""MAPS (Elhelo & Geva 2024) against independent references.

- weights: every accessor checked against the HF modules' own forward (v_proj / c_attn / query_key_value,
  o_proj / c_proj / dense, layer-0 norm + MLP) on random inputs;
- scores: the full |V| x |V| map of every head built explicitly from the HF parameters and scored with
  `torch.topk`, as the official `calc_relation_score` does, vs the blocked implementation;
- a planted head whose OV is the identity in embedding space (copying: ~1, elsewhere ~0), and GQA: two
  query heads sharing that KV head copy, the two on the other KV head (OV = -identity) suppress copies;
- SmolLM2: one head's scores against full rows formed from the HF weights, and the relation survival counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from headscope.analyzers.maps import MapsAnalyzer, MapsParams
from headscope.engine import load_backend, weights_from_hf
from headscope.scanning import scan_backend, scan_result, side_output_path
from tiny_models import build_tiny_model


def write_suite(folder: Path, pairs: dict[str, list[tuple[str, str]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w") as sink:
        for relation, items in pairs.items():
            for src, dst in items:
                sink.write(json.dumps({"relation": relation, "src": src, "dst": dst}) + "\n")
    (folder / "CARD.md").write_text("test suite\n")
    return folder


def random_pairs(seed: int, n: int, vocab: int) -> list[tuple[str, str]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, 2), generator=g)
    return [(f"t{a}", f"t{b}") for a, b in ids.tolist()]


# --- weights ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_weights_match_module_forward(kind, tmp_path):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

    if kind == "gpt_neox":
        torch.manual_seed(0)
        config = GPTNeoXConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, max_position_embeddings=128)
        model = GPTNeoXForCausalLM(config).eval()
        n_heads, n_kv = 4, 4
    else:
        folder = build_tiny_model(kind, tmp_path / kind)
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        n_heads, n_kv = 4, (2 if kind == "llama" else 4)
    d_model, d_head = 64, 16
    weights = weights_from_hf(model, n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head)
    x = torch.randn(5, d_model)
    z = torch.randn(5, n_heads * d_head)
    with torch.no_grad():
        for layer in range(2):
            if kind == "llama":
                attn = model.model.layers[layer].self_attn
                v = attn.v_proj(x).view(5, n_kv, d_head)
                o = attn.o_proj(z)
            elif kind == "gpt2":
                attn = model.transformer.h[layer].attn
                v = (attn.c_attn(x) - attn.c_attn.bias)[:, 2 * d_model :].view(5, n_heads, d_head)
                o = attn.c_proj(z) - attn.c_proj.bias
            else:
                attn = model.gpt_neox.layers[layer].attention
                fused = (attn.query_key_value(x) - attn.query_key_value.bias).view(5, n_heads, 3, d_head)
                v = fused[:, :, 2]
                o = attn.dense(z) - attn.dense.bias
            ours_v = torch.einsum("nd,gde->nge", x, weights.W_V(layer))
            ours_o = torch.einsum("nhe,hed->nd", z.view(5, n_heads, d_head), weights.W_O(layer))
            torch.testing.assert_close(ours_v, v, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours_o, o, rtol=1e-5, atol=1e-5)
        block = {"llama": lambda: model.model.layers[0], "gpt2": lambda: model.transformer.h[0],
                 "gpt_neox": lambda: model.gpt_neox.layers[0]}[kind]()
        norm = {"llama": "post_attention_layernorm", "gpt2": "ln_2", "gpt_neox": "post_attention_layernorm"}[kind]
        torch.testing.assert_close(weights.first_mlp(x), block.mlp(getattr(block, norm)(x)))
        torch.testing.assert_close(weights.W_E, model.get_input_embeddings().weight)
        torch.testing.assert_close(weights.W_U, model.get_output_embeddings().weight.T)


def test_backend_weights_are_the_bridge_models(tiny_llama_backend):
    weights = tiny_llama_backend.weights()
    hf = tiny_llama_backend.bridge.original_model
    v = hf.model.layers[1].self_attn.v_proj.weight  # [n_kv * d_head, d_model]
    torch.testing.assert_close(weights.W_V(1)[1], v[16:32].T)
    assert weights.W_V(0).shape == (2, 64, 16) and weights.W_O(0).shape == (4, 16, 64)


# --- scores against the explicit |V| x |V| map -------------------------------------------------------------


def brute_force_scores(model, pairs_ids, k, n_heads, n_kv, d_head, layers=2):
    """Full M per head from the HF parameters, scored like `MAPS.calc_relation_score` (torch.topk)."""
    E = model.model.embed_tokens.weight.detach()
    U = model.lm_head.weight.detach().T
    block0 = model.model.layers[0]
    with torch.no_grad():
        E_mlp = block0.mlp(block0.post_attention_layernorm(E))
    src = torch.tensor([s for s, _ in pairs_ids])
    dst = torch.tensor([d for _, d in pairs_ids])
    out = torch.zeros(layers, n_heads, 2)
    for layer in range(layers):
        attn = model.model.layers[layer].self_attn
        V = attn.v_proj.weight.detach().view(n_kv, d_head, -1)
        O = attn.o_proj.weight.detach().view(-1, n_heads, d_head)
        X = E if layer == 0 else E_mlp
        for head in range(n_heads):
            g = head // (n_heads // n_kv)
            W_VO = V[g].T @ O[:, head].T  # [d_model, d_model]
            M = X @ W_VO @ U  # the whole vocabulary x vocabulary map
            rows = M[src]
            for column, sign in ((0, 1.0), (1, -1.0)):
                top = torch.topk(sign * rows, k).indices
                out[layer, head, column] = (top == dst[:, None]).any(1).float().mean()
    return out


def test_blocked_scores_equal_full_map(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    pairs = {"rel_a": random_pairs(1, 40, 96), "rel_b_copying": [(f"t{i}", f"t{i}") for i in range(4, 60)]}
    suite = write_suite(tmp_path / "suite", pairs)
    backend = load_backend(str(tiny_llama_dir), quiet=True)
    # block_size 7 forces many partial blocks; sources repeat across pairs
    analyzer = MapsAnalyzer(suite=str(suite), block_size=7, k=10, k_copying=1, n_salient=3, n_mappings=2)
    result = scan_result(backend, [analyzer], progress=False)
    atlas, extras = result.atlas, result.side_outputs
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tok = backend.tokenizer
    for relation, k in (("rel_a", 10), ("rel_b_copying", 1)):
        ids = [(tok.encode(" " + s, add_special_tokens=False)[0], tok.encode(" " + d, add_special_tokens=False)[0])
               for s, d in pairs[relation]]
        expected = brute_force_scores(model, ids, k, 4, 2, 16)
        wide = atlas.to_frame()
        ours = torch.tensor(wide[f"maps_{relation}"].to_numpy()).view(2, 4)
        ours_supp = torch.tensor(wide[f"maps_{relation}_suppression"].to_numpy()).view(2, 4)
        torch.testing.assert_close(ours.float(), expected[..., 0])
        torch.testing.assert_close(ours_supp.float(), expected[..., 1])
    model_rows = atlas.model_metrics().set_index("metric")
    assert model_rows.loc["maps_rel_a_n_pairs", "value"] == 40
    assert model_rows.loc["maps_rel_b_copying_k", "value"] == 1
    heads = extras["maps"]["heads"]
    assert len(heads) == 8 and len(heads[0]["mappings"]) == 3 and len(heads[0]["mappings"][0]["top"]) == 2


# --- planted copying head and GQA ---------------------------------------------------------------------------


def plant_copying(model) -> None:
    """Tokens 4..67 embed as the standard basis; 68..81 as +c·1 and 82..95 as -c·1 (specials 0).

    Layer 0: head_dim 64, kv head 0 has W_V = I, kv head 1 has W_V = -I, every W_O = I, W_U = W_E^T.
    So M = ±E E^T: heads 0-1 (kv 0) copy, heads 2-3 (kv 1) suppress copies; for a non-copying pair of basis
    tokens M[src, dst] = 0 while 14 entries of the row are > 0 and 14 are < 0, so it is in neither top-10.
    """
    d = 64
    E = torch.zeros(96, d)
    E[4:68] = torch.eye(d)
    E[68:82] = 0.05
    E[82:96] = -0.05
    model.model.embed_tokens.weight.copy_(E)
    model.lm_head.weight.copy_(E)
    attn = model.model.layers[0].self_attn
    attn.v_proj.weight.copy_(torch.cat([torch.eye(d), -torch.eye(d)]))  # [2 * 64, 64]
    attn.o_proj.weight.copy_(torch.cat([torch.eye(d)] * 4, dim=1))  # [64, 4 * 64]


def test_planted_copying_head_and_gqa(tmp_path):
    folder = build_tiny_model("llama", tmp_path / "planted", edit=plant_copying, head_dim=64)
    pairs = {
        "copying": [(f"t{i}", f"t{i}") for i in range(4, 68)],
        "successor": [(f"t{i}", f"t{i + 1}") for i in range(4, 67)],
        "shuffle": random_pairs(3, 50, 68),
    }
    pairs["shuffle"] = [(s, d) for s, d in pairs["shuffle"] if s != d]
    suite = write_suite(tmp_path / "suite", pairs)
    backend = load_backend(str(folder), quiet=True)
    atlas = scan_backend(backend, [MapsAnalyzer(suite=str(suite), layers=(0,), n_salient=0)], progress=False)
    wide = atlas.to_frame().loc[0]
    for head in (0, 1):  # both read kv head 0 (W_V = I)
        assert wide.loc[head, "maps_copying"] == 1.0
        assert wide.loc[head, "maps_copying_suppression"] == 0.0
        assert wide.loc[head, "maps_successor"] == 0.0 and wide.loc[head, "maps_shuffle"] == 0.0
        assert wide.loc[head, "maps_successor_suppression"] == 0.0
    for head in (2, 3):  # kv head 1 (W_V = -I): the same map negated
        assert wide.loc[head, "maps_copying"] == 0.0
        assert wide.loc[head, "maps_copying_suppression"] == 1.0
        assert wide.loc[head, "maps_shuffle_suppression"] == 0.0


def test_bad_params_are_one_line_errors(tiny_llama_backend, tmp_path):
    from headscope.errors import HeadscopeError

    suite = write_suite(tmp_path / "suite", {"copying": [("t5", "t5")]})
    with pytest.raises(HeadscopeError, match="not in suite"):
        scan_backend(tiny_llama_backend, [MapsAnalyzer(suite=str(suite), relations=("nope",))], progress=False)
    with pytest.raises(HeadscopeError, match="out of range"):
        scan_backend(tiny_llama_backend, [MapsAnalyzer(suite=str(suite), layers=(7,))], progress=False)
    with pytest.raises(HeadscopeError, match="single token"):
        bad = write_suite(tmp_path / "bad", {"copying": [("t5 t6", "t5")]})
        scan_backend(tiny_llama_backend, [MapsAnalyzer(suite=str(bad))], progress=False)


def test_cli_scan_writes_atlas_and_mappings(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from headscope.atlas import read_atlas
    from headscope.cli import app

    suite = write_suite(tmp_path / "suite", {"copying": [(f"t{i}", f"t{i}") for i in range(4, 40)]})
    out = tmp_path / "atlas.parquet"
    result = CliRunner().invoke(app, ["scan", str(tiny_llama_dir), "--analyzers", "maps", "--out", str(out), "-q",
                                      "--param", f"maps.suite={suite}", "--param", "maps.layers=0,1",
                                      "--param", "maps.n_salient=2"])
    assert result.exit_code == 0, result.output
    atlas = read_atlas(out)
    assert set(atlas.head_rows()["metric"]) == {"maps_copying", "maps_copying_suppression"}
    extras = json.loads(side_output_path(out, "maps").read_text())
    assert len(extras["heads"]) == 8 and extras["params"]["layers"] == ["0", "1"]


# --- the embedded model -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_against_full_rows(smollm2_backend):
    """Layers 0 and 5 of SmolLM2: scores equal full-row torch.topk on the HF weights; survival counts."""
    analyzer = MapsAnalyzer(relations=("country_to_capital", "copying"), layers=(0, 5), n_salient=0)
    atlas = scan_backend(smollm2_backend, [analyzer], progress=False)
    counts = atlas.model_metrics().set_index("metric")["value"]
    assert counts["maps_country_to_capital_n_pairs"] >= 30 and counts["maps_copying_n_pairs"] >= 200
    relation = next(r for r in analyzer._relations if r.name == "country_to_capital")
    hf = smollm2_backend.bridge.original_model
    E = hf.model.embed_tokens.weight.detach()
    U = hf.lm_head.weight.detach().T
    block0 = hf.model.layers[0]
    with torch.no_grad():
        X = block0.mlp(block0.post_attention_layernorm(E[relation.src]))
    attn = hf.model.layers[5].self_attn
    V = attn.v_proj.weight.detach().view(3, 64, 576)
    O = attn.o_proj.weight.detach().view(576, 9, 64)
    wide = atlas.to_frame().loc[5]
    for head in (0, 4, 8):
        rows = X @ V[head // 3].T @ O[:, head].T @ U  # [pair, vocab]
        expected = (torch.topk(rows, 10).indices == relation.dst[:, None]).any(1).float().mean().item()
        expected_supp = (torch.topk(-rows, 10).indices == relation.dst[:, None]).any(1).float().mean().item()
        assert wide.loc[head, "maps_country_to_capital"] == pytest.approx(expected, abs=1e-9)
        assert wide.loc[head, "maps_country_to_capital_suppression"] == pytest.approx(expected_supp, abs=1e-9)


def _tiny_from_config(kind: str):
    """OLMo-2 (post-norm block), Gemma-2 (pre- and post-MLP norms) or Llama, 2 layers, random init, built in memory."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM, Olmo2Config, Olmo2ForCausalLM

    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, attn_implementation="eager")
    config_cls, model_cls = {"olmo2": (Olmo2Config, Olmo2ForCausalLM), "gemma2": (Gemma2Config, Gemma2ForCausalLM),
                             "llama": (LlamaConfig, LlamaForCausalLM)}[kind]
    extra = {"head_dim": 16} if kind == "gemma2" else {}
    torch.manual_seed(1)
    model = model_cls(config_cls(**common, **extra)).eval()
    with torch.no_grad():  # random norm gains, so a norm read in the wrong place cannot pass as the identity
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(torch.rand_like(param) * 2 + 0.5)
    return model


@pytest.mark.parametrize("kind", ["olmo2", "gemma2", "llama"])
def test_first_mlp_reads_the_residual_the_model_feeds_its_mlp(kind):
    """Issue 22 item 3. Reference from HF's own forward: the layer-0 MLP's real output on a real prompt, and the
    residual stream it was computed from (layer output minus the MLP's contribution after any post-MLP norm)."""
    model = _tiny_from_config(kind)
    block = model.model.layers[0]
    seen = {}
    handle = block.mlp.register_forward_hook(lambda module, args, out: seen.__setitem__("mlp_out", out.detach()))
    with torch.no_grad():
        out = model(torch.randint(4, 96, (1, 9), generator=torch.Generator().manual_seed(2)), output_hidden_states=True)
    handle.remove()
    post = getattr(block, "post_feedforward_layernorm", None) or torch.nn.Identity()
    with torch.no_grad():
        residual_mid = (out.hidden_states[1] - post(seen["mlp_out"]))[0]  # the residual stream entering the MLP sub-block
        weights = weights_from_hf(model, n_heads=4, n_kv_heads=2, d_head=16)
        torch.testing.assert_close(weights.first_mlp(residual_mid), seen["mlp_out"][0], rtol=1e-4, atol=1e-4)
