"""Natural-text probes for attention-sink detection: shipped paragraphs, or a hub dataset by name."""

from __future__ import annotations

import os
from typing import Any

from headscope.errors import HeadscopeError
from headscope.probes.files import load_suite_records
from headscope.probes.suite import TokenSuite


def load_texts(dataset: str = "", *, split: str = "train", column: str = "text", limit: int = 64) -> tuple[list[str], str]:
    """Texts of the shipped `natural_text` suite (dataset == "") or of a hub dataset; returns (texts, source)."""
    if not dataset:
        records, digest = load_suite_records("natural_text", required=("text",))
        return [str(r["text"]) for r in records][:limit], f"natural_text@{digest}"
    if _offline():
        raise HeadscopeError(
            f"cannot load hub dataset '{dataset}' (offline: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set): go online "
            "or leave sinks.dataset empty to use the shipped natural_text suite"
        )
    try:
        from datasets import load_dataset

        loaded = load_dataset(dataset, split=split, streaming=True)
        texts = []
        for row in loaded:
            if column not in row:
                raise HeadscopeError(f"dataset '{dataset}' has no column '{column}': pass sinks.dataset_column=<name>")
            if str(row[column]).strip():
                texts.append(str(row[column]))
            if len(texts) >= limit:
                break
    except HeadscopeError:
        raise
    except Exception as err:  # offline, unknown name, gated repository
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise HeadscopeError(
            f"cannot load hub dataset '{dataset}' ({first}): go online (unset HF_HUB_OFFLINE) or leave "
            "sinks.dataset empty to use the shipped natural_text suite"
        ) from None
    if not texts:
        raise HeadscopeError(f"dataset '{dataset}' split '{split}' has no non-empty '{column}': pick another split")
    return texts, f"{dataset}:{split}:{column}"


def _offline() -> bool:
    """True when the hub is switched off, so a hub dataset cannot load (checked before any network attempt)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def natural_text_suite(
    tokenizer: Any,
    *,
    seq_len: int,
    n_samples: int,
    bos_token_id: int | None,
    prepend_bos: bool,
    dataset: str = "",
    split: str = "train",
    column: str = "text",
) -> TokenSuite:
    """Tokenise texts, prepend BOS when asked and the tokenizer did not, truncate to `seq_len` tokens.

    Gu et al. truncate every prompt to T = 64 tokens (their `token_length`); shorter texts are kept here and the
    column-mean divisor counts only their real tokens.
    """
    if seq_len < 2:
        raise HeadscopeError("sinks.seq_len must be at least 2")
    texts, source = load_texts(dataset, split=split, column=column, limit=n_samples)
    sequences: list[list[int]] = []
    samples: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if prepend_bos and bos_token_id is not None and (not ids or ids[0] != bos_token_id):
            ids = [bos_token_id] + ids
        ids = ids[:seq_len]
        if len(ids) < 2:
            continue
        sequences.append(ids)
        samples.append({"index": index})
    if not sequences:
        raise HeadscopeError(f"no usable text in {source}: every text tokenised to fewer than 2 tokens")
    details = {"source": source, "seq_len": seq_len, "prepend_bos": prepend_bos}
    return TokenSuite(name="natural_text" if not dataset else f"hub:{dataset}", sequences=sequences, samples=samples, details=details)
