"""Project-level hooks of issue 12: error budget and region spread in result.json,
results.h5 and the report (`qcbed refine --regions`), and `[data] variance =
"estimated"` for LACBED stacks that are not in counts."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.cli import main
from qcbed.project import build_setup, dumps_toml, load_project, parse_project
from qcbed.results import validate_result_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("acc_demo")
    path, _truth = make_demo(d, fast=True, executor="serial")
    return path


def test_refine_with_regions_and_budget(demo):
    out = demo.parent / "out_acc"
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(demo),
                                  "--out", str(out), "--regions", "4"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = validate_result_json(out / "result.json")
    eb = res["error_budget"]
    inputs = [e["input"] for e in eb["inputs"]]
    for name in ("voltage", "gl", "B(Si1)", "absorption", "elastic table", "beam selection",
                 "pool", "background"):
        assert name in inputs
    for name, p in eb["parameters"].items():
        shifts = [abs(v) for v in p["shifts"].values()]
        assert p["combined"] == pytest.approx(np.sqrt(p["esd"] ** 2 + sum(s * s
                                                                      for s in shifts)))
        assert max(shifts) > 0, name
    rg = res["regions"]
    assert rg["n_regions"] >= 4
    # the scatter between regions that the esds do not explain is part of u_c
    assert "region scatter" in inputs
    for name, p in eb["parameters"].items():
        if name in rg["excess_uncertainty"]:
            assert p["shifts"]["region scatter"] == pytest.approx(
                rg["excess_uncertainty"][name])
    st = rg["stats"]["U(1,1,1)"]
    assert np.isfinite(st["std"]) and st["mean_esd"] > 0
    # every tile is its own refinement: the values differ
    assert st["std"] > 0 and len(set(rg["values"]["U(1,1,1)"])) == rg["n_regions"]
    with h5py.File(out / "results.h5") as f:
        b = f["accuracy/error_budget"]
        assert b["shifts"].shape == (len(inputs), len(eb["parameters"]))
        assert f["accuracy/regions/values"].shape[0] == rg["n_regions"]
    html = (out / "report.html").read_text()
    assert "Error budget" in html and "Reproducibility across" in html
    r = CliRunner().invoke(main, ["refine", str(demo), "--regions", "1"])
    assert r.exit_code == 2 and "--regions" in r.output


def test_estimated_variance_for_a_lacbed_stack(demo, tmp_path):
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:96, 0:96] / 96
    files, truths = [], []
    for k in range(2):
        truth = 300 * (1 + np.cos(2 * np.pi * (2 + k) * x + 3 * y)) * np.exp(-(x - .5) ** 2) + 1
        img = truth + rng.normal(size=truth.shape) * np.sqrt(0.5 * truth + 2.0)
        truths.append(truth)
        files.append(str(tmp_path / f"i{k}.npy"))
        np.save(files[-1], img)
    raw = copy.deepcopy(tomllib.loads(demo.read_text()))
    raw["crystal"]["source"] = str(demo.parent / raw["crystal"]["source"])
    raw["data"].update(kind="lacbed", files=files, hkl=[[0, 0, 0], [1, 1, 1]],
                       variance="estimated", allow_negative=True)
    raw["geometry"]["mode"] = "lacbed"
    raw["geometry"].pop("reference")
    raw["plan"]["regions"] = 5
    p = tmp_path / "lacbed.toml"
    p.write_text(dumps_toml(raw))
    proj = load_project(p)
    assert proj.data["variance"] == "estimated" and proj.regions == 5
    setup = build_setup(proj, executor="serial")
    nm = setup.data.metadata["noise_model"]
    assert nm["gain"] == pytest.approx(0.5, rel=0.05)
    assert nm["floor"] == pytest.approx(2.0, rel=0.3)
    # variance maps at the local level: close to the true variance
    rel = np.abs(setup.data.variance[0] / (0.5 * truths[0] + 2.0) - 1)
    assert np.median(rel) < 0.05 and np.quantile(rel, 0.99) < 0.4
    raw["plan"]["regions"] = 1
    with pytest.raises(Exception, match="two regions"):
        parse_project(raw, source="x", base_dir=tmp_path)
    raw["plan"]["regions"] = 10_000
    with pytest.raises(Exception, match="cannot hold"):
        parse_project(raw, source="x", base_dir=tmp_path)
    json.dumps(nm)


def test_accuracy_group_of_results_h5(tmp_path):
    from qcbed.results import _write_accuracy_h5

    acc = {"noise_model": {"gain": 2.0, "floor": 0.5, "method": "scatter", "n_used": 10,
                           "white": False, "from_residuals": {"gain": 9.0, "floor": 1.0}},
           "error_budget": {"formula": "u_c", "inputs": [{"input": "voltage", "delta": "1 kV",
                                                          "method": "m"}],
                            "parameters": {"U(1,1,1)": {"value": 0.05, "esd": 1e-5,
                                                        "shifts": {"voltage": 2e-5},
                                                        "combined": 2.2e-5}}},
           "regions": {"n_regions": 2, "labels": ["a", "b"], "values": {"t": [1.0, 2.0]},
                       "esds": {"t": [0.1, 0.1]}, "stats": {"t": {"chi2_nu": None}}}}
    with h5py.File(tmp_path / "r.h5", "w") as f:
        _write_accuracy_h5(f, acc)
    with h5py.File(tmp_path / "r.h5") as f:
        g = f["accuracy"]
        assert json.loads(g.attrs["noise_model"])["from_residuals"]["gain"] == 9.0
        assert g.attrs["noise_gain"] == 2.0
        assert g["error_budget/shifts"][()].tolist() == [[2e-5]]
        assert g["regions/values"].shape == (2, 1)
