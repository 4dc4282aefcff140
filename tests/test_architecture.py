"""The import contracts of docs/architecture.md, enforced in CI (which runs only pytest).

The contracts live in pyproject.toml (``[tool.importlinter]``): one import
direction between the layers, and no cycles between sibling modules/packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

importlinter_cli = pytest.importorskip("importlinter.cli")

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path) -> int:
    return importlinter_cli.lint_imports(config_filename=str(config), no_cache=True,
                                         no_logo=True)


def test_import_contracts_are_kept():
    assert _lint(ROOT / "pyproject.toml") == 0, "see the import-linter report above"


def test_checker_reports_an_upward_import(tmp_path: Path):
    """The checker sees real imports: with two layers swapped the contract breaks."""
    bad = tmp_path / "contracts.toml"
    bad.write_text('[tool.importlinter]\nroot_package = "qcbed"\n\n'
                   '[[tool.importlinter.contracts]]\nname = "swapped"\ntype = "layers"\n'
                   'containers = ["qcbed"]\nlayers = ["crystal", "scattering"]\n',
                   encoding="utf-8")
    assert _lint(bad) != 0


def test_import_qcbed_is_light():
    """``import qcbed`` loads no sub-package (the top-level API is lazy)."""
    code = ("import json, sys; import qcbed; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('qcbed.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out)
    assert all(m in ("qcbed._version", "qcbed.errors", "qcbed._api") for m in loaded), loaded


def test_top_level_api_is_lazy_and_listed():
    import qcbed as qc

    names = {"read_crystal", "Simulation", "read_pattern", "read_lacbed", "open_4d",
             "ExperimentGeometry", "Region", "ROI", "Refinement", "CoarseRefinement",
             "load_project", "run_project", "Pattern"}
    assert names <= set(dir(qc)) and names <= set(qc.__all__)
    from qcbed.bloch.simulation import Simulation
    from qcbed.refine import CoarseRefinement

    assert qc.Simulation is Simulation and qc.CoarseRefinement is CoarseRefinement
    with pytest.raises(AttributeError):
        qc.no_such_name
