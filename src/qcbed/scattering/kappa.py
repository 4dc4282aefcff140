"""Kappa (Hansen–Coppens spherical) charge-density model from Hartree–Fock orbitals.

The kappa formalism (Coppens, Guru Row, Leung, Stevens, Becker & Yang 1979;
Hansen & Coppens 1978, spherical part; Coppens 1997, *X-ray Charge Densities
and Chemical Bonding*, §3.4) writes the electron density of an atom as a frozen
core plus a valence shell of population P_v whose radial extent is scaled by κ:

    ρ(r) = ρ_core(r) + P_v κ³ ρ_val(κ r),

with ρ_val normalised to one electron. Its X-ray scattering factor is

    f_x(s) = f_core(s) + P_v f_val(s/κ)                                   (1)

(s = sinθ/λ in Å⁻¹; κ > 1 contracts the valence shell). κ = 1 and P_v = the
neutral-atom valence count give the independent (Hartree–Fock) atom.

Core and valence densities are those of the Roothaan–Hartree–Fock ground-state
orbitals of Clementi & Roetti (1974, *At. Data Nucl. Data Tables* 14, 177),
package data ``tables/clementi_roetti.json``. Each radial function is a sum of
normalised Slater-type orbitals (STOs),

    R_nl(r) = Σ_i c_i N_i r^(n_i − 1) exp(−ζ_i r),   N_i = (2ζ_i)^(n_i+½)/√((2n_i)!),

(each orbital renormalised to exactly one electron: the published five-digit
coefficients give norms 1 ± 10⁻⁴), so the orbital density is a sum of terms
r^(n_i+n_j−2) exp(−(ζ_i+ζ_j) r) and its spherical Bessel (j₀) transform has the
closed form (Gradshteyn & Ryzhik, *Table of Integrals*, 3.944.5)

    ∫₀^∞ r^m e^(−a r) sin(k r) dr = m! Im[(a + i k)^(m+1)] / (a² + k²)^(m+1),       (2)

with k = 4π s (the momentum transfer), giving f(s) = Σ_ij c_i c_j N_i N_j
(M−1)! Im[(a+ik)^M] / (k (a²+k²)^M), M = n_i + n_j, a = ζ_i + ζ_j (atomic units,
r in bohr). At k = 0 it is M!/a^(M+1).

The electron scattering factor follows from the Mott–Bethe formula (Mott 1930;
Bethe 1930)

    f_e(s) = C (Z − f_x(s)) / s²,   C = 1/(8π² a₀) = 0.023934 Å,                 (3)

evaluated at s = 0 from the second moments, f_e(0) = C (16π²/6) Σ ⟨r²⟩ (the
C q/s² Coulomb term of a charged atom, q = Z − f_x(0), is left out at s = 0 only:
it cancels in the mean inner potential of a neutral cell).

The model is registered as the elastic model ``"kappa"`` (aliases ``coppens``,
``hansen_coppens``, ``clementi_roetti``); per-site κ and P_v are carried by
:class:`~qcbed.scattering.structure_factors.PotentialModel` (``kappa``) and are
refinable (:func:`qcbed.refine.parameters.kappa_parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from math import factorial

import numpy as np
from numpy.typing import ArrayLike

from ..constants import BOHR_RADIUS, MOTT_BETHE_PREFACTOR
from ..errors import InputError
from .models import ElasticModel, register_elastic

__all__ = ["REF_CLEMENTI_ROETTI", "KappaSite", "kappa_electron_factor", "kappa_elements",
           "kappa_xray_factor", "orbital_xray_factor", "valence_electrons"]

REF_CLEMENTI_ROETTI = (
    "E. Clementi & C. Roetti, At. Data Nucl. Data Tables 14, 177-478 (1974) (RHF orbitals); "
    "kappa formalism: N. K. Hansen & P. Coppens, Acta Cryst. A34, 909 (1978); P. Coppens, "
    "X-ray Charge Densities and Chemical Bonding (OUP 1997)")


@dataclass(frozen=True)
class KappaSite:
    """κ and P_v of one site (or of every site of an element).

    Parameters
    ----------
    target : str
        Site label (``'Si1'``) or element symbol (``'Si'``); a label wins.
    kappa : float
        Valence expansion–contraction κ (dimensionless, > 0; 1 = free atom).
    pv : float or None
        Valence population P_v (electrons); None = the neutral atom's count.
    """

    target: str
    kappa: float = 1.0
    pv: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.kappa) and self.kappa > 0):
            raise InputError("kappa must be > 0", tag=f"kappa({self.target})", found=self.kappa)
        if self.pv is not None and not (np.isfinite(self.pv) and self.pv >= 0):
            raise InputError("valence population P_v must be ≥ 0", tag=f"Pv({self.target})",
                             found=self.pv)


# ----------------------------------------------------------------------------- table
@cache
def _table() -> dict:
    from .parameterisations import load_table

    return load_table("clementi_roetti")


def kappa_elements() -> list[str]:
    """Elements with tabulated Clementi–Roetti orbitals."""
    return list(_table()["elements"])


def _entry(element: str) -> dict:
    el = element.strip().capitalize()
    try:
        return _table()["elements"][el]
    except KeyError:
        raise InputError("no Hartree–Fock orbitals for this element in the kappa model",
                         source="qcbed/scattering/tables/clementi_roetti.json",
                         expected=", ".join(kappa_elements()), found=element) from None


def valence_electrons(element: str) -> int:
    """Number of valence electrons of the neutral atom (outer-shell s and p)."""
    e = _entry(element)
    return int(sum(e["occupation"][o] for o in e["valence"]))


@cache
def _orbital_terms(element: str, orbital: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefactor c_i c_j N_i N_j, M = n_i + n_j, a = ζ_i + ζ_j) of an orbital's density."""
    e = _entry(element)
    sh = e["shells"][orbital[1]]
    k = sh["orbitals"].index(orbital)
    n = np.asarray(sh["n"], dtype=int)
    z = np.asarray(sh["zeta"], dtype=float)
    c = np.asarray(sh["coefficients"][k], dtype=float)
    norm = np.array([(2 * zi) ** (ni + 0.5) / np.sqrt(float(factorial(2 * ni)))
                     for ni, zi in zip(n, z)])
    cn = c * norm
    pref = np.outer(cn, cn).ravel()
    m = np.add.outer(n, n).ravel()
    a = np.add.outer(z, z).ravel()
    # renormalise: the published 5-digit coefficients give norms 1 ± 10⁻⁴, which would
    # leave a spurious charge (and a C q/s² tail) in the Mott–Bethe conversion
    norm2 = float(np.sum(pref * np.array([float(factorial(int(mi))) for mi in m])
                         / a ** (m + 1)))
    return pref / norm2, m, a


def _density_transform(pref: np.ndarray, m: np.ndarray, a: np.ndarray, k: np.ndarray
                       ) -> np.ndarray:
    """Σ pref ∫ r^M e^(−a r) j₀(k r) dr for k ≥ 0 (atomic units), closed form (2).

    Im[(a + ik)^M] / (a² + k²)^M = sin(Mθ) / (a² + k²)^(M/2), θ = atan2(k, a).
    """
    k = np.asarray(k, dtype=float)
    kk = k[..., None]
    fact = np.array([float(factorial(int(mi) - 1)) for mi in m])
    big = kk > 1e-8
    safe = np.where(big, kk, 1.0)
    val = fact * np.sin(m * np.arctan2(safe, a)) / (safe * (a**2 + safe**2) ** (0.5 * m))
    zero = np.array([float(factorial(int(mi))) for mi in m]) / a ** (m + 1)
    return np.sum(pref * np.where(big, val, zero), axis=-1)


@cache
def _shell_terms(element: str, valence: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density terms of the core (or of the valence, per electron), occupations included."""
    e = _entry(element)
    orbs = [(o, n) for o, n in e["occupation"].items() if (o in e["valence"]) == valence]
    if not orbs:
        return np.zeros(0), np.zeros(0, int), np.ones(0)
    nval = sum(n for _, n in orbs) if valence else 1
    parts = [_orbital_terms(element, o) for o, _ in orbs]
    pref = np.concatenate([p[0] * n / nval for p, (_, n) in zip(parts, orbs)])
    m = np.concatenate([p[1] for p in parts])
    a = np.concatenate([p[2] for p in parts])
    # orbitals of one l share their basis: merge the terms with equal (M, a)
    keys, inv = np.unique(np.stack([m, a], 1), axis=0, return_inverse=True)
    merged = np.zeros(len(keys))
    np.add.at(merged, inv.ravel(), pref)
    return merged, keys[:, 0].astype(int), keys[:, 1]


def _second_moment(element: str, orbital: str) -> float:
    """⟨r²⟩ of one electron in the orbital, bohr²."""
    pref, m, a = _orbital_terms(element, orbital)
    fact = np.array([float(factorial(int(mi) + 2)) for mi in m])
    return float(np.sum(pref * fact / a ** (m + 3)))


def _k_of_s(s: np.ndarray) -> np.ndarray:
    """k = 4π s in bohr⁻¹ for s in Å⁻¹."""
    return 4.0 * np.pi * s * BOHR_RADIUS


def orbital_xray_factor(element: str, orbital: str, s: ArrayLike) -> np.ndarray:
    """X-ray scattering factor of one electron in a Hartree–Fock orbital.

    Parameters
    ----------
    element : str
        Element symbol (see :func:`kappa_elements`).
    orbital : str
        ``'1s'``, ``'2p'``, ``'3s'`` …
    s : array_like
        sinθ/λ in Å⁻¹.

    Returns
    -------
    ndarray
        ⟨j₀(4π s r)⟩ of the spherically averaged orbital density (1 at s = 0).
    """
    e = _entry(element)
    if orbital not in e["occupation"]:
        raise InputError("orbital not occupied in the tabulated atom", tag=element,
                         expected=list(e["occupation"]), found=orbital)
    pref, m, a = _orbital_terms(element.strip().capitalize(), orbital)
    return _density_transform(pref, m, a, _k_of_s(np.abs(np.asarray(s, dtype=float))))


def _core_valence(element: str, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f_core(s) (electrons) and f_val(s) per valence electron."""
    el = element.strip().capitalize()
    _entry(el)
    k = _k_of_s(s)
    return (_density_transform(*_shell_terms(el, False), k),
            _density_transform(*_shell_terms(el, True), k))


def kappa_xray_factor(element: str, s: ArrayLike, kappa: float = 1.0,
                      pv: float | None = None) -> np.ndarray:
    """X-ray scattering factor f_x(s) = f_core(s) + P_v f_val(s/κ) (electrons), eq. (1).

    Parameters
    ----------
    element : str
    s : array_like
        sinθ/λ in Å⁻¹.
    kappa : float
        Valence expansion–contraction parameter (1 = free atom).
    pv : float, optional
        Valence population (default: the neutral atom's valence electrons).
    """
    site = KappaSite(element, kappa, pv)
    s_arr = np.abs(np.asarray(s, dtype=float))
    p = float(valence_electrons(element) if site.pv is None else site.pv)
    core, _ = _core_valence(element, s_arr)
    _, val = _core_valence(element, s_arr / site.kappa)
    return core + p * val


def kappa_electron_factor(element: str, s: ArrayLike, kappa: float = 1.0,
                          pv: float | None = None) -> np.ndarray:
    """Electron scattering factor f_e(s) (Å) of a kappa atom by Mott–Bethe, eq. (3).

    For s > 0: f_e = C (Z − f_x(s))/s² with f_x from :func:`kappa_xray_factor`
    (it contains the C q/s² Coulomb term of a charged atom, q = Z − N_core − P_v).
    At s = 0 the finite part C (16π²/6)(Σ_core ⟨r²⟩ + P_v ⟨r²⟩_val/κ²) a₀² is
    returned. Below s = 10⁻⁴ Å⁻¹ the same series is used (no cancellation).
    """
    site = KappaSite(element, kappa, pv)
    e = _entry(element)
    el = element.strip().capitalize()
    s_arr = np.abs(np.asarray(s, dtype=float))
    nval = valence_electrons(el)
    p = float(nval if site.pv is None else site.pv)
    r2_core = sum(occ * _second_moment(el, o) for o, occ in e["occupation"].items()
                  if o not in e["valence"])
    r2_val = sum(occ * _second_moment(el, o) for o, occ in e["occupation"].items()
                 if o in e["valence"]) / nval
    r2 = (r2_core + p * r2_val / site.kappa**2) * BOHR_RADIUS**2  # Å²
    limit = MOTT_BETHE_PREFACTOR * (16 * np.pi**2 / 6) * r2
    small = s_arr < 1e-4
    s_safe = np.where(small, 1.0, s_arr)
    fx = kappa_xray_factor(el, s_safe, site.kappa, p)
    fe = MOTT_BETHE_PREFACTOR * (e["Z"] - fx) / s_safe**2
    return np.where(small, limit, fe)


def kappa(element: str, s: ArrayLike, charge: int = 0) -> np.ndarray:
    """The ``kappa`` elastic model for a free atom or ion: κ = 1, P_v = N_val − charge."""
    nval = valence_electrons(element)
    if charge > nval:
        raise InputError("ionic charge exceeds the valence electrons of the kappa model",
                         tag=element, expected=f"≤ {nval}", found=charge)
    return kappa_electron_factor(element, s, 1.0, float(nval - charge))


def site_form_factor(element: str, label: str, charge: int, s: np.ndarray,
                     sites: tuple[KappaSite, ...]) -> np.ndarray:
    """f_e of one atom of the kappa model, with the κ, P_v given for its label or element."""
    by_label = {k.target: k for k in sites}
    k = by_label.get(label) or by_label.get(element.strip().capitalize())
    if k is None:
        return kappa(element, s, charge)
    return kappa_electron_factor(element, s, k.kappa, k.pv)


register_elastic(ElasticModel(name="kappa", function=kappa, reference=REF_CLEMENTI_ROETTI,
                              elements=frozenset(_table()["elements"]), s_max=6.0))
