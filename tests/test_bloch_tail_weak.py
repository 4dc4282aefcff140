"""The pool's tail on the weak rows of the Löwdin elimination (qcbed.bloch.lowdin.tail_rows).

The tail (the beams outside the pool, eliminated to second order, qcbed.bloch.tail) acts
on the strong–weak and weak–weak blocks and the weak diagonal 2K S_w too, not only on
the strong–strong block: with a Löwdin selection the path strong → weak → tail → strong
and the tail's shift of the weak beams' own 2K S_w are otherwise missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from crystals import gaas as _gaas
from crystals import si as _si
from qcbed.bloch import Simulation, lowdin, lowdin_jacobian, solver
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.convergence import sample_directions
from qcbed.bloch.solver import solve_chunk
from qcbed.scattering.structure_factors import PotentialModel
from test_bloch_fast_derivatives import _setup
from test_bloch_tail import _tail

T = [1200.0]


def _sim(crystal, smax: float, gmax: float, radius: float, selection: BeamSelection,
         mode: str = "fast") -> Simulation:
    return Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1], smax=smax, gmax=gmax,
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=radius,
                      selection=selection, executor="serial", accuracy=None, mode=mode)


def _error(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(x - ref)) / np.max(ref))


def _small_si_with_tail(kt: np.ndarray, ts: list[float]) -> tuple:
    """Si [1-10], disc 0.25 Å⁻¹: the 169-beam pool (s_max 0.05, g_max 3) at sgmin 3 with
    the tail of the beams up to s_max 0.4 (744), its engine arrays, and the intensities
    at ``kt`` and ``ts`` of the same pool + tail with every pool beam strong."""
    small = _sim(_si, 0.05, 3.0, 0.25, BeamSelection(sgmin=3.0, omega=30.0))
    tail = _tail(small, 0.4, 3.0, 0.25)
    strong = small.with_changes(selection=BeamSelection.all_strong()).arrays
    strong.tail = tail
    arrays = small.arrays
    arrays.tail = tail
    return small, arrays, solve_chunk(strong, kt).intensities(ts)


def test_tail_on_weak_rows_matches_the_larger_pool_diagonalised(monkeypatch):
    """Si [1-10], 200 kV, disc 0.25 Å⁻¹, 1200 Å, 4 sample directions: the 169-beam pool
    (s_max 0.05, g_max 3) with a Löwdin selection (sgmin 3, ~100 strong) + the tail of
    the 744 beams up to s_max 0.4 against the 913-beam pool with every beam strong.
    Measured (session 10 engine): 1.9 × 10⁻⁴ with the tail on the weak rows, 8.0 × 10⁻⁴
    with the tail on the strong rows only; against the pool + tail with every pool beam
    strong (the selection error): 1.1 × 10⁻⁴ and 7.3 × 10⁻⁴ (session 7's first-order
    engine: 4.5 / 11.5 and 3.8 / 10.7 × 10⁻⁴; 5.9 × 10⁻³ without a tail)."""
    radius = 0.25
    kt = sample_directions((0.0, 0.0), radius)[[0, 2, 7, 12]]
    ref = solve_chunk(_sim(_si, 0.4, 3.0, radius, BeamSelection.all_strong()).arrays,
                      kt).intensities(T)
    small, arrays, ref_same_pool = _small_si_with_tail(kt, T)
    err = {}
    for weak_rows in (False, True):
        monkeypatch.setattr(lowdin, "TAIL_ON_WEAK_ROWS", weak_rows)
        got = solve_chunk(arrays, kt)
        assert 0 < got.n_strong.max() < 0.7 * len(small.pool)    # a real Löwdin selection
        i = got.intensities(T)
        err[weak_rows] = (_error(i, ref), _error(i, ref_same_pool))
    print(f"vs 913 beams all strong: weak rows {err[True][0]:.1e}, strong rows only "
          f"{err[False][0]:.1e}; vs pool + tail all strong {err[True][1]:.1e} / "
          f"{err[False][1]:.1e}; pool + tail all strong {_error(ref_same_pool, ref):.1e}")
    assert err[True][0] <= 6e-4 and err[True][1] <= 6e-4
    assert err[False][0] > 2 * err[True][0] and err[False][1] > 2 * err[True][1]


def test_tail_overlap_on_the_weak_rows(monkeypatch):
    """The tail's Löwdin overlap on the strong–weak rows, −(S_t,Sw Z† + Z S_t,wS): the
    λ-dependence of the tail's coupling between strong and weak beams. Si [1-10] as above
    (sgmin 3: ~100 strong of 169, tail of 744 beams, 1200 Å), against the pool + tail with
    every pool beam strong — the error the beam selection makes, which the term had left
    inconsistent: the reference has S_t on every pool row. Measured on all 13 sample
    directions at 800/1200/2000 Å: sgmin 3: 4.7 → 1.3 × 10⁻⁴, sgmin 4: 2.0 × 10⁻⁴ →
    2.9 × 10⁻⁵; at sgmin 1.6–2 (errors 1–3 × 10⁻³, other truncations dominate) 1.1 →
    1.4 × 10⁻³. BaTiO₃ P6₃/mmc, whose tail is large: 1.8 × 10⁻² → 1.3 × 10⁻³ at sgmin 3.5
    (docs/validation.md). Also checks the term against its plain formula."""
    kt = sample_directions((0.0, 0.0), 0.25)
    ts = [800.0, 1200.0, 2000.0]
    small, arrays, ref = _small_si_with_tail(kt, ts)
    err = {}
    for on in (False, True):
        monkeypatch.setattr(lowdin, "TAIL_OVERLAP_ON_WEAK_ROWS", on)
        got = solve_chunk(arrays, kt)
        assert 0 < got.n_strong.max() < 0.7 * len(small.pool)
        err[on] = _error(got.intensities(ts), ref)
    print(f"tail overlap on the weak rows: {err[True]:.1e}, without {err[False]:.1e}")
    assert err[True] < 0.5 * err[False]
    # the plain formula: S gains −(S_t,Sw Z† + h.c.), S_abs −(S′_t,Sw Z† + h.c.)
    rng = np.random.default_rng(3)
    n_dir, n, n_w = 2, 5, 7
    u_sw, ua_sw = rng.normal(size=(2, n_dir, n, n_w)) * 0.01
    u_ww = rng.normal(size=(n_w, n_w)) * 0.01
    u_ww = u_ww + u_ww.T
    ua_ww = 0.1 * u_ww
    d = 1.0 / rng.uniform(2.0, 5.0, (n_dir, n_w))
    m_w2 = rng.uniform(1.0, 1.1, (n_dir, n_w))
    ov, ov_a = rng.normal(size=(2, n_dir, n, n_w)) * 1e-3
    base = lowdin.bethe_terms(u_sw, ua_sw, u_ww, ua_ww, d, m_w2)
    with_ov = lowdin.bethe_terms(u_sw, ua_sw, u_ww, ua_ww, d, m_w2, ov_el=ov, ov_abs=ov_a)
    o = u_ww - np.diag(np.diag(u_ww))
    p = (u_sw * d[:, None, :]) @ o
    z = (u_sw - p + (p * d[:, None, :]) @ o) * d[:, None, :]     # Z = (U − P + Q) X⁻¹
    for got, b, s_t in ((with_ov[2], base[2], ov), (with_ov[3], base[3], ov_a)):
        x = s_t @ np.swapaxes(z, 1, 2)
        np.testing.assert_allclose(got, b - x - np.swapaxes(x, 1, 2), rtol=1e-12, atol=1e-15)
    for k in (0, 1, 4):
        np.testing.assert_array_equal(with_ov[k], base[k])


def test_weak_row_tail_shifts_the_weak_diagonal():
    # the diagonal of ΔA on the weak rows moves 2K S_w: d = 1/(2K S_w + ΔA_ww)
    sim = _sim(_si, 0.05, 2.0, 0.2, BeamSelection(sgmin=3.0, omega=30.0))
    tail = _tail(sim, 0.4, 2.0, 0.2)
    kt = np.array([[0.05, -0.02], [0.1, 0.1]])
    arrays = sim.arrays
    kt_, two_k_sg, _, _, strong, weak = solver.prepare_directions(arrays, kt)
    idx = np.argsort(~strong, axis=1, kind="stable")[:, :strong.sum(1).min()]
    wcols = np.nonzero(weak.any(axis=0))[0]
    d = np.where(weak[:, wcols], 1.0 / two_k_sg[:, wcols], 0.0)
    _, rows, d2 = lowdin.tail_rows(tail, kt_, idx, wcols, d, exact=False, real=True)
    n_pool = len(sim.pool)
    full = tail.terms(kt_, np.broadcast_to(np.arange(n_pool), (len(kt_), n_pool)))[0].real
    shift = full[:, wcols, wcols]
    w = weak[:, wcols]
    np.testing.assert_allclose(d2[w], 1.0 / (two_k_sg[:, wcols][w] + shift[w]), rtol=1e-6)
    assert np.all(d2[~w] == 0)
    np.testing.assert_allclose(rows.sw_el, full[np.arange(2)[:, None, None], idx[:, :, None],
                                                wcols[None, None, :]], rtol=1e-6)
    assert np.all(np.diagonal(rows.ww_el, axis1=1, axis2=2) == 0)


@pytest.mark.parametrize("crystal", [_si, _gaas], ids=["Si", "GaAs"])
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_lowdin_derivatives_with_the_weak_row_tail(crystal, mode, monkeypatch):
    """The analytic Löwdin derivatives (lowdin_jacobian) against central differences of
    the whole transformation (lowdin.derivatives_central), with the tail on the weak rows
    (held constant under the structure factors), and the gradients of the intensities
    against finite differences of the engine."""
    sim, der = _setup(crystal)
    sim = sim.with_changes(mode=mode)
    arrays = sim.arrays
    tail = _tail(sim, 0.4, 2.0, 0.3)
    # the tail magnified (×30, still a small correction: |ΔA| ≲ 10⁻³ Å⁻²) so that its
    # share of the derivatives is far above the finite differences' error; the
    # algebra holds for any fixed addition
    arrays.tail = type(tail)(tail.center, tail.radius, 30 * tail.coef, tail.n_beams,
                             tail.fit_error, tail.size)
    kt = np.random.default_rng(7).uniform(-0.2, 0.2, (4, 2))
    calls = []

    def spy(fn):
        def wrapped(*a, **k):
            assert k.get("tail", a[-1] if len(a) > 14 else None) is not None
            calls.append(fn(*a, **k))
            return calls[-1]
        return wrapped

    monkeypatch.setattr(solver, "lowdin_derivatives", spy(lowdin_jacobian.derivatives))
    analytic = solve_chunk(arrays, kt, der)
    monkeypatch.setattr(solver, "lowdin_derivatives", spy(lowdin.derivatives_central))
    solve_chunk(arrays, kt, der)
    half = len(calls) // 2
    assert half >= 1
    for (da_a, l_a), (da_c, l_c) in zip(calls[:half], calls[half:]):
        assert np.abs(da_a - da_c).max() <= 1e-6 * np.abs(da_c).max()
        assert np.abs(l_a - l_c).max() <= 1e-6 * np.abs(l_c).max() + 1e-10
    # the gradients of the intensities against the engine's finite differences
    du, dua = der
    _, grad, _ = analytic.gradients(T[0])
    u0, ua0 = arrays.u.copy(), arrays.u_abs.copy()
    step = 1e-6
    for p in range(len(du)):
        fd = []
        for sgn in (1.0, -1.0):
            arrays.u[:] = u0 + sgn * step * du[p]
            arrays.u_abs[:] = ua0 + sgn * step * dua[p]
            arrays.refresh()
            fd.append(solve_chunk(arrays, kt).intensities(T)[0])
        arrays.u[:], arrays.u_abs[:] = u0, ua0
        arrays.refresh()
        fd = (fd[0] - fd[1]) / (2 * step)
        # fast: the perturbative absorption's own error (test_bloch_fast_derivatives)
        tol = 1e-5 if mode == "exact" else 2e-3
        assert np.max(np.abs(grad[:, p] - fd)) <= tol * np.max(np.abs(fd)), p


def test_weak_row_tail_same_in_exact_and_fast_mode(monkeypatch):
    # what the weak rows add to the strong-rows-only tail is the same in both solvers
    # (they differ by ~10⁻⁴ of their own: the perturbative absorption of ``fast``);
    # GaAs: complex U, U′, the exact solver's non-Hermitian U + iU′ blocks
    radius = 0.25
    kt = sample_directions((0.0, 0.0), radius)[[0, 9]]
    fast = _sim(_gaas, 0.05, 2.5, radius, BeamSelection(sgmin=3.0, omega=30.0))
    tail = _tail(fast, 0.4, 2.5, radius)
    change = []
    for sim in (fast, fast.with_changes(mode="exact")):
        arrays = sim.arrays
        arrays.tail = tail
        got = []
        for weak_rows in (False, True):
            monkeypatch.setattr(lowdin, "TAIL_ON_WEAK_ROWS", weak_rows)
            got.append(solve_chunk(arrays, kt).intensities(T))
        change.append(got[1] - got[0])
    size = np.max(np.abs(change[1]))
    diff = np.max(np.abs(change[0] - change[1]))
    print(f"weak rows change {size:.1e}, fast vs exact {diff:.1e}")   # 4.0e-4, 5.1e-7
    assert size > 2e-4
    assert diff <= 0.02 * size
