"""Grounded QA / summarisation probes for Lookback Lens (Chuang et al. 2024): a document, a question, gold facts.

Prompts follow the official `step01_extract_attns.py` layout: an instruction, "#Document#: ...", "#Question#: ..."
(the *context*), then the answer header "\n#Answer#:" (not context). With a chat template the header is the
template's assistant prefix that follows the user turn. The split point is exact in tokens: the context and the
header are tokenised separately and concatenated, so `context_len` is the number of context tokens.

Labels come from an automatic rule instead of the paper's GPT-4o annotation: an answer is faithful (label 1) when
its SQuAD-normalised text contains the normalised text of one of the gold facts (each gold's first alias is a span
of the document).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from headscope.errors import HeadscopeError
from headscope.probes.files import load_suite_records

INSTRUCTIONS = {
    "qa": "Answer the question with a short phrase, based only on the information in the document.",
    "summary": "Generate a summary based on the information in the document.",
}
ANSWER_HEADERS = {"qa": "\n#Answer#:", "summary": "\n#Summary#:"}
HUB_PREFIX = "hub:"


@dataclass(frozen=True)
class GroundedItem:
    id: str
    task: str  # "qa" or "summary"
    document: str
    question: str
    answers: tuple[str, ...]


def load_grounded_items(source: str = "grounded_qa", *, n_samples: int = 0) -> tuple[list[GroundedItem], str]:
    """Items of a shipped suite, a local folder, or `hub:<dataset>[:split]` (SQuAD-like schema, needs internet)."""
    if source.startswith(HUB_PREFIX):
        items, digest = load_hub_items(source[len(HUB_PREFIX):], n_samples=n_samples)
    else:
        records, digest = load_suite_records(source, required=("id", "task", "document", "question", "answers"))
        items = [_item(r, source) for r in records]
    if n_samples < 0:
        raise HeadscopeError("--n-samples must be 0 (all items) or positive")
    return (items[:n_samples] if n_samples else items), digest


def _item(record: dict, source: str) -> GroundedItem:
    task = str(record["task"])
    if task not in INSTRUCTIONS:
        raise HeadscopeError(f"item {record.get('id')} of {source} has task '{task}': use 'qa' or 'summary'")
    answers = record["answers"]
    answers = (answers,) if isinstance(answers, str) else tuple(str(a) for a in answers)
    if not answers or not all(a.strip() for a in answers):
        raise HeadscopeError(f"item {record.get('id')} of {source} has no gold answer: add one to `answers`")
    return GroundedItem(str(record["id"]), task, str(record["document"]), str(record["question"]), answers)


def load_hub_items(spec: str, *, n_samples: int = 0) -> tuple[list[GroundedItem], str]:
    """Load a SQuAD-like hub dataset (`context`, `question`, `answers.text`), e.g. `rajpurkar/squad:validation`.

    Needs internet (or a local datasets cache); offline it fails with a one-line error naming the fix.
    """
    name, _, split = spec.partition(":")
    split = split or "validation"
    try:
        from datasets import load_dataset

        selection = f"{split}[:{n_samples}]" if n_samples else split
        dataset = load_dataset(name, split=selection)
    except Exception as err:  # ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, ...
        raise HeadscopeError(
            f"cannot load hub dataset '{name}' ({type(err).__name__}): connect to the internet or use the shipped "
            "suite grounded_qa"
        ) from None
    columns = set(dataset.column_names)
    if not {"context", "question", "answers"} <= columns:
        raise HeadscopeError(f"hub dataset '{name}' lacks SQuAD columns context/question/answers: it has {sorted(columns)}")
    items = []
    for index, row in enumerate(dataset):
        answers = row["answers"]
        texts = answers.get("text", []) if isinstance(answers, dict) else answers
        if not texts:
            continue
        items.append(GroundedItem(str(row.get("id", index)), "qa", row["context"], row["question"], tuple(texts)))
    return items, f"{name}:{split}:{dataset._fingerprint}"


def build_prompt(tokenizer, item: GroundedItem, *, chat_template: bool = True) -> tuple[list[int], int]:
    """Token ids of the prompt and the number of context tokens C (everything before the answer header)."""
    context_text = f"{INSTRUCTIONS[item.task]}\n\n#Document#: {item.document}"
    if item.task == "qa":
        context_text += f"\n#Question#: {item.question}"
    elif item.question and item.question != "Summarize the document in one sentence.":
        context_text += f"\n#Instruction#: {item.question}"
    templated = bool(chat_template and getattr(tokenizer, "chat_template", None))
    if templated:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": context_text}], tokenize=False, add_generation_prompt=True
        )
        cut = rendered.rindex(context_text) + len(context_text)
        before, header = rendered[:cut], rendered[cut:]
    else:
        before, header = context_text, ANSWER_HEADERS[item.task]
    # a rendered template already holds its special tokens; raw text gets the tokenizer's own (BOS: the first-token
    # sink every lookback ratio divides by). Decided by whether a template was applied, not by the parameter.
    context_ids = list(tokenizer(before, add_special_tokens=not templated)["input_ids"])
    header_ids = list(tokenizer(header, add_special_tokens=False)["input_ids"])
    if not header_ids:
        raise HeadscopeError("the answer header tokenised to nothing: the lookback ratio needs at least one header token")
    return context_ids + header_ids, len(context_ids)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def contains_gold(answer: str, golds: tuple[str, ...] | list[str]) -> bool:
    """The labelling rule: does the normalised answer contain a normalised gold fact (as whole words)?"""
    padded = f" {normalize_answer(answer)} "
    return any(f" {normalize_answer(g)} " in padded for g in golds if normalize_answer(g))
