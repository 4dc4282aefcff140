"""The fast paths of the batched solver (issue 13) change no result.

Every speed path is held to the general complex solver (``exact``, LAPACK zgeev on
U + iU′ with the same beams): within 1e-4 of the maximum intensity, for a
centrosymmetric (Si) and a non-centrosymmetric (GaAs) crystal, with Bethe
potentials and Bird–King absorption. Batching and the real-arithmetic shortcuts
are checked against the plain formulas.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch import Simulation
from qcbed.bloch import solver as S
from qcbed.bloch.beams import BeamSelection
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel


def _si() -> Crystal:
    a = 5.4307
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125, 0.125, 0.125), b_iso=0.47)],
                   "F d -3 m :2")


def _gaas() -> Crystal:
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25, 0.25, 0.25), b_iso=0.5)], 216)


def _arrays(crystal: Crystal, mode: str) -> S.EngineArrays:
    sim = Simulation(crystal, 200.0, [1, -1, 0], [0, 0, -1],
                     potential=PotentialModel("kirkland", "bird_king"),
                     selection=BeamSelection(sgmin=1.0, omega=30.0, min_strong=30),
                     gmax=2.5, smax=0.03, kt_radius=0.3, mode=mode, executor="serial")
    return sim.arrays


KT = np.random.default_rng(13).uniform(-0.2, 0.2, (24, 2))
THICK = np.array([300.0, 800.0, 1500.0])


@pytest.mark.parametrize("crystal", [_si, _gaas], ids=["Si", "GaAs"])
def test_fast_paths_within_1e4_of_exact(crystal):
    fast = _arrays(crystal(), "fast")
    assert fast.real == (crystal is _si)   # real (centrosymmetric) and complex paths
    eig = S.solve_chunk(fast, KT)
    assert eig.n_weak.min() > 0 and eig.n_fallback == 0
    got = eig.intensities(THICK)
    ref = S.solve_chunk(_arrays(crystal(), "exact"), KT).intensities(THICK)
    err = np.abs(got - ref).max() / ref.max()
    print(crystal.__name__, f"fast vs exact {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("crystal", [_si, _gaas], ids=["Si", "GaAs"])
def test_batching_does_not_change_results(crystal, monkeypatch):
    arrays = _arrays(crystal(), "fast")
    whole = S.solve_chunk(arrays, KT).intensities(THICK)
    monkeypatch.setattr(S, "BATCH_ELEMENTS", 1)    # one direction per batch
    single = S.solve_chunk(arrays, KT).intensities(THICK)
    assert np.max(np.abs(whole - single)) < 1e-12


def test_size_batches_cover_every_direction_once_within_budget(monkeypatch):
    n_s = np.array([5, 7, 5, 5, 7, 5, 9])
    n_weak = np.array([20, 3, 40, 10, 2, 10, 1])
    monkeypatch.setattr(S, "BATCH_ELEMENTS", 420)
    batches = list(S._size_batches(n_s, n_weak))
    rows = np.sort(np.concatenate([r for _, r in batches]))
    assert rows.tolist() == list(range(len(n_s)))
    for n, r in batches:
        assert np.all(n_s[r] == n)
        assert len(r) == 1 or len(r) * n * max(n, n_weak[r].max()) <= 420
    assert [len(r) for n, r in batches if n == 5] == [2, 2]   # 420 // (5·40) = 2


def test_real_times_complex_and_adjoint():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((3, 5, 6)) + 1j * rng.standard_normal((3, 5, 6))
    np.testing.assert_allclose(S._real_times_complex(a, b), a @ b, rtol=0, atol=1e-13)
    # a non-contiguous right factor is fine too
    bt = np.swapaxes(rng.standard_normal((3, 6, 5)) + 1j * rng.standard_normal((3, 6, 5)), 1, 2)
    np.testing.assert_allclose(S._real_times_complex(a, bt), a @ bt, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(S._adjoint(b), np.conj(b.transpose(0, 2, 1)))
    assert np.shares_memory(S._adjoint(a), a)           # real: a transposed view


def test_weak_to_strong_blocks_are_adjoints_of_strong_to_weak():
    """The Bethe shortcut relies on U_{-g} = U_g* and U′_{-g} = U′_g* in the table."""
    for crystal in (_si(), _gaas()):
        arr = _arrays(crystal, "fast")
        for tab in (arr.u, arr.u_abs):
            np.testing.assert_allclose(tab[arr.index.T], np.conj(tab[arr.index]), rtol=0,
                                       atol=1e-14 * np.abs(tab).max())
