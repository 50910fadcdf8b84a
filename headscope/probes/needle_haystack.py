"""Needle-in-a-haystack prompts for retrieval-head scoring (Wu et al. 2024, "Retrieval Head Mechanistically
Explains Long-Context Factuality"; official builder: nightdessert/Retrieval_Head `retrieval_head_detection.py`,
itself adapted from gkamradt/LLMTest_NeedleInAHaystack).

Per (context length, depth, needle) the builder follows the official recipe: take the haystack's first
`context_length` tokens, trim to `context_length - buffer - len(needle)`, insert the needle at the sentence end
at or before `depth%` of the haystack, wrap with the question, and locate the answer span (`real_needle`) in the
prompt as the first window whose token set overlaps the answer's by more than 90%.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from headscope.errors import HeadscopeError
from headscope.probes.files import load_suite_records, suite_path
from headscope.probes.suite import TokenSuite

SUITE = "needle_haystack"
QUESTION = "Based on the content of the book, Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Needle:
    """A statement hidden in the haystack, the question that asks for it, and the answer span to copy."""

    id: str
    needle: str
    question: str
    real_needle: str
    form: str = ""


@dataclass(frozen=True)
class NeedleSource:
    needles: list[Needle]
    haystack: str
    content_hash: str
    origin: str


def load_needle_source(source: str = SUITE) -> NeedleSource:
    """Needles and haystack text: the shipped suite, a local folder of the same layout, or `hf:owner/name`.

    A hub dataset needs columns `needle`, `question`, `real_needle`; its haystack is the concatenated
    `haystack` column when present, else our shipped haystack.
    """
    if source.startswith("hf:"):
        return _from_hub(source[3:])
    records, file_hash = load_suite_records(source, required=("needle", "question", "real_needle"))
    folder = suite_path(source)
    haystack_file = folder / "haystack.txt"
    if not haystack_file.is_file():
        raise HeadscopeError(f"probe suite {folder} has no haystack.txt: add the background text there")
    haystack = haystack_file.read_text(encoding="utf-8")
    digest = hashlib.sha256((file_hash + haystack).encode()).hexdigest()[:16]
    return NeedleSource(_needles(records), haystack, digest, str(folder))


def _from_hub(name: str) -> NeedleSource:
    dataset_name, _, split = name.partition(":")
    try:
        from datasets import load_dataset

        dataset = load_dataset(dataset_name, split=split or "train")
    except Exception as err:  # offline, unknown name, no access
        raise HeadscopeError(
            f"cannot load hub dataset '{dataset_name}' ({type(err).__name__}; offline?): "
            f"use the shipped suite '{SUITE}' or a local folder with data.jsonl + haystack.txt"
        ) from None
    missing = [c for c in ("needle", "question", "real_needle") if c not in dataset.column_names]
    if missing:
        raise HeadscopeError(f"hub dataset '{dataset_name}' lacks columns {missing}: it needs needle, question, real_needle")
    records = [dict(row) for row in dataset]
    if "haystack" in dataset.column_names:
        haystack = "\n\n".join(str(r["haystack"]) for r in records if r.get("haystack"))
    else:
        haystack = (suite_path(SUITE) / "haystack.txt").read_text(encoding="utf-8")
    digest = hashlib.sha256((repr(records) + haystack).encode()).hexdigest()[:16]
    return NeedleSource(_needles(records), haystack, digest, f"hf:{name}")


def _needles(records: list[dict[str, Any]]) -> list[Needle]:
    return [
        Needle(str(r.get("id") or i), str(r["needle"]), str(r["question"]), str(r["real_needle"]), str(r.get("form") or ""))
        for i, r in enumerate(records)
    ]


def context_length_grid(minimum: int, maximum: int, n: int) -> list[int]:
    """The official grid: `round(linspace(min, max, n))`."""
    return [int(x) for x in np.round(np.linspace(minimum, maximum, num=n, endpoint=True)).astype(int)]


def depth_grid(n: int, minimum: float = 0, maximum: float = 100) -> list[int]:
    """The official depth grid: `round(linspace(0, 100, n))` percent."""
    return [int(x) for x in np.round(np.linspace(minimum, maximum, num=n, endpoint=True)).astype(int)]


def locate_needle(prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> tuple[int, int]:
    """First window `[i, i + len(answer))` whose token set covers more than 90% of the answer's token set.

    The official `find_needle_idx` rule; returns (-1, -1) when no window qualifies.
    """
    wanted = set(answer_ids)
    if not wanted:
        return -1, -1
    span = len(answer_ids)
    for start in range(len(prompt_ids)):
        overlap = len(set(prompt_ids[start : start + span]) & wanted) / len(wanted)
        if overlap > 0.9:
            return start, start + span
    return -1, -1


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(
    tokenizer: Any,
    haystack_ids: Sequence[int],
    needle: Needle,
    *,
    context_length: int,
    depth: float,
    buffer: int = 200,
    chat_template: bool = True,
) -> dict[str, Any]:
    """One needle-in-a-haystack prompt as token ids plus where the answer sits.

    `haystack_ids` must hold at least `context_length` tokens (see `haystack_token_ids`).
    """
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # A leading space keeps word boundaries for BPE tokenizers (the official code relies on SentencePiece's "▁").
    needle_ids = encode(" " + needle.needle.strip())
    budget = context_length - buffer
    if budget <= len(needle_ids) + 8:
        raise HeadscopeError(f"context length {context_length} is too short for a {buffer}-token buffer and the needle: use at least {buffer + len(needle_ids) + 64}")
    context = list(haystack_ids[:context_length])
    if len(context) + len(needle_ids) > budget:
        context = context[: budget - len(needle_ids)]
    if depth >= 100:
        with_needle = context + needle_ids
    else:
        period_ids = set(encode("."))
        point = int(len(context) * (depth / 100))
        while point > 0 and context[point - 1] not in period_ids:  # back to the previous sentence end
            point -= 1
        with_needle = context[:point] + needle_ids + context[point:]
    context_text = tokenizer.decode(with_needle)
    question = QUESTION.format(question=needle.question)
    wrapped = bool(chat_template and has_chat_template(tokenizer))
    if wrapped:
        messages = [{"role": "user", "content": f"<book>{context_text}</book>\n{question}"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        prompt_ids = list(tokenizer(context_text + question)["input_ids"])
    start, end = locate_needle(prompt_ids, encode(needle.real_needle))
    if start < 0:  # BPE: the answer inside a sentence starts with a space
        start, end = locate_needle(prompt_ids, encode(" " + needle.real_needle))
    return {
        "prompt_ids": prompt_ids,
        "needle_start": start,
        "needle_end": end,
        "needle_id": needle.id,
        "real_needle": needle.real_needle,
        "context_length": int(context_length),
        "depth": float(depth),
        "chat_template": wrapped,
    }


def haystack_token_ids(tokenizer: Any, haystack: str, n_tokens: int) -> list[int]:
    """The haystack as tokens, repeated (as the official reader repeats its files) until `n_tokens` long."""
    ids = list(tokenizer(haystack, add_special_tokens=False)["input_ids"])
    if not ids:
        raise HeadscopeError("the haystack text is empty: add text to haystack.txt")
    out = list(ids)
    while len(out) < n_tokens:
        out += ids
    return out


def needle_haystack_suite(
    tokenizer: Any,
    *,
    context_lengths: Sequence[int],
    depths: Sequence[float],
    needles_per_cell: int = 1,
    seed: int = 0,
    buffer: int = 200,
    chat_template: bool = True,
    source: str = SUITE,
) -> TokenSuite:
    """Prompts for every (context length, depth) cell, each with `needles_per_cell` needles.

    Needles are assigned to cells by a seeded permutation cycled over the grid, so every needle form is used.
    """
    if needles_per_cell < 1:
        raise HeadscopeError("needles_per_cell must be at least 1")
    if not context_lengths or not depths:
        raise HeadscopeError("the needle grid is empty: give at least one context length and one depth")
    loaded = load_needle_source(source)
    order = np.random.default_rng(seed).permutation(len(loaded.needles)).tolist()
    haystack_ids = haystack_token_ids(tokenizer, loaded.haystack, max(context_lengths))
    sequences, samples = [], []
    cursor = 0
    for length in context_lengths:
        for depth in depths:
            for _ in range(needles_per_cell):
                needle = loaded.needles[order[cursor % len(order)]]
                cursor += 1
                record = build_prompt(tokenizer, haystack_ids, needle, context_length=int(length), depth=depth,
                                      buffer=buffer, chat_template=chat_template)
                sequences.append(record.pop("prompt_ids"))
                samples.append(record)
    details = {
        "source": loaded.origin,
        "source_hash": loaded.content_hash,
        "context_lengths": [int(x) for x in context_lengths],
        "depths": [float(x) for x in depths],
        "needles_per_cell": needles_per_cell,
        "seed": seed,
        "buffer": buffer,
        "chat_template": bool(samples and samples[0]["chat_template"]),
    }
    return TokenSuite(SUITE, sequences, samples, details)


# How the suite grades an answer: the official filter keeps a sample when recall > 0.5.
_SCORER = None


def rouge1_recall(reference: str, response: str) -> float:
    """ROUGE-1 recall of `response` against `reference` in [0, 1] (rouge-score, Porter stemmer on, as official)."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    return float(_SCORER.score(reference, response)["rouge1"].recall)
