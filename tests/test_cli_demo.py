"""`qcbed demo`: the README's first command completes and recovers the truth."""

from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner

from qcbed.cli import main


@pytest.mark.slow
def test_demo_completes_and_recovers_the_truth(tmp_path):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--quiet"])
    elapsed = time.perf_counter() - t0
    assert r.exit_code == 0, r.output + repr(r.exception)
    print(r.output)
    print(f"qcbed demo: {elapsed:.1f} s")
    # the printed table: refined versus true with esd
    rows = {}
    for line in r.output.splitlines():
        m = re.match(r"^(thickness \(A\)|U\(111\)|U'\(111\)|U\(222\)|tilt k_x|tilt k_y)"
                     r".*?\s+(\S+)\s+(\S+)\s+(\S+)\s+([+-]\d+\.\d+)$", line)
        if m:
            rows[m.group(1)] = float(m.group(5))
    assert set(rows) == {"thickness (A)", "U(111)", "U'(111)", "U(222)", "tilt k_x",
                         "tilt k_y"}, r.output
    assert all(abs(z) < 4.0 for z in rows.values()), rows
    assert "reduced chi2" in r.output
    res = json.loads((out / "results" / "result.json").read_text())
    assert 0.8 < res["chi2"] < 1.25
    assert res["truth"]["U(2,2,2)"] == pytest.approx(-1.2e-4)
    for f in ("results.h5", "structure_factors.hkl", "report.html", "figures/traces.png"):
        assert (out / "results" / f).is_file(), f
    assert (out / "project.toml").is_file() and (out / "data" / "pattern.npy").is_file()


@pytest.mark.slow
def test_demo_fast_runs_serially(tmp_path):
    r = CliRunner().invoke(main, ["--workers", "serial", "demo", "--fast", "--seed", "3",
                                  "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "coarse 1/1 orientation_thickness" in r.output
    assert "fine 2/2 'structure factors'" in r.output
    assert "results in" in r.output
