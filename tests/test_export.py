"""Export to EMD 1.0 (emdfile, what py4DSTEM reads) and HyperSpy .hspy (rsciio): LACBED
stacks, simulations and refinement residuals, read back with calibrations and metadata."""

from __future__ import annotations

import json

import emdfile
import numpy as np
import pytest
from click.testing import CliRunner
from rsciio.hspy import file_reader

from qcbed.bloch.geometry import ZoneFrame
from qcbed.cli import main
from qcbed.crystal import Lattice
from qcbed.errors import InputError
from qcbed.larbed import build_stack, save_stack
from qcbed.output.export import read_items
from qcbed.results import write_simulation

STEP = 0.02


@pytest.fixture
def stack_file(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 6, 8
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = ((h - 1) / 2, (w - 1) / 2)
    kt = np.stack([0.01 + STEP * (rr - centre[0]), -0.02 - STEP * (cc - centre[1])], -1)
    img = rng.uniform(10, 100, (3, h, w))
    img[1, 0, 0] = np.nan  # one invalid sample
    frame = ZoneFrame(Lattice(5.4307, 5.4307, 5.4307), (0, 0, 1), (2, 2, 0))
    st = build_stack(img, img * 1.1, [[0, 0, 0], [2, 2, 0], [-2, -2, 0]],
                     arrays={"kt": kt}, frame=frame, voltage_kv=200.0)
    return save_stack(st, tmp_path / "stack.h5"), img, kt


def test_stack_to_emd_and_hspy(stack_file, tmp_path) -> None:
    path, img, kt = stack_file
    r = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path / "s.emd")])
    assert r.exit_code == 0, r.output
    root = emdfile.read(str(tmp_path / "s.emd"))
    a = root.tree("images")
    assert np.array_equal(a.data, img, equal_nan=True)
    assert tuple(a.dim_names) == ("reflection", "k_row", "k_col")
    assert a.dim_units[1] == "A^-1" and a.units == "counts"
    assert a.dims[1][1] - a.dims[1][0] == pytest.approx(STEP)
    # 0 at the reference tilt (the grid centre)
    assert a.dims[2][0] == pytest.approx(-3.5 * STEP)
    assert np.array_equal(root.tree("hkl").data, [[0, 0, 0], [2, 2, 0], [-2, -2, 0]])
    assert np.allclose(root.tree("kt").data, kt)
    assert np.allclose(root.tree("variance").data, img * 1.1, equal_nan=True)
    assert root.metadata["qcbed_calibration"]["Q_pixel_size"] == pytest.approx(STEP)
    meta = json.loads(a.metadata["qcbed"]["json"])
    assert meta["hkl"][1] == "2,2,0" and meta["geometry"]["zone"] == [0, 0, 1]
    assert meta["voltage_kv"] == 200.0
    # HyperSpy form
    r = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path / "s.hspy")])
    assert r.exit_code == 0, r.output
    sigs = {s["metadata"]["General"]["title"]: s for s in file_reader(str(tmp_path / "s.hspy"))}
    assert set(sigs) == {"images", "variance", "mask", "hkl", "kt"}
    s = sigs["images"]
    assert np.array_equal(s["data"], img, equal_nan=True)
    ax = s["axes"]
    assert [a["name"] for a in ax] == ["reflection", "k_row", "k_col"]
    assert [a["navigate"] for a in ax] == [True, False, False]
    assert ax[1]["scale"] == pytest.approx(STEP) and ax[1]["units"] == "A^-1"
    assert "counts" in s["metadata"]["Signal"]["quantity"]
    assert json.loads(s["original_metadata"]["qcbed"]["json"])["hkl"][2] == "-2,-2,0"
    assert sigs["mask"]["data"][1, 0, 0] == 0


def test_py4dstem_reads_the_emd_file(stack_file, tmp_path) -> None:
    py4dstem = pytest.importorskip("py4DSTEM")
    path, img, _ = stack_file
    from qcbed.output.export import export

    out = export(path, tmp_path / "s.emd")
    data = py4dstem.read(str(out))
    a = data.tree("images")
    assert np.array_equal(a.data, img, equal_nan=True)
    assert a.dim_units[1] == "A^-1" and a.dims[1][1] - a.dims[1][0] == pytest.approx(STEP)


def test_hyperspy_loads_the_hspy_file(stack_file, tmp_path) -> None:
    hs = pytest.importorskip("hyperspy.api")
    path, img, _ = stack_file
    from qcbed.output.export import export

    sigs = hs.load(str(export(path, tmp_path / "s.hspy")))
    im = next(s for s in sigs if s.metadata.General.title == "images")
    assert np.array_equal(im.data, img, equal_nan=True)
    nav = im.axes_manager.navigation_axes
    assert len(nav) == 1 and nav[0].name == "reflection"
    k_row = im.axes_manager["k_row"]
    assert k_row.units == "A^-1" and k_row.scale == pytest.approx(STEP)


def test_simulation_export(tmp_path) -> None:
    inten = np.random.default_rng(1).uniform(0, 1, (2, 3, 4, 5))
    kt = np.stack(np.meshgrid(np.arange(4) * 0.01, np.arange(5) * 0.01, indexing="ij"), -1)
    src = write_simulation(tmp_path / "sim.h5", hkl=np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]),
                           intensity=inten, thickness=np.array([500.0, 600.0]), kt=kt,
                           mask=None, attrs={"voltage_kv": 200.0})
    r = CliRunner().invoke(main, ["export", str(src), "-o", str(tmp_path / "sim.emd")])
    assert r.exit_code == 0, r.output
    a = emdfile.read(str(tmp_path / "sim.emd")).tree("intensity")
    assert np.allclose(a.data, inten)
    assert list(a.dims[0]) == [500.0, 600.0] and a.dim_units[0] == "A"
    assert a.dims[2][1] - a.dims[2][0] == pytest.approx(0.01)
    r = CliRunner().invoke(main, ["export", str(src), "-o", str(tmp_path / "sim.hspy")])
    assert r.exit_code == 0, r.output
    sigs = {s["metadata"]["General"]["title"]: s for s in file_reader(str(tmp_path /
                                                                          "sim.hspy"))}
    ax = sigs["intensity"]["axes"]
    assert ax[0]["name"] == "thickness" and ax[0]["units"] == "A"
    assert ax[0]["offset"] == 500.0 and ax[0]["scale"] == 100.0
    assert np.allclose(sigs["intensity"]["data"], inten)


def test_refinement_residuals_export(tmp_path) -> None:
    from qcbed.demo import make_demo
    from qcbed.project import load_project, run_project

    path, _ = make_demo(tmp_path / "demo", fast=True, executor="serial")
    proj = load_project(path)
    run_project(proj, out_dir=tmp_path / "out", executor="serial", progress=False,
                log=lambda s: None)
    items = {it.name: it for it in read_items(tmp_path / "out")}
    assert {"region0_experiment", "region0_model", "region0_residual",
            "region0_normalised_residual"} <= set(items)
    z = items["region0_normalised_residual"].data
    assert 0.7 < np.nanmean(z**2) < 1.5  # a good fit: residuals of unit variance
    r = CliRunner().invoke(main, ["export", str(tmp_path / "out"), "-o",
                                  str(tmp_path / "res.hspy")])
    assert r.exit_code == 0, r.output
    sigs = {s["metadata"]["General"]["title"]: s for s in file_reader(str(tmp_path /
                                                                          "res.hspy"))}
    e, m = sigs["region0_experiment"]["data"], sigs["region0_model"]["data"]
    assert np.allclose(sigs["region0_residual"]["data"], e - m, equal_nan=True)


def test_export_errors(tmp_path) -> None:
    bad = tmp_path / "x.h5"
    import h5py

    with h5py.File(bad, "w") as f:
        f["a"] = 1
    with pytest.raises(InputError, match="not a qcbed file"):
        read_items(bad)
    r = CliRunner().invoke(main, ["export", str(bad), "-o", str(tmp_path / "y.txt")])
    assert r.exit_code == 2 and "unknown export format" in r.output
