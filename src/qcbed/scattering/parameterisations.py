"""Elastic electron scattering-factor parameterisations and Mott–Bethe conversions.

Every function here returns the first-Born electron scattering factor f_e in Å
(Kirkland 2010; International Tables Vol. C §4.3) at s = sinθ/λ = |g|/2 in Å⁻¹
(no 2π), vectorised over ``s`` of any shape. Importing this module registers
the elastic models with :mod:`qcbed.scattering.models`:

* ``kirkland``: Kirkland (2010), Appendix C; variable q = 2s; H–Lr, neutral atoms.
* ``lobato``: Lobato & Van Dyck (2014); variable g = 2s; H–Lr, neutral atoms.
* ``peng``: Peng et al. (1996), 0 ≤ s ≤ 2 Å⁻¹ fit; variable s; H–Cf, and the
  ions of Peng (1998).
* ``peng_high``: Peng et al. (1996), 0 ≤ s ≤ 6 Å⁻¹ fit; variable s; H–Cf, and
  the ions of Peng (1998).
* ``doyle_turner``: Doyle & Turner (1968), s ≤ 2 Å⁻¹; variable s; the 54
  neutral atoms they published (He–U).
* ``xray_mott_bethe``: the X-ray form factors of International Tables Vol. C
  Table 6.1.1.4 (variable s; H–Cf and 112 ions) through the Mott–Bethe formula.

The coefficient tables are package data (``scattering/tables/*.json``), loaded
on first use and cached; each file states its source, formula, units and how
its numbers were obtained and cross-checked (``tools/make_scattering_tables.py``).

Conventions shared by all models
--------------------------------
* ``element`` is a symbol (``'Si'``; case is normalised). An element that is
  not in a model's table raises :class:`qcbed.errors.InputError`.
* ``charge`` is the formal ionic charge (``-2`` for O²⁻). Ions are tabulated
  only by ``xray_mott_bethe`` (ITC Table 6.1.1.4) and by ``peng``/``peng_high``
  (Peng 1998). When the requested ion is not tabulated the neutral atom is used
  and a :class:`UserWarning` is emitted once per (model, element, charge).
* Beyond a model's published fitting range (``ElasticModel.s_max``) the
  functions still return the analytic formula, without error or warning; the
  Gaussian fits (Peng, Doyle–Turner, ITC) decay faster than the true f_e there.
* Ions carry the Coulomb term C·q/s² (C = :data:`qcbed.constants.MOTT_BETHE_PREFACTOR`),
  which diverges at s = 0: the functions return ±inf there and the caller must
  treat g = 0 itself (the mean inner potential of a neutral cell is finite).
"""

from __future__ import annotations

import json
import warnings
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..constants import MOTT_BETHE_PREFACTOR
from ..errors import InputError
from .models import ElasticModel, register_elastic

__all__ = [
    "doyle_turner",
    "electron_from_xray",
    "kirkland",
    "load_table",
    "lobato",
    "mott_bethe",
    "peng",
    "peng_high",
    "xray_form_factor",
    "xray_from_electron",
    "xray_mott_bethe",
]

#: Element symbols in order of atomic number, H (1) … Lr (103).
SYMBOLS: tuple[str, ...] = tuple(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr".split()
)
_Z = {el: i + 1 for i, el in enumerate(SYMBOLS)}

#: The 54 neutral atoms of Doyle & Turner (1968).
DOYLE_TURNER_ELEMENTS: tuple[str, ...] = tuple(
    "He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Mo Ag Cd In Sn Sb I Xe Cs Ba Eu Au Hg Pb Bi Rn U".split()
)

_C = MOTT_BETHE_PREFACTOR

REF_KIRKLAND = ("E. J. Kirkland, Advanced Computing in Electron Microscopy, 2nd ed. "
                "(Springer, 2010), Appendix C")
REF_LOBATO = "I. Lobato and D. Van Dyck, Acta Cryst. A70, 636-649 (2014)"
REF_PENG = ("L.-M. Peng, G. Ren, S. L. Dudarev and M. J. Whelan, Acta Cryst. A52, 257-276 "
            "(1996); ions: L.-M. Peng, Acta Cryst. A54, 481-485 (1998)")
REF_DOYLE_TURNER = "P. A. Doyle and P. S. Turner, Acta Cryst. A24, 390-397 (1968)"
REF_XRAY = ("International Tables for Crystallography Vol. C (1992), Table 6.1.1.4 "
            "(Cromer-Mann X-ray fits), with the Mott-Bethe formula")

# ---------------------------------------------------------------------------------------
# table access
# ---------------------------------------------------------------------------------------
_TABLE_OF_MODEL = {
    "kirkland": "kirkland", "lobato": "lobato", "peng": "peng", "peng_high": "peng_high",
    "doyle_turner": "doyle_turner", "xray_mott_bethe": "xray_itc", "xray": "xray_itc",
}


@cache
def load_table(name: str) -> dict[str, Any]:
    """The parsed JSON table ``scattering/tables/<name>.json`` (cached).

    Parameters
    ----------
    name : str
        ``'kirkland'``, ``'lobato'``, ``'peng'``, ``'peng_high'``, ``'peng_ions'``,
        ``'doyle_turner'`` or ``'xray_itc'``.

    Returns
    -------
    dict
        With keys ``source``, ``formula``, ``units``, ``provenance``, ``elements`` …
        Treat it as read-only.
    """
    path = resources.files("qcbed") / "scattering" / "tables" / f"{name}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such scattering-factor table", source="qcbed.scattering.tables",
                         expected="kirkland, lobato, peng, peng_high, peng_ions, doyle_turner, "
                                  "xray_itc", found=name) from None
    return json.loads(text)


@cache
def _coefficients(table: str, key: str) -> dict[str, Any]:
    """Coefficient arrays of one table entry, as float arrays (cached)."""
    entry = load_table(table)["elements"][key]
    return {k: (np.asarray(v, dtype=float) if isinstance(v, list) else float(v))
            for k, v in entry.items()}


def _ion_key(element: str, charge: int) -> str:
    """Table key of an ion: ``'O2-'``, ``'Li1+'``; the symbol itself for charge 0."""
    if charge == 0:
        return element
    return f"{element}{abs(charge)}{'+' if charge > 0 else '-'}"


def _normalise(element: str, model: str) -> str:
    if not isinstance(element, str) or not element.strip():
        raise InputError("element must be a chemical symbol", source=model,
                         expected="a symbol such as 'Si'", found=element)
    return element.strip().capitalize()


_WARNED: set[tuple[str, str, int]] = set()


def _lookup(model: str, element: str, charge: int, *, neutral: str,
            ions: str | None = None) -> tuple[str, str, int]:
    """Resolve (table, key, charge actually used) for one model call.

    Raises InputError for an element missing from the neutral table; falls back
    to the neutral atom (with a one-time UserWarning) for an untabulated ion.
    """
    el = _normalise(element, model)
    table = load_table(neutral)["elements"]
    if el not in table:
        avail = [k for k in table if k in _Z]
        raise InputError(f"element {el!r} is not in the {model!r} scattering-factor table",
                         source=model, expected=f"one of {' '.join(avail)}", found=element)
    charge = int(charge)
    if charge == 0:
        return neutral, el, 0
    key = _ion_key(el, charge)
    for name in (neutral, ions):
        if name is not None and key in load_table(name)["elements"]:
            return name, key, charge
    if (model, el, charge) not in _WARNED:
        _WARNED.add((model, el, charge))
        warnings.warn(f"scattering-factor model {model!r} has no parameters for the ion {key}; "
                      f"using the neutral {el} atom", UserWarning, stacklevel=4)
    return neutral, el, 0


def _s2(s: ArrayLike) -> np.ndarray:
    return np.square(np.asarray(s, dtype=float))


def _gaussians(a: np.ndarray, b: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Σ a_i exp(−b_i s²) over the last axis."""
    return np.sum(a * np.exp(-b * s2[..., None]), axis=-1)


def _coulomb(charge: int, s2: np.ndarray) -> np.ndarray:
    """C q / s² (Å), ±inf at s = 0."""
    with np.errstate(divide="ignore"):
        return _C * charge / s2


# ---------------------------------------------------------------------------------------
# electron parameterisations
# ---------------------------------------------------------------------------------------
def kirkland(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Kirkland (2010) electron scattering factor.

    f_e(q) = Σ_{i=1}^{3} a_i / (q² + b_i) + Σ_{i=1}^{3} c_i exp(−d_i q²) with
    q = |g| = 2s (Å⁻¹, no 2π): E. J. Kirkland, *Advanced Computing in Electron
    Microscopy*, 2nd ed. (Springer, 2010), Appendix C. Fitted for q ≤ 12 Å⁻¹
    (s ≤ 6 Å⁻¹); larger s returns the formula unchanged.

    Parameters
    ----------
    element : str
        Element symbol, H–Lr.
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹, any shape.
    charge : int, optional
        Formal charge. Kirkland's table has neutral atoms only: a non-zero charge
        uses the neutral atom and warns once.

    Returns
    -------
    ndarray
        f_e in Å, shape of ``s``.
    """
    table, key, _ = _lookup("kirkland", element, charge, neutral="kirkland")
    c = _coefficients(table, key)
    q2 = 4.0 * _s2(s)
    lor = np.sum(c["a"] / (q2[..., None] + c["b"]), axis=-1)
    return lor + _gaussians(c["c"], c["d"], q2)


def lobato(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Lobato & Van Dyck (2014) electron scattering factor.

    f_e(g) = Σ_{i=1}^{5} a_i (2 + b_i g²) / (1 + b_i g²)² with g = |g| = 2s
    (Å⁻¹, no 2π): I. Lobato and D. Van Dyck, Acta Cryst. A70, 636–649 (2014).
    Fitted for g ≤ 12 Å⁻¹ (s ≤ 6 Å⁻¹) with the correct large-g asymptote.

    Parameters
    ----------
    element : str
        Element symbol, H–Lr.
    s : array_like
        s = sinθ/λ in Å⁻¹, any shape.
    charge : int, optional
        Neutral atoms only; a non-zero charge uses the neutral atom and warns once.

    Returns
    -------
    ndarray
        f_e in Å, shape of ``s``.
    """
    table, key, _ = _lookup("lobato", element, charge, neutral="lobato")
    c = _coefficients(table, key)
    bg2 = c["b"] * (4.0 * _s2(s))[..., None]
    return np.sum(c["a"] * (2.0 + bg2) / (1.0 + bg2) ** 2, axis=-1)


def _peng(model: str, neutral: str, element: str, s: ArrayLike, charge: int) -> np.ndarray:
    table, key, q = _lookup(model, element, charge, neutral=neutral, ions="peng_ions")
    c = _coefficients(table, key)
    s2 = _s2(s)
    f = _gaussians(c["a"], c["b"], s2)
    return f + _coulomb(q, s2) if q else f


def peng(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Peng, Ren, Dudarev & Whelan (1996) electron scattering factor, 0 ≤ s ≤ 2 Å⁻¹ fit.

    f_e(s) = Σ_{i=1}^{5} a_i exp(−b_i s²), s = sinθ/λ (Å⁻¹): Acta Cryst. A52,
    257–276 (1996), Table 1 (= ITC Vol. C Table 4.3.2.2). Valid for s ≤ 2 Å⁻¹;
    beyond, the Gaussians fall off too fast (use :func:`peng_high`).

    Ions (``charge ≠ 0``) use Peng, Acta Cryst. A54, 481–485 (1998) (= ITC Vol. C
    Table 4.3.2.4, fitted for s ≤ 6 Å⁻¹): f_e(s) = Σ a_i exp(−b_i s²) + C q/s²,
    C = m₀e²/(8πε₀h²) = 0.023934 Å, which is ±inf at s = 0. An ion missing from
    that table falls back to the neutral atom with a one-time warning.

    Parameters
    ----------
    element : str
        Element symbol, H–Cf.
    s : array_like
        s = sinθ/λ in Å⁻¹, any shape.
    charge : int, optional
        Formal ionic charge.

    Returns
    -------
    ndarray
        f_e in Å, shape of ``s``.
    """
    return _peng("peng", "peng", element, s, charge)


def peng_high(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Peng et al. (1996) electron scattering factor, 0 ≤ s ≤ 6 Å⁻¹ fit.

    f_e(s) = Σ_{i=1}^{5} a_i exp(−b_i s²): Acta Cryst. A52, 257–276 (1996),
    Table 3 (= ITC Vol. C Table 4.3.2.3). Less accurate than :func:`peng` at
    small s, valid to s = 6 Å⁻¹. Ions as in :func:`peng` (Peng 1998).

    Parameters
    ----------
    element : str
        Element symbol, H–Cf.
    s : array_like
        s = sinθ/λ in Å⁻¹, any shape.
    charge : int, optional
        Formal ionic charge.

    Returns
    -------
    ndarray
        f_e in Å, shape of ``s``.
    """
    return _peng("peng_high", "peng_high", element, s, charge)


def doyle_turner(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Doyle & Turner (1968) electron scattering factor.

    f_e(s) = Σ_{i=1}^{4} a_i exp(−b_i s²), s = sinθ/λ (Å⁻¹): P. A. Doyle and
    P. S. Turner, Acta Cryst. A24, 390–397 (1968). Fitted for s ≤ 2 Å⁻¹, for the
    54 neutral atoms they published (:data:`DOYLE_TURNER_ELEMENTS`; no H, Y–Nb,
    Tc–Pd, Te, La–Sm, Gd–Pt, Tl, Po, At, Fr–Pa or Np and beyond).

    Parameters
    ----------
    element : str
        Element symbol.
    s : array_like
        s = sinθ/λ in Å⁻¹, any shape.
    charge : int, optional
        Neutral atoms only; a non-zero charge uses the neutral atom and warns once.

    Returns
    -------
    ndarray
        f_e in Å, shape of ``s``.
    """
    table, key, _ = _lookup("doyle_turner", element, charge, neutral="doyle_turner")
    c = _coefficients(table, key)
    return _gaussians(c["a"], c["b"], _s2(s))


# ---------------------------------------------------------------------------------------
# X-ray form factors and Mott–Bethe
# ---------------------------------------------------------------------------------------
def xray_form_factor(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """X-ray atomic form factor f_x(s) of International Tables Vol. C Table 6.1.1.4.

    f_x(s) = Σ_{i=1}^{4} a_i exp(−b_i s²) + c (Cromer–Mann form), s = sinθ/λ in Å⁻¹,
    fitted for s ≤ 2 Å⁻¹: International Tables for Crystallography Vol. C (1992),
    Table 6.1.1.4 (a reprint of Int. Tables for X-ray Crystallography Vol. IV,
    Table 2.2B); O²⁻ from Hovestreydt, Acta Cryst. A39, 268 (1983). ITC's ``H``
    entry is the bonded hydrogen of Stewart, Davidson & Simpson (1965).

    Parameters
    ----------
    element : str
        Element symbol, H–Cf.
    s : array_like
        s = sinθ/λ in Å⁻¹, any shape.
    charge : int, optional
        Formal ionic charge; the table lists the ions of ITC (e.g. ``Si4+``,
        ``O2-``). An untabulated ion falls back to the neutral atom (one warning).

    Returns
    -------
    ndarray
        f_x in electrons, shape of ``s``.
    """
    table, key, _ = _lookup("xray_form_factor", element, charge, neutral="xray_itc")
    c = _coefficients(table, key)
    return _gaussians(c["a"], c["b"], _s2(s)) + c["c"]


def _mott_bethe(model: str, element: str, s: ArrayLike, charge: int) -> np.ndarray:
    table, key, q = _lookup(model, element, charge, neutral="xray_itc")
    c = _coefficients(table, key)
    s2 = _s2(s)
    x = c["b"] * s2[..., None]
    # C Σ a_i (1 − exp(−b_i s²)) / s² = C Σ a_i b_i h(b_i s²), h(x) = −expm1(−x)/x, h(0) = 1
    nonzero = x != 0.0
    h = np.ones_like(x)
    np.divide(-np.expm1(-x), x, out=h, where=nonzero)
    f = _C * np.sum(c["a"] * c["b"] * h, axis=-1)
    return f + _coulomb(q, s2) if q else f


def mott_bethe(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """Electron scattering factor from the ITC X-ray form factor by the Mott–Bethe formula.

    f_e(s) = C (Z − f_x(s)) / s², C = m₀e²/(8πε₀h²) = 1/(8π²a₀) = 0.023934 Å
    (Mott 1930; Bethe 1930; :data:`qcbed.constants.MOTT_BETHE_PREFACTOR`), with
    f_x from :func:`xray_form_factor`. It is evaluated in the form that is exact
    at s → 0 for the fitted neutral atom, the number of electrons of the fit
    N = Σ a_i + c playing the role of Z::

        f_e(s) = C Σ_i a_i (1 − exp(−b_i s²)) / s²  (+ C q / s² for an ion),

    computed with ``expm1`` (no cancellation at small s); f_e(0) = C Σ a_i b_i.
    For an ion of formal charge q the Coulomb term C q/s² uses the formal charge
    (N ≈ Z − q); it is +inf (cation) or −inf (anion) at s = 0, which the caller
    must treat (the mean inner potential of a neutral cell is finite). Using Z
    instead of N for a neutral atom would add C (Z − N)/s², an artefact of the
    fit (for Si, 0.07 % at s = 0.16 Å⁻¹, diverging at s = 0).

    The X-ray fits are valid for s ≤ 2 Å⁻¹; the Mott–Bethe form amplifies their
    errors at large s (the result is returned without warning).

    Parameters
    ----------
    element : str
        Element symbol, H–Cf.
    s : array_like
        s = sinθ/λ in Å⁻¹, any shape.
    charge : int, optional
        Formal ionic charge (ITC ions only; others fall back to the neutral atom
        with a one-time warning).

    Returns
    -------
    ndarray
        f_e in Å, shape of ``s``.
    """
    return _mott_bethe("xray_mott_bethe", element, s, charge)


def xray_mott_bethe(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """The ``xray_mott_bethe`` elastic model: :func:`mott_bethe` of the ITC X-ray fit."""
    return _mott_bethe("xray_mott_bethe", element, s, charge)


def electron_from_xray(f_x: ArrayLike, z: ArrayLike, s: ArrayLike) -> np.ndarray:
    """Mott–Bethe conversion of an X-ray form or structure factor to the electron one.

    f_e = C (Z − f_x) / s², elementwise with NumPy broadcasting, C =
    :data:`qcbed.constants.MOTT_BETHE_PREFACTOR` = 0.023934 Å (Mott 1930; Bethe
    1930; Spence & Zuo 1992 eq. 2.13 for structure factors, with Z → Σ_j Z_j
    exp(−2πi g·r_j) of the cell). Exact inverse of :func:`xray_from_electron`.

    Parameters
    ----------
    f_x : array_like
        X-ray form factor (electrons); may be complex (structure factors).
    z : array_like
        Atomic number, or the nuclear-charge term of a structure factor.
    s : array_like
        s = sinθ/λ in Å⁻¹.

    Returns
    -------
    ndarray
        f_e in Å. Undefined at s = 0 (±inf, or nan where Z = f_x): use
        :func:`mott_bethe` for atoms, or the mean inner potential for g = 0.
    """
    s2 = _s2(s)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _C * (np.asarray(z) - np.asarray(f_x)) / s2


def xray_from_electron(f_e: ArrayLike, z: ArrayLike, s: ArrayLike) -> np.ndarray:
    """Inverse Mott–Bethe conversion: X-ray from electron form or structure factor.

    f_x = Z − s² f_e / C, elementwise with NumPy broadcasting, C =
    :data:`qcbed.constants.MOTT_BETHE_PREFACTOR` (Mott 1930; Bethe 1930). Used to
    express refined electron structure factors as X-ray ones; exact inverse of
    :func:`electron_from_xray` for s > 0 (at s = 0 it returns Z).

    Parameters
    ----------
    f_e : array_like
        Electron scattering or structure factor in Å; may be complex.
    z : array_like
        Atomic number, or the nuclear-charge term of a structure factor.
    s : array_like
        s = sinθ/λ in Å⁻¹.

    Returns
    -------
    ndarray
        f_x in electrons.
    """
    return np.asarray(z) - _s2(s) * np.asarray(f_e) / _C


# ---------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------
def _register() -> None:
    h_to_lr = frozenset(SYMBOLS)
    h_to_cf = frozenset(SYMBOLS[:98])
    for name, func, ref, elements, s_max in (
        ("kirkland", kirkland, REF_KIRKLAND, h_to_lr, 6.0),
        ("lobato", lobato, REF_LOBATO, h_to_lr, 6.0),
        ("peng", peng, REF_PENG, h_to_cf, 2.0),
        ("peng_high", peng_high, REF_PENG, h_to_cf, 6.0),
        ("doyle_turner", doyle_turner, REF_DOYLE_TURNER, frozenset(DOYLE_TURNER_ELEMENTS), 2.0),
        ("xray_mott_bethe", xray_mott_bethe, REF_XRAY, h_to_cf, 2.0),
    ):
        register_elastic(ElasticModel(name=name, function=func, reference=ref,
                                      elements=elements, s_max=s_max))


_register()
