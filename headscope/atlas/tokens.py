"""Token strings as people read them: byte-level BPE (`Ġthe`, `Ċ`) and SentencePiece (`▁the`) spellings decoded.

Older atlases name tokens in metric names the way the tokenizer stores them (`hidden_sink_token[Ġthe]`); the
viewers and the summary show them as text (`hidden_sink_token[" the"]`) without loading a tokenizer.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode table, inverted: printable stand-in character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def readable_token(token: str) -> str:
    """`Ġthe` -> ' the', `Ċ` -> '\\n', `▁the` -> ' the'; anything else unchanged."""
    if "▁" in token:
        return token.replace("▁", " ")
    decoder = _byte_decoder()
    if any(c in ("Ġ", "Ċ", "ĉ") for c in token) and all(c in decoder for c in token):
        return bytes(decoder[c] for c in token).decode("utf-8", errors="replace")
    return token


_BRACKETED = re.compile(r"\[(.*)\]$")


def readable_metric(metric: str) -> str:
    """`hidden_sink_token[Ġthe]` -> `hidden_sink_token[" the"]`: a token inside brackets shown quoted, as text."""
    match = _BRACKETED.search(metric)
    if not match:
        return metric
    text = readable_token(match.group(1)).replace("\n", "\\n").replace("\t", "\\t")
    return f'{metric[:match.start()]}["{text}"]'
