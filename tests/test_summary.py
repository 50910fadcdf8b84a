"""The terminal summary (`headscope show`) on a planted atlas, through the real console script at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.summary import sparkline

SCRIPT = Path(sys.executable).with_name("headscope")
PROV = Provenance("planted", "r", "float32", "transformer-lens", 12, 4, 2, "0")


class V:
    def __init__(self, layer, head, metric, value):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, 4


def planted(path: Path) -> Path:
    heads = [(l, h) for l in range(12) for h in range(4)]
    score = {(l, h): 0.01 * (l + h) for l, h in heads} | {(7, 2): 0.97, (3, 1): 0.88, (9, 0): 0.75}
    entropy = {(l, h): 0.5 for l, h in heads} | {(5, 3): 0.01, (2, 2): 0.02}
    flag = {(l, h): float((l, h) in {(1, 1), (6, 0)}) for l, h in heads}
    levels = [V(layer, -1, "massive_ratio", 2.0 ** layer) for layer in range(12)]
    levels += [V(-1, -1, "hidden_sink_token[Ġthe]", 0.4), V(-1, -1, "hidden_sink_token[Ċ]", 0.3)]
    levels += [V(-1, -1, f"count_{i}", float(i)) for i in range(11)]
    frames = [rows_frame([V(l, h, m, values[(l, h)]) for l, h in heads], provenance=PROV, analyzer=a, probe_suite="s",
                         probe_hash="h", params="{}")
              for a, m, values in (("induction", "induction_score", score), ("sinks", "row_entropy", entropy),
                                   ("sinks", "is_dormant", flag))]
    frames.append(rows_frame(levels, provenance=PROV, analyzer="sinks", probe_suite="s", probe_hash="h", params="{}"))
    docs = {"row_entropy": {"analyzer": "sinks", "meaning": "spread", "direction": "lower"}}
    Atlas(pd.concat(frames, ignore_index=True), metric_docs=docs).save(path)
    return path


def show(*args: str) -> str:
    done = subprocess.run([str(SCRIPT), "show", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def atlas_path(tmp_path_factory):
    return planted(tmp_path_factory.mktemp("summary") / "planted.parquet")


def test_show_fits_80_columns_one_block_per_analyzer(atlas_path):
    out = show(str(atlas_path), "--top", "3")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    induction = next(line for line in lines if line.startswith("induction_score"))
    assert induction.split()[2:5] == ["L7H2:0.97", "L3H1:0.88", "L9H0:0.75"]  # planted order, strongest first
    entropy = next(line for line in lines if line.startswith("row_entropy"))
    assert entropy.split()[2:4] == ["L5H3:0.01", "L2H2:0.02"]  # declared "lower = stronger"
    assert "2 of 48 flagged: L1H1 L6H0" in out  # a 0/1 flag lists its heads, not a ranking of ties
    assert sum("massive_ratio" in line for line in lines) == 1  # 12 per-layer rows summarised in one line
    assert sparkline([2.0 ** layer for layer in range(12)]) in out and "(L0) .." in out
    assert "' the' 0.4" in out and "Ġ" not in out and "'\\n' 0.3" in out  # tokens as text
    assert "+3 more" in out and "--all" in out  # 11 scalars, 8 shown


def test_show_all_lists_every_model_level_row(atlas_path):
    out = show(str(atlas_path), "--all")
    assert max(len(line) for line in out.splitlines()) <= 80
    assert all(f"massive_ratio L{layer} " in out for layer in range(12))
    assert all(f"count_{i} " in out for i in range(11)) and 'hidden_sink_token[" the"]' in out


def test_sparkline_scales_and_keeps_gaps():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1, float("nan"), 1]) == "▁ ▁"
