"""The cheaper forms of the default engine's per-direction work (issue 12 item 8) against
the plain formulas they replace: the pool's tail on a batch's rows from one GEMM on the
weak columns and element-major gathers (against TailCorrection.terms, a gather
per direction), real tail coefficients for a real potential, the inverse eigenvalue gaps
in real arithmetic, the fused norms of the a-posteriori bound and the Bethe terms'
diagonal handling. Each would fail if the fast form computed something else.
"""

from __future__ import annotations

import numpy as np
import pytest

from crystals import gaas as _gaas
from crystals import si as _si
from qcbed.bloch import Simulation, lowdin, tail
from qcbed.bloch import perturbation as P
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.solver import solve_chunk
from qcbed.bloch.xp import NUMPY
from qcbed.scattering.structure_factors import PotentialModel
from test_bloch_tail import _tail


def _sim(crystal, radius: float = 0.2) -> Simulation:
    return Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05, gmax=2.0,
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=radius,
                      selection=BeamSelection(sgmin=3.0, omega=30.0), executor="serial",
                      accuracy=None)


def _tiled_tail(sim: Simulation):
    """The tail computed exactly at three centres: three constant tiles."""
    from qcbed.bloch.setup import tail_source

    src = tail_source(sim._internal, sim.frame, sim.k_in, sim.pool_settings, sim.pool,
                      sim._compute_u, smax=0.4, gmax=2.0)
    return src.at(np.array([[0.0, 0.0], [0.1, 0.05], [-0.08, 0.1]]))


@pytest.mark.parametrize("crystal", [_si, _gaas], ids=["Si", "GaAs"])
@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
@pytest.mark.parametrize("tiled", [True, False], ids=["3 tiles", "10 terms"])
def test_tail_rows_match_the_per_direction_gather(crystal, exact, tiled):
    sim = _sim(crystal)
    if tiled:
        tl = _tiled_tail(sim)
        assert tl.n_tiles == 3
        kt = tl.center[[2, 0, 1, 2, 0]] + 1e-4             # directions in every tile
    else:
        tl = _tail(sim, 0.4, 2.0, 0.2)                      # one tile, a cubic fit
        assert tl.coef.shape[2] == 10
        kt = np.array([[0.0, 0.0], [0.12, -0.05], [-0.1, 0.15], [0.05, 0.17]])
    real = crystal is _si
    assert (tl.coef.dtype == np.float32) == real          # real potential: real store
    n_pool = len(sim.pool)
    rng = np.random.default_rng(11)
    n, n_w = 14, 25
    idx = np.stack([np.sort(rng.choice(n_pool, n, replace=False)) for _ in kt])
    wcols = np.sort(rng.choice(n_pool, n_w, replace=False))
    d = rng.uniform(0.1, 0.5, (len(kt), n_w)) * (rng.random((len(kt), n_w)) < 0.8)
    strong, rows, d2 = lowdin.tail_rows(tl, kt, idx, wcols, d, exact=exact, real=real)
    ref = tl.terms(kt, idx)                                 # (4, n_dir, n, n)
    tol = dict(rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    if exact:
        np.testing.assert_allclose(strong[0], ref[0] + 1j * ref[1], **tol)
        assert strong[1] is None
    else:
        np.testing.assert_allclose(strong[0], ref[0], **tol)
        np.testing.assert_allclose(strong[1], ref[1], **tol)
    np.testing.assert_allclose(strong[2], ref[2], **tol)
    np.testing.assert_allclose(strong[3], ref[3], **tol)
    n_pool = tl.coef.shape[-1]                              # (4, n_dir, N, N), whole pool
    full = tl.terms(kt, np.broadcast_to(np.arange(n_pool), (len(kt), n_pool)))
    r = np.arange(len(kt))[:, None, None]
    for part, sw, ww in ((0, rows.sw_el, rows.ww_el), (1, rows.sw_abs, rows.ww_abs)):
        np.testing.assert_allclose(sw, full[part][r, idx[:, :, None], wcols[None, None, :]],
                                   **tol)
        want = full[part][:, wcols[:, None], wcols[None, :]].copy()
        if part == 0 or not lowdin.WEAK_OWN_ABSORPTION:
            # the elastic diagonal is 2K S_w's shift (d); the absorptive one is kept
            want[:, np.arange(n_w), np.arange(n_w)] = 0.0
        np.testing.assert_allclose(ww, want, **tol)
    shift = full[0][:, wcols, wcols].real
    np.testing.assert_allclose(d2, d / (1.0 + d * shift), rtol=1e-6)
    assert np.all(d2[d == 0] == 0)
    # with the pool's tables: U + ΔA on the weak rows, the same shift and strong rows
    tables = lowdin.single_tables(sim.arrays.u, sim.arrays.u_abs, real)
    strong_p, rows_p, d3 = lowdin.tail_rows(tl, kt, idx, wcols, d, exact=exact, real=real,
                                            pool=(*tables, sim.arrays.index))
    assert rows_p.pool and not rows.pool
    np.testing.assert_array_equal(d3, d2)
    for a, b in zip(strong_p, strong):
        np.testing.assert_array_equal(a, b)
    ix = sim.arrays.index
    for tab, got, tl_sw, tl_ww in ((tables[0], rows_p, rows.sw_el, rows.ww_el),
                                   (tables[1], rows_p, rows.sw_abs, rows.ww_abs)):
        u_ww = tab.take(ix[np.ix_(wcols, wcols)])
        if tab is tables[0] or not lowdin.WEAK_OWN_ABSORPTION:
            u_ww[np.arange(n_w), np.arange(n_w)] = 0.0      # (U′₀ stays on O′'s diagonal)
        want_sw = tab.take(ix[idx[:, :, None], wcols[None, None, :]]) + tl_sw
        want_ww = u_ww + tl_ww
        g_sw, g_ww = (got.sw_el, got.ww_el) if tab is tables[0] else (got.sw_abs, got.ww_abs)
        np.testing.assert_allclose(g_sw, want_sw, rtol=1e-5, atol=1e-6 * np.abs(want_sw).max())
        np.testing.assert_allclose(g_ww, want_ww, rtol=1e-5, atol=1e-6 * np.abs(want_ww).max())


def test_real_potential_stores_real_tail_coefficients(monkeypatch):
    """Si's tail coefficients are real up to the float32 round-off of their computation;
    stored real (float32), the engine gives the same intensities as with the complex64
    store (TAIL_REAL_TOLERANCE 0 keeps it complex)."""
    sim = _sim(_si)
    real = _tail(sim, 0.4, 2.0, 0.2)
    monkeypatch.setattr(tail, "TAIL_REAL_TOLERANCE", 0.0)
    cplx = _tail(sim, 0.4, 2.0, 0.2)
    assert real.coef.dtype == np.float32 and cplx.coef.dtype == np.complex64
    size = np.abs(cplx.coef.real).max()
    assert 0 < np.abs(cplx.coef.imag).max() <= 1e-5 * size      # round-off, not physics
    np.testing.assert_array_equal(real.coef, cplx.coef.real)
    kt = np.array([[0.0, 0.0], [0.12, -0.05], [-0.1, 0.15]])
    arrays = sim.arrays
    got = []
    for tl in (real, cplx):
        arrays.tail = tl
        got.append(solve_chunk(arrays, kt).intensities([500.0, 1500.0, 3000.0]))
    assert np.abs(got[0] - got[1]).max() <= 1e-8 * got[1].max()


def test_inverse_gaps_real_arithmetic_matches_complex_division():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(3, 9)) + 1j * rng.uniform(0, 1e-3, (3, 9))
    h[1, 4] = h[1, 7]                                # exactly equal: 0, like the diagonal
    inv, mod = P._inverse_gaps(h, modulus=True)
    dh = h[:, None, :] - h[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(dh == 0, 0.0, 1.0 / dh)
    np.testing.assert_allclose(inv, want, rtol=1e-14, atol=0)
    np.testing.assert_allclose(mod, np.abs(want), rtol=1e-14, atol=0)
    assert inv[1, 4, 7] == 0 and inv[1, 7, 4] == 0
    np.testing.assert_array_equal(P._inverse_gaps(h), inv)
    hr = h.real.copy()                               # the real path
    inv_r, mod_r = P._inverse_gaps(hr, modulus=True)
    with np.errstate(divide="ignore"):
        want_r = np.where(dh.real == 0, 0.0, 1.0 / dh.real)
    np.testing.assert_allclose(inv_r, want_r, rtol=1e-14)
    np.testing.assert_allclose(mod_r, np.abs(want_r), rtol=1e-14)
    # the gap ratio and its modulus: real pim (no complex modulus) and complex pim
    pim = rng.normal(size=(3, 9, 9))
    for p in (pim, pim + 1j * rng.normal(size=pim.shape)):
        r, r_abs = P._gap_ratio(h, p)
        np.testing.assert_allclose(r, p * want, rtol=1e-14)
        np.testing.assert_allclose(r_abs, np.abs(p * want), rtol=1e-13)


@pytest.mark.parametrize("cplx", [False, True])
def test_squared_norms_of_rows_and_columns(cplx):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 7, 5))
    if cplx:
        x = x + 1j * rng.normal(size=x.shape)
    for axis in (1, 2):
        want = (np.abs(x) ** 2).sum(axis=axis)
        np.testing.assert_allclose(NUMPY.sq_norms(x, axis), want, rtol=1e-13)
        # a non-contiguous view (a transpose) gives the same
        xt = np.swapaxes(x, 1, 2)
        np.testing.assert_allclose(NUMPY.sq_norms(xt, 3 - axis), want, rtol=1e-13)
    re, im = rng.normal(size=(2, 3, 3))
    np.testing.assert_array_equal(NUMPY.complex_from(re, im), re + 1j * im)


@pytest.mark.parametrize("single", [False, True])
def test_bethe_terms_ignore_and_keep_the_weak_diagonal(single):
    """The elastic weak–weak block's diagonal takes no part (it is 2K S_w's place), the
    absorptive one is the weak beams' own absorption (lowdin.WEAK_OWN_ABSORPTION), and a
    caller's blocks are not written to: with and without an elastic diagonal, same terms;
    with and without the absorptive one, different ones."""
    rng = np.random.default_rng(8)
    n_dir, n, n_w = 3, 5, 7
    u_sw, ua_sw = rng.normal(size=(2, n_dir, n, n_w)) * 1e-2
    u_ww, ua_ww = rng.normal(size=(2, n_dir, n_w, n_w)) * 1e-2
    u_ww, ua_ww = u_ww + np.swapaxes(u_ww, 1, 2), ua_ww + np.swapaxes(ua_ww, 1, 2)
    d = rng.uniform(0.1, 0.4, (n_dir, n_w))
    m_w2 = rng.uniform(1.0, 1.01, (n_dir, n_w))
    keep = u_ww.copy(), ua_ww.copy()
    with_diag = lowdin.bethe_terms(u_sw, ua_sw, u_ww, ua_ww, d, m_w2, single=single,
                                   energy2=True)
    np.testing.assert_array_equal(u_ww, keep[0])
    np.testing.assert_array_equal(ua_ww, keep[1])
    ar = np.arange(n_w)
    zero = [x.copy() for x in keep]
    zero[0][:, ar, ar] = 0.0
    without = lowdin.bethe_terms(u_sw, ua_sw, *zero[:1], zero[1], d, m_w2, single=single,
                                 energy2=True)
    for a, b in zip(with_diag, without):
        np.testing.assert_allclose(a, b, rtol=1e-6 if single else 1e-13, atol=0)
    no_own = zero[1].copy()
    no_own[:, ar, ar] = 0.0
    dropped = lowdin.bethe_terms(u_sw, ua_sw, zero[0], no_own, d, m_w2, single=single)
    assert np.abs(dropped[1] - with_diag[1]).max() > 1e-3 * np.abs(with_diag[1]).max()
    np.testing.assert_allclose(dropped[0], with_diag[0], rtol=1e-6 if single else 1e-13)
    # against the plain formulas (lowdin.bethe_terms docstring), double precision
    if not single:
        y, ya = u_sw * d[:, None, :], ua_sw * d[:, None, :]
        o, oa = zero
        tr = np.swapaxes
        p, pa = y @ o, y @ oa
        t = u_sw - p + (p * d[:, None, :]) @ o           # T = U (X⁻¹ − X⁻¹OX⁻¹ + …) X
        e_el = -t @ tr(y, 1, 2) + ya @ tr(ua_sw, 1, 2)
        tya = t @ tr(ya, 1, 2)
        ppa = (pa * d[:, None, :]) @ tr(p, 1, 2)
        e_abs = -(tya + tr(tya, 1, 2)) + pa @ tr(y, 1, 2) - (ppa + tr(ppa, 1, 2))
        zm = t * (d * m_w2)[:, None, :]                  # Z M_w², Z = T X⁻¹
        t2 = (zm * d[:, None, :]) @ tr(zm, 1, 2)
        np.testing.assert_allclose(with_diag[0], e_el, rtol=1e-12, atol=1e-18)
        np.testing.assert_allclose(with_diag[1], e_abs, rtol=1e-12, atol=1e-18)
        np.testing.assert_allclose(with_diag[4], t2, rtol=1e-12, atol=1e-18)
