"""The HTML report renders in a real headless Chromium from disk, with no network and no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import headscope
from headscope.viewers import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=15000"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium when run as root)")
def test_report_renders_in_chromium(tiny_llama_dir, tmp_path):
    atlas = headscope.scan(str(tiny_llama_dir), seq_len=21, n_samples=4, progress=False)
    report = write_report(atlas, tmp_path / "report.html")
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    plots = re.findall(r'<div id="figure-\d+" class="plotly-graph-div js-plotly-plot"', dom.stdout)
    n_figures = dom.stdout.count('class="figure"')
    assert n_figures >= 5 and len(plots) == n_figures  # every figure div was turned into a plot by plotly.js
    assert dom.stdout.count('class="main-svg"') >= n_figures  # and drawn
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert not console_errors, console_errors
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1400,1800",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 20_000  # a blank page is a few KB
