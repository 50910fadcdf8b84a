"""Record each head's attention pattern on short probe texts during a scan (the atlas's exemplar table).

One extra forward pass per text; the table and its budget are described in `headscope.atlas.exemplars`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from headscope.atlas.exemplars import exemplar_frame, fits_budget
from headscope.engine import Backend, LayerActivations, Needs, pad_sequences

# `repeated`: one sentence said twice; an induction head attends from each token of the second copy to the token
# after its first occurrence (a stripe parallel to the diagonal). `plain`: ordinary text.
EXEMPLAR_TEXTS = {
    "repeated": "The old lighthouse keeper climbed the stairs at night. The old lighthouse keeper climbed the stairs at night.",
    "plain": "Alice gave Bob the book because he had asked for it twice.",
}


def exemplar_ids(tokenizer, n_heads_total: int, texts: dict[str, str] = EXEMPLAR_TEXTS) -> dict[str, list[int]]:
    """Token ids of each text (BOS first when the tokenizer has one), cut from the end until the budget holds."""
    ids = {}
    bos = getattr(tokenizer, "bos_token_id", None)
    for name, text in texts.items():
        tokens = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids[name] = ([bos] if isinstance(bos, int) else []) + tokens
    while not fits_budget(n_heads_total, [len(v) for v in ids.values()]):
        longest = max(ids, key=lambda n: len(ids[n]))
        ids[longest] = ids[longest][:-1]
    return ids


def readable_tokens(tokenizer, ids: list[int]) -> list[str]:
    """Each token decoded on its own (' the', not 'Ġthe')."""
    return [tokenizer.decode([i]) for i in ids]


def record_exemplars(backend: Backend, texts: dict[str, str] = EXEMPLAR_TEXTS) -> pd.DataFrame:
    """Every head's pattern on each text, as exemplar rows (one unpadded forward pass per text)."""
    spec = backend.spec
    frames = []
    for name, ids in exemplar_ids(backend.tokenizer, spec.n_layers * spec.n_heads, texts).items():
        patterns = np.zeros((spec.n_layers, spec.n_heads, len(ids), len(ids)), dtype=np.float32)

        def keep(acts: LayerActivations) -> None:
            patterns[acts.layer] = acts.pattern[0].float().cpu().numpy()  # [head, query, key]

        backend.run(pad_sequences([ids], 0), Needs(pattern=True), keep)
        frames.append(exemplar_frame(backend.model_id, name, readable_tokens(backend.tokenizer, ids), patterns))
    return pd.concat(frames, ignore_index=True)
