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

from qcbed.bloch import Simulation
from qcbed.bloch.beams import BeamPool, BeamSelection
from qcbed.bloch.convergence import sample_directions
from qcbed.bloch.solver import solve_chunk
from qcbed.bloch.tail import build_tail
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel

RADIUS, T = 0.25, [1200.0]


def _si() -> Crystal:
    a = 5.4307
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125, 0.125, 0.125), b_iso=0.47)],
                   "F d -3 m :2")


def _gaas() -> Crystal:
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25, 0.25, 0.25), b_iso=0.5)], 216)


def _sim(crystal, smax: float, gmax: float, mode: str = "fast") -> Simulation:
    return Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1], smax=smax, gmax=gmax,
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=RADIUS,
                      selection=BeamSelection.all_strong(), executor="serial", accuracy=None,
                      mode=mode)


def _tail(sim: Simulation, smax: float, gmax: float):
    big = BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=gmax, smax=smax,
                             kt_radius=RADIUS, holz=True)
    have = {tuple(h) for h in sim.pool.hkl}
    out = np.array([tuple(h) not in have for h in big.hkl])
    return build_tail(sim.pool.hkl, big.hkl[out], big.g[out], sim._compute_u, k_in=sim.k_in,
                      normal=sim.frame.normal_frame, center=(0.0, 0.0), radius=RADIUS)


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
