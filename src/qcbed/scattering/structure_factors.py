"""Structure factors of the optical potential: U_g, U′_g, F_g and the mean inner potential.

U_g = 2 m e V_g / h² (Å⁻²) with the relativistic mass m = γ m₀ equals
U_g = γ F_g / (π Ω) (Spence & Zuo 1992, eqs. 2.12–2.13), where

    F_g = Σ_j occ_j f_j(s) T_j(g) exp(−2πi g·r_j)      (Å),   s = |g|/2,

is the electron structure factor, f_j the elastic electron scattering factor
(Å) of the chosen parameterisation, T_j the Debye–Waller factor
(exp(−B s²) isotropic, exp(−hᵀβh) anisotropic; Willis & Pryor 1975) and Ω
the cell volume (Å³). The absorptive coefficients U′_g = γ F′_g / (π Ω) use
absorptive form factors f′ that already contain their thermal factors
(:mod:`qcbed.scattering.absorption`), or the proportional model U′_g = ξ U_g.

All functions are vectorised over the list of reflections.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ..constants import (
    H2_OVER_2M0E,
    MOTT_BETHE_PREFACTOR,
    relativistic_gamma,
    u_to_potential,
    wavenumber,
)
from ..crystal import Crystal
from ..crystal.structure import atomic_number
from ..errors import InputError
from .absorption import absorptive_form_factor
from .models import canonical_model_name, elastic_form_factor, elastic_model

_ABSORPTION_MODELS = ("none", "proportional", "bird_king", "wk", "wk_phonon", "wk_core")


@dataclass(frozen=True)
class PotentialModel:
    """How the crystal potential is built from independent atoms.

    Parameters
    ----------
    elastic : str
        Elastic scattering-factor parameterisation (``'kirkland'``, ``'lobato'``,
        ``'peng'``, ``'doyle_turner'``, ``'wk'``, ``'xray_mott_bethe'``).
    absorption : str
        ``'none'``, ``'proportional'`` (U′ = ξ U), ``'bird_king'`` (Bird & King 1990,
        thermal diffuse), ``'wk'`` (Weickenmeier & Kohl 1991, phonon + core loss),
        ``'wk_phonon'`` or ``'wk_core'``.
    xi : float
        Proportionality constant ξ of the proportional model (dimensionless).
    absorption_elastic : str or None
        Elastic model inside the Bird–King integral (default: ``elastic``).
    """

    elastic: str = "kirkland"
    absorption: str = "bird_king"
    xi: float = 0.1
    absorption_elastic: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "elastic", canonical_model_name(self.elastic))
        elastic_model(self.elastic)  # raises InputError when unknown
        absn = self.absorption.strip().lower().replace("-", "_").replace(" ", "_")
        absn = {"birdking": "bird_king", "bk": "bird_king", "proportional_model": "proportional",
                "": "none", "off": "none"}.get(absn, absn)
        if absn not in _ABSORPTION_MODELS:
            raise InputError("unknown absorption model", expected=list(_ABSORPTION_MODELS),
                             found=self.absorption)
        object.__setattr__(self, "absorption", absn)
        if not np.isfinite(self.xi) or self.xi < 0:
            raise InputError("proportional absorption ξ must be ≥ 0", found=self.xi)

    def describe(self) -> str:
        """One-line description (stored in results files)."""
        a = self.absorption
        if a == "proportional":
            a = f"proportional(xi={self.xi:g})"
        elif a == "bird_king":
            a = f"bird_king(elastic={self.absorption_elastic or self.elastic})"
        return f"elastic={self.elastic}; absorption={a}"


@dataclass
class StructureFactors:
    """U_g and U′_g for a list of reflections.

    Attributes
    ----------
    hkl : ndarray (n, 3) int
    u : ndarray (n,) complex
        Elastic U_g in Å⁻².
    u_abs : ndarray (n,) complex
        Absorptive U′_g in Å⁻² (optical potential U + iU′).
    voltage_kv : float
    """

    hkl: np.ndarray
    u: np.ndarray
    u_abs: np.ndarray
    voltage_kv: float
    extra: dict = field(default_factory=dict)

    @property
    def v(self) -> np.ndarray:
        """Elastic V_g in volts."""
        return u_to_potential(self.u, self.voltage_kv)

    @property
    def xi_g(self) -> np.ndarray:
        """Two-beam extinction distance ξ_g = K/|U_g| ≈ 1/(λ|U_g|) in Å."""
        with np.errstate(divide="ignore"):
            return wavenumber(self.voltage_kv) / np.abs(self.u)


def _debye_waller(crystal: Crystal, hkl: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """T_j(g) for every atom: (n_g, n_atoms)."""
    atoms = crystal.atoms
    t = np.empty((len(hkl), len(atoms)))
    h = hkl.astype(float)
    for j in range(len(atoms)):
        beta = atoms.beta[j]
        if beta is None:
            t[:, j] = np.exp(-atoms.b_iso[j] * s2)
        else:
            t[:, j] = np.exp(-np.einsum("ni,ij,nj->n", h, beta, h))
    return t


def b_equivalent(crystal: Crystal) -> np.ndarray:
    """Isotropic-equivalent B (Å²) of every atom: B_eq = (4/3) Σ_ij β_ij G_ij."""
    atoms = crystal.atoms
    out = np.array(atoms.b_iso, dtype=float)
    for j, beta in enumerate(atoms.beta):
        if beta is not None:
            out[j] = 4.0 / 3.0 * float(np.sum(beta * crystal.lattice.metric))
    return out


def _species_groups(crystal: Crystal, b_values: np.ndarray) -> dict[tuple, list[int]]:
    atoms = crystal.atoms
    groups: dict[tuple, list[int]] = defaultdict(list)
    for j in range(len(atoms)):
        groups[(atoms.elements[j], int(atoms.charges[j]), round(float(b_values[j]), 10))].append(j)
    return groups


def _phase_matrix(crystal: Crystal, hkl: np.ndarray) -> np.ndarray:
    atoms = crystal.atoms
    return np.exp(-2j * np.pi * (hkl.astype(float) @ atoms.frac.T))


def electron_structure_factors(crystal: Crystal, hkl: ArrayLike, model: PotentialModel |
                               None = None, *, voltage_kv: float | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Electron structure factors (F_g, F′_g) in Å for reflections ``hkl``.

    Parameters
    ----------
    crystal : Crystal
    hkl : array_like (n, 3) int
        Miller indices.
    model : PotentialModel
        Elastic and absorptive models (default: Kirkland + Bird–King).
    voltage_kv : float, optional
        Needed by the voltage-dependent absorptive models (Bird–King, WK).

    Returns
    -------
    F, F_abs : ndarray (n,) complex
        Elastic and absorptive structure factors in Å (no γ, no 1/(πΩ)).
    """
    model = model or PotentialModel()
    h = np.atleast_2d(np.asarray(hkl)).astype(int)
    if h.shape[-1] != 3:
        raise InputError("hkl must have shape (n, 3)", found=h.shape)
    atoms = crystal.atoms
    s = 0.5 * crystal.lattice.g_length(h)
    s2 = s**2
    phase = _phase_matrix(crystal, h)
    tdw = _debye_waller(crystal, h, s2)
    occ = atoms.occupancy
    f_el = np.empty((len(h), len(atoms)))
    cache: dict[tuple[str, int], np.ndarray] = {}
    for j in range(len(atoms)):
        key = (atoms.elements[j], int(atoms.charges[j]))
        if key not in cache:
            cache[key] = elastic_form_factor(key[0], s, model.elastic, key[1])
        f_el[:, j] = cache[key]
    big_f = np.sum(occ * f_el * tdw * phase, axis=1)
    absn = model.absorption
    if absn == "none":
        big_fa = np.zeros_like(big_f)
    elif absn == "proportional":
        big_fa = model.xi * big_f
    else:
        if voltage_kv is None:
            raise InputError(f"absorption model {absn!r} needs the accelerating voltage",
                             tag="voltage_kv")
        beq = b_equivalent(crystal)
        f_abs = np.empty_like(f_el)
        for (el, ch, b), idx in _species_groups(crystal, beq).items():
            fa = absorptive_form_factor(el, s, b, voltage_kv, absn,
                                        elastic=model.absorption_elastic or model.elastic,
                                        charge=ch)
            f_abs[:, idx] = np.asarray(fa)[:, None]
        big_fa = np.sum(occ * f_abs * phase, axis=1)
    return big_f, big_fa


def structure_factors(crystal: Crystal, hkl: ArrayLike, voltage_kv: float,
                      model: PotentialModel | None = None) -> StructureFactors:
    """U_g and U′_g (Å⁻²) of the independent-atom model for a list of reflections.

    U_g = γ F_g/(πΩ), U′_g = γ F′_g/(πΩ) (Spence & Zuo 1992, eq. 2.13).

    Parameters
    ----------
    crystal : Crystal
    hkl : array_like (n, 3) int
        Miller indices; 000 gives the mean inner potential U_0 (and U′_0).
    voltage_kv : float
        Accelerating voltage in kV (sets γ and the absorptive factors).
    model : PotentialModel, optional
        Scattering-factor and absorption models.

    Returns
    -------
    StructureFactors
    """
    model = model or PotentialModel()
    h = np.atleast_2d(np.asarray(hkl)).astype(int)
    big_f, big_fa = electron_structure_factors(crystal, h, model, voltage_kv=voltage_kv)
    pref = relativistic_gamma(voltage_kv) / (np.pi * crystal.lattice.volume)
    return StructureFactors(hkl=h, u=pref * big_f, u_abs=pref * big_fa,
                            voltage_kv=float(voltage_kv),
                            extra={"model": model.describe()})


def mean_inner_potential(crystal: Crystal, model: PotentialModel | None = None) -> float:
    """Mean inner potential V_0 in volts, from f_e(0) of the neutral atoms.

    V_0 = (h²/2π m₀ e Ω) Σ_j occ_j f_j(0)  (e.g. Kirkland 2010, eq. 5.11; Spence & Zuo 1992).
    Ionic Coulomb terms cancel for a neutral cell and are left out.
    """
    model = model or PotentialModel()
    atoms = crystal.atoms
    f0 = np.array([elastic_form_factor(el, np.zeros(1), model.elastic, 0)[0]
                   for el in atoms.elements])
    u0_nonrel = float(np.sum(atoms.occupancy * f0)) / (np.pi * crystal.lattice.volume)
    return u0_nonrel * H2_OVER_2M0E


def xray_structure_factors(crystal: Crystal, hkl: ArrayLike, u: ArrayLike, voltage_kv: float
                           ) -> np.ndarray:
    """X-ray structure factors (electrons) from electron U_g by the Mott–Bethe formula.

    F_x(g) = Σ_j occ_j Z_j T_j(g) exp(−2πi g·r_j) − (s²/C) F_e(g),
    F_e = π Ω U_g / γ, C = m₀e²/(8πε₀h²) (Mott 1930; Bethe 1930; pyextal-notes §2.4).
    The nuclear term uses the same Debye–Waller factors as the crystal, so
    refined-minus-IAM differences are consistent. Undefined at g = 0 (returns Σ occ Z).
    """
    h = np.atleast_2d(np.asarray(hkl)).astype(int)
    s = 0.5 * crystal.lattice.g_length(h)
    s2 = s**2
    atoms = crystal.atoms
    z = np.array([atomic_number(el) for el in atoms.elements], dtype=float)
    nuc = np.sum(atoms.occupancy * z * _debye_waller(crystal, h, s2) * _phase_matrix(crystal, h),
                 axis=1)
    fe = np.pi * crystal.lattice.volume * np.asarray(u) / relativistic_gamma(voltage_kv)
    out = nuc - s2 / MOTT_BETHE_PREFACTOR * fe
    zero = s2 == 0
    out[zero] = np.sum(atoms.occupancy * z) - np.sum(atoms.occupancy * atoms.charges)
    return out


@dataclass(frozen=True)
class TabulatedPotential:
    """U_g and U′_g given as a table (e.g. from another program), in the crystal's origin.

    Reflections absent from the table get ``fill`` (default 0). Use it to run the
    engine with exactly the structure factors of a reference calculation.

    Parameters
    ----------
    hkl : (n, 3) int
    u, u_abs : (n,) complex
        Å⁻², qcbed's phase convention (exp(−2πi g·r)).
    name : str
        Description stored in results.
    """

    hkl: np.ndarray
    u: np.ndarray
    u_abs: np.ndarray
    name: str = "table"
    fill: complex = 0.0

    def lookup(self, hkl: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(U, U′) for reflections ``hkl`` (n, 3)."""
        h = np.atleast_2d(np.asarray(hkl, dtype=np.int64))
        table = np.asarray(self.hkl, dtype=np.int64)
        span = int(max(np.abs(table).max(), np.abs(h).max())) + 1
        base = 2 * span + 1

        def key(a):
            return ((a[:, 0] + span) * base + a[:, 1] + span) * base + a[:, 2] + span

        kt = key(table)
        order = np.argsort(kt)
        pos = np.clip(np.searchsorted(kt[order], key(h)), 0, len(kt) - 1)
        found = kt[order][pos] == key(h)
        idx = order[pos]
        u = np.where(found, np.asarray(self.u, complex)[idx], self.fill)
        ua = np.where(found, np.asarray(self.u_abs, complex)[idx], 0.0)
        return u, ua

    def describe(self) -> str:
        return f"tabulated({self.name}, {len(self.hkl)} reflections)"
