"""docs/conformance.md is exactly what `python -m tests.conformance.render` makes of the asserted matrix."""

from __future__ import annotations

from conformance import expectations as ex
from conformance.render import DOC, render


def test_doc_is_the_rendered_matrix():
    assert DOC.read_text() == render(), "docs/conformance.md is stale: run `python -m tests.conformance.render`"


def test_doc_lists_enough_families_and_every_cell():
    text = DOC.read_text()
    assert len(ex.FAMILIES) >= 12
    for backend in ex.BACKENDS:
        assert f"## Backend `{backend}`" in text
    for family in ex.FAMILIES:
        assert text.count(f"\n| {family} | ") == 1 + len(ex.BACKENDS)  # the families table + one row per backend
