"""The app's state and image helpers without a browser (qcbed.gui.views, .session, .jobs)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.gui.views import (
    ViewGrid,
    disc_mask,
    linear_fit,
    parallelogram_mask,
    profile,
    zncc,
)


# ====================================================================== views
def test_zncc_analytic_limits():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 20, 20))
    assert zncc(a, 2.5 * a + 7.0)[0] == pytest.approx(1.0)
    assert zncc(a, -a)[0] == pytest.approx(-1.0)
    b = a.copy()
    b[0, :5] = np.nan                                  # NaN samples are ignored
    assert zncc(a, 3 * b)[0] == pytest.approx(1.0)
    # two orthogonal zero-mean patterns: ZNCC 0
    x = np.arange(8.0)
    c = np.sin(2 * np.pi * x / 8)[None]
    d = np.cos(2 * np.pi * x / 8)[None]
    assert zncc(c, d)[0] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(zncc(np.ones((1, 9)), a.reshape(1, -1)[:, :9])[0])   # flat image


def test_linear_fit_recovers_scale_and_background():
    rng = np.random.default_rng(1)
    s = rng.random((3, 10, 10))
    e = np.array([2.0, 0.5, 10.0])[:, None, None] * s + np.array([1.0, -2.0, 0.0])[:, None, None]
    a, b = linear_fit(s, e)
    assert a == pytest.approx([2.0, 0.5, 10.0])
    assert b == pytest.approx([1.0, -2.0, 0.0], abs=1e-12)
    # anti-correlated: the spread is matched instead of an inverted image
    a2, _b2 = linear_fit(s[:1], -3 * s[:1])
    assert a2[0] == pytest.approx(3.0)


def test_view_grid_and_profile_of_a_ramp():
    g = ViewGrid((-0.5, 9.5, -0.5, 19.5), (10, 20))
    pts = g.points()
    assert pts[0, 0] == pytest.approx([0.0, 0.0])
    assert pts[-1, -1] == pytest.approx([9.0, 19.0])
    assert g.to_index(pts) == pytest.approx(np.stack(np.meshgrid(np.arange(10.0),
                                                                 np.arange(20.0),
                                                                 indexing="ij"), -1))
    c = g.coarsened(5)
    assert c.extent == g.extent and max(c.shape) <= 5
    # a linear ramp in display pixels is sampled exactly (bilinear) along any line
    ramp = (2 * pts[..., 0] + 3 * pts[..., 1])[None]
    s, v = profile(ramp, g, [1.0, 2.0], [7.0, 15.0], n=11)
    t = np.linspace(0, 1, 11)
    r = 1 + 6 * t
    cc = 2 + 13 * t
    assert v[0] == pytest.approx(2 * r + 3 * cc)
    assert s[-1] == pytest.approx(np.hypot(6, 13))
    # the same ramp on a coarse grid of the same extent is still exact
    pc = c.points()
    _s, vc = profile((2 * pc[..., 0] + 3 * pc[..., 1])[None], c, [2.0, 4.0], [7.0, 15.0], n=5)
    t = np.linspace(0, 1, 5)
    assert vc[0] == pytest.approx(2 * (2 + 5 * t) + 3 * (4 + 11 * t))


def test_disc_mask_finds_a_noisy_disc():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:61, 0:61]
    disc = (yy - 30) ** 2 + (xx - 28) ** 2 <= 20**2
    lines = 5000 * (1 + 0.8 * np.sin(xx / 2.0))           # dark lines cross the disc
    im = rng.poisson(np.where(disc, lines, 100.0)).astype(float)
    m = disc_mask(im[None])[0]
    assert (m != disc).sum() < 0.03 * disc.sum()


def test_parallelogram_mask():
    corners = [[0.0, 0.0], [0.0, 4.0], [2.0, 1.0]]          # sheared
    pts = np.array([[1.0, 2.5], [0.0, 0.0], [2.0, 5.0], [1.0, 0.0], [-0.1, 2.0]])
    assert parallelogram_mask(pts, corners).tolist() == [True, True, True, False, False]


# ====================================================================== session (demo)
@pytest.fixture(scope="module")
def demo(demo_project_factory):
    from qcbed.gui.session import open_session

    proj = demo_project_factory()
    return open_session(proj, workdir=proj.parent, executor="serial")


def test_thickness_update_uses_stored_eigen_solutions(demo, monkeypatch):
    from qcbed.bloch.simulation import Simulation

    s = demo
    s.update({"thickness": 1550.0})
    n = s.n_solves
    before = s.frame.simulation.copy()

    def forbidden(*a, **k):
        raise AssertionError("a thickness change must not diagonalise")

    monkeypatch.setattr(Simulation, "solve_eigen", forbidden)
    st = s.update({"thickness": 1700.0})
    assert s.n_solves == n
    assert st["params"]["thickness"] == 1700.0
    assert not np.allclose(np.nan_to_num(s.frame.simulation), np.nan_to_num(before))


def test_session_images_equal_an_independent_simulation(demo):
    """Frame = a·I + b with I solved directly at the grid's k_t (same beam pool, no symmetry
    reduction, no stored eigen-solutions)."""
    from qcbed.bloch.simulation import outputs_index

    s = demo
    s.update({"thickness": 1650.0})
    f = s.frame
    kt = s.geometry().display_to_kt(f.grid.points())
    sim = s.sim.with_changes()
    cols = outputs_index(sim, s.hkl)
    for k in range(len(s.hkl)):
        inside = np.argwhere(np.isfinite(f.simulation[k]))      # the disc (CBED window)
        assert len(inside) > 0.3 * f.simulation[k].size
        sel = inside[np.linspace(0, len(inside) - 1, 5).astype(int)]
        inten = sim.solve(kt[sel[:, 0], sel[:, 1]]).intensities(1650.0)[0]
        got = (f.simulation[k][sel[:, 0], sel[:, 1]] - f.background[k]) / f.scale[k]
        assert got == pytest.approx(inten[:, cols[k]], rel=1e-6, abs=1e-9)


def test_orientation_change_resolves_preview_and_full(demo):
    s = demo
    n = s.n_solves
    t0 = s.params["tilt0"]
    s.update({"tilt0": [t0[0] + 0.004, t0[1]]})
    assert s.n_solves == n + 1
    assert s.frame.level == "preview"
    assert s.wait_full(60)
    assert s.frame.level == "full" and s.frame.grid.shape == s.full_grid.shape
    # rotation only moves the experimental sampling
    n = s.n_solves
    s.update({"rotation": 1.0})
    assert s.n_solves == n
    s.update({"rotation": 0.0, "tilt0": t0})


def test_bad_parameters_are_input_errors(demo):
    with pytest.raises(InputError, match="must be > 0"):
        demo.update({"thickness": -5})
    with pytest.raises(InputError, match="unknown parameter"):
        demo.update({"voltage": 100})
    with pytest.raises(InputError, match="not offered"):
        demo.update({"ug": {"U(9,9,9)": 0.1}})
    with pytest.raises(InputError, match="collinear"):
        demo.set_regions([{"corners": [[0, 0], [0, 5], [0, 9]], "samples": [3, 3]}])


def test_export_is_a_valid_project(demo, tmp_path):
    from qcbed.project import build_setup, load_project

    s = demo
    s.update({"thickness": 1612.5, "shift": [0.25, -0.5],
              "ug": {"U(1,1,1)": s.ug_iam["U(1,1,1)"] * 0.98}})
    r = s.set_regions([{"corners": [[10, 50], [10, 70], [30, 50]], "samples": [11, 21]}])
    assert r["n_points"] == 11 * 21 and r["n_valid"] > 0
    out = s.export_project(tmp_path / "sub" / "p.toml")     # another folder: absolute paths
    assert [f.name for f in out.parent.iterdir()] == ["p.toml"]   # atomic: no temporary left
    proj = load_project(out)
    assert proj.thickness == 1612.5
    assert proj.geometry["shift"] == (0.25, -0.5)
    assert proj.roi["regions"][0]["corners"] == [(10.0, 50.0), (10.0, 70.0), (30.0, 50.0)]
    assert proj.roi["regions"][0]["samples"] == (11, 21)
    assert "U(1,1,1) =" in out.read_text()                   # tuned U_g as a comment
    setup = build_setup(proj, executor="serial")
    assert setup.data.shape == s.data.shape


def test_stop_and_resume_refinement_writes_results(demo):
    from qcbed.gui.results import load_results
    from qcbed.gui.session import open_session

    s = demo
    s.start_refinement("fine", max_iter=3)
    t_end = time.monotonic() + 60
    while not s.job.records and time.monotonic() < t_end:
        time.sleep(0.05)
    s.stop_refinement()
    s.job.join(60)
    assert s.job.state == "stopped", s.job.log
    n_rec = len(s.job.records)
    out = s.job.out_dir
    assert (out / "run_state.json").is_file()
    assert list(out.glob("checkpoint_fine*.h5"))
    assert not (out / "result.json").exists()
    s.resume_refinement()
    s.job.join(120)
    assert s.job.state == "finished", "\n".join(s.job.log)
    assert len(s.job.records) > n_rec
    res = load_results(out)                                  # schema-checked result.json
    names = [p["name"] for p in res["result"]["parameters"]]
    assert "thickness" in names and "U(1,1,1)" in names
    assert "correlation.png" in res["figures"]
    # the view adopts the final values
    t_end = time.monotonic() + 20
    final = res["result"]["thickness"]["value"]
    while abs(s.params["thickness"] - final) > 1e-6 and time.monotonic() < t_end:
        time.sleep(0.05)
    assert s.params["thickness"] == pytest.approx(final)
    # a results folder opens with the run's final state
    r = open_session(out, executor="serial", full_resolution=False)
    assert r.results_dir == out and r.params["thickness"] == pytest.approx(final)


# ====================================================================== other inputs
def test_stack_file_opens_as_data_only(tmp_path):
    from qcbed.experiment import LACBEDStack
    from qcbed.gui.session import open_session
    from qcbed.larbed.stack import save_stack

    rng = np.random.default_rng(2)
    st = LACBEDStack(rng.random((2, 12, 16)) * 100 + 1, np.array([[0, 0, 0], [1, 1, 1]]))
    p = save_stack(st, tmp_path / "s.h5")
    s = open_session(p)
    assert s.kind == "stack" and s.frame.simulation is None
    assert s.frame.experiment_full[1] == pytest.approx(st.images[1])
    assert s.image_png(1, "exp")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError):
        s.export_project(tmp_path / "x.toml")


@pytest.mark.shared_data
def test_dat_file_opens_as_simulation(pyextal_dat_dir):
    from qcbed.gui.session import open_session

    s = open_session(pyextal_dat_dir / "Si_systematic.dat", executor="serial",
                     full_resolution=False)
    assert s.kind == "simulation" and s.frame.experiment is None
    sim = s.frame.simulation
    frac = np.isfinite(sim[0]).mean()                         # the CBED disc, NaN outside
    assert 0.7 < frac < 0.88                                    # π/4 of the square window
    n = s.n_solves
    s.update({"thickness": 1200.0})
    assert s.n_solves == n


@pytest.mark.shared_data
def test_felix_folder_experiment_is_the_display_image(si_dlacbed_dir, tmp_path):
    """The full-grid experiment equals ExperimentGeometry.display_image of the DM3 image."""
    from qcbed.gui.session import open_session

    s = open_session(si_dlacbed_dir, workdir=tmp_path, executor="serial",
                     full_resolution=False)
    assert s.full_grid.shape == (152, 152) and len(s.hkl) == 39
    k = 3
    idx = s.data.index(s.hkl[k])
    ref = s.geometry().display_image(s.data.images[idx], order=1)
    assert s.frame.experiment_full[k] == pytest.approx(ref, abs=1e-9)
    assert max(s.frame.grid.shape) <= 40
    assert np.nanmedian(s.frame.zncc) > 0.5
