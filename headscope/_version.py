"""Single source of the package version (written into every atlas row)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headscope")
except PackageNotFoundError:  # running from a source checkout without install
    __version__ = "0.1.0"

# The libraries whose versions change what a scan computes: named in `headscope --version` for bug reports.
DRIVEN_LIBRARIES = ("torch", "transformers", "transformer-lens", "nnsight")


def version_line() -> str:
    """`headscope 0.1.0 (python 3.11.7, torch 2.13.0, ...)`, read from package metadata (no heavy imports)."""
    import platform

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in DRIVEN_LIBRARIES)
    return f"headscope {__version__} (python {platform.python_version()}, {libraries})"
