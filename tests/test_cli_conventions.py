"""The real `headscope` console script follows click's conventions, driven in a subprocess (not CliRunner), so a
change in how typer ships click (typer 0.29 vendors its own copy) cannot hide a broken error path again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headscope.scanning.cache import is_part_file

SCRIPT = Path(sys.executable).with_name("headscope")


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "NO_COLOR": "1"}


def test_bare_command_prints_help_and_succeeds():
    done = _run()
    assert done.returncode == 0, done.stderr
    assert "Usage: headscope" in done.stdout and "scan" in done.stdout and "--version" in done.stdout


def test_version_names_the_libraries_that_shape_the_numbers():
    from importlib.metadata import version

    done = _run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"headscope {version('headscope')} ")
    assert f"transformers {version('transformers')}" in done.stdout and "torch " in done.stdout


@pytest.mark.parametrize(
    "args,usage,message",
    [
        (["scan", "--n-sample", "4"], "headscope scan", "No such option"),
        (["show"], "headscope show", "Missing argument 'ATLAS'"),
        (["scan", "--n-samples", "four"], "headscope scan", "Invalid value for '--n-samples'"),
        (["nope"], "headscope", "No such command 'nope'"),
    ],
)
def test_usage_errors_use_clicks_standalone_handling(args, usage, message):
    done = _run(*args)
    assert done.returncode == 2, done.stderr
    assert f"Usage: {usage} [OPTIONS]" in done.stderr
    assert f"Try '{usage} --help' for help." in done.stderr
    assert message in done.stderr
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr


def test_close_matches_are_suggested():
    # click says "No such option: --n-sample (Possible options: --n-samples)", typer 0.25's own wording is
    # "No such option '--n-sample'. Did you mean '--n-samples'?": either way the fix is named after the mistake
    done = _run("scan", "--n-sample", "4")
    after = done.stderr.split("No such option", 1)[1]
    assert "--n-sample" in after and "--n-samples" in after.split("--n-sample", 1)[1]


def test_user_mistakes_stay_one_line_exit_2(tmp_path):
    done = _run("show", str(tmp_path / "missing.parquet"))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]


def test_ctrl_c_during_a_scan_says_what_was_kept_and_exits_130(tiny_llama_dir, tmp_path):
    out = tmp_path / "atlas.parquet"
    parts = tmp_path / "atlas.parquet.parts"
    process = subprocess.Popen(
        [str(SCRIPT), "scan", str(tiny_llama_dir), "-o", str(out), "--n-samples", "4000", "--seq-len", "41",
         "--shard-size", "16", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    deadline = time.monotonic() + 120
    finished = []
    while time.monotonic() < deadline and process.poll() is None and not finished:
        finished = [p for p in parts.iterdir() if is_part_file(p)] if parts.is_dir() else []
        time.sleep(0.02)
    assert finished, "no shard finished before the scan ended: make the scan longer"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 130, stderr
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "--resume" in lines[0], stderr
    assert str(parts) in lines[0] and not out.exists()
    kept = [p for p in parts.iterdir() if is_part_file(p)]
    assert len(kept) >= len(finished)  # nothing finished was thrown away
    assert lines[0].startswith(f"interrupted: {len(kept)} finished part file(s)")
    (parts / "my-notes.txt").write_text("a user's own file is neither counted nor deleted")
    resumed = _run("scan", str(tiny_llama_dir), "-o", str(out), "--n-samples", "4000", "--seq-len", "41",
                   "--shard-size", "16", "-q", "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert out.is_file() and (parts / "my-notes.txt").is_file()  # cleanup removed only the scan's own parts
