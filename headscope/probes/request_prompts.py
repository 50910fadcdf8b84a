"""Turn a bare user request into model input, the same way for tuning, scoring and generation.

Styles:
  "chat"   the tokenizer's chat template, user turn + generation prompt (what an instruct model is served with;
           falls back to "query" for tokenizers without a template).
  "query"  the safety-head paper's optional template, "## Query:{q}\\n## Answer:" (ydyjya/SafetyHeadAttribution,
           `lib/Sahara/attribution.py`).
  "plain"  the request text alone (the paper's default for Ships).
"""

from __future__ import annotations

from typing import Any

from headscope.errors import HeadscopeError

PROMPT_STYLES = ("chat", "query", "plain")
QUERY_TEMPLATE = "## Query:{q}\n## Answer:"
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")
END_OF_TEXT_TOKENS = ("<|endoftext|>",)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def request_prompt_text(tokenizer: Any, request: str, *, style: str = "chat") -> str:
    """The prompt string for `request`; special tokens of the chat template are part of the text."""
    if style not in PROMPT_STYLES:
        raise HeadscopeError(f"unknown prompt style '{style}': use one of {', '.join(PROMPT_STYLES)}")
    if style == "chat" and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
        )
    if style in ("chat", "query"):
        return QUERY_TEMPLATE.format(q=request)
    return request


def request_prompt_ids(tokenizer: Any, request: str, *, style: str = "chat") -> list[int]:
    """Token ids of the prompt for `request` (a chat-rendered prompt already holds its special tokens)."""
    text = request_prompt_text(tokenizer, request, style=style)
    templated = style == "chat" and has_chat_template(tokenizer)
    ids = list(tokenizer(text, add_special_tokens=not templated)["input_ids"])
    if not ids:
        raise HeadscopeError("a request tokenised to nothing: give every request some text")
    return ids


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn: the chat template's (e.g. <|im_end|>), else EOS."""
    template = getattr(tokenizer, "chat_template", None) or ""
    for token in END_OF_TURN_TOKENS:
        if token in template:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != getattr(tokenizer, "unk_token_id", None):
                return token_id
    if tokenizer.eos_token_id is None:
        raise HeadscopeError("the tokenizer has neither an end-of-turn nor an EOS token: cannot mark where answers end")
    return int(tokenizer.eos_token_id)


def answer_stop_ids(tokenizer: Any, *, end_of_turn: bool = True, newline: bool = False) -> list[int]:
    """The one rule for where a generated answer ends (retrieval, lookback, refusal evaluation).

    `end_of_turn`: EOS and every end-of-turn / end-of-text token the vocabulary holds (<|im_end|>, <|eot_id|>,
    <end_of_turn>, <|end|>, <|endoftext|>). `newline`: also every token whose text holds a newline (the
    retrieval-head paper stops at the newline).
    """
    ids = set(_newline_ids(tokenizer)) if newline else set()
    if end_of_turn:
        if isinstance(getattr(tokenizer, "eos_token_id", None), int):
            ids.add(tokenizer.eos_token_id)
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS + END_OF_TEXT_TOKENS if t in vocab)
    return sorted(ids)


_NEWLINES: dict[int, tuple[int, ...]] = {}


def _newline_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every token whose text holds a newline (decoded once per tokenizer)."""
    if id(tokenizer) not in _NEWLINES:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _NEWLINES[id(tokenizer)] = tuple(i for i, text in enumerate(texts) if "\n" in text)
    return _NEWLINES[id(tokenizer)]
