"""The public API documents itself: docstrings with Args/Returns where it takes arguments, a typed package."""

from __future__ import annotations

import inspect
from importlib.resources import files

import headscope
from headscope.atlas import Atlas, merge_atlases, read_atlas


def test_public_functions_say_what_they_take_and_return():
    for function in (headscope.scan, headscope.read_side_output, read_atlas, merge_atlases, Atlas.read, Atlas.save,
                     Atlas.top, Atlas.to_frame, Atlas.head_rows, Atlas.layer_metrics, Atlas.scalar_metrics, Atlas.model_metrics):
        doc = inspect.getdoc(function) or ""
        assert "Args:" in doc and "Returns:" in doc, function.__qualname__


def test_every_public_atlas_member_has_a_docstring():
    """pydoc shows the comment above an undocumented method as its doc: every public member needs its own."""
    for name, member in vars(Atlas).items():
        if name.startswith("_") and name not in ("__init__", "__len__", "_repr_html_"):
            continue
        target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        assert inspect.getdoc(target), name
        assert inspect.getcomments(target) is None, f"{name} has a comment pydoc would show"


def test_package_is_typed_and_ships_the_explorer_assets():
    package = files("headscope")
    assert package.joinpath("py.typed").is_file()
    assert all(package.joinpath("viewers", "static", name).is_file() for name in ("explorer.js", "explorer.css"))
