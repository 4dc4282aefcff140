"""A thickness that changes linearly across the tilt field (``thickness.dkx/dky``).

Model: t(k_t) = t + dkx·(k_x − k_cx) + dky·(k_y − k_cy) — a wedge under a rocked beam
whose pivot point is off the specimen (issue 12 item 6; docs/si-u111-bias.md §5).
Geometry: the Si 111 systematic row of tests/test_refine_synthetic.py, on a 2-D
patch of directions so that both gradients are measured.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed._core.parameters import PER_DATASET_KINDS, parse_parameter_name
from qcbed.errors import InputError
from qcbed.refine import DirectData, Refinement
from test_refine_synthetic import TRUE, set_truth, systematic_sim

GRAD = (300.0, -500.0)  # Å per Å⁻¹: ±42 Å along the row, ±30 Å across it


def patch(kt0, nx=40, ny=5):
    g = np.sqrt(3) / 5.4307
    xs = np.linspace(-0.45, 0.45, nx) * g
    ys = np.linspace(-0.06, 0.06, ny)
    xx, yy = np.meshgrid(xs, ys)
    return np.stack([xx.ravel(), yy.ravel()], 1) + kt0


@pytest.fixture(scope="module")
def wedge():
    sim, kt0 = systematic_sim()
    sim_true = sim.with_changes()
    set_truth(sim_true)
    kt = patch(kt0)
    dk = kt - kt0
    t = TRUE["thickness"] + GRAD[0] * dk[:, 0] + GRAD[1] * dk[:, 1]
    inten = sim_true.solve_eigen(kt).intensities_per_direction(t).T  # (n_out, n_pts)
    rng = np.random.default_rng(7)
    obs = rng.poisson(2.0e4 * inten + 40.0).astype(float)
    return sim, sim_true, kt, kt0, t, DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0))


def test_names_parse():
    assert parse_parameter_name("thickness.dkx") == ("thickness_gradient", "x", "thickness.dkx")
    assert parse_parameter_name(" thickness.dky ")[2] == "thickness.dky"
    assert "thickness_gradient" in PER_DATASET_KINDS
    with pytest.raises(InputError):
        parse_parameter_name("thickness.dkz")


def test_per_direction_thickness_matches_uniform_solutions(wedge):
    """Each direction at its own thickness equals the uniform solve at that thickness,
    and the per-direction ∂I/∂t matches a central difference."""
    _, sim_true, kt, _, t, _ = wedge
    eig = sim_true.solve_eigen(kt[::17])
    tt = t[::17]
    inten = eig.intensities_per_direction(tt)
    for k in range(0, len(tt), 3):
        ref = sim_true.solve(kt[::17][k:k + 1]).intensities([tt[k]])[0, 0]
        assert np.allclose(inten[k], ref, atol=1e-12)
    i0, _, d_t = eig.gradients(tt, structure=False)
    assert np.allclose(i0, inten, atol=1e-12)
    fd = (eig.intensities_per_direction(tt + 1e-3) - eig.intensities_per_direction(tt - 1e-3))
    assert np.abs(fd / 2e-3 - d_t).max() / np.abs(d_t).max() < 1e-6
    with pytest.raises(InputError):
        eig.gradients(tt[:-1])


def _refinement(sim, data, gradient: bool):
    ref = Refinement(sim, data, background="per_disc")
    ref.add_thickness(TRUE["thickness"] * 1.01)
    ref.add_structure_factor((1, -1, -1), value=TRUE["U111"] * 1.02,
                             value_abs=TRUE["Uabs111"])
    ref.add_structure_factor((2, -2, -2), refine_uabs=False, value=TRUE["U222"],
                             value_abs=0.0)
    if gradient:
        ref.add_thickness_gradient()
    return ref


def test_gradient_jacobian_matches_finite_difference(wedge):
    sim, _, _, _, _, data = wedge
    ref = _refinement(sim, data, True)
    ref.params["thickness.dkx"].value = 200.0
    ref.params["thickness.dky"].value = -300.0
    _, grads = ref.simulate(gradients=True)
    for name in ("thickness.dkx", "thickness.dky"):
        p = ref.params[name]
        v0 = p.value
        p.value = v0 + 0.5
        ip = ref.simulate()
        p.value = v0 - 0.5
        im = ref.simulate()
        p.value = v0
        fd = (ip - im) / 1.0
        assert np.abs(fd - grads[name]).max() / np.abs(grads[name]).max() < 1e-5


def test_synthetic_wedge_recovery(wedge):
    """Known gradients are recovered within 3 esd; without the model U(111) is biased
    and χ² is worse (the test fails if the gradient had no effect or were ignored)."""
    sim, _, _, _, _, data = wedge
    ref = _refinement(sim, data, True)
    res = ref.fit("lm", max_iter=30)
    ps = {p.name: p for p in res.parameters}
    for name, truth in (("thickness.dkx", GRAD[0]), ("thickness.dky", GRAD[1]),
                        ("thickness", TRUE["thickness"]), ("U(1,-1,-1)", TRUE["U111"])):
        p = ps[name]
        pull = (p.value - truth) / p.esd
        print(f"{name}: {p.value:.6g} ± {p.esd:.2g} (truth {truth:.6g}, pull {pull:+.2f})")
        assert abs(pull) < 3.5
    assert ps["thickness.dkx"].esd < 0.2 * abs(GRAD[0])
    assert ps["thickness.dky"].esd < 0.2 * abs(GRAD[1])
    flat = _refinement(sim, data, False).fit("lm", max_iter=30)
    print(f"chi2: with gradient {res.chi2:.3f}, without {flat.chi2:.3f}")
    assert flat.chi2 > 1.5 * res.chi2


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("demo_tgrad")
    path, truth = make_demo(d, fast=True, executor="serial")
    return path, truth


def test_project_file_refines_the_gradient(demo_project, tmp_path):
    """``thickness.dkx/dky`` in a project file's fine step: validated, refined, reported.

    The demo's synthetic data have a uniform thickness: the gradient must come out
    within 3.5 esd of zero, with finite esds, and the thickness stay within 3 %.
    """
    import tomllib

    from qcbed.project import ProjectRun, dumps_toml, load_project, validate_project

    path, truth = demo_project
    raw = tomllib.loads(path.read_text())
    raw["plan"]["fine"][-1]["refine"] += ["thickness.dkx", "thickness.dky"]
    raw["crystal"]["source"] = str(path.parent / raw["crystal"]["source"])
    raw["data"]["files"] = [str(path.parent / f) for f in raw["data"]["files"]]
    raw["project"]["output"] = str(tmp_path / "out")
    p = tmp_path / "tgrad.toml"
    p.write_text(dumps_toml(raw))
    rep = validate_project(p)
    assert rep.ok, rep.text()
    res = ProjectRun(load_project(p), executor="serial", progress=False,
                     log=lambda s: None).run().fine
    ps = {q.name: q for q in res.parameters}
    for name in ("thickness.dkx", "thickness.dky"):
        q = ps[name]
        print(f"{name} = {q.value:.4g} ± {q.esd:.2g} Å²")
        assert q.refine and q.esd is not None and np.isfinite(q.esd) and q.esd > 0
        assert abs(q.value) < 3.5 * q.esd
    assert abs(ps["thickness"].value / truth["thickness"] - 1) < 0.03


def test_unknown_gradient_name_in_a_project_is_an_input_error(demo_project, tmp_path):
    import tomllib

    from qcbed.project import dumps_toml, validate_project

    path, _ = demo_project
    raw = tomllib.loads(path.read_text())
    raw["plan"]["fine"][-1]["refine"] += ["thickness.dkz"]
    raw["crystal"]["source"] = str(path.parent / raw["crystal"]["source"])
    raw["data"]["files"] = [str(path.parent / f) for f in raw["data"]["files"]]
    p = tmp_path / "bad.toml"
    p.write_text(dumps_toml(raw))
    rep = validate_project(p)
    assert not rep.ok
    assert "thickness.dkx" in rep.text()
