"""Absorptive form factors f′ (the imaginary part of the optical potential).

Definition of the return value
------------------------------
Every function here returns f′ in Å such that the absorptive structure factor is

    F′_g = Σ_j occ_j f′_j(s) exp(−2πi g·r_j),        s = |g|/2 = sinθ/λ (Å⁻¹),

**with every Debye–Waller-type factor already included in f′** (the structure-factor
code does not multiply f′ by exp(−B s²) again), and

    U′_g = γ F′_g / (π Ω)

exactly like U_g = γ F_g/(πΩ) (γ the Lorentz factor, Ω the cell volume;
:mod:`qcbed.constants`). Voltage factors that the physics needs beyond this γ (the
2γλ = 2h/(m₀v) of the absorptive amplitude) are inside f′. The optical potential is
U + iU′; f′(0) > 0 gives U′_0 > 0, i.e. normal attenuation.

Models (:func:`absorptive_form_factor`)
----------------------------------------
``"none"``
    f′ = 0.
``"proportional"``
    f′ = ξ f_e(s) exp(−B s²), i.e. U′_g = ξ U_g (ξ dimensionless).
``"bird_king"``
    Thermal diffuse scattering (TDS) absorption of an Einstein crystal, Hall &
    Hirsch (1965) in the form of Bird & King (1990), integrated numerically over the
    elastic form factor of any registered model (:func:`bird_king_form_factor`):

        f′(s) = 2γλ ∫ d²s′ f_e(|s/2 + s′|) f_e(|s/2 − s′|)
                       × [exp(−B s²) − exp(−B s²/2 − 2B s′²)]          (Å),

    i.e. Bird & King's f′ = (2h/m₀v) ∫ f f {1 − exp[−2B(s′² − s²/4)]} d²s′ with
    their exp(−B s²) moved inside. γ the Lorentz factor, λ the wavelength (Å),
    s′ (Å⁻¹) in the plane normal to the beam, f_e in Å, B in Å². At B → ∞ and
    s = 0 this is the optical theorem for the relativistic amplitude γ f_e.
``"wk_phonon"``, ``"wk_core"``, ``"wk"``
    Weickenmeier & Kohl (1991): the same TDS integral for their elastic
    parameterisation in closed form (exponential integrals), the core-loss
    (inelastic, Rose 1976) term, and their sum. Formulas in
    :mod:`qcbed.scattering.weickenmeier_kohl`. The ``elastic`` argument does not
    apply (WK use their own f_e).

Anisotropic displacements: the absorptive factors take one isotropic B; for
anisotropic atoms the structure-factor code passes B_eq = 8π² U_eq (the isotropic
equivalent, U_eq = trace of the Cartesian U tensor / 3). This is an approximation:
the TDS integral for an anisotropic Debye–Waller factor depends on the direction
of g.

Numerics and caching of Bird–King
---------------------------------
The integrand has two peaks, at s′ = ±s/2 (where one f_e argument vanishes). For
s ≤ 1 Å⁻¹ the plane is covered in polar coordinates about s′ = 0, s′ = r (cos φ,
sin φ), φ ∈ [0, π/2] (× 4 by symmetry); for s > 1 Å⁻¹, where the peaks are far
apart, the half plane nearer to one peak (a = s/2 + s′ with a·ŝ < s/2, doubled by
the symmetry s′ → −s′) is covered in polar coordinates centred on that peak,
a = p (cos ψ, sin ψ), ψ in [0, π/2] and [π/2, π]. Gauss–Legendre: 32 nodes per
angular panel and 64 radial nodes in u with r (or p) = c u/(1 − u), c = 0.5 Å⁻¹,
which resolves the sharp core of f_e and the 1/r³ tail. Accuracy: against the
closed-form WK result (same physics, WK f_e) better than 1e-9 of f′(0); against a
3× denser quadrature, better than 1e-6 of f′(0) for every registered elastic model
(O, Si, Au; 0.05 ≤ B ≤ 3 Å²; 0 ≤ s ≤ 3 Å⁻¹).

The voltage enters only through the prefactor 2γλ, so the integral K(s) = f′/(2γλ)
is cached per (element, B, elastic model): it is evaluated once on a grid
s_k = 0, 0.02, 0.04, … Å⁻¹ (extended on demand, up to s = 10 Å⁻¹; beyond, the
integral is evaluated directly) and interpolated with a cubic spline with
dK/ds = 0 at s = 0. The interpolation error is below 3e-7 of f′(0) (all models,
checked against the direct integral; tested against the closed-form WK factor). The
first call costs ≈ 0.1–0.2 s per (element, B, model) for s ≤ 3 Å⁻¹; after it, 10⁴
values cost about 1 ms. Inside the integrand f_e itself is a cubic spline on
s_k = k · 0.002 Å⁻¹ up to 20 Å⁻¹ (per element and elastic model, shared by every B;
evaluated directly beyond): its effect on K(s) is below 10⁻¹⁰ of max K (kappa,
Kirkland, Lobato, Peng; O, Si, Au; B 0.05–3 Å²; tests/test_absorption.py), and it makes
the first call of the ``kappa`` model ~7× cheaper. The WK phonon factor is cached
the same way (it is exact at the nodes); the WK core term is cheap and evaluated
directly. :func:`clear_cache` empties the caches.

References
----------
D. M. Bird and Q. A. King, Acta Cryst. A46 (1990) 202–208.
C. R. Hall and P. B. Hirsch, Proc. R. Soc. Lond. A286 (1965) 158–177.
A. Weickenmeier and H. Kohl, Acta Cryst. A47 (1991) 590–597.
H. Rose, Optik 45 (1976) 139–158.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from numpy.polynomial.legendre import leggauss
from numpy.typing import ArrayLike
from scipy.interpolate import CubicSpline

from ..constants import relativistic_gamma, wavelength
from ..errors import InputError
from .models import canonical_model_name, elastic_form_factor, elastic_model
from .weickenmeier_kohl import wk_core_form_factor, wk_parameters, wk_phonon_form_factor

__all__ = [
    "ABSORPTION_MODELS",
    "absorptive_form_factor",
    "bird_king_form_factor",
    "bird_king_integral",
    "clear_cache",
    "proportional_form_factor",
    "wk_form_factor",
]

#: Names accepted by :func:`absorptive_form_factor`.
ABSORPTION_MODELS = ("none", "proportional", "bird_king", "wk_phonon", "wk_core", "wk")
_MODEL_ALIASES = {
    "": "none", "off": "none", "birdking": "bird_king", "bk": "bird_king",
    "proportional_model": "proportional", "wk_p": "wk_phonon", "wk_tds": "wk_phonon",
    "wk_c": "wk_core", "wk_cp": "wk", "weickenmeier_kohl": "wk",
}

#: Grid step (Å⁻¹) of the cached s grid.
GRID_STEP = 0.02
#: Largest s (Å⁻¹) covered by the cached grid; beyond it the integral is direct.
GRID_S_MAX = 10.0
#: Grid step and extent (Å⁻¹) of the cached elastic form factor f_e inside the
#: Bird–King integrand (one spline per element and elastic model, shared by every B):
#: the quadrature evaluates f_e at ~10⁵ nodes per block of s, which for the ``kappa``
#: model (a closed form of ~50 Slater terms) cost 17 of the 23 s of the Si D-LACBED
#: set-up. Beyond ELASTIC_S_MAX f_e is evaluated directly.
ELASTIC_STEP = 0.002
ELASTIC_S_MAX = 20.0
#: Quadrature of the Bird–King integral: nodes per ψ panel, radial nodes, radial scale.
_N_PSI, _N_U, _C_RADIAL = 32, 64, 0.5
#: s (Å⁻¹) up to which the integral is done about the midpoint s′ = 0.
_S_SWITCH = 1.0


def _model_key(model: str) -> str:
    key = model.strip().lower().replace("-", "_").replace(" ", "_")
    key = _MODEL_ALIASES.get(key, key)
    if key not in ABSORPTION_MODELS:
        raise InputError("unknown absorption model", expected=list(ABSORPTION_MODELS),
                         found=model)
    return key


def _check_b(b_iso: float) -> float:
    b = float(b_iso)
    if not np.isfinite(b) or b < 0:
        raise InputError("Debye-Waller factor B must be finite and >= 0 (Å²)", found=b_iso)
    return b


def _s_array(s: ArrayLike) -> np.ndarray:
    arr = np.abs(np.asarray(s, dtype=float))
    if not np.all(np.isfinite(arr)):
        raise InputError("s must be finite", found="non-finite values")
    return arr


# ------------------------------------------------------------------- quadrature
def _quadrature() -> tuple[np.ndarray, ...]:
    x, w = leggauss(_N_PSI)
    psi = (x + 1.0) * np.pi / 4.0            # [0, π/2]
    wpsi = w * np.pi / 4.0
    xu, wu = leggauss(_N_U)
    return psi, wpsi, 0.5 * (xu + 1.0), 0.5 * wu


_QUAD = _quadrature()


def bird_king_integral(f: Callable[[np.ndarray], np.ndarray], s: ArrayLike,
                       b_iso: float, chunk: int = 32) -> np.ndarray:
    """The Bird–King TDS integral K(s) = f′(s)/(2γλ) by direct quadrature (Å⁰).

    K(s) = ∫ d²s′ f(|s/2 + s′|) f(|s/2 − s′|) [e^{−B s²} − e^{−B s²/2 − 2B s′²}],
    the integral of the module docstring; polar coordinates about s′ = 0 for
    s ≤ 1 Å⁻¹, about the peak a = s/2 + s′ = 0 over a half plane beyond (module
    docstring). No caching; see :func:`bird_king_form_factor`.

    Parameters
    ----------
    f : callable
        Radial elastic form factor f(x) in Å for x (Å⁻¹) of any shape.
    s : array_like
        s = |g|/2 in Å⁻¹.
    b_iso : float
        Debye–Waller factor B in Å².
    chunk : int
        Number of s values integrated at once (memory).

    Returns
    -------
    ndarray
        K(s), dimensionless (Å · Å · Å⁻²), same shape as ``s``.
    """
    b = _check_b(b_iso)
    s_arr = _s_array(s)
    flat = s_arr.ravel()
    out = np.zeros_like(flat)
    if b == 0.0 or flat.size == 0:
        return out.reshape(s_arr.shape)
    near = flat <= _S_SWITCH
    for sel, kernel in ((near, _k_centred), (~near, _k_half_plane)):
        idx = np.flatnonzero(sel)
        for start in range(0, idx.size, chunk):
            part = idx[start:start + chunk]
            out[part] = kernel(f, flat[part][:, None, None], b)
    return out.reshape(s_arr.shape)


def _radial_nodes(umax: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """p = c u/(1 − u) on u ∈ [0, u_max]: nodes p and weights dp (shape (…, n_u))."""
    _, _, tu, wu = _QUAD
    u = umax * tu[None, None, :]
    one_u = 1.0 - u
    p = _C_RADIAL * u / one_u
    return p, umax * wu[None, None, :] * _C_RADIAL / one_u**2


def _k_centred(f: Callable[[np.ndarray], np.ndarray], sv: np.ndarray, b: float) -> np.ndarray:
    """K(s) in polar coordinates s′ = r (cos φ, sin φ) about the midpoint (s ≤ 1 Å⁻¹)."""
    psi, wpsi, _, _ = _QUAD
    cos = np.cos(psi)[None, :, None]
    r, wr = _radial_nodes(1.0)
    a2 = 0.25 * sv * sv + r * r
    cross = r * sv * cos
    weight = -np.exp(-b * sv * sv) * np.expm1(-2.0 * b * (r * r - 0.25 * sv * sv))
    val = (f(np.sqrt(np.maximum(a2 + cross, 0.0))) * f(np.sqrt(np.maximum(a2 - cross, 0.0)))
           * weight * r * wr)
    # φ ∈ [0, π/2] covers a quarter of the plane (symmetry φ → −φ, φ → π − φ)
    return 4.0 * np.einsum("spu,p->s", val, wpsi)


def _k_half_plane(f: Callable[[np.ndarray], np.ndarray], sv: np.ndarray,
                  b: float) -> np.ndarray:
    """K(s) over the half plane a·ŝ < s/2, polar about the peak a = 0 (s > 1 Å⁻¹)."""
    psi1, wpsi, _, _ = _QUAD
    c = _C_RADIAL
    total = np.zeros(sv.shape[0])
    for panel in (0, 1):
        psi = psi1 + panel * np.pi / 2.0
        cos = np.cos(psi)[None, :, None]
        if panel == 0:   # p < s/(2 cos ψ)
            pmax = sv / (2.0 * cos)
            umax = pmax / (c + pmax)
        else:
            umax = np.ones((1, psi.size, 1))
        p, wp = _radial_nodes(umax)
        d2 = np.maximum(sv * sv - 2.0 * p * sv * cos + p * p, 0.0)
        weight = -np.exp(-b * sv * sv) * np.expm1(-2.0 * b * p * (p - sv * cos))
        val = f(p) * f(np.sqrt(d2)) * weight * p * wp
        # ψ ∈ [0, π] is half of the half plane (ψ → −ψ); the other half plane is the
        # mirror image a → s − a
        total += 4.0 * np.einsum("spu,p->s", val, wpsi)
    return total


# ------------------------------------------------------------------------ cache
class _GridProfile:
    """A function of s sampled on s_k = k·h and interpolated by a cubic spline
    (h = ``step``, nodes up to ``s_max``, Å⁻¹; evaluated directly beyond)."""

    def __init__(self, func: Callable[[np.ndarray], np.ndarray], step: float = GRID_STEP,
                 s_max: float = GRID_S_MAX) -> None:
        self.func = func
        self.step, self.s_max = float(step), float(s_max)
        self.nodes = np.zeros(0)
        self.values = np.zeros(0)
        self.spline: CubicSpline | None = None
        self.lock = threading.Lock()

    def _extend(self, s_needed: float) -> None:
        n_have = self.nodes.size
        # whole 0.5 Å⁻¹ blocks, plus a margin so the spline end is never used
        top = min(self.s_max, np.ceil((s_needed + 0.1) / 0.5) * 0.5)
        n_new = round(top / self.step) + 1
        if n_new <= n_have:
            return
        new = np.arange(n_have, n_new) * self.step
        self.values = np.concatenate([self.values, self.func(new)])
        self.nodes = np.arange(n_new) * self.step
        self.spline = CubicSpline(self.nodes, self.values, bc_type=((1, 0.0), "not-a-knot"))

    def __call__(self, s: np.ndarray) -> np.ndarray:
        flat = s.ravel()
        smax = float(flat.max()) if flat.size else 0.0
        with self.lock:
            if self.spline is None or self.nodes[-1] < min(smax + 0.05, self.s_max):
                self._extend(smax)
            spline = self.spline
            top = self.nodes[-1]
        assert spline is not None
        out = np.asarray(spline(np.minimum(flat, top)))
        beyond = flat > top
        if np.any(beyond):
            out = out.copy()
            out[beyond] = self.func(flat[beyond])
        return out.reshape(s.shape)


_CACHE: dict[tuple, _GridProfile] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached absorptive profile."""
    with _CACHE_LOCK:
        _CACHE.clear()


#: Most cached profiles kept (a B refinement creates one per trial B); oldest dropped.
CACHE_SIZE = 512


def _profile(key: tuple, func: Callable[[np.ndarray], np.ndarray], **grid: float
             ) -> _GridProfile:
    with _CACHE_LOCK:
        prof = _CACHE.get(key)
        if prof is None:
            while len(_CACHE) >= CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            prof = _CACHE[key] = _GridProfile(func, **grid)
    return prof


def _tds_prefactor(voltage_kv: float) -> float:
    """2γλ = 2h/(m₀ v) in Å."""
    return 2.0 * float(relativistic_gamma(voltage_kv)) * float(wavelength(voltage_kv))


# ------------------------------------------------------------------- the models
def bird_king_form_factor(element: str, s: ArrayLike, b_iso: float, voltage_kv: float,
                          elastic: str = "kirkland", charge: int = 0) -> np.ndarray:
    """Thermal-diffuse absorptive form factor of Bird & King (1990), numerically.

    f′(s) = 2γλ ∫ d²s′ f_e(|s/2 + s′|) f_e(|s/2 − s′|) [e^{−B s²} − e^{−B s²/2 − 2B s′²}]
    (Hall & Hirsch 1965; Bird & King 1990), with f_e from the registered elastic
    model ``elastic``. Vectorised over ``s`` and cached per (element, B, elastic
    model); the voltage enters only through 2γλ. See the module docstring for the
    quadrature and the interpolation accuracy (< 1e-6 of f′(0)).

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹.
    b_iso : float
        Debye–Waller factor B in Å² (B_eq for anisotropic atoms).
    voltage_kv : float
        Accelerating voltage in kV.
    elastic : str
        Elastic model inside the integral (``'kirkland'``, ``'lobato'``, ``'peng'``,
        ``'doyle_turner'``, ``'wk'``, ``'xray_mott_bethe'``).
    charge : int
        Ionic charge. The integral always uses the *neutral* atom: the Coulomb tail
        ΔZ/s² of an ion makes it diverge (logarithmically at s′ → ±s/2), and TDS
        absorption comes from large-angle scattering where ions and atoms agree.

    Returns
    -------
    ndarray
        f′ in Å, same shape as ``s``, Debye–Waller factor included;
        U′_g = γ F′_g/(πΩ).
    """
    del charge  # neutral atom, see above
    b = _check_b(b_iso)
    s_arr = _s_array(s)
    if b == 0.0:
        return np.zeros_like(s_arr)
    name = canonical_model_name(elastic)
    elastic_model(name)  # raises InputError when unknown
    el = element.strip()
    f0 = elastic_form_factor(el, np.zeros(1), name, 0)
    if not np.all(np.isfinite(f0)):
        raise InputError(f"elastic model {name!r} gives a non-finite f_e(0) for {el}; "
                         "the Bird-King integral needs a finite form factor", found=f0)

    def direct(x: np.ndarray) -> np.ndarray:
        return np.asarray(elastic_form_factor(el, x.ravel(), name, 0)).reshape(x.shape)

    # f_e interpolated on a fine grid (ELASTIC_STEP), shared by every B of the element
    radial = _profile(("elastic", el, name), direct, step=ELASTIC_STEP, s_max=ELASTIC_S_MAX)

    def integral(sv: np.ndarray) -> np.ndarray:
        return bird_king_integral(radial, sv, b)

    prof = _profile(("bird_king", el, name, b), integral)
    return _tds_prefactor(voltage_kv) * prof(s_arr)


def _wk_phonon_cached(element: str, s: np.ndarray, b: float, voltage_kv: float) -> np.ndarray:
    if b == 0.0:
        return np.zeros_like(s)
    wk_parameters(element)  # validates the element
    # f′_TDS/(2γλ) does not depend on the voltage: cache it
    ref_kv = 100.0
    scale = _tds_prefactor(ref_kv)

    def func(sv: np.ndarray) -> np.ndarray:
        return wk_phonon_form_factor(element, sv, b, ref_kv) / scale

    prof = _profile(("wk_phonon", element.strip(), b), func)
    return _tds_prefactor(voltage_kv) * prof(s)


def wk_form_factor(element: str, s: ArrayLike, b_iso: float, voltage_kv: float,
                   kind: str = "wk") -> np.ndarray:
    """Weickenmeier–Kohl (1991) absorptive form factor.

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹.
    b_iso : float
        Debye–Waller factor B in Å².
    voltage_kv : float
        Accelerating voltage in kV.
    kind : {'wk', 'wk_phonon', 'wk_core'}
        Phonon (TDS) + core loss, phonon only, or core loss only.

    Returns
    -------
    ndarray
        f′ in Å (Debye–Waller factors included); U′_g = γ F′_g/(πΩ). The phonon
        part is the closed form of WK, cached on a grid like
        :func:`bird_king_form_factor`; the core part is evaluated directly.
    """
    key = _model_key(kind)
    if key not in ("wk", "wk_phonon", "wk_core"):
        raise InputError("kind must be 'wk', 'wk_phonon' or 'wk_core'", found=kind)
    b = _check_b(b_iso)
    s_arr = _s_array(s)
    out = np.zeros_like(s_arr)
    if key in ("wk", "wk_phonon"):
        out = out + _wk_phonon_cached(element, s_arr, b, voltage_kv)
    if key in ("wk", "wk_core"):
        out = out + wk_core_form_factor(element, s_arr, b, voltage_kv)
    return out


def proportional_form_factor(element: str, s: ArrayLike, b_iso: float, xi: float,
                             elastic: str = "kirkland", charge: int = 0) -> np.ndarray:
    """Proportional absorption f′ = ξ f_e(s) exp(−B s²), i.e. U′_g = ξ U_g.

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = |g|/2 in Å⁻¹.
    b_iso : float
        Debye–Waller factor B in Å².
    xi : float
        Dimensionless ratio ξ = U′_g/U_g (≥ 0).
    elastic : str
        Elastic model of f_e.
    charge : int
        Ionic charge passed to the elastic model.

    Returns
    -------
    ndarray
        f′ in Å, same shape as ``s``.
    """
    b = _check_b(b_iso)
    x = float(xi)
    if not np.isfinite(x) or x < 0:
        raise InputError("proportional absorption ξ must be >= 0", found=xi)
    s_arr = _s_array(s)
    fe = np.asarray(elastic_form_factor(element, s_arr, elastic, charge))
    return x * fe * np.exp(-b * s_arr**2)


def absorptive_form_factor(element: str, s: ArrayLike, b_iso: float, voltage_kv: float,
                           model: str = "bird_king", *, elastic: str = "kirkland",
                           xi: float = 0.1, charge: int = 0) -> np.ndarray:
    """Absorptive form factor f′(s) in Å of one atom (dispatcher).

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹.
    b_iso : float
        Isotropic Debye–Waller factor B in Å² (B_eq for anisotropic atoms).
    voltage_kv : float
        Accelerating voltage in kV.
    model : str
        ``'none'``, ``'proportional'``, ``'bird_king'``, ``'wk_phonon'``,
        ``'wk_core'`` or ``'wk'`` (phonon + core); see the module docstring.
    elastic : str
        Elastic model used by ``'proportional'`` and ``'bird_king'``.
    xi : float
        ξ of the proportional model.
    charge : int
        Ionic charge (proportional: passed to the elastic model; Bird–King and WK:
        neutral atom).

    Returns
    -------
    ndarray
        f′ in Å, same shape as ``s``, with every Debye–Waller-type factor included,
        so that F′_g = Σ_j occ_j f′_j exp(−2πi g·r_j) and U′_g = γ F′_g/(πΩ).
    """
    key = _model_key(model)
    if key == "none":
        _check_b(b_iso)
        return np.zeros_like(_s_array(s))
    if key == "proportional":
        return proportional_form_factor(element, s, b_iso, xi, elastic, charge)
    if key == "bird_king":
        return bird_king_form_factor(element, s, b_iso, voltage_kv, elastic, charge)
    return wk_form_factor(element, s, b_iso, voltage_kv, key)
