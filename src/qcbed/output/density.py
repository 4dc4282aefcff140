"""Difference density and potential maps by Fourier synthesis; Gaussian cube files.

With the phase convention of ``docs/conventions.md`` (F_g = Σ_j f_j T_j
exp(−2πi g·r_j)), a periodic function with Fourier coefficients C_g is

    ρ(r) = Σ_g C_g exp(+2πi g·r),

summed over a reflection list that contains every symmetry equivalent and
Friedel mate (so ρ is real). Two maps are provided for refined minus
independent-atom-model (IAM) structure factors:

* ``kind='xray'``: the deformation (electron) density
  Δρ(r) = (1/Ω) Σ_g ΔF_x(g) exp(2πi g·r) in e/Å³, with X-ray structure factors
  from the electron ones by the Mott–Bethe formula
  (:func:`qcbed.scattering.structure_factors.xray_structure_factors`; the nuclear
  term cancels in the difference: ΔF_x = −(s²/C)·πΩΔU/γ, s = |g|/2);
* ``kind='potential'``: the difference electrostatic potential
  ΔV(r) = Σ_g ΔV_g exp(2πi g·r) in volts, ΔV_g from ΔU_g
  (:func:`qcbed.constants.u_to_potential`).

The synthesis is a direct sum over reflections vectorised over the grid: the
phase factor separates, exp(2πi(h x + k y + l z)) = e_h(x) e_k(y) e_l(z), so the
sum is two tensor contractions (O(n_g·N) operations, no Python loop over grid
points).

Gaussian cube files (:func:`write_cube`) hold the **full cell** on an
n₁ × n₂ × n₃ grid (points at fractional i/n₁, j/n₂, k/n₃, the periodic end
points excluded), lengths in **Bohr** (a₀ = 0.529177210903 Å): origin, voxel
axis vectors a/n₁, b/n₂, c/n₃ in the Cartesian frame of the conventions (a
along x, b in the xy plane — so non-orthogonal cells are exact), and every atom of
the cell (not only the asymmetric unit) in Cartesian Bohr. Values are in atomic
units by default: electron density in e/Bohr³, potential in Hartree/e
(1 Hartree/e = 27.211386 V).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._core.files import atomic_write
from ..constants import BOHR_RADIUS, u_to_potential
from ..crystal import atomic_number
from ..errors import InputError
from ..scattering.structure_factors import xray_structure_factors

__all__ = [
    "HARTREE_EV",
    "DensityMap",
    "difference_map",
    "expand_reflections",
    "fourier_synthesis",
    "read_cube",
    "write_cube",
]

#: Hartree energy in eV (CODATA 2018): 1 Hartree/e = 27.211386245988 V.
HARTREE_EV = 27.211386245988


@dataclass
class DensityMap:
    """A real periodic map on the full unit cell.

    Attributes
    ----------
    values : ndarray (n1, n2, n3)
        values[i, j, k] at fractional coordinates (i/n1, j/n2, k/n3).
    lattice : Lattice
    kind : str
        ``'xray'`` (electron density), ``'potential'`` or ``'generic'``.
    unit : str
        ``'e/Å³'``, ``'V'`` or ``''``.
    elements : tuple of str
        Element of every atom in the cell.
    frac : ndarray (n_atoms, 3)
        Fractional coordinates of every atom in the cell.
    description : str
    """

    values: np.ndarray
    lattice: Any
    kind: str = "generic"
    unit: str = ""
    elements: tuple[str, ...] = ()
    frac: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    description: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape  # type: ignore[return-value]

    def fractional_grid(self) -> np.ndarray:
        """Fractional coordinates (n1, n2, n3, 3) of the grid points."""
        axes = [np.arange(n) / n for n in self.shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def expand_reflections(crystal: Any, hkl: ArrayLike, values: ArrayLike, *,
                       symmetry: bool = True, friedel: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """All symmetry equivalents (and Friedel mates) of reflections with their coefficients.

    F(gR) = exp(+2πi g·t) F(g) for every operation {R|t}; a Friedel mate gets the
    complex conjugate (real maps). Reflections given more than once keep the last value.

    Parameters
    ----------
    crystal : Crystal
    hkl : array (n, 3) int
    values : array (n,) complex
        Coefficients of the given reflections (any unit).
    symmetry, friedel : bool
        Add symmetry equivalents / Friedel mates.

    Returns
    -------
    (hkl (m, 3) int, values (m,) complex)
    """
    h = np.asarray(hkl, dtype=int).reshape(-1, 3)
    v = np.asarray(values, dtype=complex).reshape(-1)
    if len(v) != len(h):
        raise InputError("one value per reflection", expected=len(h), found=len(v))
    out: dict[tuple[int, int, int], complex] = {}
    for g, f in zip(h, v):
        if not np.any(g):
            continue
        if symmetry:
            eq = crystal.equivalent_reflections(g, friedel=friedel)
            for t, ph, cj in zip(eq.hkl, eq.phase, eq.conjugate):
                out[tuple(int(x) for x in t)] = complex(ph * (np.conj(f) if cj else f))
        else:
            out[tuple(int(x) for x in g)] = complex(f)
            if friedel:
                out[tuple(-int(x) for x in g)] = complex(np.conj(f))
    if not out:
        return np.zeros((0, 3), int), np.zeros(0, complex)
    keys = np.array(list(out), dtype=int)
    return keys, np.array([out[tuple(k)] for k in map(tuple, keys)], dtype=complex)


def fourier_synthesis(hkl: ArrayLike, coefficients: ArrayLike, shape: Sequence[int], *,
                      chunk: int = 64) -> np.ndarray:
    """ρ(x) = Re Σ_g C_g exp(+2πi g·x) on the grid x = (i/n1, j/n2, k/n3).

    Parameters
    ----------
    hkl : array (m, 3) int
        Every reflection of the sum (include Friedel mates for a real map).
    coefficients : array (m,) complex
    shape : (n1, n2, n3)
    chunk : int
        Reflections per contraction (memory: chunk·n1·n2 complex numbers).

    Returns
    -------
    ndarray (n1, n2, n3) float
    """
    h = np.asarray(hkl, dtype=float).reshape(-1, 3)
    c = np.asarray(coefficients, dtype=complex).reshape(-1)
    n1, n2, n3 = (int(n) for n in shape)
    if min(n1, n2, n3) < 1:
        raise InputError("grid shape must be positive", found=tuple(shape))
    out = np.zeros((n1, n2, n3), dtype=complex)
    x = [np.arange(n) / n for n in (n1, n2, n3)]
    for s in range(0, len(h), chunk):
        hh, cc = h[s:s + chunk], c[s:s + chunk]
        e1 = np.exp(2j * np.pi * hh[:, 0:1] * x[0][None, :]) * cc[:, None]  # (m, n1)
        e2 = np.exp(2j * np.pi * hh[:, 1:2] * x[1][None, :])                # (m, n2)
        e3 = np.exp(2j * np.pi * hh[:, 2:3] * x[2][None, :])                # (m, n3)
        a = e1[:, :, None] * e2[:, None, :]                                 # (m, n1, n2)
        out += np.tensordot(a, e3, axes=([0], [0]))                         # (n1, n2, n3)
    return out.real.copy()


def _default_shape(lattice: Any, hkl: np.ndarray, step: float) -> tuple[int, int, int]:
    hmax = np.abs(hkl).max(axis=0) if len(hkl) else np.zeros(3, int)
    lengths = np.array([lattice.a, lattice.b, lattice.c])
    n = np.maximum(np.ceil(lengths / step), 2 * hmax + 1).astype(int)
    return tuple(int(v) for v in n)  # type: ignore[return-value]


def difference_map(crystal: Any, hkl: ArrayLike, u_refined: ArrayLike, u_iam: ArrayLike,
                   voltage_kv: float, *, kind: str = "xray",
                   shape: Sequence[int] | None = None, step: float = 0.15,
                   symmetry: bool = True) -> DensityMap:
    """Refined-minus-IAM difference map from structure factors U_g.

    Parameters
    ----------
    crystal : Crystal
        The crystal the U_g refer to (user's origin).
    hkl : array (n, 3) int
        Unique reflections (symmetry equivalents are generated with ``symmetry``).
    u_refined, u_iam : array (n,) complex
        U_g (Å⁻²) refined and of the independent-atom model.
    voltage_kv : float
        Voltage the U_g refer to (kV).
    kind : {'xray', 'potential'}
        Deformation electron density (e/Å³, Mott–Bethe) or potential (V).
    shape : (n1, n2, n3), optional
        Grid; default about ``step`` Å per point (and at least 2|h|max + 1 per axis).
    step : float
        Default grid spacing (Å).
    symmetry : bool
        Expand to symmetry equivalents and Friedel mates (else Friedel mates only).
    """
    h = np.asarray(hkl, dtype=int).reshape(-1, 3)
    ur = np.asarray(u_refined, dtype=complex).reshape(-1)
    ui = np.asarray(u_iam, dtype=complex).reshape(-1)
    if not (len(ur) == len(ui) == len(h)):
        raise InputError("one U_g per reflection", expected=len(h), found=(len(ur), len(ui)))
    if kind == "xray":
        coef = (xray_structure_factors(crystal, h, ur, voltage_kv)
                - xray_structure_factors(crystal, h, ui, voltage_kv)) / crystal.lattice.volume
        unit = "e/Å³"
    elif kind == "potential":
        coef = u_to_potential(ur - ui, voltage_kv)
        unit = "V"
    else:
        raise InputError("unknown map kind", expected=["xray", "potential"], found=kind)
    allh, allc = expand_reflections(crystal, h, coef, symmetry=symmetry, friedel=True)
    shp = tuple(shape) if shape is not None else _default_shape(crystal.lattice, allh, step)
    values = fourier_synthesis(allh, allc, shp)
    atoms = crystal.atoms
    what = "deformation density (X-ray, Mott-Bethe)" if kind == "xray" else \
        "electrostatic potential"
    desc = f"refined minus IAM {what}, {len(h)} unique / {len(allh)} reflections"
    return DensityMap(values=values, lattice=crystal.lattice, kind=kind, unit=unit,
                      elements=tuple(atoms.elements), frac=np.asarray(atoms.frac, float),
                      description=desc)


def _unit_factor(dmap: DensityMap, atomic_units: bool) -> tuple[float, str]:
    if not atomic_units:
        return 1.0, dmap.unit or "arbitrary"
    if dmap.kind == "xray":
        return BOHR_RADIUS**3, "e/bohr^3"
    if dmap.kind == "potential":
        return 1.0 / HARTREE_EV, "hartree/e"
    return 1.0, dmap.unit or "arbitrary"


def write_cube(path: str | os.PathLike, dmap: DensityMap, *, comment: str | None = None,
               atomic_units: bool = True) -> Path:
    """Write a Gaussian cube file of the full cell (lengths in Bohr).

    Parameters
    ----------
    path : path
    dmap : DensityMap
    comment : str, optional
        First comment line (default: the map's description).
    atomic_units : bool
        Values in e/Bohr³ (density) or Hartree/e (potential); else in the map's unit
        (the second comment line states the unit either way).
    """
    basis = np.asarray(dmap.lattice.direct_basis, float) / BOHR_RADIUS  # rows a, b, c (Bohr)
    n = dmap.shape
    factor, unit = _unit_factor(dmap, atomic_units)
    vals = np.asarray(dmap.values, float) * factor
    cart = np.asarray(dmap.frac, float).reshape(-1, 3) @ basis
    lines = [(comment or dmap.description or "qcbed map").replace("\n", " "),
             f"qcbed {dmap.kind} map, values in {unit}, lengths in bohr, full cell "
             f"{n[0]}x{n[1]}x{n[2]} (periodic end points excluded)",
             f"{len(cart):5d} {0.0:12.6f} {0.0:12.6f} {0.0:12.6f}"]
    for k in range(3):
        v = basis[k] / n[k]
        lines.append(f"{n[k]:5d} {v[0]:12.6f} {v[1]:12.6f} {v[2]:12.6f}")
    for el, xyz in zip(dmap.elements, cart):
        z = atomic_number(el)
        lines.append(f"{z:5d} {float(z):12.6f} {xyz[0]:12.6f} {xyz[1]:12.6f} {xyz[2]:12.6f}")
    rows = vals.reshape(n[0] * n[1], n[2])
    body = []
    for r in rows:
        for s in range(0, len(r), 6):
            body.append(" ".join(f"{x:13.5E}" for x in r[s:s + 6]))
    text = "\n".join(lines + body) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="ascii"))


def read_cube(path: str | os.PathLike) -> dict[str, Any]:
    """Read a Gaussian cube file.

    Returns
    -------
    dict
        ``comments`` (two lines), ``origin`` (3,) Bohr, ``axes`` (3, 3) voxel vectors
        in Bohr (rows), ``shape``, ``atomic_numbers`` (n,), ``charges`` (n,),
        ``positions`` (n, 3) Bohr, ``values`` (n1, n2, n3).
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="ascii").splitlines()
        nat, *org = lines[2].split()[:4]
        nat = int(nat)
        if nat < 0:
            raise InputError("cube files with orbital data are not supported", source=p,
                             line=3, found=nat)
        origin = np.array(org, float)
        shape, axes = [], []
        for k in range(3):
            t = lines[3 + k].split()
            nk = int(t[0])
            ax = np.array(t[1:4], float)
            if nk < 0:  # negative count: axis in Å
                nk, ax = -nk, ax / BOHR_RADIUS
            shape.append(nk)
            axes.append(ax)
        at = np.array([lines[6 + i].split()[:5] for i in range(nat)], float).reshape(-1, 5)
        data = np.array(" ".join(lines[6 + nat:]).split(), float)
    except (IndexError, ValueError) as exc:
        raise InputError(f"not a cube file: {exc}", source=p) from None
    if data.size != int(np.prod(shape)):
        raise InputError("wrong number of values", source=p, expected=int(np.prod(shape)),
                         found=data.size)
    return {"comments": lines[:2], "origin": origin, "axes": np.array(axes),
            "shape": tuple(shape), "atomic_numbers": at[:, 0].astype(int),
            "charges": at[:, 1], "positions": at[:, 2:5],
            "values": data.reshape(shape)}
