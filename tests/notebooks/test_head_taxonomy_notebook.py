"""The head-taxonomy notebook runs top to bottom; on the hand-wired GPT-2 of tests/planted.py (L0H0 attends to the
previous token by position alone) its positional table must name that head at offset -1."""

import re

from notebook_runner import cell_outputs, figure_count, run_notebook, warnings_text
from planted import build_planted_gpt2


def test_head_taxonomy_runs(tmp_path):
    model = build_planted_gpt2(tmp_path / "planted")  # positions are wired for sequences under 23 tokens
    notebook = run_notebook("head_taxonomy.ipynb", tmp_path, parameters={
        "MODEL": str(model), "N_TEXTS": 4, "SEQ_LEN": 20, "N_QUESTIONS": 10})
    text = cell_outputs(notebook)
    found = dict(((int(l), int(h)), (int(o), float(s))) for l, h, o, s in
                 re.findall(r"positional head: L(\d+)H(\d+) offset ([+-]\d+) score ([0-9.]+)", text))
    assert found.get((0, 0), (None, 0.0))[0] == -1 and found[(0, 0)][1] >= 0.9, text[-1500:]
    assert re.search(r"best successor score: L\d+H\d+ [0-9.]+ \(random map: [0-9.]+; successor heads: \d+\)", text)
    assert "truth_probe_acc" in text and (tmp_path / "taxonomy.parquet").is_file()
    assert figure_count(notebook) == 3 and "TqdmWarning" not in warnings_text(notebook)
