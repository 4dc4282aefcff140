"""The pool's tail: beams outside the pool eliminated to second order (qcbed.bloch.tail).

Every pool beam strong, so that only the pool's extent differs: the default pool
(s_max 0.05 Å⁻¹, g_max 3 Å⁻¹) with the tail of the beams up to (s_max, g_max) =
(0.4, 3) must reproduce the 0.4-pool itself (all of those beams strong) to 10⁻³
of the maximum intensity, for centrosymmetric Si and non-centrosymmetric GaAs;
without the tail the default pool is several 10⁻³ away, so the test can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from crystals import gaas as _gaas
from crystals import si as _si
from qcbed.bloch import Simulation
from qcbed.bloch import tail as tail_module
from qcbed.bloch.beams import BeamPool, BeamSelection
from qcbed.bloch.convergence import sample_directions
from qcbed.bloch.solver import solve_chunk
from qcbed.bloch.tail import build_tail, fit_on_rows
from qcbed.scattering.structure_factors import PotentialModel

RADIUS, T = 0.25, [1200.0]




def _sim(crystal, smax: float, gmax: float, mode: str = "fast") -> Simulation:
    return Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1], smax=smax, gmax=gmax,
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=RADIUS,
                      selection=BeamSelection.all_strong(), executor="serial", accuracy=None,
                      mode=mode)


def _tail(sim: Simulation, smax: float, gmax: float, radius: float = RADIUS):
    """The tail of ``sim``'s pool up to (smax, gmax) fitted over a disc of ``radius``."""
    big = BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=gmax, smax=smax,
                             kt_radius=radius, holz=True)
    have = {tuple(h) for h in sim.pool.hkl}
    out = np.array([tuple(h) not in have for h in big.hkl])
    return build_tail(sim.pool.hkl, big.hkl[out], big.g[out], sim._compute_u, k_in=sim.k_in,
                      normal=sim.frame.normal_frame, center=(0.0, 0.0), radius=radius)


@pytest.mark.parametrize("crystal,gmax", [(_si, 3.0), (_gaas, 2.5)])
def test_default_pool_with_tail_matches_the_larger_pool(crystal, gmax):
    kt = sample_directions((0.0, 0.0), RADIUS)[[0, 2, 7, 12]]
    small = _sim(crystal, 0.05, gmax)
    ref = solve_chunk(_sim(crystal, 0.4, gmax).arrays, kt).intensities(T)
    arrays = small.arrays
    bare = solve_chunk(arrays, kt).intensities(T)
    arrays.tail = _tail(small, 0.4, gmax)
    corrected = solve_chunk(arrays, kt).intensities(T)
    err_bare = float(np.max(np.abs(bare - ref)) / np.max(ref))
    err_tail = float(np.max(np.abs(corrected - ref)) / np.max(ref))
    print(crystal.__name__, len(small.pool), "beams + tail", arrays.tail.n_beams,
          f"bare {err_bare:.1e} tail {err_tail:.1e} fit misfit {arrays.tail.fit_error:.1e}")
    assert err_tail <= 1e-3
    assert err_bare > 3 * err_tail
    assert arrays.tail.fit_error < 0.02


def test_tail_same_in_exact_and_fast_mode():
    # the tail's change of the pattern is the same in both solvers (they differ by
    # ~10⁻⁴ of their own: the perturbative absorption of ``fast``)
    kt = sample_directions((0.0, 0.0), RADIUS)[[0, 9]]
    fast = _sim(_gaas, 0.05, 2.5)
    tail = _tail(fast, 0.2, 2.5)
    change = []
    for sim in (fast, fast.with_changes(mode="exact")):
        arrays = sim.arrays
        bare = solve_chunk(arrays, kt).intensities(T)
        arrays.tail = tail
        change.append(solve_chunk(arrays, kt).intensities(T) - bare)
    size = np.max(np.abs(change[1]))
    print(f"tail change {size:.1e}, fast vs exact {np.max(np.abs(change[0] - change[1])):.1e}")
    assert size > 1e-3
    assert np.max(np.abs(change[0] - change[1])) <= 0.02 * size


def test_tail_enters_the_state_fingerprint():
    from qcbed.parallel._state import fingerprint

    sim = _sim(_si, 0.05, 2.0)
    tail = _tail(sim, 0.2, 2.0)
    arrays = sim.arrays
    arrays.tail = tail
    first = fingerprint(arrays)
    coef = tail.coef.copy()
    coef[0, 0, 0, 5, 7] += 1e-6              # a value numpy's repr would not show
    arrays.tail = type(tail)(tail.center, tail.radius, coef, tail.n_beams,
                             tail.fit_error, tail.size)
    assert fingerprint(arrays) != first


def test_exact_derivatives_with_the_tail_match_finite_differences():
    sim = _sim(_gaas, 0.05, 2.5, mode="exact").with_changes(
        selection=BeamSelection(sgmin=2.0, omega=30.0))
    arrays = sim.arrays
    arrays.tail = _tail(sim, 0.2, 2.5)
    rows = sim.table.lookup([[1, 1, 1], [-1, -1, -1]])
    du = np.zeros((1, len(arrays.u)), complex)
    du[0, rows] = 1.0
    kt = np.array([[0.05, 0.03], [0.1, -0.12]])
    _, grad, _ = solve_chunk(arrays, kt, derivatives=(du, np.zeros_like(du))).gradients(T[0])
    step, fd = 1e-6, []
    for sgn in (1.0, -1.0):
        arrays.u[rows] += sgn * step
        arrays.refresh()
        fd.append(solve_chunk(arrays, kt).intensities(T)[0])
        arrays.u[rows] -= sgn * step
    fd = (fd[0] - fd[1]) / (2 * step)
    assert np.max(np.abs(grad[:, 0] - fd)) <= 1e-5 * np.max(np.abs(fd))


def test_tiles_beat_one_fit_on_a_wide_range():
    # a 0.6 Å⁻¹ disc: 7 tiles of half the radius fit the tail better than one cubic,
    # both measured against the tail computed exactly at each sample direction
    from qcbed.bloch.convergence import _arrays, _error, _exact_tail_intensities, _intensities
    from qcbed.bloch.setup import tail_source

    radius = 0.6
    sim = Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05, gmax=2.0,
                     potential=PotentialModel("kirkland", "bird_king"), kt_radius=radius,
                     executor="serial", accuracy=None)
    frame, strong = (sim.k_in, sim.frame.normal_frame), BeamSelection.all_strong()
    kt, t = sample_directions((0.0, 0.0), radius), np.array([1200.0])
    src = tail_source(sim._internal, sim.frame, sim.k_in, sim.pool_settings, sim.pool,
                      sim._compute_u, smax=0.4, gmax=2.0)
    exact = _exact_tail_intensities(frame, sim.pool, sim.table, strong, src, kt, t)
    bare = _intensities(_arrays(frame, sim.pool, sim.table, strong), kt, t)[0]
    err, misfit = [], []
    for tiles in (1, 2):
        fit = src.fit((0.0, 0.0), radius, tiles=tiles)
        assert fit.n_tiles == (1 if tiles == 1 else 7)
        err.append(_error(_intensities(_arrays(frame, sim.pool, sim.table, strong, fit), kt,
                                       t)[0], exact))
        misfit.append(fit.fit_error)
    print(f"tail changes {_error(bare, exact):.1e}; fit error one {err[0]:.1e}, "
          f"7 tiles {err[1]:.1e}; W misfit {misfit[0]:.1e} / {misfit[1]:.1e}")
    assert _error(bare, exact) > 1e-3            # the tail matters here
    assert err[1] < err[0] / 3 and misfit[1] < misfit[0] / 3
    assert err[1] <= 1e-5


def test_tile_centers_cover_the_disc():
    from qcbed.bloch.tail import tile_centers

    rng = np.random.default_rng(1)
    p = rng.uniform(-1, 1, (4000, 2))
    p = p[np.hypot(*p.T) <= 1] * 0.7 + [0.1, -0.2]
    for tiles, n in ((1, 1), (2, 7), (3, 19)):
        c, rho = tile_centers((0.1, -0.2), 0.7, tiles)
        assert len(c) == n and rho == pytest.approx(0.7 / tiles)
        nearest = np.sqrt(((p[:, None] - c[None]) ** 2).sum(-1)).min(1)
        assert nearest.max() <= rho * (1 + 1e-9)


def test_engine_pool_error_with_the_tail_is_true():
    # the engine with its tail (tail=True): pool + tail, the pool error measured with it
    # (the walk grows both from g_max 1.6 here: to the tail's s_max 1.6, the old "much
    # larger pool" of this test). The pattern must be within its reported errors and
    # within 10⁻³ of the pool of the tail's extent with every beam strong (no
    # second-order terms), which the same pool without the tail is not
    from qcbed.bloch.convergence import _arrays, _error, _intensities
    from qcbed.bloch.potential import PotentialTable

    gmax, radius = 1.6, 0.1
    sim = Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1], gmax=gmax, kt_radius=radius,
                     potential=PotentialModel("kirkland", "bird_king"), executor="serial",
                     tail=True)
    conv = sim.convergence
    assert conv.tail is not None and conv.tail["beams"] > 0 and conv.pool_error is not None
    # the --all-strong reference (with_changes) keeps the same pool and tail
    assert sim.with_changes(selection=BeamSelection.all_strong()).arrays.tail is sim.tail
    kt, t = sim._check_kt[[0, 2, 7, 12]], np.asarray(sim.check_thickness)
    frame = (sim.k_in, sim.frame.normal_frame)
    got = solve_chunk(sim.arrays, kt).intensities(t)
    bare = sim.arrays
    bare.tail = None
    no_tail = solve_chunk(bare, kt).intensities(t)
    big = BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=conv.tail["gmax"],
                             smax=conv.tail["smax"], kt_radius=radius,
                             outputs=sim.pool.outputs, holz=True)
    ref = _intensities(_arrays(frame, big, PotentialTable.build(big.hkl, sim._compute_u),
                               BeamSelection.all_strong()), kt, t)[0]
    near = (_error(got, ref), _error(no_tail, ref))
    print(f"pool {len(sim.pool)} + tail {conv.tail['beams']} vs {len(big)} all strong: "
          f"{near[0]:.1e}, without the tail {near[1]:.1e}; reported: selection "
          f"{conv.error:.1e}, pool {conv.pool_error:.1e}")
    assert near[0] <= 1e-3 and near[1] > 3 * near[0]
    assert near[0] <= conv.error + conv.pool_error


@pytest.mark.parametrize("union_limit", [tail_module.UNION_LIMIT, 0.5])
@pytest.mark.parametrize("square", [True, False])
def test_fit_on_rows_equals_the_polynomial_on_each_directions_rows(monkeypatch, square,
                                                                   union_limit):
    """Σ_j b_j C_j on each direction's rows (and columns) against the sum over the whole
    pool taken first and sliced per direction; the union's GEMM (overlapping strong sets)
    and the per-term path (union above the limit) alike."""
    monkeypatch.setattr(tail_module, "UNION_LIMIT", union_limit)
    rng = np.random.default_rng(3)
    n_pool, n_c, n = 40, 40 if square else 17, 9
    c = rng.normal(size=(4, 3, n_pool, n_c)).astype(np.float32)
    b = rng.normal(size=(6, 3)).astype(np.float32)
    # neighbouring directions: strong sets that share most rows, in any order
    base = rng.choice(n_pool, 12, replace=False)
    idx = np.stack([rng.permutation(rng.choice(base, n, replace=False)) for _ in b])
    got = fit_on_rows(b, c, idx, square=square)
    whole = np.einsum("dj,pjab->pdab", b.astype(float), c.astype(float))
    want = np.stack([whole[:, d][:, idx[d]][:, :, idx[d]] if square else whole[:, d][:, idx[d]]
                     for d in range(len(b))], axis=1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
