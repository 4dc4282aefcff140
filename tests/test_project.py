"""Project files: parsing, TOML writing, and `validate` catching each class of bad input."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.project import (
    dumps_toml,
    load_project,
    parse_parameter_name,
    parse_project,
    validate_project,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory) -> Path:
    """The fast demo project (synthetic Si CBED; no external data)."""
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("demo_project")
    path, _truth = make_demo(d, fast=True, executor="serial")
    return path


def _variant(base: Path, tmp_path: Path, edit) -> Path:
    raw = tomllib.loads(base.read_text())
    raw = copy.deepcopy(raw)
    edit(raw)
    # keep relative paths working: resolve them against the original folder
    raw["crystal"]["source"] = str(base.parent / raw["crystal"]["source"])
    raw["data"]["files"] = [f if Path(f).is_absolute() else str(base.parent / f)
                            for f in raw["data"]["files"]]
    p = tmp_path / "variant.toml"
    p.write_text(dumps_toml(raw))
    return p


def _error(path: Path) -> InputError:
    rep = validate_project(path)
    assert not rep.ok, rep.text()
    return rep.errors[0]


# ---------------------------------------------------------------------- good input
def test_demo_project_is_valid(demo_project):
    rep = validate_project(demo_project)
    assert rep.ok, rep.text()
    classes = [c for c, _ in rep.checks]
    assert classes == ["file", "data", "geometry", "roi", "beams", "convergence", "resources",
                       "parameters"]
    # validate prints the engine's accuracy (issue 12): chosen for the default 1e-3
    conv = dict(rep.checks)["convergence"]
    assert "convergence error" in conv and "chosen for 0.001" in conv
    assert "project is valid" in rep.text()


def test_toml_round_trip(demo_project):
    raw = tomllib.loads(demo_project.read_text())
    again = tomllib.loads(dumps_toml(raw, {"plan.thickness": "a comment"}, header="head"))
    assert again == raw
    text = dumps_toml({"a": {"x": 1.0, "y": [1, 2], "s": "q\"uote", "b": True,
                             "t": [{"k": 1}, {"k": 2}], "sub": {"U(1,1,1)": [0.0, 1.0]}}})
    back = tomllib.loads(text)
    assert back["a"]["t"] == [{"k": 1}, {"k": 2}]
    assert back["a"]["sub"]["U(1,1,1)"] == [0.0, 1.0]
    assert back["a"]["s"] == "q\"uote"


def test_parse_parameter_names():
    assert parse_parameter_name("U( 1, 1,1)") == ("U", (1, 1, 1), "U(1,1,1)")
    assert parse_parameter_name("Uabs(-2,0,2)")[2] == "Uabs(-2,0,2)"
    assert parse_parameter_name("B(Si1)") == ("B", "Si1", "B(Si1)")
    assert parse_parameter_name("disc_shift(1,1,1).row")[0] == "sampling"
    assert parse_parameter_name("cell.a") == ("cell", "a", "cell.a")
    assert parse_parameter_name("tilt.y") == ("tilt", "y", "tilt.y")
    with pytest.raises(InputError, match="unknown parameter name"):
        parse_parameter_name("U111")


def test_project_defaults_and_paths(demo_project):
    p = load_project(demo_project)
    assert p.output == demo_project.parent / "results"
    assert p.engine["mode"] == "fast" and p.gof["background"] == "per_disc"
    assert p.refined_names[:3] == ["thickness", "shift.row", "shift.col"]
    assert p.coarse[0].step == "orientation_thickness"
    assert p.fine[1].refine[1] == "U(1,1,1)"


# ---------------------------------------------------------------------- bad input, by class
def test_toml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[project]\nname = 'x'\n[data\nkind = 'cbed'\n")
    err = _error(p)
    assert err.line == 3 and "not valid TOML" in str(err)


@pytest.mark.parametrize("edit, tag, expected, found", [
    (lambda r: r["data"].__setitem__("colour", "red"), "data.colour", "one of", "colour"),
    (lambda r: r["geometry"].__setitem__("gl", "big"), "geometry.gl", "a finite number", "big"),
    (lambda r: r["geometry"].__setitem__("gl", -2.0), "geometry.gl", "> 0", "-2.0"),
    (lambda r: r["geometry"].__setitem__("zone", [1, -1]), "geometry.zone", "3 numbers",
     "[1, -1]"),
    (lambda r: r.pop("plan"), "plan", "[plan]", None),
    (lambda r: r["engine"].__setitem__("elastic", "nonsense"), "engine.elastic", None,
     "nonsense"),
    (lambda r: r["gof"].__setitem__("metric", "chi3"), "gof.metric", "chi2", "chi3"),
    (lambda r: r["roi"]["regions"][0].__setitem__("corners", [[0, 0], [1, 1], [2, 2]]),
     "roi.regions[0].corners", "parallelogram", None),
    (lambda r: r["plan"]["fine"][1]["refine"].append("U111"), "plan.fine[1].refine",
     "U(h,k,l)", "U111"),
    (lambda r: r["plan"]["fine"][0].__setitem__("bounds", {"thickness": [3000.0, 1000.0]}),
     "plan.fine[0].bounds.thickness", "lower < upper", None),
    (lambda r: r["data"].__setitem__("kind", "lacbed"), "data.hkl",
     "1 reflections (one per file)", "4"),
])
def test_file_errors_name_key_expected_found(demo_project, tmp_path, edit, tag, expected,
                                             found):
    err = _error(_variant(demo_project, tmp_path, edit))
    assert err.tag == tag, str(err)
    assert str(err.source).endswith("variant.toml")
    if expected is not None:
        assert expected in str(err.expected), str(err)
    if found is not None:
        assert found in repr(err.found) or found in str(err.found), str(err)


def test_missing_data_file(demo_project, tmp_path):
    err = _error(_variant(demo_project, tmp_path,
                          lambda r: r["data"].__setitem__("files", ["nowhere.npy"])))
    assert err.tag == "data.files[0]" and "not found" in str(err)
    assert "nowhere.npy" in str(err.found)


def test_missing_crystal(demo_project, tmp_path):
    def edit(r):
        r["crystal"]["source"] = "missing.cif"
    raw = tomllib.loads(demo_project.read_text())
    edit(raw)
    p = tmp_path / "c.toml"
    raw["data"]["files"] = [str(demo_project.parent / f) for f in raw["data"]["files"]]
    p.write_text(dumps_toml(raw))
    err = _error(p)
    assert err.tag == "crystal.source" and "missing.cif" in str(err.found)


def test_shape_errors_of_lacbed_stacks(tmp_path, demo_project):
    a = np.ones((20, 20))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", np.ones((20, 21)))

    def edit(r):
        r["data"].update(kind="lacbed", files=[str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
                         hkl=[[0, 0, 0], [1, 1, 1]])
        r["geometry"]["mode"] = "lacbed"
        r["geometry"].pop("reference")
    err = _error(_variant(demo_project, tmp_path, edit))
    assert err.tag == "data.files[1]" and err.expected == (20, 20) and err.found == (20, 21)


def test_geometry_errors(demo_project, tmp_path):
    err = _error(_variant(demo_project, tmp_path,
                          lambda r: r["geometry"].__setitem__("x_axis", [2, -2, 0])))
    assert err.tag == "geometry.x_axis" and "parallel" in str(err)
    err = _error(_variant(demo_project, tmp_path,
                          lambda r: r["geometry"].__setitem__("mode", "lacbed")))
    assert err.tag == "geometry.mode" and err.expected == "cbed" and err.found == "lacbed"


def test_roi_outside_the_image(demo_project, tmp_path):
    def edit(r):
        r["roi"]["regions"][0]["corners"] = [[500, 500], [500, 520], [520, 500]]
    err = _error(_variant(demo_project, tmp_path, edit))
    assert err.tag == "roi.regions" and "inside the image" in str(err)
    assert "outside" in str(err.found)


def test_beam_errors(demo_project, tmp_path):
    def edit(r):
        r["data"]["hkl"] = [[-1, -1, -1], [0, 0, 0], [1, 1, 1], [1, 0, 0]]
    err = _error(_variant(demo_project, tmp_path, edit))
    assert err.tag == "data.hkl" and "lattice centring" in str(err)
    assert err.found == (1, 0, 0)


@pytest.mark.parametrize("name, message", [
    ("U(0,0,2)", "forbidden by the space group"),
    ("B(Ge1)", "unknown site label"),
    ("disc_shift(1,1,1).row", "not declared in roi.disc_shifts"),
    ("U(20,0,0)", "never couples"),
])
def test_parameter_errors(demo_project, tmp_path, name, message):
    err = _error(_variant(demo_project, tmp_path,
                          lambda r: r["plan"]["fine"][1]["refine"].append(name)))
    assert err.tag == "plan.fine[1].refine" and message in str(err), str(err)
    assert name in str(err.found)


def test_parse_project_from_dict_requires_sections():
    with pytest.raises(InputError) as e:
        parse_project({"project": {"name": "x"}}, source="inline")
    assert e.value.tag == "crystal" and e.value.source == "inline"


def test_engine_chunk_size_default_is_the_simulations(demo_project):
    import inspect

    from qcbed.bloch import Simulation

    p = load_project(demo_project)
    assert "chunk_size" not in p.raw.get("engine", {})
    default = inspect.signature(Simulation).parameters["chunk_size"].default
    assert p.engine["chunk_size"] is default is None      # automatic (test_chunking)


def test_sections_are_typed_frozen_and_mappings(demo_project):
    import dataclasses

    from qcbed.project import EngineSection, GofSection

    p = load_project(demo_project)
    assert isinstance(p.engine, EngineSection) and isinstance(p.gof, GofSection)
    assert p.engine.mode == p.engine["mode"] == "fast"
    assert dict(p.gof) == {"metric": p.gof.metric, "background": "per_disc",
                           "probe": p.gof.probe}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.engine.gmax = 1.0
    with pytest.raises(KeyError):
        p.engine["no_such_key"]
