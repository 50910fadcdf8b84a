"""`headscope view`: the atlas explorer written as one HTML file (kept under its old name for the public API)."""

from __future__ import annotations

from pathlib import Path

from headscope.atlas import Atlas
from headscope.viewers.explorer import render_explorer, write_explorer


def render_report(atlas: Atlas, compare: Atlas | None = None, *, names: tuple[str, str] | None = None,
                  title: str | None = None) -> str:
    """The explorer page as one self-contained HTML string (see `headscope.viewers.explorer.render_explorer`).

    Args:
        atlas: one model's atlas.
        compare: an optional second atlas shown beside it.
        names: labels of the two atlases (e.g. their file names).
        title: page title.
    Returns:
        the HTML document.
    """
    return render_explorer(atlas, compare, names=names, title=title)


def write_report(atlas: Atlas, path: str | Path, compare: Atlas | None = None, *,
                 names: tuple[str, str] | None = None) -> Path:
    """Write the explorer atomically to `path`.

    Args:
        atlas: one model's atlas.
        path: the HTML file to write.
        compare: an optional second atlas.
        names: labels of the two atlases.
    Returns:
        the written path.
    """
    return write_explorer(atlas, path, compare, names=names)
