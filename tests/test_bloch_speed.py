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

from crystals import gaas as _gaas
from crystals import si as _si
from qcbed.bloch import Simulation
from qcbed.bloch import solver as S
from qcbed.bloch.beams import BeamSelection
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel


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


def _propagate(gam, bout, c, t):
    return np.einsum("dgj,dj->dg", bout, np.exp(2j * np.pi * gam * t) * c)


@pytest.mark.parametrize("real", [True, False], ids=["real", "complex"])
def test_second_order_clusters_are_solved_without_the_exact_fallback(real):
    """Waves 0 and 1 (gap 1e-7 Å⁻¹) are not coupled directly, but both to wave 2 (gap
    1e-3, coupling 2e-5): their second-order coupling (4e-7) exceeds their gap. The two similarity
    steps alone flag the direction for the general solver; the quasi-degenerate
    clusters between the steps solve it perturbatively, and it agrees with eig."""
    from qcbed.bloch import perturbation as P

    n, n_out = 8, 8
    lam = np.array([[0.0, 1e-4, 1.0, 2.0, 3.1, 4.2, 5.3, 6.4]]) * 1e-3
    q = np.diag(np.full(n, 1.2e-4))
    q[0, 2] = q[2, 0] = q[1, 2] = q[2, 1] = 2e-5
    q[3, 5] = q[5, 3] = 2e-5
    if not real:
        q = q.astype(complex)
        q[1, 2], q[2, 1] = 2e-5j, -2e-5j
    aabs = q[None]
    vec = np.eye(n)[None]
    c0 = np.full((1, n), n ** -0.5)
    kn2 = np.ones((1, 1))
    h = (lam + 1j * np.diag(q).real) / kn2
    pim = q[None] * (1 - np.eye(n))
    ratio = pim * P._inverse_gaps(h)
    assert np.abs(ratio).max() < P.CLUSTER_LIMIT          # no first-order cluster
    *_, flagged = P._jacobi_steps(h, pim, P._excitation_weight(c0.astype(complex)))
    assert flagged[0]                                      # the old path: exact fallback
    gam, bout, c, unsafe, _ = S._absorb_perturbatively(lam, vec, c0, aabs, kn2, n_out)
    assert not unsafe[0]
    ev, v = np.linalg.eig(np.diag(lam[0]) + 1j * q)
    ce = np.linalg.solve(v, c0[0])
    for t in (300.0, 1500.0, 3000.0):
        got = np.abs(_propagate(gam, bout, c, t)) ** 2
        ref = np.abs(_propagate(ev[None], v[None, :n_out], ce[None], t)) ** 2
        assert np.abs(got - ref).max() < 1e-4 * ref.max()


def _linbo3() -> Crystal:
    """LiNbO₃, R3c (hexagonal a = 5.1376, c = 13.8497 Å; Abrahams, Reddy & Bernstein 1966)."""
    return Crystal(Lattice(5.1376, 5.1376, 13.8497, 90.0, 90.0, 120.0),
                   [Site("Nb", "Nb", (0.0, 0.0, 0.0), b_iso=0.40),
                    Site("Li", "Li", (0.0, 0.0, 0.2829), b_iso=0.90),
                    Site("O", "O", (0.0492, 0.3446, 0.0647), b_iso=0.55)], "R 3 c:H")


THICK_3000 = np.array([300.0, 1000.0, 2000.0, 3000.0])


@pytest.fixture(scope="module")
def linbo3_pair():
    """LiNbO₃ near [1-10], 200 kV, Bird–King, ≥ 80 strong + ~380 Bethe beams (issue 13's
    Felix-like case): the fast engine, 256 directions over the tilt range and the
    ``exact`` intensities at 300–3000 Å on the same beams."""
    def arrays(mode):
        return Simulation(_linbo3(), 200.0, [1, -1, 0], [0, 0, 1],
                          potential=PotentialModel("kirkland", "bird_king"),
                          selection=BeamSelection(sgmin=0.3, omega=30.0, min_strong=80),
                          gmax=3.0, smax=0.05, kt_radius=0.5, min_pool=400, mode=mode,
                          executor="serial").arrays
    kt = np.random.default_rng(0).uniform(-0.3, 0.3, (256, 2))
    return arrays("fast"), kt, S.solve_chunk(arrays("exact"), kt).intensities(THICK_3000)


def test_fast_within_1e4_of_exact_noncentrosymmetric_to_3000A(linbo3_pair):
    """Goal 4 of issue 13 where it is hard: non-centrosymmetric LiNbO₃, 80 strong beams
    (complex Hermitian path, clusters in almost every direction), 256 directions,
    300–3000 Å. Before the fourth-order eigenvalue shifts and the a-posteriori bound
    (:data:`NEGLECTED_LIMIT`) five of these directions were off by up to 2.0·10⁻⁴."""
    fast, kt, ref = linbo3_pair
    eig = S.solve_chunk(fast, kt)
    assert eig.n_strong.min() >= 80 and eig.n_weak.min() > 300 and eig.n_fallback == 0
    err = np.abs(eig.intensities(THICK_3000) - ref).max(axis=(0, 2)) / ref.max()
    print(f"LiNbO3 fast vs exact: max {err.max():.2e}, median {np.median(err):.2e}")
    assert err.max() < 1e-4


def test_neglected_bound_is_what_holds_the_accuracy(linbo3_pair, monkeypatch):
    """Without the redo of flagged directions the same directions exceed 1e-4: the
    bound, not luck, keeps the test above green; and it flags few directions."""
    from qcbed.bloch import perturbation as P

    fast, kt, ref = linbo3_pair
    flagged = []
    steps = P._jacobi_steps

    def spy(*args):
        out = steps(*args)
        flagged.append(int(out[4].sum()))
        return out

    monkeypatch.setattr(P, "_jacobi_steps", spy)
    S.solve_chunk(fast, kt)
    assert 0 < sum(flagged) < len(kt) // 2
    monkeypatch.setattr(P, "NEGLECTED_LIMIT", np.inf)
    got = S.solve_chunk(fast, kt).intensities(THICK_3000)
    assert np.abs(got - ref).max() / ref.max() > 1.5e-4


def test_redone_second_step_agrees_on_numpy_and_torch(linbo3_pair, monkeypatch):
    """The redo path (untruncated second step, LU solve, third step) runs the same on torch."""
    torch = pytest.importorskip("torch")
    from qcbed.bloch import perturbation as P
    from qcbed.bloch.xp import TorchOps

    fast, kt, _ = linbo3_pair
    monkeypatch.setattr(P, "NEGLECTED_LIMIT", 0.0)      # every direction redone
    xp = TorchOps(torch, torch.device("cpu"))
    want = S.solve_chunk(fast, kt[:6]).intensities(THICK_3000)
    got = S.eigen_chunk(S.KernelTables.build(xp, fast), fast, kt[:6]).intensities(THICK_3000)
    assert np.abs(got - want).max() < 1e-10


def test_one_plus_solve_iterates_and_falls_back_to_lu():
    # (1 + S) x = b: the fixed-point iteration for small S, LU where it cannot converge
    from qcbed.bloch.perturbation import _solve_one_plus

    rng = np.random.default_rng(4)
    n = 30
    s = (rng.normal(size=(3, n, n)) + 1j * rng.normal(size=(3, n, n))) / np.sqrt(n)
    s[0] *= 0.02                       # converges in a few iterations
    s[1] *= 0.3                        # ~35 iterations needed: left to LU
    s[2] *= 3.0                        # diverges: LU
    ar = np.arange(n)
    s[:, ar, ar] = 0.0
    b = rng.normal(size=(3, n)) + 1j * rng.normal(size=(3, n))
    x = _solve_one_plus(s, b)
    one = s.copy()
    one[:, ar, ar] += 1.0
    ref = np.linalg.solve(one, b[..., None])[..., 0]
    assert np.abs(x - ref).max() <= 1e-12 * np.abs(ref).max()


def test_second_transform_is_the_similarity_to_its_stated_order():
    """H₂ = (1 + S₂)⁻¹ H₁ (1 + S₂) = diag(hd) + (1 + S₂)⁻¹ e S₂ exactly (the commutator
    cancels e); the kernel keeps R − S₂R of the Neumann series, so the difference from
    the full similarity is the tail S₂²(1 + S₂)⁻¹R. Fails if the commutator form were
    wrong (error of the size of e) or the series were cut after R alone."""
    from qcbed.bloch import perturbation as P

    rng = np.random.default_rng(5)
    n = 40
    hd = (np.linspace(-1.0, 1.0, n)[None, :] + 0.002 * rng.standard_normal((3, n))
          + 1j * rng.uniform(0, 1e-2, (3, n)))
    hd[1, 7] = hd[1, 3]                  # exactly equal diagonal: e there stays in H₂
    e = 5e-4 * (rng.standard_normal((3, n, n)) + 1j * rng.standard_normal((3, n, n)))
    e[:, np.arange(n), np.arange(n)] = 0.0
    s2 = e * P._inverse_gaps(hd)
    one = P._plus_one(s2)
    h1 = e + 0.0
    h1[:, np.arange(n), np.arange(n)] = hd
    full = np.linalg.solve(one, h1 @ one)
    h2 = P._second_transform(e, hd, s2)
    r = e @ s2 + e * (s2 == 0)
    tail = s2 @ s2 @ np.linalg.solve(one, r)
    np.testing.assert_allclose(h2 - full, -tail, atol=1e-13 * np.abs(full).max())
    assert np.abs(h2 - full).max() < 0.1 * np.abs(s2 @ r).max()   # R alone would not do
