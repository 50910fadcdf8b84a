"""Progress bars: `tqdm.auto` imported once without its "IProgress not found" warning.

In a notebook without ipywidgets, `tqdm.auto` warns at import (TqdmWarning) and falls back to text bars; the
fallback is what we want, the warning is noise in every tutorial. Importing it here first, with that one warning
silenced, makes every later `from tqdm.auto import tqdm` (ours or a library's) quiet too.
"""

from __future__ import annotations

import warnings

from tqdm.std import TqdmWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
