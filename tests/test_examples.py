"""The example notebook runs (its code cells, in order, in a fresh folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_uses_only_the_top_level_api():
    code = "\n".join(_code_cells(NOTEBOOK))
    assert "import qcbed as qc" in code
    assert "from qcbed" not in code and "qcbed." not in code


@pytest.mark.slow
def test_notebook_runs(tmp_path: Path):
    import matplotlib.pyplot as plt

    cwd = os.getcwd()
    os.chdir(tmp_path)
    ns: dict = {}
    try:
        for i, src in enumerate(_code_cells(NOTEBOOK)):
            exec(compile(src, f"{NOTEBOOK.name}[{i}]", "exec"), ns)
    finally:
        os.chdir(cwd)
        plt.close("all")
    res = ns["res"]
    assert res.success and abs(res.thickness - 1480.0) < 15.0
    assert ns["updated"].tilt0 != ns["geometry"].tilt0
