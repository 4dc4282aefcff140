"""The cheaper set-up of the pool's tail (qcbed.bloch.tail, issue 12 item 8).

The tail's exact terms use one N × M × M product per direction when Z_{−g} = Z_g
(centrosymmetric Si), build the Z blocks from the distinct hkl differences (a
flag table, a store shared by the sources of one convergence walk, round-off of
forbidden differences flushed to zero) and solve the sample directions in one
batch. Each is checked here against the general path: the products of the
docstring formula in double precision from structure factors computed pair by
pair, and the whole convergence walk with every shortcut switched off.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from crystals import gaas as _gaas
from crystals import si as _si
from qcbed.bloch import Simulation
from qcbed.bloch import convergence as conv_mod
from qcbed.bloch import tail as tail_mod
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.geometry import excitation_errors, normal_components
from qcbed.bloch.setup import tail_source
from qcbed.scattering.structure_factors import PotentialModel

RADIUS = 0.25


def _sim(crystal, gmax: float, **kw) -> Simulation:
    kw = {"smax": 0.05, "selection": BeamSelection.all_strong(), "accuracy": None} | kw
    return Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1], gmax=gmax,
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=RADIUS,
                      executor="serial", **kw)


def _source(sim: Simulation, smax: float, gmax: float):
    return tail_source(sim._internal, sim.frame, sim.k_in, sim.pool_settings, sim.pool,
                       sim._compute_u, smax=smax, gmax=gmax)


def _reference_terms(sim: Simulation, src, kt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W and S of the docstring formula in double precision, Z pair by pair."""
    pool, tail = sim.pool.hkl, src._tail_hkl
    allh = np.vstack([pool, tail])
    diff = allh[:, None, :] - allh[None, :, :]
    uniq, inv = np.unique(diff.reshape(-1, 3), axis=0, return_inverse=True)
    u, ua = sim._compute_u(uniq)
    z = (np.asarray(u, complex) + 1j * np.asarray(ua, complex))[inv.reshape(-1)]
    z = z.reshape(len(allh), len(allh))
    n = len(pool)
    z_sw, z_ws, o = z[:n, n:], z[n:, :n], z[n:, n:].copy()
    np.fill_diagonal(o, 0.0)
    x = excitation_errors(src.g_tail, kt[None, :], sim.k_in)[0]
    k_n, g_n = normal_components(src.g_tail, kt[None, :], sim.k_in, sim.frame.normal_frame)
    m2 = 1.0 + g_n / k_n[0]
    left, right = z_sw / x[None, :], z_ws / x[:, None]
    w = left @ z_ws - left @ o @ right
    s = ((left - left @ o / x[None, :]) * m2[None, :]) @ (right - o @ right / x[:, None])
    return w, s


@pytest.mark.parametrize("crystal,symmetric", [(_si, True), (_gaas, False)])
def test_exact_terms_match_the_double_precision_formula(crystal, symmetric):
    sim = _sim(crystal, 2.0)
    src = _source(sim, 0.4, 2.0)
    assert src._blocks[3] is symmetric          # Z_{-g} = Z_g only for centrosymmetric Si
    for kt in np.array([[0.0, 0.0], [0.2, -0.13]]):
        w_ref, s_ref = _reference_terms(sim, src, kt)
        w, s = src.exact(kt)
        dw = np.abs(w - w_ref).max() / np.abs(w_ref).max()
        ds = np.abs(s - s_ref).max() / np.abs(s_ref).max()
        print(crystal.__name__, src.n_beams, f"W {dw:.1e} S {ds:.1e}")
        assert dw <= 2e-5 and ds <= 2e-5


def test_symmetric_shortcut_equals_the_general_products():
    # on Si both paths are valid: the one-product shortcut against the two products
    sim = _sim(_si, 2.0)
    src = _source(sim, 0.4, 2.0)
    *blocks, symmetric = src._blocks
    assert symmetric
    kt = np.array([0.11, 0.07])
    args = (src.g_tail, kt, src.k_in, src.normal)
    w1, s1 = tail_mod._exact_terms(*blocks, *args, True)
    w2, s2 = tail_mod._exact_terms(*blocks, *args, False)
    assert np.abs(w1 - w2).max() <= 1e-5 * np.abs(w2).max()
    assert np.abs(s1 - s2).max() <= 1e-5 * np.abs(s2).max()


@pytest.mark.parametrize("crystal", [_si, _gaas])
def test_z_blocks_are_the_structure_factors_of_the_differences(crystal):
    sim = _sim(crystal, 2.0)
    src = _source(sim, 0.4, 2.0)
    z_sw, z_ws, o, _ = src._blocks
    pool, tail = sim.pool.hkl, src._tail_hkl
    rng = np.random.default_rng(3)
    i, j = rng.integers(0, len(pool), 50), rng.integers(0, len(tail), 50)
    a, b = rng.integers(0, len(tail), 50), rng.integers(0, len(tail), 50)
    for got, hkl in ((z_sw[i, j], pool[i] - tail[j]), (z_ws[j, i], tail[j] - pool[i]),
                     (o[a, b], tail[a] - tail[b])):
        u, ua = sim._compute_u(hkl)
        want = np.asarray(u, complex) + 1j * np.asarray(ua, complex)
        want[np.all(hkl == 0, axis=1)] = 0.0        # O has a zero diagonal
        assert np.abs(got - want).max() <= 1e-6 * np.abs(z_sw).max()
    assert np.all(np.diag(o) == 0)
    if crystal is _si:                              # forbidden 200-type differences: 0
        forb = (tail[:, None] - tail[None, :])[:40, :40].reshape(-1, 3)
        even = np.all(forb % 2 == 0, axis=1) & (forb.sum(1) % 4 == 2)
        assert even.any() and np.all(o[:40, :40].reshape(-1)[even] == 0)


def test_sorted_differences_give_the_same_blocks(monkeypatch):
    # large cells (Miller indices beyond the flag table) sort the differences instead
    sim = _sim(_gaas, 2.0)
    flags = _source(sim, 0.4, 2.0)._blocks
    monkeypatch.setattr(tail_mod, "_MAX_FLAGS", 0)
    sorted_ = _source(sim, 0.4, 2.0)._blocks
    assert flags[3] is sorted_[3] is False
    for a, b in zip(flags[:3], sorted_[:3]):
        assert np.array_equal(a, b)


def test_coupling_store_is_shared_within_one_potential_only():
    sim = _sim(_si, 2.0)
    calls: list[int] = []

    def counting(hkl):
        calls.append(len(hkl))
        return sim._compute_u(hkl)

    base = tail_source(sim._internal, sim.frame, sim.k_in, sim.pool_settings, sim.pool,
                       counting, smax=0.4, gmax=2.0)
    grown = tail_source(sim._internal, sim.frame, sim.k_in, sim.pool_settings, sim.pool,
                        counting, smax=0.8, gmax=2.0)
    alone = _source(sim, 0.8, 2.0)
    assert base._blocks[3]
    held = len(base._store)
    grown.share_couplings(base)
    assert grown._blocks[3]
    # the grown tail computes only the differences the base tail did not have
    assert calls[0] == held and calls[1] == len(base._store) - held
    for a, b in zip(grown._blocks, alone._blocks):
        assert np.array_equal(a, b)
    assert 0 < calls[1] < len(alone._store)
    # another set-up (a variant with its own structure factors) never shares a store
    variant = sim.with_changes(potential=PotentialModel("kirkland", "none"))
    other = _source(variant, 0.8, 2.0)
    with pytest.raises(ValueError, match="different potentials"):
        other.share_couplings(base)
    with pytest.raises(ValueError, match="already built"):
        alone.share_couplings(_source(sim, 0.8, 2.0))


def test_walk_matches_the_general_path(monkeypatch):
    # the whole convergence walk with the tail (tail=True) against the same walk with
    # every shortcut off: two products per direction, no flush, no shared store, one
    # direction per solve (the path before the speed-up)
    def build():
        return Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1], gmax=1.6, kt_radius=0.1,
                          potential=PotentialModel("kirkland", "bird_king"),
                          executor="serial", tail=True)

    fast = build()

    def general_blocks(store, pool_hkl, tail_hkl):
        return (*plain(store, pool_hkl, tail_hkl)[:3], False)

    def per_direction(frame, pool, table, rules, src, kt, thickness):
        arrays = conv_mod._arrays(frame, pool, table, rules)
        out = []
        for k in kt:
            arrays.tail = src.at(k)
            out.append(conv_mod._intensities(arrays, k[None, :], thickness)[0])
        return np.concatenate(out, axis=1)

    plain = tail_mod._z_blocks
    monkeypatch.setattr(tail_mod, "_z_blocks", general_blocks)
    monkeypatch.setattr(tail_mod, "_FLUSH", 0.0)
    monkeypatch.setattr(tail_mod.TailSource, "share_couplings", lambda self, other: None)
    monkeypatch.setattr(conv_mod, "_exact_tail_intensities", per_direction)
    slow = build()
    a, b = fast.convergence, slow.convergence
    print(f"selection {a.error:.4e}/{b.error:.4e} pool {a.pool_error:.4e}/{b.pool_error:.4e} "
          f"fit {a.tail['fit_error']:.4e}/{b.tail['fit_error']:.4e}")
    # the same walk (the numbers in the steps aside) and the same choices
    def words(steps):
        # (the walk's work line counts the general path's two products per direction)
        return [re.sub(r"\d\.\de[-+]\d\d", "#", st) for st in steps
                if not st.startswith("tail walk: work")]

    assert words(a.steps) == words(b.steps) and a.sgmin == b.sgmin
    assert len(fast.pool) == len(slow.pool) and a.tail["beams"] == b.tail["beams"]
    # reported errors to 1 % or 10⁻⁵ (10⁻² of the target: the tail's fit error here is
    # 10⁻⁶, round-off of single precision)
    for x, y in ((a.error, b.error), (a.pool_error, b.pool_error),
                 (a.tail["fit_error"], b.tail["fit_error"]),
                 (a.tail["growth_error"], b.tail["growth_error"])):
        assert x == pytest.approx(y, rel=1e-2, abs=1e-5)
    assert fast.tail.coef.shape == slow.tail.coef.shape
    assert np.abs(fast.tail.coef - slow.tail.coef).max() <= 1e-5 * np.abs(slow.tail.coef).max()


def test_threaded_exact_terms_equal_the_serial_ones(monkeypatch):
    """The set-up's directions run on threads (TailSource.exact_many): the same W
    and S, in the order of the directions, as one direction after another — to the
    round-off of the single-precision products (the threads run BLAS on one thread
    each, the serial path on the library's own, which sums in another order)."""
    sim = _sim(_si, 2.0)
    src = _source(sim, 0.4, 2.0)
    kts = np.array([[0.0, 0.0], [0.2, -0.13], [-0.1, 0.05], [0.07, 0.21]])
    monkeypatch.setattr(tail_mod, "set_up_threads", lambda: 3)
    threaded = src.exact_many(kts)
    monkeypatch.setattr(tail_mod, "set_up_threads", lambda: 1)
    serial = src.exact_many(kts)
    one_by_one = [src.exact(k) for k in kts]
    for (w, s), (w1, s1), (w2, s2) in zip(threaded, serial, one_by_one):
        for a, b in ((w, w2), (s, s2)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(s1, s2)
    # the directions differ, so an order mix-up would show
    assert np.abs(threaded[0][0] - threaded[1][0]).max() > 1e-6


def test_set_up_threads_hold_blas_to_one_thread_each(monkeypatch):
    """n Python threads each with the BLAS library's own threads oversubscribe the cores
    (the Si D-LACBED set-up: 158 s wall with two OpenBLAS threads per Python thread on
    2 cores, 111 s with one): while the set-up's threads run, BLAS has one thread; the
    caller's setting is restored afterwards; the results come back in order."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}

    if not blas_threads():
        pytest.skip("no BLAS library seen by threadpoolctl")
    monkeypatch.setattr(tail_mod, "set_up_threads", lambda: 2)
    with threadpool_limits(limits=2, user_api="blas"):
        outer = blas_threads()
        seen = tail_mod.on_set_up_threads(lambda x: (x, blas_threads()), range(5))
        after = blas_threads()
    assert [x for x, _ in seen] == list(range(5))
    assert all(b == {1} for _, b in seen), seen
    assert after == outer
    # one thread: nothing is changed
    monkeypatch.setattr(tail_mod, "set_up_threads", lambda: 1)
    with threadpool_limits(limits=2, user_api="blas"):
        assert tail_mod.on_set_up_threads(lambda x: blas_threads(), [0]) == [outer]


def test_threaded_checks_equal_the_serial_ones(monkeypatch):
    """The convergence checks solve each direction alone on the set-up's threads: the
    intensities do not depend on the number of threads (to round-off)."""
    sim = _sim(_si, 2.0)
    kt = sim._check_kt[:6]
    t = np.array([800.0, 1500.0])
    monkeypatch.setattr(tail_mod, "set_up_threads", lambda: 3)
    threaded, n3 = conv_mod._intensities(sim.arrays, kt, t)
    monkeypatch.setattr(tail_mod, "set_up_threads", lambda: 1)
    serial, n1 = conv_mod._intensities(sim.arrays, kt, t)
    assert threaded.shape == (2, 6, sim.pool.n_out) and n3 == n1
    np.testing.assert_allclose(threaded, serial, rtol=0, atol=1e-12)
    # the directions differ, so an order mix-up would show
    assert np.abs(serial[:, 0] - serial[:, 1]).max() > 1e-3
