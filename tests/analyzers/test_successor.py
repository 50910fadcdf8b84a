"""Successor heads (Gould et al. 2024) against a planted OV shift and a reference computed here from HF weights.

- planted: tokens t4..t67 embed as the standard basis; layer 0's KV head 0 has W_V = shift (e_n -> e_{n+1}),
  KV head 1 has W_V = I, every W_O = I, W_U = W_E^T, so heads 0-1 map t_n to t_{n+1} (score 1) and heads 2-3 copy
  (score 0); layer 1 stays random;
- reference: each head's full vocabulary map M = X W_V W_O W_U built from the HF modules (v_proj, o_proj, lm_head,
  the layer-0 norm and MLP) and scored with argmax over the task's tokens, for every effective embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from headscope.analyzers.successor import SuccessorAnalyzer
from headscope.engine import load_backend
from headscope.errors import HeadscopeError
from headscope.scanning import scan_result
from tiny_models import build_tiny_model

TASKS = {
    "count": [f"t{i}" for i in range(4, 30)],
    "cycle": [f"t{i}" for i in (40, 41, 42, 43, 40)],
    "with_gap": ["t50", "t51", "t52 t52", "t53", "t54"],  # "t52 t52" is two tokens: dropped with its two pairs
}


def write_suite(folder: Path, tasks: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w") as sink:
        for name, sequence in tasks.items():
            sink.write(json.dumps({"task": name, "sequence": sequence}) + "\n")
    (folder / "CARD.md").write_text("test suite\n")
    return folder


def plant_successor(model) -> None:
    d = 64
    E = torch.zeros(96, d)
    E[4:68] = torch.eye(d)
    E[68:96] = 0.01 * torch.randn(28, d)
    model.model.embed_tokens.weight.copy_(E)
    model.lm_head.weight.copy_(E)
    attn = model.model.layers[0].self_attn
    shift = torch.eye(d).roll(1, dims=0)  # v_proj weight [out, in]: v_{j} = x_{j-1}
    attn.v_proj.weight.copy_(torch.cat([shift, torch.eye(d)]))
    attn.o_proj.weight.copy_(torch.cat([torch.eye(d)] * 4, dim=1))


def reference(folder: Path, tokenizer, tasks: dict[str, list[str]], embedding: str) -> np.ndarray:
    """[layer, head] pooled successes, from the full |V| x |V| map of every head."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    E = model.model.embed_tokens.weight.detach()
    U = model.lm_head.weight.detach().T
    block0 = model.model.layers[0]
    with torch.no_grad():
        mlp = block0.mlp(block0.post_attention_layernorm(E))
    X = {"raw": E, "first_mlp": mlp, "first_mlp_residual": E + mlp}[embedding]
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    ids = {name: [tokenizer.encode(" " + w, add_special_tokens=False) for w in seq] for name, seq in tasks.items()}
    out = np.zeros((cfg.num_hidden_layers, n_heads))
    total = 0
    for layer in range(cfg.num_hidden_layers):
        attn = model.model.layers[layer].self_attn
        V = attn.v_proj.weight.detach().view(n_kv, d_head, -1)
        O = attn.o_proj.weight.detach().view(-1, n_heads, d_head)
        for head in range(n_heads):
            M = X @ (V[head // (n_heads // n_kv)].T @ O[:, head].T) @ U
            hits, total = 0, 0
            for seq in ids.values():
                single = [t[0] if len(t) == 1 else None for t in seq]
                candidates = sorted({t for t in single if t is not None})
                for a, b in zip(single, single[1:]):
                    if a is None or b is None:
                        continue
                    total += 1
                    hits += int(candidates[int(torch.argmax(M[a, candidates]))] == b)
            out[layer, head] = hits / total
    return out


@pytest.mark.parametrize("backend", ["transformer-lens", "nnsight"])
def test_planted_successor_head(tmp_path_factory, tmp_path, backend):
    folder = tmp_path_factory.getbasetemp() / "successor_planted"
    if not (folder / "config.json").exists():
        build_tiny_model("llama", folder, edit=plant_successor, head_dim=64)
    suite = write_suite(tmp_path / "suite", TASKS)
    loaded = load_backend(str(folder), backend=backend, quiet=True)
    result = scan_result(loaded, [SuccessorAnalyzer(suite=str(suite), effective_embedding="raw")], progress=False)
    wide = result.atlas.to_frame()
    for head in (0, 1):
        assert wide.loc[(0, head), "successor_score"] == 1.0 and wide.loc[(0, head), "is_successor"] == 1.0
        # t43 -> t40: the row of t43 is 0 on every task token, a tie, and ties count (the official `==`)
        assert wide.loc[(0, head), "successor_cycle"] == 1.0
    for head in (2, 3):
        assert wide.loc[(0, head), "successor_score"] == 0.0
    assert wide.loc[1, "successor_score"].max() < 0.4  # random layer: near chance
    expected = reference(folder, loaded.tokenizer, TASKS, "raw")
    np.testing.assert_allclose(wide["successor_score"].to_numpy().reshape(expected.shape), expected)
    model_rows = result.atlas.model_metrics().set_index("metric")["value"]
    assert model_rows["successor_count_n_pairs"] == 25 and model_rows["successor_cycle_n_pairs"] == 4
    assert model_rows["successor_with_gap_n_pairs"] == 2
    assert result.side_outputs["successor"]["effective_embedding"] == "raw"


@pytest.mark.parametrize("embedding", ["first_mlp", "first_mlp_residual"])
def test_effective_embeddings_match_reference(tiny_llama_dir, tiny_llama_backend, tmp_path, embedding):
    suite = write_suite(tmp_path / "suite", TASKS)
    atlas = scan_result(tiny_llama_backend, [SuccessorAnalyzer(suite=str(suite), effective_embedding=embedding)],
                        progress=False).atlas
    expected = reference(tiny_llama_dir, tiny_llama_backend.tokenizer, TASKS, embedding)
    got = atlas.to_frame()["successor_score"].to_numpy().reshape(expected.shape)
    np.testing.assert_allclose(got, expected)


def test_bad_params_are_one_line_errors(tiny_llama_backend, tmp_path):
    suite = write_suite(tmp_path / "suite", TASKS)
    for params in ({"effective_embedding": "mlp0"}, {"tasks": ("nope",)}, {"layers": ("x",)}, {"layers": (7,)}):
        with pytest.raises(HeadscopeError):
            scan_result(tiny_llama_backend, [SuccessorAnalyzer(suite=str(suite), **params)], progress=False)


class DigitTokenizer:
    """" 7" is two tokens (space, digit) and "7" one, as SmolLM2 splits numbers; words are one token either way."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if text.strip().isdigit():
            digits = [100 + int(c) for c in text.strip()]
            return ([99] if text.startswith(" ") else []) + digits
        return [200 + len(text)]


def test_bare_words_when_the_spaced_form_splits(tiny_llama_backend, tmp_path):
    from headscope.analyzers import ScanContext

    suite = write_suite(tmp_path / "suite", {"digits": ["1", "2", "3", "10"], "words": ["a", "bb", "ccc"]})
    ctx = ScanContext(tiny_llama_backend.spec, DigitTokenizer())
    built = SuccessorAnalyzer(suite=str(suite)).build_suite(ctx)
    tasks = {t["name"]: t for t in built.details["tasks"]}
    assert tasks["digits"]["leading_space"] is False and tasks["digits"]["n_pairs"] == 2  # 1->2, 2->3; "10" is two
    assert tasks["words"]["leading_space"] is True and tasks["words"]["n_pairs"] == 2
    assert built.sequences[:2] == [[101, 102], [102, 103]]
    strict = SuccessorAnalyzer(suite=str(suite), space_fallback=False).build_suite(ctx)
    assert {t["name"]: t["n_pairs"] for t in strict.details["tasks"]} == {"digits": 0, "words": 2}
