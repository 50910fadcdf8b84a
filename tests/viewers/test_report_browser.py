"""The explorer in a real headless Chromium, from disk, offline: a real click on a head updates the card and the
pattern to that head's stored numbers; no console errors. Screenshots land in the test's tmp_path."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import headscope
from headscope.atlas import read_atlas
from headscope.atlas.exemplars import head_pattern
from headscope.viewers import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium when run as root)")

CELL = """(() => {{ const gd = document.getElementById('{div}'), fl = gd._fullLayout, box = gd.getBoundingClientRect();
  return [box.left + fl._size.l + fl.xaxis.l2p({x}), box.top + fl._size.t + fl.yaxis.l2p({y})]; }})()"""


@pytest.fixture(scope="module")
def scanned(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer") / "atlas.parquet"
    headscope.scan(str(tiny_llama_dir), ["induction", "sinks"], out=out, seq_len=17, n_samples=4, progress=False)
    return read_atlas(out)


@pytest.fixture
def browser(tmp_path):
    from cdp import Chromium

    chrome = Chromium(CHROMIUM, tmp_path / "profile")
    yield chrome
    chrome.close()


def test_clicking_a_head_updates_card_and_pattern(scanned, browser, tmp_path):
    page = write_report(scanned, tmp_path / "explorer.html")
    browser.open(page.as_uri(), "document.body && document.body.dataset.ready === '1'")
    browser.screenshot(tmp_path / "before.png")
    start = browser.evaluate("[headscopeExplorer.state.layer, headscopeExplorer.state.head, headscopeExplorer.state.metric]")
    assert start[2] == "induction_score"
    low, high = browser.evaluate("document.getElementById('head-map')._fullLayout.yaxis.range")
    assert low > high  # layer 0 drawn at the top
    wide = scanned.to_frame()["induction_score"]
    target = wide.idxmin()  # the weakest head: not the one the page opens on (the strongest)
    assert tuple(start[:2]) != target

    x, y = browser.evaluate(CELL.format(div="head-map", x=target[1], y=target[0]))
    browser.click(x, y)
    browser.screenshot(tmp_path / "clicked.png")
    assert browser.evaluate("[headscopeExplorer.state.layer, headscopeExplorer.state.head]") == list(target)
    assert browser.evaluate("document.getElementById('card-title').textContent").startswith(f"L{target[0]}H{target[1]} ")
    rows = browser.evaluate("Array.from(document.querySelectorAll('#card-rows tr')).map(r => Array.from(r.cells).map(c => c.textContent))")
    by_metric = {r[1]: r for r in rows}
    rank = int(wide.rank(ascending=False, method="min")[target])  # pandas' rank, computed here from the atlas
    assert by_metric["induction_score"][3] == f"{rank} / {wide.notna().sum()}"
    assert float(by_metric["sink_score"][2]) == pytest.approx(scanned.to_frame().loc[target, "sink_score"], rel=1e-3)

    shown = np.array(browser.evaluate("document.getElementById('pattern').data[0].z"), dtype=float)
    stored = head_pattern(scanned.exemplars, "repeated", *target).to_numpy()
    np.testing.assert_allclose(np.nan_to_num(shown), np.nan_to_num(stored), atol=6e-4)  # rounded to 1/1000 in the page
    assert f"L{target[0]}H{target[1]}" in browser.evaluate("document.getElementById('pattern').layout.title.text")

    # the model-level table sorts on a header click (value column, twice: ascending then descending)
    values = "Array.from(document.querySelectorAll('table.model-level tbody tr')).map(r => parseFloat(r.cells[2].textContent))"
    header = "document.querySelectorAll('table.model-level th')[2]"
    browser.evaluate(f"{header}.scrollIntoView()")
    box = browser.evaluate(f"(() => {{ const r = {header}.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()")
    browser.click(*box)
    shown = browser.evaluate(values)  # NaN comes back as None: kept after the numbers
    numbers = [v for v in shown if v is not None]
    assert len(numbers) >= 2 and shown == numbers + [None] * (len(shown) - len(numbers)) and numbers == sorted(numbers)
    browser.click(*box)
    again = [v for v in browser.evaluate(values) if v is not None]
    assert again == sorted(numbers, reverse=True)

    full = browser.screenshot(tmp_path / "page.png", full_page=True)
    assert full.stat().st_size > 50_000  # drawn, not blank
    assert not browser.errors()


def test_the_page_is_self_contained_and_names_stay_text(scanned, browser, tmp_path):
    evil = "</script><img src=x onerror=alert(1)>"
    frame = scanned.frame.copy()
    frame.loc[frame["metric"] == "sink_rate", "metric"] = evil
    frame.loc[frame["metric"] == "n_sequences", "metric"] = evil + "x"  # a model-level row: the HTML table
    atlas = headscope.Atlas(frame, metric_docs=scanned.metric_docs, exemplars=scanned.exemplars)
    page = write_report(atlas, tmp_path / "p.html")
    text = page.read_text()
    assert not re.search(r"<script[^>]*src=", text)  # nothing fetched: plotly.js is inline
    assert text.count("<img") == 0  # escaped in the HTML, \\u003c in the JSON block
    browser.open(page.as_uri(), "document.body && document.body.dataset.ready === '1'")
    assert browser.evaluate("document.images.length") == 0
    options = browser.evaluate("Array.from(document.querySelectorAll('#metric-picker option')).map(o => o.textContent)")
    assert evil in options  # shown as text
    assert not browser.errors()


def test_compare_panels_are_named_titled_and_do_not_overlap(scanned, browser, tmp_path):
    frame = scanned.frame.copy()
    frame["value"] = frame["value"] * 0.5
    other = headscope.Atlas(frame, metric_docs=scanned.metric_docs)
    page = write_report(scanned, tmp_path / "compare.html", compare=other, names=("base.parquet", "half.parquet"))
    browser.open(page.as_uri(), "document.body && document.body.dataset.ready === '1'")
    layout = browser.evaluate("(() => { const l = document.getElementById('compare').layout; return JSON.parse(JSON.stringify(l)); })()")
    titles = [a["text"] for a in layout["annotations"]]
    assert any("base.parquet" in t for t in titles) and any("half.parquet" in t for t in titles)
    assert all(layout[axis]["title"]["text"] for axis in ("xaxis", "yaxis", "xaxis2", "yaxis2", "xaxis3", "yaxis3"))
    ranges = browser.evaluate("['yaxis', 'yaxis2', 'yaxis3'].map(a => document.getElementById('compare')._fullLayout[a].range)")
    assert all(low > high for low, high in ranges)  # drawn reversed: layer 0 on top
    data = browser.evaluate("document.getElementById('compare').data.map(t => [t.colorbar ? t.colorbar.x : null, t.z])")
    middle_bar, right_bar = data[1][0], data[2][0]
    assert layout["xaxis2"]["domain"][1] < middle_bar < layout["xaxis3"]["domain"][0] and right_bar >= layout["xaxis3"]["domain"][1]
    a = np.array(data[0][1], dtype=float)
    np.testing.assert_allclose(np.array(data[2][1], dtype=float), a - 0.5 * a, atol=1e-6)  # left - middle
    browser.screenshot(tmp_path / "compare.png", full_page=True)
    assert not browser.errors()


def test_a_newcomer_sees_the_induction_stripe(browser, tmp_path):
    """Issue 18's "done": open the page, induction_score picked, click the brightest cell, see the stripe on tokens."""
    from headscope.engine import load_backend
    from headscope.scanning import scan_backend
    from headscope.scanning.exemplars import record_exemplars
    from headscope.analyzers import InductionAnalyzer
    from planted import PLANTED, build_planted_gpt2

    backend = load_backend(str(build_planted_gpt2(tmp_path / "planted")), quiet=True)
    atlas = scan_backend(backend, [InductionAnalyzer(seq_len=21, n_samples=8)], progress=False)
    half = ["t5", "t9", "t7", "t11", "t6", "t8"]
    atlas.exemplars = record_exemplars(backend, texts={"repeated": " ".join(half + half)})  # words the tokenizer knows
    page = write_report(atlas, tmp_path / "planted.html")
    browser.open(page.as_uri(), "document.body && document.body.dataset.ready === '1'")
    layer, head = PLANTED["induction_score"]
    browser.evaluate("headscopeExplorer.selectHead(0, 2)")  # somewhere else first
    x, y = browser.evaluate(CELL.format(div="head-map", x=head, y=layer))
    browser.click(x, y)
    assert browser.evaluate("[headscopeExplorer.state.layer, headscopeExplorer.state.head]") == [layer, head]
    z = np.array(browser.evaluate("document.getElementById('pattern').data[0].z"), dtype=float)
    period, first_copy = len(half), 1  # BOS at 0, first copy at 1..6, second copy at 7..12
    for query in range(first_copy + period, first_copy + 2 * period):
        assert np.nanargmax(z[query]) == query - period + 1  # the token after the earlier copy: the stripe
    labels = browser.evaluate("document.getElementById('pattern').layout.yaxis.ticktext")
    assert labels[1].endswith("t5") and labels[7].endswith("t5")  # real tokens on the axes
    browser.screenshot(tmp_path / "stripe.png")
    assert not browser.errors()
