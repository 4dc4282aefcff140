"""Refinable parameters of a crystal: structure factors, cell, sites (factories).

:class:`Parameter`, :class:`ParameterSet` and :data:`KINDS` live in
:mod:`qcbed._core.parameters` (the experiment layer needs them too) and are
re-exported here.

Every parameter has a *kind*, which says what a change costs:

``structure``  changes the structure matrix (U_g, U′_g, Debye–Waller factors, cell,
               coordinates, occupancies, voltage, orientation): re-diagonalise;
``thickness``  re-uses the stored eigen-systems (Spence & Zuo 1992, eq. 2.29);
``sampling``   moves the experimental sampling points (rotation, ``gl``, shifts): no
               simulation at all;
``probe``      changes the LARBED probe convolution (σ, γ of the 2-D Voigt);
``linear``     scale and backgrounds, solved in closed form or as linear parameters.

The optimisers work on x = (value − start)/scale, so parameters of very
different magnitudes (Å, Å⁻², degrees) are equally conditioned.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .._core.hkl import hkl_name
from .._core.parameters import KINDS, Parameter, ParameterSet
from ..crystal import Crystal

__all__ = [
    "KINDS",
    "Parameter",
    "ParameterSet",
    "allowed_displacements",
    "allowed_u_tensors",
    "apply_cell",
    "cell_parameters",
    "hkl_name",
    "site_parameters",
    "structure_factor_parameters",
]


# ---------------------------------------------------------------------- factories
def structure_factor_parameters(hkl: Iterable[int], u: complex, u_abs: complex, *,
                                phase: float, refine_u: bool = True, refine_uabs: bool = True,
                                refine_phase: bool = False, rel_scale: float = 0.01
                                ) -> list[Parameter]:
    """Parameters for U_g = a·exp(iφ) and U′_g = a′·exp(iφ) of one reflection.

    The amplitudes a, a′ are signed reals (Å⁻²) along the phase φ (radians),
    which for centrosymmetric crystals is fixed by the centre of symmetry.
    For non-centrosymmetric crystals ``refine_phase=True`` adds φ (degrees).
    """
    h = tuple(int(x) for x in hkl)
    a = float(np.real(u * np.exp(-1j * phase)))
    aa = float(np.real(u_abs * np.exp(-1j * phase)))
    su = max(abs(a) * rel_scale, 1e-5)
    sa = max(abs(aa) * 0.05, 1e-6)
    out = [Parameter(hkl_name("U", h), a, "structure", su, unit="Å⁻²", refine=refine_u,
                     target=("U", h, phase)),
           Parameter(hkl_name("Uabs", h), aa, "structure", sa, unit="Å⁻²",
                     refine=refine_uabs, target=("Uabs", h, phase))]
    if refine_phase:
        out.append(Parameter(hkl_name("phase", h), float(np.degrees(phase)), "structure", 1.0,
                             unit="deg", target=("phase", h)))
    return out


def allowed_displacements(crystal: Crystal, site_index: int) -> np.ndarray:
    """Basis (k, 3) of fractional displacements of a site allowed by its site symmetry.

    The site-symmetry operations {R|t} (those with R x + t ≡ x mod 1) leave a
    displacement δ invariant only if R δ = δ, so the allowed δ span the null
    space of the stacked (R − I) (International Tables Vol. A, §8.3).
    """
    x = np.asarray(crystal.sites[site_index].xyz)
    rot, tran = crystal.operations
    rows = []
    for r, t in zip(rot, tran):
        d = r @ x + t - x
        if np.all(np.abs(d - np.rint(d)) < 1e-5):
            rows.append(r - np.eye(3))
    m = np.vstack(rows) if rows else np.zeros((1, 3))
    _, s, vt = np.linalg.svd(m)
    null = vt[np.sum(s > 1e-8):]
    return null


def cell_parameters(crystal: Crystal, *, scale: float = 0.001) -> list[Parameter]:
    """Independent cell parameters for the crystal system of the space group.

    cubic: a; tetragonal, hexagonal, trigonal (hexagonal axes): a, c; rhombohedral
    axes: a, α; orthorhombic: a, b, c; monoclinic: a, b, c and the one non-90°
    angle; triclinic: all six (International Tables Vol. A, Table 2.1.2.1).
    """
    lat = crystal.lattice
    system = crystal.space_group.crystal_system_str() if crystal.space_group else "triclinic"
    a, b, c, al, be, ga = lat.parameters
    names: list[tuple[str, float, str]]
    if system == "cubic":
        names = [("a", a, "Å")]
    elif system in ("tetragonal", "hexagonal"):
        names = [("a", a, "Å"), ("c", c, "Å")]
    elif system == "trigonal":
        if abs(al - 90) > 1e-6 and abs(a - c) < 1e-9:
            names = [("a", a, "Å"), ("alpha", al, "deg")]
        else:
            names = [("a", a, "Å"), ("c", c, "Å")]
    elif system == "orthorhombic":
        names = [("a", a, "Å"), ("b", b, "Å"), ("c", c, "Å")]
    elif system == "monoclinic":
        ang = max((("alpha", al), ("beta", be), ("gamma", ga)), key=lambda x: abs(x[1] - 90))
        names = [("a", a, "Å"), ("b", b, "Å"), ("c", c, "Å"), (ang[0], ang[1], "deg")]
    else:
        names = [("a", a, "Å"), ("b", b, "Å"), ("c", c, "Å"), ("alpha", al, "deg"),
                 ("beta", be, "deg"), ("gamma", ga, "deg")]
    out = []
    for n, v, unit in names:
        s = scale * v if unit == "Å" else 0.01
        lo, hi = (0.5 * v, 2 * v) if unit == "Å" else (v - 30, v + 30)
        out.append(Parameter(f"cell.{n}", float(v), "structure", s, lo, hi, unit,
                             target=("cell", n, system)))
    return out


def apply_cell(crystal: Crystal, values: dict[str, float], system: str) -> Crystal:
    """A crystal with refined cell parameters, keeping the crystal-system constraints."""
    lat = crystal.lattice
    a, b, c, al, be, ga = lat.parameters
    v = dict(a=a, b=b, c=c, alpha=al, beta=be, gamma=ga)
    v.update(values)
    if system == "cubic":
        v["b"] = v["c"] = v["a"]
    elif system in ("tetragonal", "hexagonal") or (system == "trigonal" and "c" in values):
        v["b"] = v["a"]
    elif system == "trigonal":
        v["b"] = v["c"] = v["a"]
        v["beta"] = v["gamma"] = v["alpha"]
    return crystal.replace(lattice=lat.replace(**v))


def site_parameters(crystal: Crystal, *, b_iso: bool = True, xyz: bool = False,
                    occupancy: bool = False) -> list[Parameter]:
    """Debye–Waller, coordinate (along symmetry-allowed directions) and occupancy parameters."""
    out = []
    for i, st in enumerate(crystal.sites):
        if b_iso and st.u_aniso is None:
            out.append(Parameter(f"B({st.label})", st.b_iso, "structure", 0.01, 0.0, 20.0, "Å²",
                                 target=("B", i)))
        if xyz:
            basis = allowed_displacements(crystal, i)
            for k, vec in enumerate(basis):
                out.append(Parameter(f"xyz({st.label}).{k}", 0.0, "structure", 1e-3, -0.05,
                                     0.05, "frac", target=("xyz", i, tuple(vec))))
        if occupancy:
            out.append(Parameter(f"occ({st.label})", st.occupancy, "structure", 0.01, 0.0, 1.0,
                                 "", target=("occ", i)))
    return out


def allowed_u_tensors(crystal: Crystal, site_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Basis of the anisotropic U tensors a site's symmetry allows, and the site's coefficients.

    U (Å², CIF convention U^{ij}, converted to the fractional form
    β ∝ N U N with N = diag(a*, b*, c*)) must satisfy R β Rᵀ = β for every
    site-symmetry operation. The allowed β form the null space of the linear map
    β ↦ (R β Rᵀ − β) on symmetric 3 × 3 matrices.

    Returns
    -------
    basis : ndarray (k, 3, 3)
        Allowed U^{ij} tensors, each scaled so that its largest element is 1 (the
        coefficient is then that U^{ij} in Å²).
    coeff : ndarray (k,)
        Coefficients of the site's current U (isotropic B gives B/8π² along the
        metric-isotropic tensor).
    """
    st = crystal.sites[site_index]
    x = np.asarray(st.xyz)
    rot, tran = crystal.operations
    nrec = np.diag(crystal.lattice.reciprocal_parameters)
    sym_idx = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]

    def mat(v):
        m = np.zeros((3, 3))
        for val, (i, j) in zip(v, sym_idx):
            m[i, j] = m[j, i] = val
        return m

    rows = []
    for r, t in zip(rot, tran):
        d = r @ x + t - x
        if not np.all(np.abs(d - np.rint(d)) < 1e-5):
            continue
        cols = []
        for k in range(6):
            e = mat(np.eye(6)[k])
            diff = r @ e @ r.T - e
            cols.append([diff[i, j] for i, j in sym_idx])
        rows.append(np.array(cols).T)
    a = np.vstack(rows)
    _, s, vt = np.linalg.svd(a)
    null = vt[np.sum(s > 1e-8):]
    ninv = np.linalg.inv(nrec)
    basis = np.array([ninv @ mat(v) @ ninv for v in null])
    basis /= np.abs(basis).max(axis=(1, 2))[:, None, None]  # coefficients ≈ U^{ij} in Å²
    if st.u_aniso is not None:
        u = np.asarray(st.u_aniso)
    else:
        g = crystal.lattice.reciprocal_metric
        # isotropic U^{ij} = U_iso a*_i a*_j cos(angle*) …: U^{ij} = U_iso G*_ij/(a*_i a*_j)
        u = st.b_iso / (8 * np.pi**2) * ninv @ g @ ninv
    flat_b = basis.reshape(len(basis), -1)
    coeff, *_ = np.linalg.lstsq(flat_b.T, u.ravel(), rcond=None)
    return basis, coeff
