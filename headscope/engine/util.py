"""Small helpers both backends share: quiet model loading and reading ids out of configs."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Iterator


def first_int(*values: Any) -> int | None:
    """The first int among `values` (a list counts as its first item): token ids live in several places."""
    for value in values:
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return None


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Model libraries print banners, deprecation notes and progress bars on load; keep the terminal clean."""
    from transformers.utils import logging as hf_logging

    previous = logging.root.manager.disable
    bars_were_on = hf_logging.is_progress_bar_enabled()
    logging.disable(logging.WARNING)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        if bars_were_on:
            hf_logging.enable_progress_bar()
