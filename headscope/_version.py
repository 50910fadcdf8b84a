"""Single source of the package version (written into every atlas row)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headscope")
except PackageNotFoundError:  # running from a source checkout without install
    __version__ = "0.1.0"
