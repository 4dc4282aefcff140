"""Levenberg–Marquardt with the structured secant Hessian (Dennis, Gay & Welsch 1981):
superlinear on large-residual problems where Gauss–Newton is linear, the same minimum,
exact resume, the stop on the predicted step; and a refinement on a synthetic pattern."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.experiment import ROI, ExperimentGeometry, LACBEDStack, Region
from qcbed.refine.fine import Refinement
from qcbed.refine.lm import LMState, levenberg_marquardt
from qcbed.scattering.structure_factors import PotentialModel


def _dennis_schnabel(lam: float):
    """Dennis & Schnabel (1983) example 10.2.4: r = (x + 1, λx² + x − 1), minimum x* = 0
    with residual (1, −1); Gauss–Newton converges linearly with ratio |λ| there."""
    def fun(x):
        return np.array([x[0] + 1.0, lam * x[0] ** 2 + x[0] - 1.0])

    def fun_jac(x):
        return fun(x), np.array([[1.0], [2 * lam * x[0] + 1.0]])
    return fun_jac, fun


def _iterations_to(st: LMState, x_star: float, tol: float) -> int:
    for h in st.history:
        if h.get("accepted") and abs(h["x"][0] - x_star) < tol:
            return h["iteration"]
    return 10 ** 6


def test_secant_is_superlinear_where_gauss_newton_is_linear():
    fun_jac, fun = _dennis_schnabel(0.6)
    kw = dict(max_iter=60, ftol=0.0, xtol=0.0, esd_tol=None)
    gn = levenberg_marquardt(fun_jac, fun, np.array([1.0]), hessian="gn", **kw)
    sec = levenberg_marquardt(fun_jac, fun, np.array([1.0]), hessian="secant", **kw)
    n_gn = _iterations_to(gn, 0.0, 1e-6)
    n_sec = _iterations_to(sec, 0.0, 1e-6)
    # GN: |x_k| ~ 0.6^k → about 25 iterations to 1e-6; secant: a handful
    assert 20 <= n_gn < 10 ** 6
    assert n_sec <= 7
    assert abs(sec.x[0]) < 1e-8 and abs(gn.x[0]) < 1e-6
    # the errors of the secant iterates fall faster than any fixed ratio near the end
    errs = [abs(h["x"][0]) for h in sec.history if h.get("accepted")][:n_sec]
    assert errs[-1] / errs[-2] < 0.1 * (errs[2] / errs[1])


def test_secant_keeps_zero_residual_problems_and_bounds():
    # Rosenbrock as least squares (zero residual at (1, 1)); x[0] bounded at 0.8
    def fun(x):
        return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    def fun_jac(x):
        return fun(x), np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])
    st = levenberg_marquardt(fun_jac, fun, np.array([-1.2, 1.0]), max_iter=100,
                             ftol=0.0, xtol=1e-14, esd_tol=None)
    np.testing.assert_allclose(st.x, [1.0, 1.0], atol=1e-8)
    for hessian in ("gn", "secant"):  # the bound holds (projection: slow along it)
        st = levenberg_marquardt(fun_jac, fun, np.array([-1.2, 1.0]),
                                 upper=np.array([0.8, 5.0]), max_iter=100, ftol=0.0,
                                 xtol=1e-14, esd_tol=None, hessian=hessian)
        assert st.x[0] == 0.8 and abs(st.x[1] - 0.64) < 1e-3


def test_secant_state_resumes_on_the_same_path():
    fun_jac, fun = _dennis_schnabel(0.6)
    kw = dict(ftol=0.0, xtol=0.0, esd_tol=None)
    whole = levenberg_marquardt(fun_jac, fun, np.array([1.0]), max_iter=8, **kw)
    part = levenberg_marquardt(fun_jac, fun, np.array([1.0]), max_iter=4, **kw)
    assert part.secant is not None and part.last_step is not None
    saved = LMState.from_dict(json.loads(json.dumps(part.to_dict())))  # a checkpoint
    rest = levenberg_marquardt(fun_jac, fun, None, max_iter=8, state=saved, **kw)
    assert rest.x == whole.x
    assert [h["cost"] for h in rest.history] == [h["cost"] for h in whole.history]


def test_predicted_step_stops_before_a_trial():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 200)
    y = 2.0 * np.exp(-1.3 * t) + 0.01 * rng.standard_normal(t.size)

    def fun(x):
        return (x[0] * np.exp(-x[1] * t) - y) / 0.01

    def fun_jac(x):
        e = np.exp(-x[1] * t)
        return fun(x), np.stack([e, -x[0] * t * e], axis=1) / 0.01
    calls = {"n": 0}

    def counted(x):
        calls["n"] += 1
        return fun(x)
    st = levenberg_marquardt(fun_jac, counted, np.array([1.0, 1.0]), max_iter=50,
                             ftol=0.0, xtol=0.0, esd_tol=0.02)
    assert st.converged and st.message.startswith("predicted step below")
    assert st.history[-1].get("predicted_stop") and calls["n"] == st.n_fun
    # every trial was accepted: the stop saved the one trial that would follow
    assert st.n_fun == sum(1 for h in st.history if h.get("accepted"))
    ref = levenberg_marquardt(fun_jac, fun, np.array([1.0, 1.0]), max_iter=200,
                              ftol=0.0, xtol=1e-15, esd_tol=None)
    _r, j = fun_jac(np.asarray(ref.x))
    sd = np.sqrt(np.diag(np.linalg.inv(j.T @ j)) * 2 * ref.cost / (t.size - 2))
    assert np.all(np.abs(np.subtract(st.x, ref.x)) < 0.02 * sd)


def test_unknown_hessian_is_refused():
    fun_jac, fun = _dennis_schnabel(0.1)
    with pytest.raises(ValueError, match="hessian"):
        levenberg_marquardt(fun_jac, fun, np.array([1.0]), hessian="bfgs")


# ---------------------------------------------------------------- a refinement
OUT = [[0, 0, 0], [0, 0, 2], [0, 0, -2], [1, 1, 1], [1, 1, -1], [-1, -1, 1], [-1, -1, -1],
       [2, 2, 0], [-2, -2, 0]]


@pytest.fixture(scope="module")
def problem():
    """Si [1-10] LACBED whose pixels average two thicknesses (1200 and 1400 Å, a wedge
    under the probe) and whose U(2,2,0) is 10 % off the model's: the fit has the large
    residual (χ²_ν ≫ 1) of a real pattern, and Gauss–Newton converges only linearly."""
    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    sim = Simulation(cr, 200, [1, -1, 0], [0, 0, -1], outputs=OUT, gmax=1.6, smax=0.02,
                     kt_radius=0.15, holz=False, mode="fast", accuracy=None,
                     potential=PotentialModel("kirkland", "bird_king"),
                     selection=BeamSelection(1.0, 40))
    geom = ExperimentGeometry(sim.frame, (48, 48), rotation=-90.0, gl=200.0,
                              tilt0=(0.00035, -0.0005))
    truth = sim.with_changes()  # and U(2,2,0) 10 % above the model's
    u, ua = truth.structure_factor((2, 2, 0))
    truth.set_structure_factors({(2, 2, 0): (1.1 * u, ua)})
    two = truth.solve(geom.tilt_grid().kt).intensities([1200.0, 1400.0])
    counts = np.round(np.moveaxis(0.5 * (two[0] + two[1]), -1, 0) * 1e5)
    return sim, LACBEDStack(counts, OUT, geometry=geom), geom


def _fit(problem, hessian: str):
    sim, stack, geom = problem
    roi = ROI(stack, Region.rectangle((10.0, 10.0), (28.0, 28.0), (15, 15)),
              geom.replace(shift=(0.4, -0.3)), refine=("shift.row", "shift.col"))
    ref = Refinement(sim, roi, model_step=1)
    ref.add_thickness(1270.0)
    return ref.fit(max_iter=30, hessian=hessian)


def test_refinement_with_the_secant_needs_fewer_iterations(problem):
    old = _fit(problem, "gn")
    new = _fit(problem, "secant")
    assert old.chi2 > 5  # reduced χ²: a large-residual fit
    assert new.n_iterations <= old.n_iterations - 4   # measured: 10 against 17
    for n in old.free_names:
        assert abs(new.value(n) - old.value(n)) < 0.05 * old.esd(n)
        assert new.esd(n) == pytest.approx(old.esd(n), rel=1e-3)


def test_steps_that_drop_samples_are_rejected():
    """A refinement drops samples that leave the data or the model (NaN), so a step can
    shorten the residual vector. Its cost is then over fewer samples and not comparable:
    such steps are rejected (a smaller one is tried), in the secant and the Gauss–Newton
    mode. Here the third sample leaves below x = 0.5, where the two others still pull
    towards x = 0; the fit must stop at the edge with all three samples. (Before, the
    secant update failed on the length change — the GUI stop/resume of the demo hit it:
    924 residuals at x, 798 after the step — and a fine step could walk every sample
    out of the image, 'no valid samples' in the next step.)"""
    def fun(x):
        r = np.array([x[0] + 1.0, 0.6 * x[0] ** 2 + x[0] - 1.0, 0.1 * (x[0] - 3.0)])
        return r if x[0] > 0.5 else r[:2]          # the third sample leaves below 0.5

    def fun_jac(x):
        jac = np.array([[1.0], [1.2 * x[0] + 1.0], [0.1]])
        return fun(x), jac[:len(fun(x))]

    for hessian in ("secant", "gn"):
        st = levenberg_marquardt(fun_jac, fun, np.array([2.0]), max_iter=60, hessian=hessian)
        assert 0.5 < st.x[0] < 0.51
        assert all(h["x"][0] > 0.5 for h in st.history if h.get("accepted"))
