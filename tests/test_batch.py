"""Batch refinement from the CLI: several projects in turn, an interrupted one resumed, a
failing one recorded, finished ones skipped on the next call, CSV and HTML summaries."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from qcbed.batch import expand_projects
from qcbed.cli import main
from qcbed.errors import InputError


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> tuple[Path, dict]:
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("batch")
    path, truth = make_demo(d / "demo", fast=True, executor="serial")
    folder = d / "projects"
    folder.mkdir()
    text = path.read_text()
    base = str(path.parent).replace("\\", "/")
    # the demo project's relative paths, made absolute so the copies work from elsewhere
    text = text.replace('"si.cif"', f'"{base}/si.cif"').replace('"data/', f'"{base}/data/')
    (folder / "a.toml").write_text(text)
    assert "\nthickness = 1500.0" in text
    (folder / "b.toml").write_text(text.replace("\nthickness = 1500.0", "\nthickness = 1560.0"))
    (folder / "c.toml").write_text(text.replace(f'"{base}/si.cif"', '"missing.cif"'))
    return folder, truth


def test_expand_projects(projects, tmp_path) -> None:
    folder, _ = projects
    assert [p.name for p in expand_projects([folder])] == ["a.toml", "b.toml", "c.toml"]
    assert [p.name for p in expand_projects([str(folder / "[ab].toml")])] == ["a.toml",
                                                                             "b.toml"]
    assert len(expand_projects([folder / "a.toml", folder])) == 3  # no duplicates
    with pytest.raises(InputError, match="no project file"):
        expand_projects([tmp_path / "none*.toml"])


def test_batch_runs_resumes_skips_and_summarises(projects, tmp_path) -> None:
    from qcbed.project import ProjectRun, load_project

    folder, truth = projects
    out = tmp_path / "out"

    class Killed(Exception):
        pass

    def kill(rec):
        raise Killed("simulated kill")

    with pytest.raises(Killed):  # b is interrupted in its first fine iteration
        ProjectRun(load_project(folder / "b.toml"), out_dir=out / "b", executor="serial",
                   progress=False, log=lambda s: None, callback=kill).run()
    assert (out / "b" / "run_state.json").is_file()
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(folder),
                                  "--out", str(out)])
    assert r.exit_code == 1, r.output  # c failed
    assert "resuming" not in r.output  # quiet
    rows = list(csv.DictReader((out / "batch_summary.csv").open()))
    st = {Path(x["project"]).name: x for x in rows}
    assert [st[k]["status"] for k in ("a.toml", "b.toml", "c.toml")] == ["done", "resumed",
                                                                        "failed"]
    assert "missing.cif" in st["c.toml"]["error"]
    for k in ("a.toml", "b.toml"):
        th, esd = float(st[k]["thickness_A"]), float(st[k]["thickness_esd_A"])
        assert abs(th - truth["thickness"]) < 5 * esd
        assert float(st[k]["U(1,1,1)"]) == pytest.approx(truth["U(1,1,1)"], rel=0.01)
        assert float(st[k]["U(1,1,1)_esd"]) > 0
    html = (out / "batch_summary.html").read_text()
    assert html.count("<tr") == 4 and "class='failed'" in html and "a/report.html" in html
    res_a = json.loads((out / "a" / "result.json").read_text())
    assert float(st["a.toml"]["chi2"]) == pytest.approx(res_a["chi2"])
    # second call: a and b are finished and skipped (their results unchanged)
    stamp = (out / "a" / "result.json").stat().st_mtime_ns
    r = CliRunner().invoke(main, ["--workers", "1", "refine", str(folder / "a.toml"),
                                  str(folder / "b.toml"), "--out", str(out), "--summary",
                                  str(tmp_path / "s2")])
    assert r.exit_code == 0, r.output
    assert "finished before, skipped" in r.output
    assert (out / "a" / "result.json").stat().st_mtime_ns == stamp
    rows2 = list(csv.DictReader((tmp_path / "s2" / "batch_summary.csv").open()))
    assert [x["status"] for x in rows2] == ["skipped", "skipped"]
    # a changed project file is run again
    shutil.copy(folder / "a.toml", tmp_path / "a.toml")
    (tmp_path / "a.toml").write_text((folder / "a.toml").read_text() + "\n# changed\n")
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine",
                                  str(tmp_path / "a.toml"), str(folder / "b.toml"),
                                  "--out", str(out), "--summary", str(tmp_path / "s3")])
    assert r.exit_code == 0, r.output
    rows3 = list(csv.DictReader((tmp_path / "s3" / "batch_summary.csv").open()))
    assert [x["status"] for x in rows3] == ["done", "skipped"]
