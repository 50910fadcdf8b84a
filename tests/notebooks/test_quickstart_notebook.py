"""The quickstart notebook runs top to bottom on the embedded model (small sizes injected in its parameters cell)."""

import re

from notebook_runner import cell_outputs, figure_count, run_notebook, warnings_text


def test_quickstart_runs(tmp_path):
    notebook = run_notebook("quickstart.ipynb", tmp_path, parameters={"N_SAMPLES": 4})
    assert (tmp_path / "smollm2.parquet").is_file()
    found = re.search(r"strongest induction head: L(\d+)H(\d+) \(([0-9.]+)\)", cell_outputs(notebook))
    assert found and float(found.group(3)) > 0.8, cell_outputs(notebook)[-500:]
    assert figure_count(notebook) >= 1 and "TqdmWarning" not in warnings_text(notebook)
