"""Noise model for data not in counts (issue 12 item 2) and the error budget (item 3).

Synthetic data only: smooth analytic images and engine patterns of PyExtal's Si 111
systematic row (196.75 kV), so no shared data are needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.experiment.noise import (
    estimate_noise,
    estimate_noise_from_residuals,
    looks_like_counts,
    smoothed_variance,
)
from qcbed.refine import DirectData, Refinement, RegionGrid
from qcbed.refine.budget import compute_budget, default_inputs
from qcbed.scattering.structure_factors import PotentialModel

A = 5.4307
KT_HKL = (12.0152, -12.0152, 26.4176)
OUT = [[0, 0, 0], [1, -1, -1], [-1, 1, 1], [2, -2, -2]]
T_TRUE = 1500.0
U111, UA111, U222 = 0.0473504, 0.0007937, -0.00092322


def si_sim(voltage=196.75, b_iso=0.4668, sgmin=0.3, **kw):
    cr = Crystal(Lattice(A, A, A), [Site("Si", "Si", (0.125,) * 3, b_iso=b_iso)],
                 space_group_from_number(227, 2))
    base = Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal(KT_HKL)
    sim = Simulation(cr, voltage, [1, 1, 0], [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                     outputs=OUT, mode="exact", gmax=2.0, smax=0.03,
                     potential=PotentialModel("kirkland", "bird_king"),
                     selection=BeamSelection(sgmin, 30.0), **kw)
    return sim, kt0


def smooth_images(shape=(4, 128, 128)):
    y, x = np.mgrid[0:shape[1], 0:shape[2]] / shape[1]
    return np.array([400 * (1 + np.sin(2 * np.pi * (3 + k) * x + 5 * y * y))
                     * np.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.2) + 1.0
                     for k in range(shape[0])])


@pytest.mark.parametrize("gain, floor", [(0.37, 4.0), (2.5, 40.0), (0.05, 0.3)])
def test_scatter_estimate_recovers_gain_and_floor(gain, floor):
    rng = np.random.default_rng(7)
    truth = smooth_images()
    obs = truth + rng.normal(size=truth.shape) * np.sqrt(gain * truth + floor)
    nm = estimate_noise(obs)
    assert nm.white and nm.lag1[0] == pytest.approx(-2 / 3, abs=0.03)
    assert nm.gain == pytest.approx(gain, rel=0.03)
    assert nm.floor == pytest.approx(floor, rel=0.15)
    # scaling the images by s scales g by s and the floor by s²
    nm2 = estimate_noise(10.0 * obs)
    assert nm2.gain == pytest.approx(10 * nm.gain, rel=1e-6)
    assert nm2.floor == pytest.approx(100 * nm.floor, rel=1e-6)


def test_correlated_noise_is_flagged():
    # noise smoothed by a 3-tap filter (as after interpolation): not white, and warned
    from scipy import ndimage

    rng = np.random.default_rng(4)
    truth = smooth_images((2, 96, 96))
    noise = ndimage.uniform_filter(rng.normal(size=truth.shape), (1, 3, 3))
    with pytest.warns(UserWarning, match="not white"):
        nm = estimate_noise(truth + 5.0 * noise)
    assert nm.white is False and nm.lag1[0] > -0.5
    assert nm.as_dict()["white"] is False


def test_residual_estimate_and_count_detection():
    rng = np.random.default_rng(3)
    truth = smooth_images((2, 96, 96))
    obs = truth + rng.normal(size=truth.shape) * np.sqrt(0.8 * truth + 9.0)
    nm = estimate_noise_from_residuals(truth, obs)
    assert nm.gain == pytest.approx(0.8, rel=0.05)
    assert nm.floor == pytest.approx(9.0, rel=0.3)
    assert looks_like_counts(rng.poisson(truth))
    assert not looks_like_counts(obs)
    assert not looks_like_counts(rng.poisson(truth) - 3.0)


def _image_grid(kt0, n=(32, 80), step=1.25e-4):
    """A 2-D grid (0.004 x 0.01 1/A) over the strongest 1-11 reflection of the row,
    sampled finely enough (1/8 of the 1/t fringe period) to be smooth per pixel."""
    g = np.sqrt(3) / A
    centre = kt0 + np.array([0.245 * g, 0.0])  # the row runs along x of this frame
    return TiltGrid.regular(centre, (step, 0.0), (0.0, -step), n)


@pytest.fixture(scope="module")
def noisy_pattern():
    sim, kt0 = si_sim()
    grid = _image_grid(kt0)
    truth_sim = sim.with_changes()
    truth_sim.set_structure_factors({(1, -1, -1): (U111, UA111), (2, -2, -2): (U222, 0.0)})
    inten = truth_sim.solve(grid.points).intensities([T_TRUE])[0].T  # (n_out, n_pts)
    model = 3000.0 * inten + 15.0
    rng = np.random.default_rng(11)
    gain, floor = 0.6, 25.0
    obs = model + rng.normal(size=model.shape) * np.sqrt(gain * model + floor)
    return sim, grid, obs, gain, floor


def test_estimated_noise_gives_unit_reduced_chi2(noisy_pattern):
    sim, grid, obs, gain, floor = noisy_pattern
    ny, nx = grid.shape
    imgs = obs.reshape(len(OUT), ny, nx)
    nm = estimate_noise(imgs)
    print(f"engine pattern: gain {nm.gain:.4f} (true {gain}), floor {nm.floor:.2f} "
          f"(true {floor})")
    assert nm.gain == pytest.approx(gain, rel=0.1)
    # the floor is extrapolated from I >= 15 here (no dark pixels): a looser tolerance
    assert nm.floor == pytest.approx(floor, rel=0.4)
    var = smoothed_variance(imgs, nm).reshape(len(OUT), -1)
    results = {}
    for label, v in (("estimated", var), ("poisson", np.maximum(obs, 1.0))):
        data = DirectData(OUT, grid.points, obs, v, regions=[RegionGrid(0, (ny, nx))])
        ref = Refinement(sim, data, background="per_disc")
        ref.add_thickness(T_TRUE * 1.01)
        ref.add_structure_factor((1, -1, -1), value=U111 * 1.01, refine_uabs=False,
                                 value_abs=UA111)
        res = ref.fit("lm", max_iter=15)
        results[label] = res
    res = results["estimated"]
    print(f"chi2_nu: estimated noise {res.chi2:.4f}, Poisson {results['poisson'].chi2:.4f}")
    assert res.chi2 == pytest.approx(1.0, abs=0.08)
    # the Poisson assumption on these (non-count) data is off by the gain
    assert not 0.8 < results["poisson"].chi2 < 1.25
    pull = (res.value("U(1,-1,-1)") - U111) / res.esd("U(1,-1,-1)")
    assert abs(pull) < 4


def _budget_case(wrong: dict, inputs_kw: dict, name: str):
    """Noise-free data from the truth; refine with one fixed input wrong; compare the
    bias of U(1,-1,-1) with the budget entry for that input. A converged beam selection
    (sgmin 4) keeps the model smooth in the inputs (no beam switching between strong and
    perturbative)."""
    sim, kt0 = si_sim(sgmin=4.0)
    g = np.sqrt(3) / A
    xs = np.linspace(-0.45, 0.45, 50) * g
    kt = np.concatenate([np.stack([xs, np.full_like(xs, y)], 1) for y in (-0.03, 0.0, 0.03)]
                        ) + kt0
    truth_sim = sim.with_changes()
    truth_sim.set_structure_factors({(1, -1, -1): (U111, UA111), (2, -2, -2): (U222, 0.0)})
    inten = 2.0e4 * truth_sim.solve(kt).intensities([T_TRUE])[0].T + 40.0
    data = DirectData(OUT, kt, inten, inten)
    sim_w, _ = si_sim(sgmin=4.0, **wrong)
    ref = Refinement(sim_w, data, background="per_disc")
    ref.add_thickness(T_TRUE)
    ref.add_structure_factor((1, -1, -1), value=U111, value_abs=UA111)
    ref.add_structure_factor((2, -2, -2), refine_uabs=False, value=U222, value_abs=0.0)
    res = ref.fit("lm", max_iter=30, ftol=1e-12, xtol=1e-12, esd_tol=None)
    bias = res.value("U(1,-1,-1)") - U111
    inputs = [i for i in default_inputs(ref, **inputs_kw) if i.name == name]
    budget = compute_budget(ref, inputs)
    return bias, budget.entries[0].shifts["U(1,-1,-1)"], budget, res


def test_budget_predicts_the_bias_of_a_wrong_voltage():
    # voltage 0.5 % high: the budget's voltage entry (±0.5 %) predicts the bias
    bias, pred, budget, res = _budget_case({"voltage": 196.75 * 1.005},
                                           {"voltage_rel": 0.005}, "voltage")
    assert abs(bias) > 5 * res.esd("U(1,-1,-1)") or abs(bias) > 1e-5
    assert pred == pytest.approx(bias, rel=0.2)
    comb = budget.combined()["U(1,-1,-1)"]
    assert comb >= abs(pred)


def test_budget_predicts_the_bias_of_a_wrong_debye_waller_factor():
    bias, pred, budget, _ = _budget_case({"b_iso": 0.4668 + 0.1}, {"b_delta": 0.1}, "B(Si)")
    assert abs(bias) > 1e-5
    assert pred == pytest.approx(bias, rel=0.2)
    d = budget.as_dict()
    assert d["parameters"]["U(1,-1,-1)"]["shifts"]["B(Si)"] == pytest.approx(pred)
    assert "B(Si)" in budget.table()
