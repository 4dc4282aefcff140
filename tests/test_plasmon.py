"""Plasmon-loss electrons of data that are not energy-filtered (issue 12 item 6).

Analytic limits of :mod:`qcbed.experiment.plasmon` (the Hankel transform against
K₀, the kernel's normalisation and Lorentzian shape in real space, the Poisson sum
against an explicit real-space sum, t/λ → 0), the free-electron plasmon energy, the
Jacobian of the refinement hook against central differences, and a synthetic
closure: simulated with plasmon losses at a known t/λ_p, refined with the model the
truth comes back, refined without it U(111) is biased upwards.
"""

from __future__ import annotations

import warnings
from math import factorial

import numpy as np
import pytest
from scipy import special
from scipy.signal import fftconvolve

from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.experiment.plasmon import (
    PlasmonLosses,
    estimated_plasmon_energy,
    free_electron_plasmon_energy,
    outer_electrons,
    valence_electrons,
)
from qcbed.refine import DirectData, Refinement, RegionGrid
from qcbed.refine.plasmon import plasmon_record, region_steps
from qcbed.scattering.structure_factors import PotentialModel

SI = 16.7  # eV


def test_angles_and_mean_free_path_for_si_at_200_kv():
    m = PlasmonLosses(SI, 200.0)
    # θ_E = E_p/(γ m0 v²): γ m0 v² = 343.75 keV at 200 kV
    assert m.theta_e == pytest.approx(16.7 / 343.75e3, rel=1e-3)
    assert m.theta_c == pytest.approx(np.sqrt(2 * m.theta_e), rel=1e-12)
    # Drude: 1/λ = θ_E ln(1 + θc²/θE²)/(2 a0)
    lam = 2 * 0.529177 / (m.theta_e * np.log(1 + (m.theta_c / m.theta_e) ** 2))
    assert m.mfp == pytest.approx(lam, rel=1e-6)
    assert 1500 < m.mfp < 2500  # Å; Si at 200 kV, measured total inelastic ≈ 1600–1800
    assert PlasmonLosses(SI, 200.0, mean_free_path=1234.0).mfp == 1234.0
    a, _ = m.angles_kt()
    assert a == pytest.approx(m.theta_e / 0.0250793, rel=1e-4)
    for bad in ({"energy_ev": 0.0}, {"energy_ev": np.nan}, {"voltage_kv": -1.0},
                {"mean_free_path": 0.0}, {"cutoff_mrad": 1e-3}):
        kw = {"energy_ev": SI, "voltage_kv": 200.0, **bad}
        with pytest.raises(InputError):
            PlasmonLosses(**kw)


def test_transfer_is_the_hankel_transform_of_the_lorentzian():
    """θ_c → ∞: (L/2)·Ĥ₁(q) → K₀(2π q θ_E) (Gradshteyn & Ryzhik 6.532.4); Ĥ₁(0) = 1."""
    m0 = PlasmonLosses(SI, 200.0)
    m = PlasmonLosses(SI, 200.0, cutoff_mrad=1e3 * m0.theta_e * 1e4)
    a, _ = m.angles_kt()
    q = np.array([0.3, 1.0, 3.0, 10.0]) / (2 * np.pi * a)
    got = m.single_transfer(q) * m.log_term / 2
    assert np.allclose(got, special.k0(2 * np.pi * q * a), rtol=1e-4, atol=1e-7)  # cut-off tail
    assert m0.single_transfer(np.zeros(3)) == pytest.approx(1.0, abs=1e-12)
    # a finite cut-off: the transform of K at q, by direct quadrature in θ
    from scipy.integrate import quad
    a0, c0 = m0.angles_kt()
    for qq in (0.5, 3.0, 12.0):
        f = quad(lambda th, q=qq: special.j0(2 * np.pi * q * th) * th / (th**2 + a0**2), 0,
                 c0, limit=400, points=[a0, 10 * a0])[0]
        assert m0.single_transfer(np.array([qq]))[0] == pytest.approx(2 * f / m0.log_term,
                                                                      abs=1e-6)


def _kernel_on_grid(m: PlasmonLosses, step: float, half: int, sub: int = 9) -> np.ndarray:
    """K integrated over each sample cell (sub × sub points per cell), per sample."""
    off = (np.arange(sub) - (sub - 1) / 2) / sub
    x = (np.arange(-half, half + 1)[:, None] + off[None, :]).ravel() * step
    k = m.kernel(np.hypot(x[:, None], x[None, :])) * (step / sub) ** 2
    n = 2 * half + 1
    return k.reshape(n, sub, n, sub).sum(axis=(1, 3))


def test_kernel_normalisation_and_lorentzian_shape():
    """A delta image at small τ: (1 − τ)δ + τK; K sums to 1 and falls as 1/(θ² + θ_E²)."""
    m = PlasmonLosses(SI, 200.0, cutoff_mrad=0.6)   # θ_c = 12 θ_E: a small grid
    a, c = m.angles_kt()
    step = a / 3.0                      # θ_E = 3 samples: K resolved on the grid
    half = int(np.ceil(c / step)) + 2
    n = 2 * half + 1
    img = np.zeros((n, n))
    img[half, half] = 1.0
    tau = 1e-4
    out = m.convolve(img, np.diag([step, step]), tau)
    k = (out - (1 - tau) * img) / tau
    assert out.sum() == pytest.approx(1.0, abs=1e-6)   # nothing lost: not filtered
    assert k.sum() == pytest.approx(1.0, abs=1e-3)
    ref = _kernel_on_grid(m, step, half)
    r = np.hypot(*np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1)))
    inner = (r > 2) & (r * step < 0.5 * c)
    rel = np.abs(k[inner] / ref[inner] - 1)
    assert np.median(rel) < 0.01 and rel.max() < 0.05
    # the shape: (θ² + θ_E²)·K is constant inside θ_c
    prod = (k * ((r * step) ** 2 + a**2))[inner]
    assert prod.std() / prod.mean() < 0.05


def test_changed_model_does_not_reuse_the_transfer_table():
    from dataclasses import replace

    m = PlasmonLosses(SI, 200.0)
    steps = np.diag([0.0174, 0.0174])
    img = np.random.default_rng(1).random((20, 20))
    a = m.convolve(img, steps, 1.0)
    m2 = replace(m, cutoff_mrad=3.0)
    assert not np.allclose(m2.convolve(img, steps, 1.0), a)
    assert np.allclose(replace(m).convolve(img, steps, 1.0), a)


def test_acceptance_cuts_the_kernel_and_keeps_the_mean_free_path():
    """θ_a < θ_c: K normalised over θ_c, cut at θ_a — Ĥ_a(0) = f_a = ln(1 + θ_a²/θ_E²)/L,
    Ĥ_a(q) the Hankel transform of the cut kernel (direct quadrature), λ_p unchanged,
    and exp(τ(Ĥ_a − 1)) = e^{−τ(1−f_a)} × the model cut off at θ_a with τ f_a."""
    from dataclasses import replace

    from scipy.integrate import quad

    m = PlasmonLosses(SI, 200.0)
    ma = replace(m, acceptance_mrad=1.0)
    assert ma.mfp == m.mfp and ma.theta_a == pytest.approx(1e-3)
    fa = np.log(1 + (1e-3 / m.theta_e) ** 2) / np.log(1 + (m.theta_c / m.theta_e) ** 2)
    assert ma.accepted_fraction == pytest.approx(fa, rel=1e-12)
    assert 0.5 < fa < 0.65      # Si, 200 kV: ≈ 43 % of the Lorentzian beyond 1 mrad
    assert ma.single_transfer(np.zeros(1))[0] == pytest.approx(fa, rel=1e-10)
    a0, _ = m.angles_kt()
    ca = ma.acceptance_kt()
    for qq in (0.5, 3.0, 12.0):
        f = quad(lambda th, q=qq: special.j0(2 * np.pi * q * th) * th / (th**2 + a0**2), 0,
                 ca, limit=400, points=[a0, 10 * a0])[0]
        assert ma.single_transfer(np.array([qq]))[0] == pytest.approx(2 * f / m.log_term,
                                                                      abs=1e-6)
    assert ma.kernel(np.array([0.99 * ca, 1.01 * ca]))[1] == 0.0
    assert ma.kernel(np.array([0.99 * ca]))[0] == pytest.approx(m.kernel(np.array([0.99 * ca]))[0])
    img = np.random.default_rng(2).random((24, 30))
    steps = np.diag([0.0087, 0.0087])
    mc = PlasmonLosses(SI, 200.0, cutoff_mrad=1.0)
    for tau in (0.3, 1.2):
        got = ma.convolve(img, steps, tau)
        ref = np.exp(-tau * (1 - fa)) * mc.convolve(img, steps, tau * fa)
        assert np.allclose(got, ref, rtol=1e-9, atol=0)
        assert got.sum() < img.sum()       # the electrons beyond θ_a leave the field
    # an acceptance beyond θ_c is θ_c; one below θ_E is an error; recorded in as_dict
    assert np.allclose(replace(m, acceptance_mrad=50.0).convolve(img, steps, 0.7),
                       m.convolve(img, steps, 0.7))
    with pytest.raises(InputError, match="acceptance"):
        replace(m, acceptance_mrad=0.01)
    rec = ma.as_dict()
    assert rec["acceptance_mrad"] == pytest.approx(1.0) and rec["accepted_fraction"] == fa
    assert m.as_dict()["acceptance_mrad"] == pytest.approx(1e3 * m.theta_c)


def test_poisson_sum_and_elastic_limit():
    """exp(τ(Ĥ−1)) equals Σ P_n K^{⊗n} done in real space; τ → 0 is the elastic image."""
    m = PlasmonLosses(SI, 200.0, cutoff_mrad=0.6)
    a, c = m.angles_kt()
    step = a / 2.0
    rng = np.random.default_rng(0)
    half = int(np.ceil(c / step))
    yy, xx = np.mgrid[0:40, 0:48]
    img = 1 + np.cos(xx / 4.0) * np.sin(yy / 5.0) + 0.2 * rng.random((40, 48))
    steps = np.diag([step, step])
    assert np.allclose(m.convolve(img, steps, 0.0), img, atol=1e-12)
    assert np.abs(m.convolve(img, steps, 1e-9) - img).max() < 1e-8
    tau = 1.3
    k = _kernel_on_grid(m, step, half)
    k /= k.sum()
    pad = half * 4
    big = np.pad(img, pad, mode="symmetric")
    total = np.exp(-tau) * big
    cur = big
    for nn in range(1, 12):
        cur = fftconvolve(cur, k, mode="same")
        total = total + np.exp(-tau) * tau**nn / factorial(nn) * cur
    explicit = total[pad:-pad, pad:-pad]
    got = m.convolve(img, steps, tau)
    assert np.abs(got - explicit).max() / img.max() < 5e-3
    # ∂/∂τ against a central difference
    _, d = m.convolve(img, steps, tau, derivative=True)
    fd = (m.convolve(img, steps, tau + 1e-5) - m.convolve(img, steps, tau - 1e-5)) / 2e-5
    assert np.allclose(d, fd, atol=1e-7 * np.abs(fd).max() + 1e-9)


def test_free_electron_plasmon_energy():
    si = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0))],
                 space_group_from_number(227, 1))
    assert free_electron_plasmon_energy(si) == pytest.approx(16.6, abs=0.05)  # Egerton T3.2
    al = Crystal(Lattice(4.0495, 4.0495, 4.0495), [Site("Al1", "Al", (0, 0, 0))],
                 space_group_from_number(225))
    assert free_electron_plasmon_energy(al) == pytest.approx(15.8, abs=0.05)
    fe = Crystal(Lattice(2.8665, 2.8665, 2.8665), [Site("Fe1", "Fe", (0, 0, 0))],
                 space_group_from_number(229))
    with pytest.raises(InputError, match="d or f shell"):
        free_electron_plasmon_energy(fe)
    assert [valence_electrons(z) for z in (1, 3, 6, 8, 14, 20, 26, 30, 32, 50, 82)] == \
        [1, 1, 4, 6, 4, 2, None, 2, 4, 4, 4]


def test_estimated_plasmon_energy_for_d_and_f_elements():
    """Crystals with d- or f-block elements get an estimate (their outer s and d
    electrons counted) instead of an error, and the elements are named; main-group
    crystals keep the free-electron value exactly."""
    si = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0))],
                 space_group_from_number(227, 1))
    assert estimated_plasmon_energy(si) == (free_electron_plasmon_energy(si), [])
    # electrons outside the noble-gas core (f excepted): Sc 3, Ti 4, Ni 10, Cu 11, Y 3,
    # Nb 5, Ag 11, Hf 4, W 6, Au 11; La 3, Eu 2, Gd 3, Yb 2, Lu 3, U 3
    zs = (21, 22, 28, 29, 39, 41, 47, 72, 74, 79, 57, 63, 64, 70, 71, 92)
    assert [outer_electrons(z) for z in zs] == [3, 4, 10, 11, 3, 5, 11, 4, 6, 11,
                                                3, 2, 3, 2, 3, 3]
    assert all(outer_electrons(z) == valence_electrons(z)
               for z in (1, 3, 6, 8, 14, 20, 30, 32, 50, 56, 82))
    # bcc Fe, 2 × 8 electrons in a³: E_p scales with √n from Si's 16.6 eV (Egerton T3.2)
    fe = Crystal(Lattice(2.8665, 2.8665, 2.8665), [Site("Fe1", "Fe", (0, 0, 0))],
                 space_group_from_number(229))
    e, est = estimated_plasmon_energy(fe)
    assert est == ["Fe"]
    n_si, n_fe = 32 / 5.431**3, 16 / 2.8665**3
    assert e == pytest.approx(free_electron_plasmon_energy(si) * np.sqrt(n_fe / n_si),
                              rel=1e-12)


def test_project_set_up_estimates_e_p_with_a_warning():
    """A project with a d-block crystal and no plasmon_energy_ev: the model uses the
    estimate, says so in its energy source and warns (it used to stop the run with an
    InputError after the coarse step: import-felix wrote energy_filtered = false for
    every Felix folder, LiNbO₃, BaTiO₃, TiNiSn among them)."""
    from types import SimpleNamespace

    from qcbed.project.setup import Setup

    fe = Crystal(Lattice(2.8665, 2.8665, 2.8665), [Site("Fe1", "Fe", (0, 0, 0))],
                 space_group_from_number(229))
    data = dict(energy_filtered=False, plasmon_energy_ev=None, plasmon_mean_free_path=None,
                plasmon_cutoff_mrad=None)
    fake = SimpleNamespace(project=SimpleNamespace(data=data, source="fe.toml"),
                           crystal=fe, voltage_kv=200.0)
    with pytest.warns(UserWarning, match=r"fe\.toml: .*estimate E_p = 30\.\d eV.*of Fe"):
        m = Setup.plasmon_losses(fake)
    assert m.energy_ev == pytest.approx(estimated_plasmon_energy(fe)[0])
    assert "estimate" in m.energy_source and "Fe" in m.energy_source
    data["plasmon_energy_ev"] = 23.0                  # measured: no estimate, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = Setup.plasmon_losses(fake)
    assert m.energy_ev == 23.0 and m.energy_source == "data.plasmon_energy_ev"


# ---------------------------------------------------------------------- refinement
T_TRUE = 1200.0
MFP = 1000.0          # Å: t/λ_p = 1.2 at the truth
NY, NX = 14, 16


@pytest.fixture(scope="module")
def lacbed():
    """A small LACBED-like region near Si [1-10] (the layout of the probe test), its
    elastic images and the same with plasmon losses, Poisson noise."""
    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    sim = Simulation(cr, 200, [1, -1, 0], [0, 0, -1], gmax=1.2, smax=0.02, kt_radius=0.3,
                     holz=False, outputs=[[0, 0, 0], [0, 0, 2], [1, 1, 1], [2, 2, 0]],
                     mode="exact", potential=PotentialModel("kirkland", "bird_king"))
    grid = TiltGrid.regular((0.03, 0.02), (0.016, 0.0), (0.0, -0.016), (NY, NX))
    kt = grid.points
    elastic = sim.solve(kt).intensities([T_TRUE])[0].T
    model = PlasmonLosses(SI, 200.0, mean_free_path=MFP)
    steps = region_steps(kt, 0, (NY, NX))
    meas = model.convolve(elastic.reshape(-1, NY, NX), steps, T_TRUE / MFP).reshape(
        len(elastic), -1)
    rng = np.random.default_rng(5)
    obs = rng.poisson(4e5 * meas + 30.0).astype(float)
    data = DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0),
                      regions=[RegionGrid(0, (NY, NX))])
    u111 = abs(sim.structure_factor((1, 1, 1))[0])
    return sim, data, model, u111, elastic, meas


def _refinement(sim, data, plasmon):
    ref = Refinement(sim, data, background="per_disc", plasmon=plasmon, model_step=1,
                     use_symmetry=False)
    ref.add_thickness(T_TRUE * 1.01)
    ref.add_structure_factor((1, 1, 1), refine_uabs=False)
    ref.params["U(1,1,1)"].value *= 1.01
    return ref


def test_budget_takes_the_mean_free_path_when_it_is_fixed(lacbed):
    from qcbed.refine.budget import default_inputs

    sim, data, model, *_ = lacbed
    ref = _refinement(sim, data, model)
    names = [i.name for i in default_inputs(ref, selection_factor=0)]
    assert "plasmon lambda_p" in names
    assert next(i for i in default_inputs(ref) if i.name == "plasmon lambda_p").delta == "±20 %"
    ref.params["plasmon.lambda_scale"].refine = True
    assert "plasmon lambda_p" not in [i.name for i in default_inputs(ref)]
    assert "plasmon lambda_p" not in [i.name for i in default_inputs(_refinement(sim, data,
                                                                                 None))]


@pytest.mark.filterwarnings("ignore:strongly correlated")
def test_budget_acceptance_entry_predicts_the_bias_of_a_wrong_acceptance(lacbed):
    """Noise-free data with the loss electrons accepted to θ_a = 1 mrad, refined with
    θ_a = 2 mrad: the budget's 'plasmon acceptance' entry (θ_a × 0.5) is the measured
    sensitivity: it predicts the refit's shift of U(111) and t (opposite sign: it moves
    the model to the data's θ_a)."""
    from dataclasses import replace

    from qcbed.refine.budget import compute_budget, default_inputs

    sim, _data, model, u111, elastic, _meas = lacbed
    m2 = replace(model, acceptance_mrad=2.0)
    m1 = replace(model, acceptance_mrad=1.0)
    steps = region_steps(_data.kt, 0, (NY, NX))
    meas = m1.convolve(elastic.reshape(-1, NY, NX), steps, T_TRUE / MFP).reshape(
        len(elastic), -1)
    obs = 4e5 * meas + 30.0
    data = DirectData(sim.outputs, _data.kt, obs, obs, regions=[RegionGrid(0, (NY, NX))])
    ref = _refinement(sim, data, m2)
    res = ref.fit("lm", max_iter=30, ftol=1e-12, xtol=1e-12, esd_tol=None)
    bias_u = abs(res.value("U(1,1,1)")) - u111
    bias_t = res.value("thickness") - T_TRUE
    inputs = [i for i in default_inputs(ref) if i.name == "plasmon acceptance"]
    assert len(inputs) == 1 and inputs[0].delta == "theta_a 2 -> 1 mrad"
    budget = compute_budget(ref, inputs)
    pred = budget.entries[0].shifts
    sign = np.sign(res.value("U(1,1,1)"))
    # measured: bias −0.39 % in U(111), +2.4 Å in t; the entry −(+0.38 %, −2.36 Å)
    assert abs(bias_u) > 1e-3 * u111
    assert sign * pred["U(1,1,1)"] == pytest.approx(-bias_u, rel=0.1)
    assert pred["thickness"] == pytest.approx(-bias_t, rel=0.1)
    assert "plasmon acceptance" not in [i.name for i in default_inputs(ref,
                                                                       plasmon_acceptance=0)]
    assert "plasmon acceptance" not in [i.name for i in default_inputs(
        _refinement(sim, data, None))]
    assert ref.plasmon is m2             # the budget put the model back
    tiny = _refinement(sim, data, replace(model, acceptance_mrad=1.5e3 * model.theta_e))
    assert "plasmon acceptance" not in [i.name for i in default_inputs(tiny)]  # < θ_E


def test_region_steps_checks_the_grid(lacbed):
    sim, data, model, *_ = lacbed
    st = region_steps(data.kt, 0, (NY, NX))
    assert np.allclose(st, [[0.0, -0.016], [0.016, 0.0]])  # TiltGrid: b down the rows
    bad = data.kt.copy()
    bad[5] += 1e-3
    with pytest.raises(InputError, match="regular"):
        region_steps(bad, 0, (NY, NX))
    with pytest.raises(InputError, match="region grids"):
        Refinement(sim, DirectData(data.hkl, data.kt, data.intensity, data.variance),
                   plasmon=model)


def test_model_intensities_and_jacobian_with_plasmon_losses(lacbed):
    """The hook gives the measured pattern at the truth; its analytic Jacobian columns
    (thickness through τ as well, λ_p scale, U(111)) match central differences."""
    sim, data, model, _, _, meas = lacbed
    ref = _refinement(sim, data, model)
    ref.params["thickness"].value = T_TRUE
    ref.params["U(1,1,1)"].value /= 1.01
    assert np.allclose(ref.simulate(), meas, atol=1e-10)
    ref.params["plasmon.lambda_scale"].refine = True
    names = ["thickness", "U(1,1,1)", "plasmon.lambda_scale"]
    _r, jac, _f, mask = ref._residuals(names, None, True)
    for k, n in enumerate(names):
        num = ref._numeric_column(n, mask)
        rel = np.abs(jac[:, k] - num).max() / np.abs(num).max()
        assert rel < 2e-4, (n, rel)


@pytest.mark.filterwarnings("ignore:strongly correlated")
def test_synthetic_closure_truth_back_with_the_model_bias_without(lacbed):
    """Simulated with plasmon losses at t/λ_p = 1.2: the model recovers U(111) and t;
    without it U(111) moves by several times as much and χ² is far worse."""
    sim, data, model, u111, *_ = lacbed
    res_on = _refinement(sim, data, model).fit("lm", max_iter=15)
    res_off = _refinement(sim, data, None).fit("lm", max_iter=15)
    u_on, u_off = abs(res_on.value("U(1,1,1)")), abs(res_off.value("U(1,1,1)"))
    print(f"U111 truth {u111:.6f}: with the model {u_on:.6f} ({100 * (u_on / u111 - 1):+.3f} "
          f"%, t {res_on.value('thickness'):.1f}, chi2 {res_on.chi2:.2f}); without "
          f"{u_off:.6f} ({100 * (u_off / u111 - 1):+.3f} %, t "
          f"{res_off.value('thickness'):.1f}, chi2 {res_off.chi2:.1f})")
    assert abs(u_on / u111 - 1) < 1e-3
    assert abs(res_on.value("thickness") / T_TRUE - 1) < 2e-3
    assert 0.8 < res_on.chi2 < 1.3
    assert abs(u_off / u111 - 1) > 3 * abs(u_on / u111 - 1) + 1e-3
    assert res_off.chi2 > 5 * res_on.chi2


@pytest.mark.filterwarnings("ignore:strongly correlated")
def test_t_over_lambda_is_refined_and_recorded(lacbed):
    """λ_p 30 % off at the start, refined through plasmon.lambda_scale: t/λ_p comes back."""
    sim, data, _, u111, *_ = lacbed
    ref = _refinement(sim, data, PlasmonLosses(SI, 200.0, mean_free_path=1.3 * MFP))
    ref.params["plasmon.lambda_scale"].refine = True
    res = ref.fit("lm", max_iter=15)
    tau = res.value("thickness") / (res.value("plasmon.lambda_scale") * 1.3 * MFP)
    assert tau == pytest.approx(T_TRUE / MFP, rel=0.03)
    assert abs(abs(res.value("U(1,1,1)")) / u111 - 1) < 2e-3
    rec = plasmon_record(ref)
    assert rec["t_over_lambda"] == pytest.approx(tau) and rec["lambda_scale_refined"]
    assert rec["mean_free_path_used_A"] == pytest.approx(res.value("plasmon.lambda_scale")
                                                         * 1.3 * MFP)


# ---------------------------------------------------------------------- project files
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The fast demo project (synthetic Si CBED)."""
    from qcbed.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("demo"), fast=True, executor="serial")[0]


def _demo_variant(demo, tmp_path, edit):
    from test_hostile_project import _variant

    return _variant(demo, tmp_path, edit)


@pytest.mark.parametrize("edit, tag, message", [
    (lambda r: r["data"].__setitem__("energy_filtered", "no"), "data.energy_filtered", None),
    (lambda r: r["data"].__setitem__("plasmon_energy_ev", 16.7), "data.plasmon_energy_ev",
     "not energy-filtered"),
    (lambda r: r["data"].update(energy_filtered=False, plasmon_mean_free_path=-5.0),
     "data.plasmon_mean_free_path", None),
    (lambda r: r["data"].__setitem__("plasmon_acceptance_mrad", 2.0),
     "data.plasmon_acceptance_mrad", "not energy-filtered"),
    (lambda r: r["data"].update(energy_filtered=False, plasmon_acceptance_mrad=0.0),
     "data.plasmon_acceptance_mrad", None),
    (lambda r: r["plan"]["fine"][-1]["refine"].append("plasmon.lambda_scale"),
     "plan.fine[1].refine", "not energy-filtered"),
])
def test_project_file_errors(demo, tmp_path, edit, tag, message):
    from qcbed.project import load_project

    with pytest.raises(InputError) as exc:
        load_project(_demo_variant(demo, tmp_path, edit))
    assert exc.value.tag == tag, str(exc.value)
    if message:
        assert message in str(exc.value)


@pytest.mark.filterwarnings("ignore")
def test_project_refines_with_plasmon_losses_and_records_them(demo, tmp_path):
    """energy_filtered = false: the refinement uses the plasmon model (λ_p refined), and
    result.json and the error budget say so; the free-electron E_p of Si is the default."""
    import json

    from click.testing import CliRunner

    from qcbed.cli import main

    def edit(r):
        r["data"]["energy_filtered"] = False
        r["data"]["plasmon_acceptance_mrad"] = 3.0
        r["plan"]["fine"] = r["plan"]["fine"][-1:]
        r["plan"]["fine"][0]["max_iter"] = 3
        r["plan"]["fine"][0]["refine"] = ["thickness", "plasmon.lambda_scale"]
        r["plan"]["regions"] = 0

    path = _demo_variant(demo, tmp_path, edit)
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 0 and "plasmon losses with E_p 16.6" in r.output, r.output
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(path)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    from qcbed.project import load_project

    res = json.loads((load_project(path).output / "result.json").read_text())
    inel = res["inelastic"]
    assert inel["model"] == "plasmon" and inel["lambda_scale_refined"]
    assert inel["energy_ev"] == pytest.approx(16.6, abs=0.05)
    assert "free-electron" in inel["energy_source"]
    assert inel["t_over_lambda"] == pytest.approx(
        res["thickness"]["value"] / inel["mean_free_path_used_A"], rel=1e-9)
    par = {p["name"]: p for p in res["parameters"]}
    assert par["plasmon.lambda_scale"]["refined"] and par["plasmon.lambda_scale"]["esd"] > 0
    assert par["plasmon.lambda_scale"]["value"] == pytest.approx(inel["lambda_scale"])
    # the acceptance: recorded, and its alternative in the error budget (json, h5, report)
    assert inel["acceptance_mrad"] == pytest.approx(3.0) and inel["acceptance_source"] == "given"
    eb = res["error_budget"]
    entry = next(i for i in eb["inputs"] if i["input"] == "plasmon acceptance")
    assert entry["delta"] == "theta_a 3 -> 1.5 mrad"
    shift = eb["parameters"]["thickness"]["shifts"]["plasmon acceptance"]
    assert np.isfinite(shift) and shift != 0.0
    import h5py

    out = load_project(path).output
    with h5py.File(out / "results.h5", "r") as h5:
        b = h5["accuracy/error_budget"]
        inputs = [x.decode() if isinstance(x, bytes) else x for x in b["inputs"][()]]
        assert "plasmon acceptance" in inputs
        pnames = [x.decode() if isinstance(x, bytes) else x for x in b["parameters"][()]]
        assert b["shifts"][inputs.index("plasmon acceptance"),
                           pnames.index("thickness")] == pytest.approx(shift)
    assert "plasmon acceptance" in (out / "report.html").read_text()


def test_coarse_sampling_is_warned_about(lacbed):
    sim, data, model, *_ = lacbed
    coarse = DirectData(data.hkl, data.kt, data.intensity, data.variance,
                        regions=[RegionGrid(0, (NY, NX), spacing=(8.0, 8.0))])
    ref = _refinement(sim, coarse, model)
    with pytest.warns(UserWarning, match="under-resolve"):
        ref.simulate()


@pytest.mark.shared_data
def test_import_felix_states_the_energy_filter(si_dlacbed_dir):
    """Felix folders do not record an energy filter: assumed not filtered unless told."""
    from qcbed.project.felix import felix_project

    proj, comments, _ = felix_project(si_dlacbed_dir, output="unused", roi_step=4)
    assert proj["data"]["energy_filtered"] is False
    assert "assumed NOT energy-filtered" in comments["data.energy_filtered"]
    proj, comments, _ = felix_project(si_dlacbed_dir, output="unused", roi_step=4,
                                      energy_filtered=True)
    assert proj["data"]["energy_filtered"] is True
    assert "elastic model only" in comments["data.energy_filtered"]
