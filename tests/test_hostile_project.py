"""Project files and runs under careless and hostile use (issue 14): errors instead of
crashes, nothing destroyed, resumes that are exact at every stage."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.cli import main
from qcbed.errors import InputError
from qcbed.project import (
    ProjectRun,
    RunFinished,
    dumps_toml,
    load_project,
    resume_run,
    validate_project,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("hostile_project")
    return make_demo(d, fast=True, executor="serial")[0]


@pytest.fixture(scope="module")
def full_run(demo):
    """The uninterrupted reference run."""
    return ProjectRun(load_project(demo), out_dir=demo.parent / "full", executor="serial",
                      progress=False, log=lambda s: None).run()


def _variant(demo: Path, tmp_path: Path, edit) -> Path:
    raw = tomllib.loads(demo.read_text())
    edit(raw)
    raw["crystal"]["source"] = str(demo.parent / raw["crystal"]["source"])
    raw["data"]["files"] = [str(demo.parent / f) for f in raw["data"]["files"]]
    raw["project"]["output"] = str(tmp_path / "out")
    p = tmp_path / "variant.toml"
    p.write_text(dumps_toml(raw))
    return p


def _validate_error(path: Path) -> InputError:
    rep = validate_project(path)
    assert not rep.ok, rep.text()
    return rep.errors[0]


def _params(run) -> dict[str, float]:
    return {p.name: p.value for p in run.fine.parameters}


# ====================================================================== validate
def test_validate_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "results.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00\xff\xfe" + bytes(range(256)))
    err = _validate_error(p)
    assert "not UTF-8" in str(err) and str(p) in str(err)
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 2 and "Traceback" not in r.output


@pytest.mark.parametrize(("edit", "tag", "fragment"), [
    (lambda r: r["engine"].__setitem__("executor", "foo"), "engine.executor", "unknown"),
    (lambda r: r["engine"].__setitem__("gmax", 200.0), None, "gmax"),
    (lambda r: r["engine"].__setitem__("memory_limit", "lots"), "engine.memory_limit",
     "memory limit"),
    (lambda r: r["plan"]["coarse"][0].__setitem__("n_scan", 1_000_000_000),
     "plan.coarse[0].n_scan", "out of range"),
    (lambda r: r["plan"]["coarse"][0].__setitem__("n_scan", 10**400),
     "plan.coarse[0].n_scan", "out of range"),
    (lambda r: r["plan"]["coarse"][0].__setitem__("margin", 100_000),
     "plan.coarse[0].margin/template_size", "memory limit"),
    (lambda r: r["roi"]["regions"][0].__setitem__("samples", [100_000, 100_000]),
     "roi.regions[].samples", "memory limit"),
    (lambda r: r["plan"]["fine"][1].__setitem__("bounds", {"U(1,1,1)": [0.0, 1.0]}),
     "plan.fine[1].bounds.U(1,1,1)", "start value"),
    (lambda r: r["plan"]["fine"][0].__setitem__("bounds", {"shift.row": [1.0, 2.0]}),
     "plan.fine[0].bounds.shift.row", "start value"),
])
def test_validate_catches(demo, tmp_path, edit, tag, fragment) -> None:
    err = _validate_error(_variant(demo, tmp_path, edit))
    if tag is not None:
        assert err.tag == tag, str(err)
    assert fragment in str(err), str(err)


def test_validate_reports_the_resource_estimate(demo) -> None:
    rep = validate_project(demo)
    assert rep.ok, rep.text()
    line = dict(rep.checks)["resources"]
    assert "peak ≈" in line and "limit" in line and "directions" in line, line


def test_output_naming_an_existing_file(demo, tmp_path) -> None:
    p = _variant(demo, tmp_path, lambda r: r["project"].__setitem__("output", "x"))
    raw = tomllib.loads(p.read_text())
    raw["project"]["output"] = raw["crystal"]["source"]  # the CIF itself
    p.write_text(dumps_toml(raw))
    before = Path(raw["crystal"]["source"]).read_bytes()
    err = _validate_error(p)
    assert err.tag == "project.output" and "existing file" in str(err)
    with pytest.raises(InputError, match="existing file"):
        ProjectRun(load_project(p), executor="serial", progress=False).run()
    assert Path(raw["crystal"]["source"]).read_bytes() == before


# ====================================================================== runs
def test_all_zero_data_is_an_error(demo, tmp_path) -> None:
    d = tmp_path / "zero"
    d.mkdir()
    np.save(d / "pattern.npy", np.zeros(np.load(demo.parent / "data" / "pattern.npy").shape))

    def edit(r):
        r["plan"].pop("coarse")

    p = _variant(demo, tmp_path, edit)
    raw = tomllib.loads(p.read_text())
    raw["data"]["files"] = [str(d / "pattern.npy")]
    p.write_text(dumps_toml(raw))
    with pytest.raises(InputError, match="all zero"):
        ProjectRun(load_project(p), executor="serial", progress=False,
                   log=lambda s: None).run()
    assert not (tmp_path / "out" / "result.json").exists()


def test_refine_does_not_overwrite_results(demo, full_run, tmp_path) -> None:
    out = full_run.out_dir
    stamp = (out / "result.json").stat().st_mtime_ns
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(demo), "--out",
                                  str(out)])
    assert r.exit_code == 2 and "earlier run" in r.output and "--force" in r.output, r.output
    assert (out / "result.json").stat().st_mtime_ns == stamp
    assert "qcbed resume" not in r.output  # nothing was started


def test_resume_of_a_finished_run_changes_nothing(full_run) -> None:
    out = full_run.out_dir
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(RunFinished):
        resume_run(out, executor="serial", progress=False, log=lambda s: None)
    r = CliRunner().invoke(main, ["resume", str(out), "--quiet", "--workers", "1"])
    assert r.exit_code == 0 and "finished" in r.output and "--force" in r.output, r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_damaged_run_state(full_run, tmp_path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(full_run.out_dir, out)
    for text in ("{garbage", "[]", '{"format": "qcbed-run-state/1"}', "\xff\xfe"):
        (out / "run_state.json").write_text(text, encoding="latin-1")
        r = CliRunner().invoke(main, ["resume", str(out), "--quiet"])
        assert r.exit_code == 2 and "run state is damaged" in r.output, r.output
        assert "Traceback" not in r.output


class _Killed(BaseException):
    """Stands for SIGKILL: no clean-up code of the run catches it."""


@pytest.mark.parametrize("stage", ["coarse:0", "fine:0", "fine:1", "final write"])
def test_kill_and_resume_at_every_stage(demo, full_run, tmp_path, monkeypatch, stage) -> None:
    """A run killed at any stage and resumed ends with exactly the uninterrupted result
    (values, χ², iteration counts)."""
    import qcbed.project as qp
    import qcbed.project.run as qr

    out = tmp_path / "run"
    calls = []

    def kill_fine(rec):
        calls.append(rec)
        name = {"fine:0": "thickness and orientation", "fine:1": "structure factors"}
        if stage in name and rec["step"] == name[stage] and len(
                [c for c in calls if c["step"] == name[stage]]) == 2:
            raise _Killed(stage)

    with monkeypatch.context() as m:
        if stage == "coarse:0":
            def boom(*a, **k):
                raise _Killed(stage)
            m.setattr(qp.ProjectRun, "_coarse", boom)
        if stage == "final write":
            def boom_write(*a, **k):
                raise _Killed(stage)
            m.setattr(qr, "write_results", boom_write)
        with pytest.raises(_Killed):
            ProjectRun(load_project(demo), out_dir=out, executor="serial", progress=False,
                       log=lambda s: None, callback=kill_fine).run()
    assert not (out / "result.json").exists()
    res = resume_run(out, executor="serial", progress=False, log=lambda s: None)
    assert res.fine.chi2 == pytest.approx(full_run.fine.chi2, rel=1e-9)
    pa, pb = _params(full_run), _params(res)
    for k in pa:
        assert pb[k] == pytest.approx(pa[k], rel=1e-7, abs=1e-12), k
    assert [s["n_iterations"] for s in res.steps] == [s["n_iterations"] for s in
                                                       full_run.steps]
    j = json.loads((out / "result.json").read_text())
    assert [s["n_iterations"] for s in j["steps"]] == [s["n_iterations"] for s in
                                                        full_run.steps]


def test_resume_names_changed_inputs(demo, tmp_path) -> None:
    d = tmp_path / "proj"
    shutil.copytree(demo.parent, d, ignore=shutil.ignore_patterns("full", "results"))
    calls = []

    def kill(rec):
        calls.append(rec)
        if len(calls) == 2:
            raise _Killed("fine")

    with pytest.raises(_Killed):
        ProjectRun(load_project(d / "project.toml"), out_dir=d / "out", executor="serial",
                   progress=False, log=lambda s: None, callback=kill).run()
    with open(d / "project.toml", "a", encoding="utf-8") as fh:
        fh.write("\n# edited after the kill\n")
    data = np.load(d / "data" / "pattern.npy")
    np.save(d / "data" / "pattern.npy", data + 1.0)
    os.utime(d / "data" / "pattern.npy")
    with pytest.warns(UserWarning, match="inputs changed") as rec:
        resume_run(d / "out", executor="serial", progress=False, log=lambda s: None)
    text = " ".join(str(w.message) for w in rec)
    assert "project.toml: sha256" in text and "pattern.npy: sha256" in text, text


# ====================================================================== degenerate fits
class _Free:
    def __init__(self, names):
        self.free = [type("P", (), {"name": n})() for n in names]


class _Stub:
    """What Refinement.covariance needs: free parameters, residuals, sample count."""

    def __init__(self, jac: np.ndarray, r: np.ndarray) -> None:
        self.params = _Free([f"p{i}" for i in range(jac.shape[1])])
        self._jac, self._r = jac, r

    def _residuals(self, names, mask, jac):
        fit = type("Fit", (), {"n_linear": 0})()
        return self._r, self._jac, fit, None

    def _n_samples(self, mask) -> int:
        return len(self._r)


def test_singular_covariance_is_flagged_not_nan_esd_silently() -> None:
    from qcbed.refine.fine import Refinement

    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 1))
    r = rng.normal(size=50)
    _n, cov, _c, dof = Refinement.covariance(_Stub(np.hstack([a, 2 * a]), r))
    assert np.all(np.isnan(cov)) and dof == 48
    _n, cov, _c, _d = Refinement.covariance(_Stub(np.hstack([a, rng.normal(size=(50, 1))]), r))
    assert np.all(np.isfinite(cov))
    # the analytic limit: a straight-line fit's covariance is χ²_ν (JᵀJ)⁻¹
    j = np.hstack([np.ones((50, 1)), np.arange(50.0)[:, None]])
    _n, cov, _c, _d = Refinement.covariance(_Stub(j, r))
    assert cov == pytest.approx(np.linalg.inv(j.T @ j) * (r @ r) / 48)


def test_degenerate_fit_writes_strict_json_with_null_esd(demo, tmp_path, monkeypatch) -> None:
    """A flagged degenerate fit: message says so, esd is null (not NaN) in result.json."""
    import qcbed.refine.fine_covariance as fc

    monkeypatch.setattr(fc, "_SINGULAR_COND", 0.0)  # every covariance counts as singular

    def edit(r):
        r["plan"].pop("coarse")
        r["plan"]["fine"] = [{"name": "one", "refine": ["thickness"], "max_iter": 2}]

    p = _variant(demo, tmp_path, edit)
    with pytest.warns(UserWarning, match="degenerate refinement"):
        run = ProjectRun(load_project(p), executor="serial", progress=False,
                         log=lambda s: None).run()
    assert "DEGENERATE" in run.fine.message

    def no_constants(c):
        raise AssertionError(f"not strict JSON: {c}")

    j = json.loads((tmp_path / "out" / "result.json").read_text(), parse_constant=no_constants)
    esd = {p["name"]: p.get("esd") for p in j["parameters"]}
    assert esd["thickness"] is None and "DEGENERATE" in j["message"]


def test_run_repeats_the_last_fine_step_when_the_refined_structure_misses_the_accuracy(
        demo, tmp_path, monkeypatch) -> None:
    """The run's wiring of Simulation.converged_variant (tested on its own in
    test_bloch_convergence): a tightened selection is carried to the base set-up, the
    last fine step is repeated with it, logged, and the results record it."""
    from dataclasses import replace

    from qcbed.bloch import Simulation

    calls = []

    def tightened(self):
        if calls:
            return self
        calls.append(self.selection.sgmin)
        return self.with_changes(selection=replace(self.selection,
                                                   sgmin=2.0 * self.selection.sgmin))

    monkeypatch.setattr(Simulation, "converged_variant", tightened)

    def edit(r):
        r["plan"].pop("coarse")
        r["plan"]["fine"] = [{"name": "one", "refine": ["thickness"], "max_iter": 2}]

    logs = []
    run = ProjectRun(load_project(_variant(demo, tmp_path, edit)), executor="serial",
                     progress=False, log=logs.append).run()
    assert len(calls) == 1
    assert any("the last fine step is repeated" in s for s in logs)
    assert any("repeated: chi2" in s for s in logs)
    assert run.simulation.selection.sgmin == pytest.approx(2.0 * calls[0])
    j = json.loads((tmp_path / "out" / "result.json").read_text())
    assert j["convergence"]["sgmin"] == pytest.approx(2.0 * calls[0])


def test_run_does_not_repeat_the_fine_step_beyond_the_memory_limit(
        demo, tmp_path, monkeypatch) -> None:
    """The tightened selection keeps more strong beams, and the fine step's eigen-systems
    grow as their square: a repeat that would exceed the memory limit is not started
    (a LiNbO3 import-felix run was killed at 20 GB); the run keeps its result and says
    why, with a warning."""
    from dataclasses import replace

    import qcbed.project.run as run_mod
    from qcbed.bloch import Simulation

    def tightened(self):
        return self.with_changes(selection=replace(self.selection,
                                                   sgmin=2.0 * self.selection.sgmin))

    monkeypatch.setattr(Simulation, "converged_variant", tightened)
    monkeypatch.setattr(run_mod, "memory_limit", lambda: 1024.0)   # bytes

    def edit(r):
        r["plan"].pop("coarse")
        r["plan"]["fine"] = [{"name": "one", "refine": ["thickness"], "max_iter": 2}]

    logs = []
    with pytest.warns(UserWarning, match=r"above the memory limit 1 KiB: the result keeps"):
        run = ProjectRun(load_project(_variant(demo, tmp_path, edit)), executor="serial",
                         progress=False, log=logs.append).run()
    assert not any("the last fine step is repeated" in s for s in logs)
    assert not any("repeated: chi2" in s for s in logs)
    j = json.loads((tmp_path / "out" / "result.json").read_text())
    assert j["convergence"]["sgmin"] == pytest.approx(run.simulation.selection.sgmin)
