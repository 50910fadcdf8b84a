"""headscope: a head atlas for transformer language models.

Typical use::

    import headscope
    atlas = headscope.scan("smollm2-135m-instruct", analyzers=["induction"])
    atlas.top("induction_score", k=5)
"""

from headscope._version import __version__
from headscope.atlas import Atlas, read_atlas
from headscope.errors import HeadscopeError
from headscope.scan import scan

__all__ = ["Atlas", "HeadscopeError", "__version__", "read_atlas", "scan"]
