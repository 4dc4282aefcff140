"""Weickenmeier–Kohl (1991) elastic and absorptive electron scattering factors.

Elastic form factor
-------------------
Weickenmeier & Kohl (1991, Acta Cryst. A47, 590–597; "WK") write the electron
scattering factor of a neutral atom as a sum of terms with the exact
Mott–Bethe asymptote,

    f_e(s) = Σ_{i=1}^{4} A_i (1 − exp(−B_i s²)) / s²        [Å],

s = sinθ/λ = |g|/2 in Å⁻¹, A_i in Å⁻¹, B_i in Å², Σ_i A_i = 0.02395 Z Å⁻¹ (so
f_e → Z/(8π² a₀ s²) at large s) and f_e(0) = Σ_i A_i B_i. The parameters (Z = 1–98)
are the four-term table distributed with Weickenmeier's FSCATT routine; they are
package data (``tables/weickenmeier_kohl.json``, with its provenance). The model is
registered as the elastic model ``"wk"`` of :mod:`qcbed.scattering.models`.

Absorptive form factors
-----------------------
All absorptive factors f′ here are in Å and follow the qcbed convention
(:mod:`qcbed.scattering.absorption`): F′_g = Σ_j occ_j f′_j(s) exp(−2πi g·r_j)
with every Debye–Waller-type factor already inside f′, and U′_g = γ F′_g/(πΩ)
exactly like U_g = γ F_g/(πΩ). The voltage dependence 2γλ = 2h/(m₀v) of the
absorptive amplitude is therefore inside f′.

*Thermal diffuse (phonon) absorption* (Hall & Hirsch 1965; Bird & King 1990;
WK 1991). For an Einstein crystal with Debye–Waller factor B (Å²),

    f′_TDS(s) = 2γλ ∫ d²s′ f_e(|s/2 + s′|) f_e(|s/2 − s′|)
                      × [exp(−B s²) − exp(−B s²/2 − 2B s′²)],                (1)

where s′ runs over the plane perpendicular to the beam. The prefactor 2γλ =
2h/(m₀v) (Å) makes f′_TDS(0) at B → ∞ equal to σ_el/(2λγ)·γ², i.e. it satisfies the
optical theorem for the relativistic amplitude γ f_e. With the WK form of f_e, (1) is
evaluated in closed form (as WK did, with exponential integrals): writing
(1 − e^{−B_i x²})/x² = ∫_0^{B_i} e^{−t x²} dt, the Gaussian s′ integral is
elementary and, after t = v w, u = v (1 − w) and the v integral,

    f′_TDS(s) = 2πγλ Σ_{ij} A_i A_j { e^{−B s²} H(s; B_i, B_j)
                 − [H(s; B_i+B, B_j+B) − H(s; B, B_j+B) − H(s; B_i+B, B) + H(s; B, B)] },

    H(s; T, U) = ∫_0^T dt ∫_0^U du exp(−s² t u/(t + u)) / (t + u)
               = [P(s² U, T/(T+U)) + P(s² T, U/(T+U))] / s²,

    P(x, a) = ∫_0^a (1 − e^{−x w}) / (w (1 − w)) dw
            = Ein(x a) − ln(1 − a) − e^{−x} [Ei(x) − Ei(x (1 − a))],

with Ein(z) = ∫_0^z (1 − e^{−t})/t dt and Ei the exponential integral;
H(0; T, U) = T ln((T+U)/T) + U ln((T+U)/U). This is the same closed form as WK's
functions RI1/RI2 (their variables: G = 4πs, B/(4π)², u² = B/(8π²)), re-derived here.

*Core-loss (inelastic) absorption* (Rose 1976; WK 1991). The atom is a Wentzel
(Yukawa) atom with screening radius R = 0.885 a₀ Z^{−1/3} and normalised form factor
F(Q) = 1/(1 + (2πQR)²) (Q in Å⁻¹, no 2π). Its mixed dynamic form factor in the
closure approximation is S = Z [F(g) − F(Q_a) F(Q_b)], where Q_a,b are the 3-D
momentum transfers of the two partial waves, Q² = q⊥² + q_E², whose component along
the beam q_E = θ_E/λ comes from the energy loss: θ_E = ΔE/(p v) =
ΔE (E + mc²)/(E (E + 2mc²)) with WK's mean loss ΔE = 6 Z eV. The absorptive
amplitude of these excitations is (s-units, s_E = q_E/2)

    f′_core(s) = 2γλ C² ∫ d²s′ S / ((s_a² + s_E²)(s_b² + s_E²)) · e^{−B s²},     (2)

with C = 1/(8π² a₀) the Mott–Bethe constant and s_a,b = |s/2 ± s′| (the same
structure as (1), with f_e f_e → C² S/(…)(…)).
In units of θ₀ = λ/(2πR) (ω = 4π s R, κ = θ_E/θ₀) the angular integral is
elementary and

    f′_core(s) = (2γλ Z R² / (π a₀²)) · [−X₁ + X₂ − X₃] · e^{−B s²},

    X₁ = ω / ((1 + ω²) √(ω² + 4κ²)) · ln[(ω + √(ω² + 4κ²)) / (2κ)],
    X₂ = 1/√((1 + ω²)² + 4κ²ω²) · ln[(1 + 2κ² + ω² + √((1 + ω²)² + 4κ²ω²)) / (2κ√(1 + κ²))],
    X₃ = 1/(ω √(ω² + 4(1 + κ²))) · ln[(ω + √(ω² + 4(1 + κ²))) / (2√(1 + κ²))]
         (→ 1/(4(1 + κ²)) as ω → 0).

The factor e^{−B s²} on the core term is WK's (FSCATT multiplies the core part by the
Debye–Waller factor). As in WK's code, a₀ = 0.5289 Å is used in R and in C for this
model (a₀ cancels from the prefactor R²/a₀²; through ω and κ the CODATA value would
change f′_core by −0.01 % at s = 0 to −0.13 % at s = 1 Å⁻¹). The closed form equals the
numerical integral (2) to 1e-9 (tested).

References
----------
A. Weickenmeier and H. Kohl, Acta Cryst. A47 (1991) 590–597.
D. M. Bird and Q. A. King, Acta Cryst. A46 (1990) 202–208.
C. R. Hall and P. B. Hirsch, Proc. R. Soc. Lond. A286 (1965) 158–177.
H. Rose, Optik 45 (1976) 139–158.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from ..constants import ELECTRON_REST_ENERGY_KEV, relativistic_gamma, wavelength
from ..errors import InputError
from .models import ElasticModel, register_elastic

__all__ = [
    "WK_REFERENCE",
    "wk_absorptive_form_factor",
    "wk_core_form_factor",
    "wk_elastic_form_factor",
    "wk_parameters",
    "wk_phonon_form_factor",
]

#: Citation of the parameterisation.
WK_REFERENCE = ("A. Weickenmeier and H. Kohl, Acta Cryst. A47 (1991) 590-597 "
                "(four-term table of Weickenmeier's FSCATT routine, 1993)")
#: Bohr radius used inside WK's core-loss model (Å), as in their code.
WK_BOHR_RADIUS = 0.5289
#: Mean energy loss per electron of WK's core-loss model: ΔE = 6 Z eV.
WK_MEAN_LOSS_EV_PER_Z = 6.0
#: Thomas–Fermi screening constant of the Wentzel atom, R = 0.885 a₀ Z^(−1/3).
WK_SCREENING = 0.885
_EULER_GAMMA = 0.57721566490153286


@lru_cache(maxsize=1)
def _table() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = resources.files(__package__).joinpath("tables/weickenmeier_kohl.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {sym: (np.array(v["A"], dtype=float), np.array(v["B"], dtype=float))
            for sym, v in data["elements"].items()}


def _symbol(element: str) -> str:
    el = element.strip()
    el = el[:1].upper() + el[1:].lower()
    # tolerate labels such as 'Si1' or 'O2-'
    while el and not el[-1].isalpha():
        el = el[:-1]
    return el


def wk_parameters(element: str) -> tuple[np.ndarray, np.ndarray]:
    """The WK parameters (A_i in Å⁻¹, B_i in Å²) of a neutral element.

    Parameters
    ----------
    element : str
        Element symbol (``'Si'``); H–Cf (Z = 1–98).

    Returns
    -------
    A, B : ndarray (4,)
        Copies of the tabulated coefficients.
    """
    tab = _table()
    sym = _symbol(element)
    if sym not in tab:
        raise InputError("element not in the Weickenmeier-Kohl table (H-Cf)",
                         source="weickenmeier_kohl.json", found=element)
    a, b = tab[sym]
    return a.copy(), b.copy()


def _one_minus_exp_over(x: np.ndarray) -> np.ndarray:
    """(1 − e^{−x})/x for x ≥ 0, accurate at x → 0."""
    x = np.asarray(x, dtype=float)
    out = np.ones_like(x)
    nz = x > 1e-12
    out[nz] = -np.expm1(-x[nz]) / x[nz]
    out[~nz] = 1.0 - 0.5 * x[~nz]
    return out


def wk_elastic_form_factor(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Weickenmeier–Kohl elastic electron scattering factor f_e(s).

    f_e(s) = Σ_i A_i (1 − exp(−B_i s²))/s² (WK 1991), first-Born, non-relativistic
    normalisation (U_g = γ F_g/(πΩ)).

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹.
    charge : int
        Ignored (the table has neutral atoms only).

    Returns
    -------
    ndarray
        f_e in Å, same shape as ``s``.
    """
    a, b = wk_parameters(element)
    s2 = np.square(np.asarray(s, dtype=float))
    out = np.zeros_like(s2)
    for ai, bi in zip(a, b):
        out += ai * bi * _one_minus_exp_over(bi * s2)
    return out


# --------------------------------------------------------------------------- TDS
def _ein(z: np.ndarray) -> np.ndarray:
    """Entire exponential integral Ein(z) = ∫_0^z (1 − e^{−t})/t dt, z ≥ 0."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    small = z < 1.0
    zs = z[small]
    term = zs.copy()
    acc = zs.copy()
    for k in range(2, 22):  # alternating series; |term| < 1/(21·21!) at z = 1
        term = -term * zs / k
        acc += term / k
    out[small] = acc
    zl = z[~small]
    out[~small] = special.exp1(zl) + np.log(zl) + _EULER_GAMMA
    return out


def _ei_scaled(z: np.ndarray) -> np.ndarray:
    """e^{−z} Ei(z) for z > 0 (asymptotic series beyond z = 500)."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    big = z > 500.0
    out[~big] = np.exp(-z[~big]) * special.expi(z[~big])
    zb = z[big]
    term = 1.0 / zb
    acc = term.copy()
    for k in range(1, 12):
        term = term * k / zb
        acc += term
    out[big] = acc
    return out


def _p_over_x(x: np.ndarray, a: float) -> np.ndarray:
    """P(x, a)/x with P(x, a) = ∫_0^a (1 − e^{−xw})/(w(1 − w)) dw, x ≥ 0, 0 < a < 1."""
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    small = x < 1e-3
    if np.any(small):
        # P/x = Σ_k (−1)^{k+1} x^{k−1}/k! m_k(a),  m_k = ∫_0^a w^{k−1}/(1 − w) dw
        xs = x[small]
        m = -np.log1p(-a)
        acc = np.full_like(xs, m)
        coef = np.ones_like(xs)
        for k in range(2, 7):
            m = m - a ** (k - 1) / (k - 1)
            coef = -coef * xs / k
            acc += coef * m
        out[small] = acc
    big = ~small
    if np.any(big):
        xb = x[big]
        y = 1.0 - a
        q = -np.log(y) - (_ei_scaled(xb) - np.exp(-xb * a) * _ei_scaled(xb * y))
        out[big] = (_ein(xb * a) + q) / xb
    return out


def _h_integral(s2: np.ndarray, t: float, u: float) -> np.ndarray:
    """H(s; T, U) = ∫_0^T∫_0^U exp(−s² tu/(t+u))/(t+u) dt du (Å²), s2 = s² (Å⁻²)."""
    if t <= 0.0 or u <= 0.0:
        return np.zeros_like(s2)
    a = t / (t + u)
    return u * _p_over_x(s2 * u, a) + t * _p_over_x(s2 * t, 1.0 - a)


def _check_b(b_iso: float) -> float:
    b = float(b_iso)
    if not np.isfinite(b) or b < 0:
        raise InputError("Debye-Waller factor B must be finite and >= 0 (Å²)", found=b_iso)
    return b


def wk_phonon_form_factor(element: str, s: ArrayLike, b_iso: float,
                          voltage_kv: float) -> np.ndarray:
    """Thermal-diffuse (phonon) absorptive form factor of Weickenmeier & Kohl (1991).

    Evaluates eq. (1) of the module docstring (Hall & Hirsch 1965; Bird & King 1990)
    for the WK elastic form factor in closed form with exponential integrals.

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹.
    b_iso : float
        Debye–Waller factor B in Å² (B = 8π²⟨u²⟩).
    voltage_kv : float
        Accelerating voltage in kV.

    Returns
    -------
    ndarray
        f′ in Å, Debye–Waller factor included; U′_g = γ F′_g/(πΩ).
    """
    b = _check_b(b_iso)
    a, bb = wk_parameters(element)
    s_arr = np.asarray(s, dtype=float)
    s2 = np.square(s_arr).ravel()
    if b == 0.0:
        return np.zeros_like(s_arr)
    dw = np.exp(-b * s2)
    h_b = {j: _h_integral(s2, b, bb[j] + b) for j in range(4)}
    h_bb = _h_integral(s2, b, b)
    total = np.zeros_like(s2)
    for i in range(4):
        for j in range(i, 4):
            term = dw * _h_integral(s2, bb[i], bb[j]) - (
                _h_integral(s2, bb[i] + b, bb[j] + b) - h_b[j] - h_b[i] + h_bb)
            total += (1.0 if i == j else 2.0) * a[i] * a[j] * term
    pref = 2.0 * np.pi * relativistic_gamma(voltage_kv) * wavelength(voltage_kv)
    return (pref * total).reshape(s_arr.shape)


# -------------------------------------------------------------------------- core
def _core_bracket(omega: np.ndarray, kappa: float) -> np.ndarray:
    """−X₁ + X₂ − X₃ of the Rose/WK core-loss integral (module docstring)."""
    k2 = kappa * kappa
    o2 = omega * omega
    r1 = np.sqrt(o2 + 4.0 * k2)
    x1 = omega / ((1.0 + o2) * r1) * np.arcsinh(omega / (2.0 * kappa))
    r2 = np.sqrt((1.0 + o2) ** 2 + 4.0 * k2 * o2)
    x2 = np.log((1.0 + 2.0 * k2 + o2 + r2) / (2.0 * kappa * np.sqrt(1.0 + k2))) / r2
    c2 = 4.0 * (1.0 + k2)
    x3 = np.empty_like(omega)
    big = omega > 1e-3
    ob = omega[big]
    r3 = np.sqrt(ob * ob + c2)
    # ln((ω + r3)/√c2) = asinh(ω/√c2): exact and free of cancellation
    x3[big] = np.arcsinh(ob / np.sqrt(c2)) / (ob * r3)
    osm = omega[~big]
    x3[~big] = (1.0 - (2.0 / 3.0) * osm * osm / c2) / c2  # series of asinh(x)/(x r)
    return -x1 + x2 - x3


def wk_core_form_factor(element: str, s: ArrayLike, b_iso: float,
                        voltage_kv: float) -> np.ndarray:
    """Core-loss (inelastic) absorptive form factor of WK 1991 after Rose (1976).

    f′_core(s) = (2γλ Z R²/(π a₀²)) (−X₁ + X₂ − X₃) exp(−B s²), eq. (2) of the
    module docstring (Wentzel atom, closure approximation, ΔE = 6 Z eV).

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹.
    b_iso : float
        Debye–Waller factor B in Å² (the core term is multiplied by exp(−B s²)).
    voltage_kv : float
        Accelerating voltage in kV.

    Returns
    -------
    ndarray
        f′ in Å; U′_g = γ F′_g/(πΩ).
    """
    b = _check_b(b_iso)
    z = wk_z(element)
    s_arr = np.asarray(s, dtype=float)
    lam = wavelength(voltage_kv)
    gam = relativistic_gamma(voltage_kv)
    e_kev = float(voltage_kv)
    mc2 = ELECTRON_REST_ENERGY_KEV
    de_kev = WK_MEAN_LOSS_EV_PER_Z * z * 1e-3
    theta_e = de_kev * (e_kev + mc2) / (e_kev * (e_kev + 2.0 * mc2))
    r = WK_SCREENING * WK_BOHR_RADIUS / z ** (1.0 / 3.0)
    kappa = theta_e * 2.0 * np.pi * r / lam
    omega = 4.0 * np.pi * r * np.abs(s_arr).ravel()
    bracket = _core_bracket(omega, kappa)
    pref = 2.0 * gam * lam * z * r * r / (np.pi * WK_BOHR_RADIUS**2)
    out = pref * bracket * np.exp(-b * np.square(s_arr).ravel())
    return out.reshape(s_arr.shape)


def wk_z(element: str) -> int:
    """Atomic number of an element of the WK table."""
    sym = _symbol(element)
    wk_parameters(sym)
    return _z_of()[sym]


@lru_cache(maxsize=1)
def _z_of() -> dict[str, int]:
    path = resources.files(__package__).joinpath("tables/weickenmeier_kohl.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {sym: int(v["Z"]) for sym, v in data["elements"].items()}


def wk_absorptive_form_factor(element: str, s: ArrayLike, b_iso: float, voltage_kv: float,
                              *, phonon: bool = True, core: bool = True) -> np.ndarray:
    """WK absorptive form factor: phonon (TDS) and/or core-loss parts, in Å.

    Parameters
    ----------
    element, s, b_iso, voltage_kv
        As :func:`wk_phonon_form_factor`.
    phonon, core : bool
        Which contributions to include (WK's ABSFLG 1, 2, 3).

    Returns
    -------
    ndarray
        f′ in Å (Debye–Waller factors included); U′_g = γ F′_g/(πΩ).
    """
    out = np.zeros_like(np.asarray(s, dtype=float))
    if phonon:
        out = out + wk_phonon_form_factor(element, s, b_iso, voltage_kv)
    if core:
        out = out + wk_core_form_factor(element, s, b_iso, voltage_kv)
    return out


register_elastic(ElasticModel(
    name="wk",
    function=wk_elastic_form_factor,
    reference=WK_REFERENCE,
    elements=frozenset(_table()),
    s_max=np.inf,  # exact Mott–Bethe asymptote Σ A_i/s² = Z/(8π² a₀ s²)
))
