"""Multiple-choice QA probes: items, prompts, and where each option's token sits.

Prompt layout (Tulchinskii et al. 2024, "Listening to the Wise Few", arXiv 2410.02343, section 3):

    [few-shot demonstrations, each ending "Answer: X" and a blank line]
    [context]
    Question: ...
    A. first option
    B. second option
    ...
    Answer:

Option i is represented by the newline token that ends its line (the "option symbol" token the paper's heads
select). Positions are found through the tokenizer's character offsets, so tokenizers that merge the newline
with its neighbours (e.g. "dog\n" as one token) still map each option to exactly one token; a tokenizer that puts
two options' newlines into one token, or that gives no offsets, is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from headscope.errors import HeadscopeError
from headscope.probes.files import load_suite_records

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MCQAItem:
    """One multiple-choice question; `answer` is the index of the correct choice."""

    question: str
    choices: tuple[str, ...]
    answer: int
    context: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not 2 <= len(self.choices) <= len(LETTERS):
            raise HeadscopeError(f"MCQA item has {len(self.choices)} choices: use 2 to {len(LETTERS)}")
        if not 0 <= self.answer < len(self.choices):
            raise HeadscopeError(f"MCQA answer index {self.answer} is outside its {len(self.choices)} choices: fix the record")
        if any("\n" in c for c in self.choices):
            raise HeadscopeError("an MCQA choice contains a newline: each option must fit on one line")


def _answer_index(raw: Any, n_choices: int) -> int:
    """MMLU stores an int; other sets store a letter ("C") or a digit string."""
    if isinstance(raw, bool):
        raise HeadscopeError(f"MCQA answer {raw!r} is not an index or a letter: fix the record")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    if text.isdigit():
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[:n_choices]:
        return LETTERS.index(text.upper())
    raise HeadscopeError(f"MCQA answer {raw!r} is not an index or a letter A-{LETTERS[n_choices - 1]}: fix the record")


def items_from_records(records: Sequence[dict[str, Any]]) -> list[MCQAItem]:
    """Records with the MMLU-style schema (question, choices, answer[, context]) as items."""
    items = []
    for record in records:
        choices = tuple(str(c) for c in record["choices"])
        meta = {k: v for k, v in record.items() if k not in ("question", "choices", "answer", "context")}
        items.append(
            MCQAItem(str(record["question"]), choices, _answer_index(record["answer"], len(choices)),
                     str(record.get("context") or ""), meta)
        )
    return items


def load_mcqa(source: str, *, limit: int | None = None) -> tuple[list[MCQAItem], str]:
    """Items of a shipped suite (`mcqa_synthetic`, `mcqa_general`, a folder) or of a hub dataset.

    Hub sets are named `hub:<dataset>[:<config>[:<split>]]` (MMLU-style schema: question, choices, answer),
    e.g. `hub:cais/mmlu:abstract_algebra:test`; they need the hub (or the `datasets` cache) to be reachable.
    Returns the items and a content hash of the records.
    """
    if source.startswith("hub:"):
        records = _hub_records(source[4:], limit)
        digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()[:16]
    else:
        records, digest = load_suite_records(source, required=("question", "choices", "answer"))
        records = records[:limit] if limit else records
    return items_from_records(records), digest


def _hub_records(spec: str, limit: int | None) -> list[dict[str, Any]]:
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise HeadscopeError(f"hub MCQA source 'hub:{spec}' is malformed: use hub:<dataset>[:<config>[:<split>]]")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), (parts[2] if len(parts) > 2 else "test")
    from datasets import load_dataset
    from huggingface_hub import constants

    hint = "connect to the hub (unset HF_HUB_OFFLINE) or use a shipped suite such as mcqa_general"
    if constants.HF_HUB_OFFLINE:  # fail at once instead of waiting on retries
        raise HeadscopeError(f"hub dataset '{name}' cannot be loaded offline (HF_HUB_OFFLINE is set): {hint}")
    try:
        dataset = load_dataset(name, config, split=split)
    except Exception as err:  # offline (HF_HUB_OFFLINE, no network) or unknown set
        raise HeadscopeError(
            f"cannot load hub dataset '{name}' (config {config}, split {split}): {type(err).__name__}; {hint}"
        ) from None
    missing = [c for c in ("question", "choices", "answer") if c not in dataset.column_names]
    if missing:
        raise HeadscopeError(f"hub dataset '{name}' lacks columns {missing}: use an MMLU-style set (question, choices, answer)")
    rows = dataset.select(range(min(limit, len(dataset)))) if limit else dataset
    return [{k: row[k] for k in ("question", "choices", "answer") if k in row} | ({"context": row["context"]} if "context" in row else {}) for row in rows]


def format_block(item: MCQAItem, *, with_answer: bool) -> str:
    """The question, its lettered options one per line, then "Answer:" (and the letter for demonstrations)."""
    lines = []
    if item.context:
        lines.append(item.context)
    lines.append(f"Question: {item.question}")
    lines.extend(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices))
    answer = f"Answer: {LETTERS[item.answer]}" if with_answer else "Answer:"
    return "\n".join(lines) + "\n" + answer


@dataclass(frozen=True)
class MCQAPrompt:
    """A tokenised prompt: ids, the option tokens' positions, the answer (query) position."""

    input_ids: list[int]
    option_positions: list[int]
    query_position: int
    text: str


def build_prompt(
    tokenizer: Any,
    item: MCQAItem,
    demos: Sequence[MCQAItem] = (),
    *,
    chat_template: bool = True,
    bos_token_id: int | None = None,
) -> MCQAPrompt:
    """Render the prompt (inside the chat template when asked and available) and locate the option tokens.

    With the chat template, demonstrations, question and options are the user turn; the assistant turn then
    starts with "Answer:", so the last token is the one whose next-token prediction is the option letter.
    """
    shots = "".join(format_block(d, with_answer=True) + "\n\n" for d in demos)
    question = format_block(item, with_answer=False)
    body, answer = question[: -len("Answer:")], "Answer:"
    if chat_template and getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template([{"role": "user", "content": shots + body}], tokenize=False,
                                             add_generation_prompt=True)
        if (shots + body) not in head:
            raise HeadscopeError("the chat template rewrites the user turn (e.g. strips its last newline): pass chat_template=false")
        user_start = head.index(shots + body)
        text = head + answer
        add_special = False
    else:
        user_start = 0
        text = shots + body + answer
        add_special = True
    block_start = user_start + len(shots)
    newline_chars = _option_newlines(text, block_start, item)
    try:
        encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special)
    except NotImplementedError:
        raise HeadscopeError("this tokenizer gives no character offsets: use a fast tokenizer (use_fast=True)") from None
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    if not chat_template or not getattr(tokenizer, "chat_template", None):
        if bos_token_id is not None and (not ids or ids[0] != bos_token_id):
            ids, offsets = [bos_token_id] + ids, [(0, 0)] + offsets
    positions = option_token_positions(offsets, newline_chars)
    return MCQAPrompt(ids, positions, len(ids) - 1, text)


def _option_newlines(text: str, block_start: int, item: MCQAItem) -> list[int]:
    """Character index of the newline ending each option's line in the final question block."""
    out, cursor = [], text.index(f"Question: {item.question}", block_start)
    for i, choice in enumerate(item.choices):
        line = f"\n{LETTERS[i]}. {choice}\n"
        found = text.find(line, cursor)
        if found < 0:
            raise HeadscopeError(f"option {LETTERS[i]} of '{item.question[:40]}' not found in the prompt: check the template")
        out.append(found + len(line) - 1)
        cursor = found + len(line) - 1
    return out


def option_token_positions(offsets: Sequence[tuple[int, int]], newline_chars: Sequence[int]) -> list[int]:
    """The token covering each option's final newline character (offsets: per-token [start, end) spans)."""
    positions = []
    for char in newline_chars:
        hits = [i for i, (start, end) in enumerate(offsets) if start <= char < end]
        if len(hits) != 1:
            raise HeadscopeError(
                f"no single token covers the newline at character {char} ({len(hits)} do): this tokenizer's offsets "
                "cannot place the option tokens; use a fast tokenizer"
            )
        positions.append(hits[0])
    if len(set(positions)) != len(positions):
        raise HeadscopeError(
            "two options' newlines fall into one token with this tokenizer, so their QK-scores cannot be told apart: "
            "use a tokenizer that splits lines, or shorter options"
        )
    return positions
