"""CLI end to end on a tiny synthetic project: validate, refine, results, kill and resume;
import-felix on the shared Si folder."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.cli import main
from qcbed.results import RESULT_SCHEMA, file_sha256, validate_result_json


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("tiny")
    return make_demo(d, fast=True, executor="serial")


@pytest.fixture(scope="module")
def refined(tiny) -> Path:
    """`qcbed refine` of the tiny project (serial engine); returns the output folder."""
    path, _ = tiny
    out = path.parent / "out_refine"
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(path),
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "results in" in r.output
    return out


def test_validate_ok(tiny):
    r = CliRunner().invoke(main, ["validate", str(tiny[0])])
    assert r.exit_code == 0, r.output
    assert "project is valid" in r.output


def test_validate_reports_error_with_key(tiny, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny[0].read_text().replace("gl = ", "gl = -"))
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 2
    assert "[geometry.gl]" in r.output and "> 0" in r.output and "found -40" in r.output


def test_refine_writes_results(refined, tiny):
    _path, truth = tiny
    names = {p.name for p in refined.iterdir()}
    for f in ("results.h5", "result.json", "structure_factors.hkl", "report.html",
              "run_state.json", "checkpoint_fine0.h5", "checkpoint_fine1.h5",
              "difference_xray.cube"):
        assert f in names, f
    res = validate_result_json(refined / "result.json")
    assert res["format"] == "qcbed-result/1"
    assert {z["hkl"][0] for z in res["zncc"]} == {-1, 0, 1, 2}
    assert all(z["zncc"] > 0.99 for z in res["zncc"])
    assert 0.7 < res["chi2"] < 1.4
    sf = {tuple(r["hkl"]): r for r in res["structure_factors"]}
    assert set(sf) == {(1, 1, 1), (2, 2, 2)}
    # refined near the truth (within 5 esd) and away from the IAM start
    for name, key in (("U(1,1,1)", (1, 1, 1)), ("U(2,2,2)", (2, 2, 2))):
        r = sf[key]
        assert abs(r["U"] - truth[name]) < 5 * r["U_esd"], (name, r)
    assert abs(sf[(2, 2, 2)]["U"] - sf[(2, 2, 2)]["U_iam"]) > 10 * sf[(2, 2, 2)]["U_esd"]
    assert abs(res["thickness"]["value"] - truth["thickness"]) < 5 * res["thickness"]["esd"]
    # the report is self-contained: every figure it links exists
    html = (refined / "report.html").read_text()
    figs = [line.split("src='")[1].split("'")[0] for line in html.splitlines()
            if "<img src=" in line]
    assert {"figures/traces.png", "figures/correlation.png",
            "figures/discs_region0.png"} <= set(figs)
    assert all((refined / f).is_file() for f in figs)
    assert "http" not in html.replace("https://", "").split("<h2>Provenance")[0]


def test_results_h5_has_history_final_patterns_and_provenance(refined, tiny):
    path, _ = tiny
    with h5py.File(refined / "results.h5") as f:
        assert f.attrs["format"] == "qcbed-results/1"
        assert "[plan]" in f["inputs"].attrs["project_toml"]
        hist = f["history"]
        n = len(hist["gof"])
        assert n >= 2 and len(hist["thickness"]) == n and len(hist["step"]) == n
        fi = f["final"]
        names = [x.decode() for x in fi["free_names"][()]]
        assert "U(1,1,1)" in names and fi["correlation"].shape == (len(names), len(names))
        assert np.allclose(np.diag(fi["correlation"][()]), 1.0)
        pat = f["patterns"]
        assert pat["experiment"].shape == pat["model"].shape == (4, pat["kt"].shape[0])
        assert pat["region0/model"].shape[0] == 4
        prov = f["provenance"]
        assert prov.attrs["qcbed_version"]
        assert "numpy" in prov["dependencies"].attrs
        hashes = dict(prov["input_files"].attrs)
        data = (path.parent / "data" / "pattern.npy").resolve()
        assert hashes[str(data)] == file_sha256(data)
        assert str((path.parent / "si.cif").resolve()) in hashes
        sfg = f["structure_factors"]
        assert sfg["hkl"].shape == (2, 3)
    table = (refined / "structure_factors.hkl").read_text().splitlines()
    rows = [line.split() for line in table if not line.startswith("#")]
    assert len(rows) == 2 and [int(x) for x in rows[0][:3]] == [1, 1, 1]
    assert len(rows[0]) == 17


def run_until_killed(path, out, step: str = "structure factors", n: int = 2) -> None:
    """Run the project at ``path`` into ``out`` and kill it at the n-th iteration of
    the fine step named ``step`` (an exception from the progress callback)."""
    from qcbed.project import ProjectRun, load_project

    calls = []

    class Killed(Exception):
        pass

    def kill(rec):
        if rec["step"] == step:
            calls.append(rec)
            if len(calls) == n:
                raise Killed("simulated kill")

    with pytest.raises(Killed):
        ProjectRun(load_project(path), out_dir=out, executor="serial", progress=False,
                   log=lambda s: None, callback=kill).run()


def assert_same_parameters(a_dir, b_dir) -> dict:
    """The refined parameters of two results folders agree (rel 1e-7); returns both
    result.json documents."""
    a = json.loads((a_dir / "result.json").read_text())
    b = json.loads((b_dir / "result.json").read_text())
    pa = {p["name"]: p["value"] for p in a["parameters"]}
    pb = {p["name"]: p["value"] for p in b["parameters"]}
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pb[k] == pytest.approx(pa[k], rel=1e-7, abs=1e-12), k
    return {"a": a, "b": b}


def test_kill_and_resume_gives_the_same_result(tiny, refined):

    path, _ = tiny
    out = path.parent / "out_resume"
    run_until_killed(path, out)
    assert (out / "checkpoint_fine1.h5").is_file() and not (out / "result.json").exists()
    state = json.loads((out / "run_state.json").read_text())
    assert state["done"] == ["coarse:0", "fine:0"]
    r = CliRunner().invoke(main, ["resume", str(out / "checkpoint_fine1.h5"), "--quiet",
                                  "--workers", "1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert_same_parameters(refined, out)
    with h5py.File(refined / "results.h5") as fa, h5py.File(out / "results.h5") as fb:
        assert len(fa["history/gof"]) == len(fb["history/gof"])


def test_resume_without_a_run(tmp_path):
    r = CliRunner().invoke(main, ["resume", str(tmp_path)])
    assert r.exit_code == 2 and "no run to resume" in r.output


def test_schema_is_a_json_schema():
    assert RESULT_SCHEMA["type"] == "object"
    json.dumps(RESULT_SCHEMA)
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)


def test_result_json_passes_jsonschema_when_available(refined):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads((refined / "result.json").read_text()), RESULT_SCHEMA)


@pytest.mark.shared_data
def test_import_felix_produces_a_valid_project(si_dlacbed_dir, tmp_path):
    out = tmp_path / "si.toml"
    r = CliRunner().invoke(main, ["import-felix", str(si_dlacbed_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "refines U(1,1,1), U(2,2,0), U(1,1,3), U(2,2,2)" in r.output
    text = out.read_text()
    assert "clip_negative = true" in text and "negative pixels" in text
    r = CliRunner().invoke(main, ["validate", str(out)])
    assert r.exit_code == 0, r.output
    assert "LACBEDStack (152, 152), 39 reflections compared" in r.output
    assert "the 39 compared images hold 13 independent ones" in r.output
    from qcbed.project import load_project

    p = load_project(out)
    assert p.data["format"] == "felix" and p.data["clip_negative"]
    # the images are not counts: the noise model is estimated from them (issue 12)
    assert p.data["variance"] == "estimated"
    assert p.coarse[0].thickness_range == (0.6 * 1480.0, 1.6 * 1480.0)
    # Felix's beam travels along incident_beam_direction: qcbed's zone is its negative
    assert not p.geometry["mirror"] and p.geometry["rotation"] == -90.0
    assert list(p.geometry["zone"]) == [-1.0, 1.0, 0.0]
    assert list(p.geometry["normal"]) == [-1.0, 1.0, 0.0]
    assert p.coarse[0].step == "orientation_thickness"
    # the images are symmetrised: the 39 compared ones hold 13 independent ones, and the
    # refinement counts each group of copies once (docs/refinement.md, "Copied images")
    from qcbed.project import build_setup

    assert p.data["count_copies_once"]
    setup = build_setup(p, executor="serial")
    m = setup.roi().multiplicity
    assert len(m) == 39 and np.sum(1.0 / m) == pytest.approx(13.0)
    # the spread over 5 regions is part of the plan (issue 12 item 6), on tiles of which
    # none is a mirror copy of another (the strips of a plain tiling are mirror pairs)
    from qcbed.project.run import _copy_operations
    from qcbed.refine.reproducibility import independent_tiles

    assert p.regions == 5
    ops = _copy_operations(setup)
    assert ops == ["mirror_lr", "mirror_ud", "rotate_180"]
    tiles = independent_tiles(setup.regions[0], 5, ops, (152, 152))
    centres = np.array([t.corners.mean(0) for t in tiles])
    c = 75.5  # all five in one quadrant of the mirror lines through the image centre
    assert len(tiles) == 5 and (np.all(centres < c) or np.all(centres > c))
    # 222 is zero in the IAM only for spherical atoms: refined too (docs/si-u111-bias.md)
    assert p.fine[-1].refine[:5] == ["thickness", "U(1,1,1)", "U(2,2,0)", "U(1,1,3)",
                                     "U(2,2,2)"]
    # writing twice needs --force
    r = CliRunner().invoke(main, ["import-felix", str(si_dlacbed_dir), "--out", str(out)])
    assert r.exit_code == 2 and "--force" in r.output


def test_refine_writes_the_refined_cif(refined):
    """The results folder holds refined.cif beside the hkl table (read back with gemmi)."""
    import gemmi

    res = json.loads((refined / "result.json").read_text())
    assert res["files"]["cif"] == "refined.cif"
    b = gemmi.cif.read_file(str(refined / "refined.cif")).sole_block()
    th = b.find_value("_qcbed_refine_thickness_A")
    assert float(th.split("(")[0]) == pytest.approx(res["thickness"]["value"], abs=1.0)
    assert "(" in th  # refined: carries its s.u.
    t = b.find("_qcbed_refln_", ["index_h", "index_k", "index_l", "U_meas", "U_sigma"])
    sf = {tuple(r["hkl"]): r for r in res["structure_factors"]}
    assert len(t) == len(sf) == 2
    for row in t:
        r = sf[(int(row[0]), int(row[1]), int(row[2]))]
        assert float(row[3]) == pytest.approx(r["U"], rel=1e-6)
        assert float(row[4]) == pytest.approx(r["U_esd"], rel=1e-3)
    f = b.find("_refln_", ["index_h", "index_k", "index_l", "F_meas", "F_calc"])
    for row in f:
        r = sf[(int(row[0]), int(row[1]), int(row[2]))]
        assert float(row[3]) == pytest.approx(r["Fx"], abs=1e-4)
        assert float(row[4]) == pytest.approx(r["Fx_iam"], abs=1e-4)
