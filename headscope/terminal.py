"""Text from files (model, metric, analyzer names, paths) made safe to print: what a shared atlas names cannot
move the cursor, recolour the terminal (ESC sequences) or restyle the output (rich markup such as `[bold red]`)."""

from __future__ import annotations

import re

from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """Control characters shown as visible escapes (`\\x1b`): for rich `Text`, which never reads markup."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def safe(text: object) -> str:
    """Control characters shown as visible escapes, then rich markup escaped: for strings rich renders."""
    return escape(printable(text))
