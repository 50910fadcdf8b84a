"""The CLI end to end: scan writes an atlas and a summary; mistakes are one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headscope.atlas import read_atlas
from headscope.cli import app

runner = CliRunner()


def test_scan_then_show(tiny_llama_dir, tmp_path):
    out = tmp_path / "atlas.parquet"
    result = runner.invoke(
        app, ["scan", str(tiny_llama_dir), "-o", str(out), "--seq-len", "21", "--n-samples", "4", "-q",
              "-p", "induction.exclude_bos=false"]
    )
    assert result.exit_code == 0, result.output
    assert "induction_score" in result.output and "wrote" in result.output
    atlas = read_atlas(out)
    assert len(atlas.to_frame()) == 2 * 4  # 2 layers x 4 heads
    assert '"exclude_bos":false' in atlas.frame[atlas.frame.analyzer == "induction"]["params"].iloc[0]
    shown = runner.invoke(app, ["show", str(out), "--top", "2"])
    assert shown.exit_code == 0 and "L" in shown.output


def test_list_commands():
    assert "smollm2-135m-instruct" in runner.invoke(app, ["models"]).output
    assert "induction_score" in runner.invoke(app, ["analyzers"]).output


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("headscope")), *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "400", **env},
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        (["scan", "./no/such/model"], "does not exist"),
        (["scan", "someone/not-a-model"], "cannot fetch"),
        (["scan", "TINY", "--analyzers", "nonsense"], "unknown analyzer"),
        (["scan", "TINY", "--dtype", "float8"], "unknown dtype"),
        (["scan", "TINY", "--seq-len", "100000"], "exceeds the model's context"),
        (["scan", "TINY", "-p", "induction.bogus=1"], "has no parameter"),
        (["scan", "TINY", "-p", "induction.seed=abc"], "cannot read"),
        (["show", "NOFILE"], "does not exist"),
    ],
)
def test_mistakes_are_one_line(args, expected, tiny_llama_dir, tmp_path):
    args = [str(tiny_llama_dir) if a == "TINY" else str(tmp_path / "x.parquet") if a == "NOFILE" else a for a in args]
    out = tmp_path / "atlas.parquet"
    done = _cli(*args, *(["-o", str(out)] if args[0] == "scan" else []))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], done.stderr
    assert not out.exists()  # nothing half-written


def test_merge_command_reports_conflicts_and_writes_nothing(tiny_llama_dir, tmp_path):
    a, b, c = (tmp_path / f"{n}.parquet" for n in "abc")
    assert runner.invoke(app, ["scan", str(tiny_llama_dir), "-o", str(a), "--seq-len", "21", "--n-samples", "4", "-q"]).exit_code == 0
    assert runner.invoke(app, ["scan", str(tiny_llama_dir), "-o", str(b), "--seq-len", "21", "--n-samples", "4", "-q"]).exit_code == 0
    ok = runner.invoke(app, ["merge", str(a), str(b), "-o", str(c)])
    keys = ["analyzer", "metric", "layer", "head"]
    merged_rows = read_atlas(c).frame.sort_values(keys).reset_index(drop=True)
    assert ok.exit_code == 0 and merged_rows.equals(read_atlas(a).frame.sort_values(keys).reset_index(drop=True))
    from headscope.atlas import Atlas

    tampered = read_atlas(b)
    tampered.frame.loc[0, "value"] += 1.0
    Atlas(tampered.frame).save(b)
    merged = tmp_path / "merged.parquet"
    done = _cli("merge", str(a), str(b), "-o", str(merged))
    assert done.returncode == 2 and "conflicting rows" in done.stderr and not merged.exists()
