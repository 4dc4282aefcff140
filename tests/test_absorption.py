"""Weickenmeier–Kohl factors and absorptive form factors against external numbers.

References: py4DSTEM 0.14.18 WK variants for Si at 200 kV (``refs/si_ug_py4dstem*``),
PyExtal's independent-atom U(1̄11), U′(1̄11) for Si at 300.66 kV, and internal
consistency (closed forms against numerical integrals, physical limits).
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
from scipy import integrate

from qcbed.constants import MOTT_BETHE_PREFACTOR, relativistic_gamma, wavelength
from qcbed.errors import InputError
from qcbed.scattering import absorption as ab
from qcbed.scattering import weickenmeier_kohl as wk
from qcbed.scattering.models import available_elastic_models, elastic_form_factor
from qcbed.scattering.structure_factors import PotentialModel

# Si, Fd-3m, 8 atoms, origin choice 1 (atom at 0,0,0) as in the py4DSTEM references
_FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
SI_O1 = np.vstack([_FCC, _FCC + 0.25])
SI_O2 = SI_O1 - 0.125  # origin choice 2 (inversion centre at the origin)


def geometric(hkl: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Σ_j exp(−2πi g·r_j) (qcbed phase convention)."""
    return np.exp(-2j * np.pi * np.asarray(hkl, float) @ frac.T).sum(axis=1)


def have(model: str) -> bool:
    return model in available_elastic_models()


# ------------------------------------------------------------------ WK table
def test_wk_table_and_registration():
    s = np.linspace(0.0, 3.0, 31)
    for sym, z in (("H", 1), ("Si", 14), ("Au", 79), ("Cf", 98)):
        a, b = wk.wk_parameters(sym)
        assert a.sum() == pytest.approx(0.02395 * z, abs=1e-9)
        f = wk.wk_elastic_form_factor(sym, s)
        assert f[0] == pytest.approx(np.sum(a * b), rel=1e-12)
        # exact Mott–Bethe asymptote
        big = wk.wk_elastic_form_factor(sym, np.array([50.0]))[0]
        assert big * 2500.0 == pytest.approx(0.02395 * z, rel=1e-3)
    assert "wk" in available_elastic_models()
    np.testing.assert_array_equal(elastic_form_factor("Si", s, "wk"),
                                  wk.wk_elastic_form_factor("Si", s))
    np.testing.assert_array_equal(elastic_form_factor("Si", s, "weickenmeier_kohl"),
                                  wk.wk_elastic_form_factor("Si", s))
    with pytest.raises(InputError):
        wk.wk_parameters("Xx")


# ----------------------------------------------------------- py4DSTEM refs
@pytest.fixture(scope="module")
def p4d(refs_dir):
    meta = json.loads((refs_dir / "si_ug_py4dstem.json").read_text())
    arrays = np.load(refs_dir / "si_ug_py4dstem_full.npz")
    return meta, {k: arrays[k] for k in arrays.files if k != "description"}


SI_A, SI_V, SI_B = 5.431, 200.0, 0.47


def _pref(a: float = SI_A, v: float = SI_V) -> float:
    return relativistic_gamma(v) / (np.pi * a**3)


def _s_of(hkl: np.ndarray, a: float = SI_A) -> np.ndarray:
    return np.linalg.norm(hkl, axis=1) / a / 2.0


def _weko_py4dstem(s: np.ndarray) -> np.ndarray:
    """WK f_e evaluated the way py4DSTEM 0.14.18 does it (first-order Taylor for B_i s² < 1).

    py4DSTEM (WK_scattering_factors.py, function WEKO) replaces
    A_i (1 − e^{−B_i s²})/s² by A_i B_i (1 − B_i s²/2) whenever B_i s² < 1 (EMsoft and
    Weickenmeier's code: < 0.1). This reproduces its elastic U to 1e-5 and shows that the
    remaining difference to qcbed is that truncation, not the table.
    """
    a, b = wk.wk_parameters("Si")
    out = np.zeros_like(s)
    safe = np.where(s > 0, s, 1.0)
    for ai, bi in zip(a, b):
        x = bi * s * s
        out += np.where(x < 1.0, ai * bi * (1.0 - 0.5 * x), ai * -np.expm1(-x) / safe**2)
    return out


@pytest.mark.parametrize("variant,dw", [("WK_static", False), ("WK", True)])
def test_wk_elastic_vs_py4dstem(p4d, variant, dw):
    _, arr = p4d
    hkl = arr[f"{variant}_hkl"]
    ref = np.conj(arr[f"{variant}_U"])          # py4DSTEM uses exp(+2πi g·r)
    s = _s_of(hkl)
    t = np.exp(-SI_B * s * s) if dw else 1.0
    geo = geometric(hkl, SI_O1)
    sig = np.abs(ref) > 1e-6 * np.abs(ref).max()
    assert sig.sum() > 900
    # (a) same table, same (truncated) evaluation: 1e-4 everywhere (achieved 7e-6)
    emulated = _pref() * geo * _weko_py4dstem(s) * t
    rel = np.abs(emulated[sig] - ref[sig]) / np.abs(ref[sig])
    assert rel.max() < 1e-4
    # (b) exact WK formula: 1e-4 where py4DSTEM's Taylor branch is inactive for the
    # B_i = 1.86 Å² term (s > 0.733 Å⁻¹); below, py4DSTEM is low by up to 2 % (111)
    ours = _pref() * geo * wk.wk_elastic_form_factor("Si", s) * t
    hi = sig & (s > 0.74)
    assert hi.sum() > 500
    rel = np.abs(ours[hi] - ref[hi]) / np.abs(ref[hi])
    assert rel.max() < 1e-4
    # below s = 0.733 Å⁻¹ py4DSTEM's truncation makes it low by up to 9 % (2.1 % at 111)
    rel = (np.abs(ours[sig]) - np.abs(ref[sig])) / np.abs(ref[sig])
    assert rel.min() > -1e-4 and rel.max() < 0.1


@pytest.mark.parametrize("variant,kind", [("WK_P", "wk_phonon"), ("WK_C", "wk_core"),
                                          ("WK_CP", "wk")])
def test_wk_absorptive_vs_py4dstem(p4d, variant, kind):
    meta, arr = p4d
    hkl = arr[f"{variant}_hkl"]
    np.testing.assert_array_equal(hkl, arr["WK_hkl"])
    # U′ = −i (U_variant − U_same-σ elastic), conjugated into the qcbed convention
    ref = np.conj(-1j * (arr[f"{variant}_U"] - arr["WK_U"]))
    s = _s_of(hkl)
    fp = ab.absorptive_form_factor("Si", s, SI_B, SI_V, kind)
    ours = _pref() * geometric(hkl, SI_O1) * fp
    sig = np.abs(ref) > 1e-6 * np.abs(ref).max()
    rel = np.abs(ours[sig] - ref[sig]) / np.abs(ref[sig])
    # achieved: max 2.3e-5, median 6.4e-6 over the 993 allowed reflections (|g| ≤ 2 Å⁻¹)
    assert rel.max() < 1e-4
    assert np.median(rel) < 2e-5
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()
    # origin-choice-2 values of the JSON (real)
    values = meta["variants"][variant.replace("_", "-")]["values"]
    for key, v in values.items():
        h = np.array([[int(c) for c in key]])
        u2 = (_pref() * geometric(h, SI_O2) * ab.absorptive_form_factor(
            "Si", _s_of(h), SI_B, SI_V, kind)).real[0]
        assert u2 == pytest.approx(v["origin2_U_absorptive_prime_invA2"], rel=1e-4, abs=1e-12)


# ----------------------------------------------------- closed forms vs numerics
@pytest.mark.parametrize("element", ["H", "Si", "Au"])
@pytest.mark.parametrize("b_iso", [0.1, 0.47, 2.0])
def test_bird_king_with_wk_elastic_equals_wk_phonon(element, b_iso):
    """Same physics (Hall & Hirsch TDS): numerical 2-D integral vs WK closed form."""
    s = np.linspace(0.0, 3.0, 1201)
    exact = wk.wk_phonon_form_factor(element, s, b_iso, 200.0)
    bk = ab.bird_king_form_factor(element, s, b_iso, 200.0, elastic="wk")
    # achieved ≤ 4e-7 f′(0) (spline interpolation dominates; quadrature ≤ 1e-9)
    assert np.abs(bk - exact).max() < 2e-6 * exact[0]
    direct = 2.0 * relativistic_gamma(200.0) * wavelength(200.0) * ab.bird_king_integral(
        lambda x: wk.wk_elastic_form_factor(element, x), s[::100], b_iso)
    assert np.abs(direct - exact[::100]).max() < 1e-8 * exact[0]


def test_wk_core_closed_form_equals_integral():
    """−X₁ + X₂ − X₃ = (1/4π) ∫ d²q [F(ω) − F(q)F(q−ω)]/((q²+κ²)(|q−ω|²+κ²))."""

    def numeric(om: float, ka: float) -> float:
        def f(phi: float, t: float) -> float:
            q = t / (1.0 - t)
            qx, qy = q * np.cos(phi), q * np.sin(phi)
            q2, p2 = qx * qx + qy * qy, (qx - om) ** 2 + qy * qy
            mdff = 1.0 / (1.0 + om * om) - 1.0 / ((1 + q2 + ka * ka) * (1 + p2 + ka * ka))
            return q * mdff / ((q2 + ka * ka) * (p2 + ka * ka)) / (1.0 - t) ** 2

        return 2.0 * integrate.dblquad(f, 0.0, 1.0, 0.0, np.pi, epsabs=1e-12,
                                       epsrel=1e-10)[0]

    for om, ka in ((0.0, 0.3), (0.7, 0.3), (2.0, 0.1)):
        closed = 4.0 * np.pi * wk._core_bracket(np.array([om]), ka)[0]
        assert closed == pytest.approx(numeric(om, ka), rel=1e-9)


def test_grid_cache_accuracy_and_extension():
    ab.clear_cache()
    s = np.linspace(0.0, 6.0, 3001)
    direct = wk.wk_phonon_form_factor("Fe", s, 0.35, 300.0)
    cached = ab.wk_form_factor("Fe", s[s <= 1.0], 0.35, 300.0, "wk_phonon")
    cached = np.concatenate([cached, ab.wk_form_factor("Fe", s[s > 1.0], 0.35, 300.0,
                                                       "wk_phonon")])   # grid grows
    assert np.abs(cached - direct).max() < 1e-6 * direct[0]
    far = ab.wk_form_factor("Fe", np.array([12.0]), 0.35, 300.0, "wk_phonon")  # beyond grid
    np.testing.assert_allclose(far, wk.wk_phonon_form_factor("Fe", [12.0], 0.35, 300.0),
                               rtol=1e-12, atol=1e-300)


# --------------------------------------------------------------- limits, API
def test_limits_and_dispatcher():
    s = np.linspace(0.0, 2.0, 51)
    for model in ("bird_king", "wk_phonon"):
        assert np.all(ab.absorptive_form_factor("Si", s, 0.0, 200.0, model,
                                                elastic="wk") == 0.0)
        small = ab.absorptive_form_factor("Si", s, 1e-6, 200.0, model, elastic="wk")
        big = ab.absorptive_form_factor("Si", s, 0.5, 200.0, model, elastic="wk")
        assert np.abs(small).max() < 1e-4 * big[0]   # f′ = O(B ln B) as B → 0
        for b in (0.05, 0.5, 3.0):
            assert ab.absorptive_form_factor("Si", 0.0, b, 200.0, model, elastic="wk") > 0
    assert np.all(ab.absorptive_form_factor("Si", s, 0.5, 200.0, "wk_core") > 0)
    np.testing.assert_allclose(
        ab.absorptive_form_factor("Si", s, 0.5, 200.0, "wk"),
        ab.wk_form_factor("Si", s, 0.5, 200.0, "wk_phonon")
        + wk.wk_core_form_factor("Si", s, 0.5, 200.0), rtol=1e-12)
    # proportional model is exact: f′ = ξ f T, hence U′ = ξ U
    prop = ab.absorptive_form_factor("Si", s, 0.5, 200.0, "proportional", elastic="wk",
                                     xi=0.07)
    np.testing.assert_allclose(prop, 0.07 * wk.wk_elastic_form_factor("Si", s)
                               * np.exp(-0.5 * s * s), rtol=1e-14)
    assert np.all(ab.absorptive_form_factor("Si", s, 0.5, 200.0, "none") == 0.0)
    # shape preserved, aliases, errors
    grid = s.reshape(3, 17)
    assert ab.absorptive_form_factor("Si", grid, 0.5, 200.0, "BK", elastic="wk").shape == (3, 17)
    assert ab.absorptive_form_factor("Si", grid, 0.5, 200.0, "wk-cp").shape == (3, 17)
    with pytest.raises(InputError):
        ab.absorptive_form_factor("Si", s, 0.5, 200.0, "magic")
    with pytest.raises(InputError):
        ab.absorptive_form_factor("Si", s, -0.1, 200.0, "bird_king", elastic="wk")
    with pytest.raises(InputError):
        ab.bird_king_form_factor("Si", s, 0.5, 200.0, elastic="nonexistent")


def test_voltage_scaling_of_tds():
    """TDS f′ ∝ 2γλ = 2h/(m₀v): ratio between two voltages is exact."""
    s = np.linspace(0.0, 1.5, 7)
    f1 = ab.bird_king_form_factor("Si", s, 0.47, 100.0, elastic="wk")
    f3 = ab.bird_king_form_factor("Si", s, 0.47, 300.0, elastic="wk")
    ratio = (relativistic_gamma(300.0) * wavelength(300.0)
             / (relativistic_gamma(100.0) * wavelength(100.0)))
    np.testing.assert_allclose(f3, f1 * ratio, rtol=1e-13)


def test_cached_speed():
    s = np.random.default_rng(1).uniform(0.0, 2.0, 10_000)
    ab.bird_king_form_factor("O", s, 0.6, 200.0, elastic="wk")   # first call builds the grid
    t0 = time.perf_counter()
    for _ in range(5):
        ab.bird_king_form_factor("O", s, 0.6, 200.0, elastic="wk")
    per_call = (time.perf_counter() - t0) / 5
    assert per_call < 0.05   # ~1 ms on the development machine


# ------------------------------------------------------------------- PyExtal
PX_A, PX_V, PX_B = 5.4307, 300.66, 0.4668
PX_U, PX_UPRIME = 5.7493374e-2, 4.3672347e-4


def _px_111(fe: float, fp: float) -> tuple[float, float]:
    h = np.array([[-1, 1, 1]])
    geo = geometric(h, SI_O2).real[0]
    assert geo == pytest.approx(8 * np.cos(np.pi / 4))
    pref = _pref(PX_A, PX_V)
    s = _s_of(h, PX_A)[0]
    return pref * geo * fe * np.exp(-PX_B * s * s), pref * geo * fp


def test_pyextal_elastic_u111_geometry():
    s = np.sqrt(3.0) / PX_A / 2.0
    u, _ = _px_111(wk.wk_elastic_form_factor("Si", s), 0.0)
    assert u == pytest.approx(PX_U, rel=1e-3)   # WK vs PyExtal's Mott–Bethe: 0.03 %
    if have("xray_mott_bethe"):
        u, _ = _px_111(float(elastic_form_factor("Si", s, "xray_mott_bethe")), 0.0)
        assert u == pytest.approx(PX_U, rel=1e-4)


def _mott_bethe_cromer_mann_si(x: np.ndarray) -> np.ndarray:
    """Mott–Bethe f_e from the ITC/Cromer–Mann Si fit (the row of PyExtal's sftabl.sct)."""
    a = np.array([6.2915, 3.0353, 1.9891, 1.5410])
    b = np.array([2.4386, 32.3337, 0.6785, 81.6937])
    x = np.asarray(x, float)[..., None]
    # neutral atom: Z − f_x(s) = Σ a_i (1 − e^{−b_i s²}) + (Z − Σa − c), last term dropped
    t = np.where(x > 1e-9, -np.expm1(-b * x * x) / np.maximum(x * x, 1e-300), b)
    return MOTT_BETHE_PREFACTOR * np.sum(a * t, axis=-1)


def test_pyextal_u_prime_111_ratio():
    """Bird–King on Mott–Bethe f_e gives |U′(1̄11)| = 5.57e-4 Å⁻², PyExtal 4.37e-4.

    Our normalisation is fixed by the optical theorem and agrees with WK 1991
    (py4DSTEM WK-P to 2e-5); PyExtal's compiled engine is 0.784× lower. The factor is
    pinned here (±3 %) so that a change on either side is noticed.
    """
    s = np.sqrt(3.0) / PX_A / 2.0
    k = ab.bird_king_integral(_mott_bethe_cromer_mann_si, np.array([s]), PX_B)[0]
    fp = 2.0 * relativistic_gamma(PX_V) * wavelength(PX_V) * k
    u, up = _px_111(_mott_bethe_cromer_mann_si(np.array([s]))[0], fp)
    assert u == pytest.approx(PX_U, rel=1e-5)      # same elastic factor as PyExtal
    assert up / PX_UPRIME == pytest.approx(1.2748, rel=0.03)
    if have("xray_mott_bethe"):   # the registered model gives the same Bird–King value
        fp_reg = float(ab.bird_king_form_factor("Si", s, PX_B, PX_V,
                                                elastic="xray_mott_bethe"))
        assert fp_reg == pytest.approx(fp, rel=1e-3)


@pytest.mark.parametrize("model", [
    pytest.param(m, marks=pytest.mark.skipif(not have(m), reason=f"{m} not registered"))
    for m in ("xray_mott_bethe", "kirkland", "wk")])
@pytest.mark.xfail(reason="PyExtal's U′ is 0.784× the Bird–King/WK value (see "
                          "test_pyextal_u_prime_111_ratio); unresolved", strict=True)
def test_pyextal_u_prime_111_within_3_percent(model):
    s = np.sqrt(3.0) / PX_A / 2.0
    fe = float(elastic_form_factor("Si", s, model))
    fp = float(ab.bird_king_form_factor("Si", s, PX_B, PX_V, elastic=model))
    _, up = _px_111(fe, fp)
    assert up == pytest.approx(PX_UPRIME, rel=0.03)


def test_structure_factor_path_matches_py4dstem_wk_p(p4d):
    """End to end: the structure-factor code must not apply exp(−B s²) to f′ again."""
    sf = pytest.importorskip("qcbed.scattering.structure_factors")
    from qcbed.crystal.lattice import Lattice
    from qcbed.crystal.structure import Crystal, Site

    sites = [Site(f"Si{i}", "Si", tuple(x), b_iso=SI_B) for i, x in enumerate(SI_O1)]
    cryst = Crystal(Lattice(SI_A, SI_A, SI_A), sites, 1)
    meta, _ = p4d
    hkl = np.array([[1, 1, 1], [2, 2, 0], [3, 1, 1], [4, 0, 0], [3, 3, 1], [4, 2, 2]])
    model = sf.PotentialModel(elastic="wk", absorption="wk")
    res = sf.structure_factors(cryst, hkl, SI_V, model)
    for h, u_abs in zip(hkl, res.u_abs):
        v = meta["variants"]["WK-CP"]["values"]["".join(map(str, h))]
        ref = np.conj(complex(*v["U_absorptive_prime_invA2"]))
        assert u_abs == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("element,model", [("Si", "kappa"), ("O", "kappa"), ("Au", "kirkland")])
def test_bird_king_integrand_spline_matches_the_direct_form_factor(element, model):
    """The Bird–King integrand takes f_e from a cached cubic spline on a 0.002 Å⁻¹ grid
    (absorption.ELASTIC_STEP); the integral with f_e evaluated directly at every
    quadrature node agrees to 10⁻⁹ of its maximum (measured ≤ 4 × 10⁻¹¹). A grid 50×
    coarser (0.1 Å⁻¹) misses by > 10⁻⁶, so the check resolves the grid."""
    from qcbed.scattering.models import elastic_form_factor

    def direct(x):
        return np.asarray(elastic_form_factor(element, x.ravel(), model, 0)).reshape(x.shape)

    s = np.linspace(0.0, 3.0, 31)
    ref = ab.bird_king_integral(direct, s, 0.6)
    fine = ab._GridProfile(direct, step=ab.ELASTIC_STEP, s_max=ab.ELASTIC_S_MAX)
    coarse = ab._GridProfile(direct, step=0.1, s_max=ab.ELASTIC_S_MAX)
    scale = np.abs(ref).max()
    assert np.abs(ab.bird_king_integral(fine, s, 0.6) - ref).max() < 1e-9 * scale
    assert np.abs(ab.bird_king_integral(coarse, s, 0.6) - ref).max() > 1e-6 * scale
    ab.clear_cache()
    via_api = ab.bird_king_form_factor(element, s, 0.6, 200.0, elastic=model)
    assert np.abs(via_api / ab._tds_prefactor(200.0) - ref).max() < 1e-6 * scale


@pytest.mark.parametrize("b_iso", [0.0, 0.47])
def test_thermal_absorption_with_every_b_zero_warns(b_iso):
    # Bird & King's TDS absorption vanishes with the Debye–Waller factors: a CIF with
    # B = 0 throughout gives U′ ≡ 0, which the set-up says (and not otherwise)
    from qcbed.bloch import Simulation
    from qcbed.bloch.beams import BeamSelection
    from qcbed.crystal import Crystal, Lattice, Site

    a = 5.4307
    crystal = Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125,) * 3, b_iso=b_iso)],
                      "F d -3 m :2")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        sim = Simulation(crystal, 200.0, [1, -1, 0], [0, 0, -1],
                         potential=PotentialModel("kirkland", "bird_king"),
                         selection=BeamSelection(sgmin=2.0), smax=0.05, gmax=1.5,
                         executor="serial")
    said = [str(w.message) for w in rec if "gives no absorption" in str(w.message)]
    assert bool(np.any(sim.table.u_abs != 0)) == (b_iso > 0)
    if b_iso > 0:
        assert not said
    else:
        assert len(said) == 1 and "B = 0" in said[0], said
