"""Project files with several [[data]] blocks (issue 15 item 2): `qcbed validate` and
`qcbed refine` on two synthetic CBED datasets of one crystal (two orientations, two
thicknesses) that share U_g; per-dataset results in result.json / results.h5 / report;
clear errors for bad blocks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from qcbed.cli import main
from qcbed.errors import InputError
from qcbed.project import dumps_toml, load_project, parse_project
from test_cli_refine import assert_same_parameters, run_until_killed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: dataset 1: another orientation (k_t at the 000 disc centre) and thickness
B_SETTINGS = {"thickness": 1300.0, "thickness_start": 1380.0, "tilt0": (0.35, 1.7)}


def _block(folder: str, proj: dict, name: str) -> dict:
    d = dict(proj["data"], files=[f"{folder}/{f}" for f in proj["data"]["files"]])
    return {"name": name, **d, "thickness": proj["plan"]["thickness"],
            "geometry": proj["geometry"], "roi": proj["roi"]}


@pytest.fixture(scope="module")
def joint_project(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    from qcbed.demo import DemoSettings, make_demo

    d = tmp_path_factory.mktemp("joint")
    fast = DemoSettings.fast()
    pa, ta = make_demo(d / "a", fast=True, executor="serial")
    pb, tb = make_demo(d / "b", settings=DemoSettings(**{**fast.__dict__, **B_SETTINGS}),
                       executor="serial")
    raw_a = tomllib.loads(pa.read_text())
    raw_b = tomllib.loads(pb.read_text())
    raw = {"project": dict(raw_a["project"], name="joint demo", output="results",
                           density_map="none"),
           "crystal": {"source": "a/si.cif"}, "engine": raw_a["engine"],
           "gof": raw_a["gof"],
           "plan": dict(raw_a["plan"], fine=[
               {"name": "thickness and orientation",
                "refine": ["thickness", "shift.row", "shift.col"], "max_iter": 10},
               {"name": "structure factors",
                "refine": ["thickness", "U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)", "shift.row",
                           "shift.col"], "max_iter": 12}]),
           "data": [_block("a", raw_a, "first"), _block("b", raw_b, "second")]}
    path = d / "joint.toml"
    path.write_text(dumps_toml(raw), encoding="utf-8")
    return path, raw, [ta, tb]


def test_joint_project_parses_with_per_dataset_sections(joint_project):
    path, _raw, _ = joint_project
    proj = load_project(path)
    assert proj.joint and [d.name for d in proj.datasets] == ["first", "second"]
    assert proj.datasets[1].thickness == B_SETTINGS["thickness_start"]
    assert proj.datasets[1].geometry.tilt0 != proj.datasets[0].geometry.tilt0
    view = proj.dataset_view(1)
    assert not view.joint and view.data.files == ["b/data/pattern.npy"]


@pytest.fixture(scope="module")
def joint_refined(joint_project) -> Path:
    """`qcbed refine` of the joint project; returns the output folder."""
    path = joint_project[0]
    out = path.parent / "out_joint"
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(path),
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out


def test_joint_validate_and_refine_from_the_cli(joint_project, joint_refined):
    path, _raw, (ta, tb) = joint_project
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 0, r.output
    assert "2 datasets (joint refinement)" in r.output
    assert "[first]" in r.output and "[second]" in r.output
    out = joint_refined
    res = json.loads((out / "result.json").read_text())
    print(json.dumps({k: res[k] for k in ("chi2", "dof", "n_used")}))
    p = {q["name"]: q for q in res["parameters"]}
    names = set(p)
    assert {"U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)", "thickness[0]", "thickness[1]",
            "shift.row[0]", "shift.row[1]"} <= names
    assert "U(1,1,1)[1]" not in names
    for name in ("U(1,1,1)", "U(2,2,2)"):
        v, e = p[name]["value"], p[name]["esd"]
        print(f"{name} = {v:.7f} ± {e:.2g} (true {ta[name]:.7f})")
        assert ta[name] == pytest.approx(tb[name], rel=1e-12)  # one crystal, one voltage
        assert abs(v - ta[name]) < 3 * e
    for k, truth in enumerate((ta, tb)):
        th = p[f"thickness[{k}]"]
        print(f"thickness[{k}] = {th['value']:.1f} ± {th['esd']:.2g} (true {truth['thickness']})")
        assert abs(th["value"] - truth["thickness"]) < max(3 * th["esd"], 2.0)
    ds = res["datasets"]
    assert [d["name"] for d in ds] == ["first", "second"]
    for d in ds:
        print(f"dataset {d['name']}: chi2_nu = {d['chi2']:.3f}, n = {d['n_used']}")
        assert 0.7 < d["chi2"] < 1.5
        assert d["thickness"]["esd"] is not None
    assert res["n_used"] == sum(d["n_used"] for d in ds)
    assert 0.7 < res["chi2"] < 1.5
    with h5py.File(out / "results.h5", "r") as f:
        assert sorted(f["datasets"]) == ["0", "1"]
        assert f["datasets/1"].attrs["name"] == "second"
        assert f["datasets/1/model"].shape == f["datasets/1/experiment"].shape
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Datasets (joint refinement)" in html and "second" in html


def test_joint_kill_and_resume_gives_the_same_result(joint_project, joint_refined):

    path = joint_project[0]
    out = path.parent / "out_joint_resume"
    run_until_killed(path, out)
    state = json.loads((out / "run_state.json").read_text())
    assert state["done"] == ["coarse:0", "fine:0"] and len(state["states"]) == 2
    assert [c["dataset"] for c in state["coarse"]] == [0, 1]
    r = CliRunner().invoke(main, ["resume", str(out), "--quiet", "--workers", "1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    docs = assert_same_parameters(joint_refined, out)
    a, b = docs["a"], docs["b"]
    assert [d["thickness"]["value"] for d in a["datasets"]] == pytest.approx(
        [d["thickness"]["value"] for d in b["datasets"]], rel=1e-9)


def _bad(raw: dict, change) -> dict:
    bad = json.loads(json.dumps(raw))
    change(bad)
    return bad


def test_bad_data_blocks_name_the_block(joint_project):
    _path, raw, _ = joint_project
    cases = [
        (lambda r: r["data"][1]["geometry"].pop("zone"), "data[1].geometry.zone"),
        (lambda r: r["data"][1].update(thickness=-5.0), "data[1].thickness"),
        (lambda r: r["data"][1].update(colour="red"), "data[1].colour"),
        (lambda r: r["data"][0].pop("roi"), "data[0].roi"),
        (lambda r: r["data"][1].update(name="first"), "data[1].name"),
        (lambda r: r["data"][1]["roi"]["regions"][0].update(samples=[1, 4]),
         "data[1].roi.regions[0].samples"),
        (lambda r: r["data"][1].update(engine={"gmax": "big"}), "data[1].engine.gmax"),
        (lambda r: r.update(geometry=r["data"][0]["geometry"]), "geometry"),
        (lambda r: r["plan"]["fine"][0].update(refine=["thickness[2]"]),
         "plan.fine[0].refine"),
        (lambda r: r["plan"]["fine"][0].update(refine=["U(1,1,1)[1]"]),
         "plan.fine[0].refine"),
        (lambda r: r["plan"]["fine"][0].update(method="nested"), "plan.fine[0].method"),
    ]
    for change, tag in cases:
        with pytest.raises(InputError) as exc:
            parse_project(_bad(raw, change), source="joint.toml", base_dir=_path.parent)
        assert exc.value.tag == tag, (tag, str(exc.value))
        assert exc.value.source == "joint.toml"
    # a missing data file of block 1 is named with the block's key (validate)
    bad = _path.parent / "bad.toml"
    bad.write_text(dumps_toml(_bad(raw, lambda r: r["data"][1].update(
        files=["b/data/missing.npy"]))), encoding="utf-8")
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 2
    assert "[data[1].files[0]]" in r.output and "missing.npy" in r.output
    # a per-dataset index selects one dataset: thickness[1] alone
    one = parse_project(_bad(raw, lambda r: r["plan"]["fine"][0].update(
        refine=["thickness[1]"], bounds={"thickness[1]": [1000.0, 2000.0]})),
        source="joint.toml", base_dir=_path.parent)
    assert one.dataset_view(0).fine[0].refine == []
    assert one.dataset_view(1).fine[0].refine == ["thickness"]
    assert one.dataset_view(1).fine[0].bounds == {"thickness": (1000.0, 2000.0)}
