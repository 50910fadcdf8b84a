"""headscope: a head atlas for transformer language models.

Typical use::

    import headscope
    atlas = headscope.scan("smollm2-135m-instruct", analyzers=["induction"])
    atlas.top("induction_score", k=5)
    headscope.read_side_output("atlas.parquet", "lookback")  # extras a scan with out= wrote beside the atlas

`scan` (and with it torch) is imported on first use, so reading and viewing atlases needs no model stack.
"""

from typing import Any

import headscope.progress  # noqa: F401  (first import of tqdm.auto, without its notebook warning)
from headscope._version import __version__
from headscope.atlas import Atlas, read_atlas
from headscope.errors import HeadscopeError
from headscope.side_outputs import read_side_output

__all__ = ["Atlas", "HeadscopeError", "__version__", "read_atlas", "read_side_output", "scan"]


def __getattr__(name: str) -> Any:
    if name == "scan":
        from headscope.scanning import scan

        return scan
    raise AttributeError(f"module 'headscope' has no attribute {name!r}")
