"""Results helpers: JSON-schema validation, provenance, atomic writes, simulate files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.results import (
    RESULT_SCHEMA,
    atomic_write,
    dependency_versions,
    file_sha256,
    provenance,
    validate_json,
    validate_result_json,
    write_simulation,
)


def minimal_result() -> dict:
    v = {"value": 1.0, "esd": None, "unit": "Å"}
    return {
        "format": "qcbed-result/1", "qcbed_version": "0", "created": "now", "project": "p",
        "crystal": {"space_group": "P 1", "cell": [1, 1, 1, 90, 90, 90]}, "voltage_kv": 200.0,
        "thickness": v,
        "orientation": {"zone": [0, 0, 1], "x_axis": [1, 0, 0], "normal": [0, 0, 1],
                        "tilt0": [0.0, 0.0], "kt_unit": "1/Å"},
        "structure_factors": [{"hkl": [1, 1, 1], "g": 0.3, "phase_deg": 0.0, "U": 0.05,
                               "U_esd": 1e-5, "U_abs": 1e-3, "U_abs_esd": None, "U_iam": 0.05,
                               "U_abs_iam": 1e-3, "Fx": 1.0, "Fx_iam": 1.0,
                               "refined": ["U"]}],
        "parameters": [{"name": "thickness", "value": 1.0, "esd": 0.1, "unit": "Å",
                        "refined": True}],
        "chi2": 1.0, "gof": {"metric": "chi2", "value": 1.0}, "dof": 10, "n_used": 20,
        "r_factor": 0.01, "zncc": [{"hkl": [0, 0, 0], "zncc": 0.99}],
        "files": {"hdf5": "results.h5"}}


def test_schema_accepts_a_minimal_result():
    validate_result_json(minimal_result())


@pytest.mark.parametrize("edit, tag", [
    (lambda r: r.pop("chi2"), "$.chi2"),
    (lambda r: r.__setitem__("dof", 1.5), "$.dof"),
    (lambda r: r["structure_factors"][0].__setitem__("hkl", [1, 1]),
     "$.structure_factors[0].hkl"),
    (lambda r: r["zncc"][0].__setitem__("zncc", "high"), "$.zncc[0].zncc"),
    (lambda r: r.__setitem__("format", "other/2"), "$.format"),
    (lambda r: r["files"].__setitem__("x", 3), "$.files.x"),
    (lambda r: r["structure_factors"][0].__setitem__("refined", ["B"]),
     "$.structure_factors[0].refined[0]"),
])
def test_schema_rejects_bad_results(edit, tag):
    r = minimal_result()
    edit(r)
    with pytest.raises(InputError) as e:
        validate_result_json(r)
    assert e.value.tag == tag


def test_validator_basics():
    validate_json(None, {"type": ["number", "null"]})
    validate_json(True, {"type": "boolean"})
    with pytest.raises(InputError):
        validate_json(True, {"type": "number"})          # bool is not a number
    with pytest.raises(InputError):
        validate_json({"a": 1}, {"type": "object", "properties": {},
                                 "additionalProperties": False})
    with pytest.raises(InputError):
        validate_json([1, 2, 3], {"type": "array", "maxItems": 2})


def test_provenance_hashes_and_versions(tmp_path):
    f = tmp_path / "x.dat"
    f.write_bytes(b"qcbed")
    sub = tmp_path / "folder"
    sub.mkdir()
    (sub / "a.txt").write_text("a")
    prov = provenance([f, sub], command_line=["qcbed", "refine", "p.toml"])
    import hashlib

    assert prov["input_files"][str(f.resolve())] == file_sha256(f) == \
        hashlib.sha256(b"qcbed").hexdigest()
    assert str((sub / "a.txt").resolve()) in prov["input_files"]
    assert prov["command_line"] == "qcbed refine p.toml"
    assert prov["created"].endswith("+00:00")
    dv = dependency_versions()
    assert dv["numpy"] == np.__version__ and "python" in dv


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_write_simulation_layout(tmp_path):
    inten = np.full((2, 3, 4, 5), np.nan)
    inten[:, :, 1:3, 1:4] = 0.5
    kt = np.zeros((4, 5, 2))
    path = write_simulation(tmp_path / "s.h5", hkl=np.zeros((3, 3), int), intensity=inten,
                            thickness=np.array([100.0, 200.0]), kt=kt,
                            mask=np.isfinite(inten[0, 0]), attrs={"voltage_kv": 200.0},
                            command_line=["qcbed", "simulate"])
    with h5py.File(path) as f:
        assert f["intensity"].dtype == np.float64 and f["hkl"].dtype.kind == "i"
        assert f.attrs["voltage_kv"] == 200.0 and f.attrs["qcbed_version"]
        assert f["provenance"].attrs["command_line"] == "qcbed simulate"
    json.dumps(RESULT_SCHEMA)


def test_report_of_many_reflections(tmp_path):
    """The HTML report splits many discs over several figures and links only local files."""
    from types import SimpleNamespace

    from qcbed.bloch.geometry import ZoneFrame
    from qcbed.crystal import Lattice
    from qcbed.experiment import ROI, ExperimentGeometry, LACBEDStack, Region
    from qcbed.refine.parameters import ParameterSet
    from qcbed.report import write_report

    rng = np.random.default_rng(0)
    frame = ZoneFrame(Lattice(4.0, 4.0, 4.0), (0, 0, 1), (1, 0, 0))
    geom = ExperimentGeometry(frame, (20, 20), gl=10.0, mode="lacbed")
    hkl = [(h, k, 0) for h in (-1, 0, 1) for k in (-1, 0, 1)]
    stack = LACBEDStack(rng.random((9, 20, 20)) * 100 + 10, hkl, geometry=geom)
    roi = ROI(stack, Region.rectangle((2, 2), (15, 15), (8, 8)), refine=())
    exp, _var, valid = roi.sample()
    res = SimpleNamespace(parameters=ParameterSet(roi.sampling_parameters()),
                          extra={"experiment": exp, "model": exp * 1.01, "mask": valid},
                          free_names=["thickness", "U(1,0,0)"], correlation=np.eye(2))
    hist = [{"gof": 2.0, "thickness": 100.0, "step": "s"},
            {"gof": 1.0, "thickness": 101.0, "step": "s"}]
    run = SimpleNamespace(fine=res, roi=roi, history=hist,
                          coarse=[{"step": "orientation_thickness", "summary": "x",
                                   "history": [{"thickness": 90.0, "correlation": 0.5},
                                               {"thickness": 100.0, "correlation": 0.9}]}])
    result = minimal_result()
    result["truth"] = {"thickness": 100.5}
    html_path = write_report(tmp_path, run, result, result["structure_factors"],
                             {"qcbed_version": "0", "input_files": {"a": "b"}})
    html = html_path.read_text()
    figs = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figs == ["coarse0.png", "correlation.png", "discs_region0_1.png",
                    "discs_region0_2.png", "traces.png"]
    for f in figs:
        assert f"figures/{f}" in html
    assert "<script" not in html and "(value − true)/esd" in html
