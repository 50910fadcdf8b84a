"""Process memory for the benchmarks (Linux /proc): current RSS, and a peak that can be reset after loading."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak excludes model loading."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
