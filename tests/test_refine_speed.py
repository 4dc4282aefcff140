"""Fast paths of the fine refinement (issue 13, goal 3) against the slow path.

* the model grid: the engine solves every k-th sample of a region grid and the
  model follows by cubic-spline interpolation (:mod:`qcbed.refine.fine_sampling`);
* no re-diagonalisation when no structure factor is free; derivatives computed
  ahead on LM trial steps.

Every fast path must give the refined values of the slow path within a small
fraction of their esds.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.refine import DirectData, Refinement, RegionGrid
from qcbed.refine.fine_sampling import ModelGrid, axis_operator, interpolation_shift
from qcbed.scattering.structure_factors import PotentialModel

T_TRUE = 600.0
U220 = (2, 2, 0)


def test_axis_operator_reproduces_cubics_and_solved_samples():
    """A not-a-knot cubic spline reproduces any cubic exactly (de Boor 1978)."""
    for n, step in ((31, 3), (30, 4), (9, 2), (61, 2)):
        idx, m = axis_operator(n, step)
        x = np.arange(n, dtype=float)
        assert idx[0] == 0 and idx[-1] == n - 1
        assert np.allclose(np.diff(idx)[:-1], step)
        f = 0.3 - 1.2 * x + 0.05 * x**2 - 0.002 * x**3
        assert np.max(np.abs(m @ f[idx] - f)) < 1e-9 * np.max(np.abs(f))
        assert np.allclose(m[idx], np.eye(len(idx)))
    idx, m = axis_operator(5, 2)  # three solved samples: too few for a cubic
    assert np.array_equal(idx, np.arange(5)) and np.allclose(m, np.eye(5))


def test_model_grid_expands_regions_and_marks_rejected_directions():
    regions = [RegionGrid(0, (13, 10)), RegionGrid(130, (2, 21))]
    n = 130 + 42 + 3  # three points outside every region are copied
    grid = ModelGrid.build(n, regions, 3)
    assert not grid.trivial and len(grid.solve) < n
    kt = np.random.default_rng(0).normal(size=(n, 2))
    yy, xx = np.divmod(np.arange(130), 10)
    kt[:130] = np.stack([0.01 * yy, 0.02 * xx], 1)
    yy, xx = np.divmod(np.arange(42), 21)
    kt[130:172] = np.stack([0.5 + 0.01 * yy, 0.03 * xx], 1)
    f = (1 + kt[:, 0] - 2 * kt[:, 0] ** 2 + kt[:, 1] ** 3)[None]
    out = grid.expand(f[:, grid.solve])
    assert np.max(np.abs(out - f)) < 1e-12
    bad = f[:, grid.solve].copy()
    bad[0, 5] = np.nan
    out = grid.expand(bad)
    assert np.isnan(out).any() and np.isfinite(out).sum() > 0.5 * n
    assert ModelGrid.build(n, regions, 1).trivial
    assert ModelGrid.build(n, None, 3).trivial


def test_interpolation_shift_is_the_gauss_newton_step_in_esds():
    rng = np.random.default_rng(1)
    j = rng.normal(size=(200, 2))
    r = rng.normal(size=200)
    delta = np.array([0.3, -0.05])
    shift = interpolation_shift(j, r, r + j @ delta)
    esd = np.sqrt(np.diag(np.linalg.inv(j.T @ j)))
    assert np.allclose(shift, np.abs(delta) / esd)
    assert interpolation_shift(j, r, r[:-1])[0] == np.inf


@pytest.fixture(scope="module")
def lacbed():
    """A D-LACBED-like Si image grid with Poisson noise, sampled finely (0.002 Å⁻¹)
    for its thickness: the model is smooth on the scale of a few samples."""
    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    sim = Simulation(cr, 200, [1, -1, 0], [0, 0, -1], gmax=1.2, smax=0.02, kt_radius=0.1,
                     holz=False, outputs=[[0, 0, 2], [1, 1, 1], [2, 2, 0]], mode="exact",
                     potential=PotentialModel("kirkland", "bird_king"), accuracy=None)
    ny, nx = 17, 21
    grid = TiltGrid.regular((0.03, 0.01), (0.002, 0.0), (0.0, -0.002), (ny, nx))
    kt = grid.points
    truth = sim.with_changes()
    u, ua = sim.structure_factor(U220)
    truth.set_structure_factors({U220: (u * 0.98, ua)})
    inten = truth.solve(kt).intensities([T_TRUE])[0].T
    rng = np.random.default_rng(3)
    obs = rng.poisson(5e4 * inten + 20.0).astype(float)
    data = DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0),
                      regions=[RegionGrid(0, (ny, nx))])
    return sim, data, float((u * 0.98).real)


def _refine(sim, data, model_step, free_u=True):
    ref = Refinement(sim, data, background="per_disc", model_step=model_step)
    ref.add_thickness(T_TRUE * 1.01)
    ref.add_structure_factor(U220, refine_u=free_u, refine_uabs=False)
    return ref, ref.fit("lm", max_iter=20)


def test_model_step_gives_the_full_grid_values_within_a_fraction_of_esd(lacbed):
    sim, data, u_true = lacbed
    _, slow = _refine(sim, data, 1)
    fast_ref, fast = _refine(sim, data, "auto")
    info = fast_ref.model_step_info
    print(info, slow.n_solves, fast.n_solves)
    assert info["step"] > 1 and info["solved"] < len(data.kt) / 3
    assert info["shift_start"] <= 0.1 and info["shift_end"] <= 0.1
    for name in ("thickness", "U(2,2,0)"):
        esd = slow.esd(name)
        assert abs(fast.value(name) - slow.value(name)) < 0.1 * esd, name
        assert fast.esd(name) == pytest.approx(esd, rel=0.05)
    assert abs(slow.value("U(2,2,0)") - u_true) < 4 * slow.esd("U(2,2,0)")
    assert fast.chi2 == pytest.approx(slow.chi2, rel=0.02)


def test_a_too_coarse_model_step_is_caught_at_the_optimum(lacbed):
    """Forced to a coarse step, the full-grid check at the optimum sees the shift and
    the fit continues on every sample: the slow path's values come back."""
    sim, data, _ = lacbed
    _, slow = _refine(sim, data, 1)
    ref, fast = _refine(sim, data, 8)
    info = ref.model_step_info
    print(info)
    assert info["step"] == 8 and info["shift_end"] > 0.1 and info.get("refit_full")
    for name in ("thickness", "U(2,2,0)"):
        assert abs(fast.value(name) - slow.value(name)) < 0.1 * slow.esd(name), name


def test_no_rediagonalisation_without_free_structure_factors(lacbed):
    """Thickness alone: one diagonalisation for the whole fit (regression: every
    Jacobian used to re-solve); with a structure factor free, LM trial steps compute
    the derivatives ahead, so an accepted step costs one solve."""
    sim, data, _ = lacbed
    _, res = _refine(sim, data, 1, free_u=False)
    assert res.n_iterations >= 2 and res.n_solves == 1
    _, res = _refine(sim, data, 1)
    assert res.n_solves <= res.n_iterations + 2


def test_model_step_is_checked(lacbed):
    sim, data, _ = lacbed
    for bad in (0, -1, 1.5, "fine", True):
        with pytest.raises(InputError, match="model_step"):
            Refinement(sim, data, model_step=bad)


def test_coarse_field_uses_the_pattern_symmetry_exactly():
    """A field centred on the zone axis is solved at its symmetry-irreducible directions
    only (2mm of Si [1-10]: about a quarter) and expands to the full solution."""
    from qcbed.refine.coarse import CoarseRefinement

    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    sim = Simulation(cr, 200, [1, -1, 0], [0, 0, -1], gmax=1.2, smax=0.02, kt_radius=0.1,
                     holz=False, mode="fast", accuracy=None,
                     potential=PotentialModel("kirkland", "bird_king"))
    tpl = np.ones((len(sim.outputs), 9, 9))
    co = CoarseRefinement(sim, tpl, sim.outputs, 0.006, (0.0, 0.0), 800.0, margin=3)
    field = co.simulated_field(800.0)
    assert co._reduction is not None
    n_rep, n_pts = len(co._reduction.representatives), co._grid.points.shape[0]
    assert n_rep < 0.3 * n_pts
    full = sim.solve(co._grid.points).intensities([800.0])[0][:, co.out_idx]
    assert np.max(np.abs(field - co._grid.to_image(full.T))) < 1e-9
    # off the zone axis there is nothing to reduce: every direction is solved
    off = CoarseRefinement(sim, tpl, sim.outputs, 0.006, (0.0123, 0.0071), 800.0, margin=3)
    off.simulated_field(800.0)
    assert off._reduction is None
