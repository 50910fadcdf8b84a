"""What reaches the terminal: names from files escaped, OS errors one line with the fix (exit 2), `--top` at
least 1, and "wrote ... extras" only for files this run wrote."""

from __future__ import annotations

import errno
import json

import pytest
from typer.testing import CliRunner

import headscope.cli as cli
from headscope.atlas import Atlas, Provenance, rows_frame
from headscope.cli import app

runner = CliRunner()
EVIL = "\x1b[2J\x1b]0;pwned\x07[bold red]loud[/]\x9b"


class _V:
    def __init__(self, layer, head, value, metric="induction_score"):
        self.layer, self.head, self.metric, self.value, self.n_samples = layer, head, metric, value, 3


def _atlas(path, model=EVIL, metric="induction_score"):
    prov = Provenance(model, "r", "float32", "transformer-lens", 1, 2, 2, "0.1.0")
    rows = [_V(0, h, 0.5 + h, metric) for h in range(2)] + [_V(-1, -1, 0.9, EVIL + "_auroc")]
    Atlas(rows_frame(rows, provenance=prov, analyzer="induction", probe_suite="s", probe_hash="h", params="{}")).save(path)
    return path


def test_show_and_diff_escape_names_from_the_file(tmp_path):
    a = _atlas(tmp_path / "a.parquet", metric=EVIL)
    b = _atlas(tmp_path / "b.parquet", metric=EVIL)
    for args in (["show", str(a)], ["diff", str(a), str(b), "-m", EVIL]):
        result = runner.invoke(app, args, terminal_width=400)
        assert result.exit_code == 0, result.output
        assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in result.output), repr(result.output)
        assert "[bold red]loud[/]" in result.output  # shown as typed, not interpreted
    assert "\\x1b[2J" in runner.invoke(app, ["show", str(a)], terminal_width=400).output


@pytest.mark.parametrize("command", ["show", "diff"])
def test_top_below_one_is_refused(command, tmp_path):
    a = _atlas(tmp_path / "a.parquet", model="m")
    args = ["show", str(a)] if command == "show" else ["diff", str(a), str(a), "-m", "induction_score"]
    result = runner.invoke(app, [*args, "--top", "-1"])
    assert result.exit_code == 2 and "--top" in result.output


@pytest.mark.parametrize("code,fix", [(errno.ENOSPC, "free some space"), (errno.EROFS, "read-only"),
                                      (errno.ENAMETOOLONG, "shorter name"), (errno.EACCES, "permission denied")])
def test_os_errors_are_one_line_with_the_fix(code, fix, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise OSError(code, "boom", "/some/atlas.parquet")

    monkeypatch.setattr(cli, "app", fail)
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and fix in lines[0] and "/some/atlas.parquet" in lines[0]


def test_wrote_extras_only_for_files_this_run_wrote(tiny_llama_dir, tmp_path):
    out = tmp_path / "y.parquet"
    stale = tmp_path / "y.previous-token.json"
    stale.write_text(json.dumps({"stale": True}))
    result = runner.invoke(app, ["scan", str(tiny_llama_dir), "-o", str(out), "-a", "previous-token", "--seq-len", "21",
                                 "--n-samples", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert "wrote previous-token extras" not in result.output and json.loads(stale.read_text()) == {"stale": True}
