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
from .._core.parameters import KINDS, UIJ_NAMES, Parameter, ParameterSet
from ..crystal import Crystal
from ..errors import InputError

__all__ = [
    "KINDS",
    "STRUCTURAL_KINDS",
    "Parameter",
    "ParameterSet",
    "allowed_displacements",
    "allowed_u_tensors",
    "apply_cell",
    "b_iso_parameter",
    "cell_parameters",
    "check_structural_name",
    "coordinate_parameters",
    "free_coordinates",
    "free_u_components",
    "hkl_name",
    "occupancy_parameter",
    "site_parameters",
    "structure_factor_parameters",
    "u_aniso_parameters",
]


# ---------------------------------------------------------------------- factories
def structure_factor_parameters(hkl: Iterable[int], u: complex, u_abs: complex, *,
                                phase: float, refine_u: bool = True, refine_uabs: bool = True,
                                refine_phase: bool = False, phase_abs: float | None = None,
                                refine_phase_abs: bool = False, rel_scale: float = 0.01
                                ) -> list[Parameter]:
    """Parameters for U_g = a·exp(iφ) and U′_g = a′·exp(iφ′) of one reflection.

    The amplitudes a, a′ are signed reals (Å⁻²) along the phases φ, φ′ (radians),
    which for centrosymmetric crystals are fixed by the centre of symmetry
    (0 or π at the centre). For non-centrosymmetric crystals ``refine_phase=True``
    adds ``phase(h,k,l)`` = φ (degrees); by default U′_g shares it (φ′ = φ).
    ``phase_abs`` (radians) gives U′_g its own phase φ′ and ``refine_phase_abs=True``
    adds ``phase_abs(h,k,l)`` = φ′ (degrees). An independent φ′ is physical only
    for non-centrosymmetric g: the absorptive and elastic potentials are sums over
    the same atoms with different weights (f′/f differs between elements, Bird &
    King 1990), so their phases differ unless every term is real (centre of
    symmetry) or a single kind of atom defines the phase.
    """
    h = tuple(int(x) for x in hkl)
    ph_abs = phase if phase_abs is None else float(phase_abs)
    a = float(np.real(u * np.exp(-1j * phase)))
    aa = float(np.real(u_abs * np.exp(-1j * ph_abs)))
    su = max(abs(a) * rel_scale, 1e-5)
    sa = max(abs(aa) * 0.05, 1e-6)
    out = [Parameter(hkl_name("U", h), a, "structure", su, unit="Å⁻²", refine=refine_u,
                     target=("U", h, phase)),
           Parameter(hkl_name("Uabs", h), aa, "structure", sa, unit="Å⁻²",
                     refine=refine_uabs, target=("Uabs", h, ph_abs))]
    if refine_phase:
        out.append(Parameter(hkl_name("phase", h), float(np.degrees(phase)), "structure", 1.0,
                             unit="deg", target=("phase", h)))
    if refine_phase_abs:
        out.append(Parameter(hkl_name("phase_abs", h), float(np.degrees(ph_abs)), "structure",
                             1.0, unit="deg", target=("phase_abs", h)))
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


def _rref(basis: np.ndarray, tol: float = 1e-8) -> tuple[np.ndarray, list[int]]:
    """Reduced row-echelon form of the rows of ``basis`` and its pivot columns.

    Each returned row has 1 in its pivot column and 0 in the other rows' pivot
    columns, so the coefficient of a row *is* the value of its pivot component.
    """
    m = np.array(basis, dtype=float)
    if m.size == 0:
        return m.reshape(0, m.shape[-1] if m.ndim == 2 else 0), []
    pivots: list[int] = []
    r = 0
    for c in range(m.shape[1]):
        if r >= m.shape[0]:
            break
        k = r + int(np.argmax(np.abs(m[r:, c])))
        if abs(m[k, c]) < tol:
            continue
        m[[r, k]] = m[[k, r]]
        m[r] /= m[r, c]
        for j in range(m.shape[0]):
            if j != r:
                m[j] -= m[j, c] * m[r]
        pivots.append(c)
        r += 1
    m = m[:r]
    m[np.abs(m) < tol] = 0.0
    return m, pivots


def free_coordinates(crystal: Crystal, site_index: int) -> tuple[list[int], np.ndarray]:
    """The fractional coordinates of a site its symmetry leaves free.

    Returns
    -------
    axes : list of int
        Free axes (0 = x, 1 = y, 2 = z) in the crystallographic convention of a
        Wyckoff position: for (x, x, z) these are x and z, and y follows x.
    directions : ndarray (k, 3)
        The displacement (fractional) that a unit change of each free coordinate
        makes, e.g. (1, 1, 0) for x of (x, x, z); rows of the reduced row-echelon
        form of :func:`allowed_displacements` (International Tables Vol. A, §8.3).
    """
    vec, piv = _rref(allowed_displacements(crystal, site_index))
    return piv, vec


def free_u_components(crystal: Crystal, site_index: int) -> tuple[list[str], np.ndarray]:
    """The U^{ij} components of a site its symmetry leaves free.

    Returns
    -------
    names : list of str
        Independent components (``'U11'``, ``'U12'`` …) in CIF order; the others
        follow from them (e.g. U22 = U11, U13 = U23 = 0 on a tetragonal m.2m site).
    tensors : ndarray (k, 3, 3)
        The U^{ij} tensor (Å² per Å² of the component) each component moves:
        the allowed tensors of :func:`allowed_u_tensors` in reduced row-echelon
        form over (U11, U22, U33, U12, U13, U23) (Peterse & Palm 1966;
        International Tables Vol. D, §1.2.2.3).
    """
    basis, _ = allowed_u_tensors(crystal, site_index)
    flat = np.array([[b[0, 0], b[1, 1], b[2, 2], b[0, 1], b[0, 2], b[1, 2]] for b in basis])
    rows, piv = _rref(flat)
    tensors = np.array([[[r[0], r[3], r[4]], [r[3], r[1], r[5]], [r[4], r[5], r[2]]]
                        for r in rows]).reshape(-1, 3, 3)
    return [UIJ_NAMES[c] for c in piv], tensors


def _site_index(crystal: Crystal, label: str) -> int:
    for i, st in enumerate(crystal.sites):
        if st.label == label:
            return i
    raise InputError("unknown site label", expected=[s.label for s in crystal.sites],
                     found=label)


def _u_of(crystal: Crystal, i: int) -> np.ndarray:
    """The site's U^{ij} (Å²): its own, or B_iso/8π² as the metric-isotropic tensor."""
    st = crystal.sites[i]
    if st.u_aniso is not None:
        return np.asarray(st.u_aniso, dtype=float)
    nrec = np.diag(crystal.lattice.reciprocal_parameters)
    ninv = np.linalg.inv(nrec)
    return st.b_iso / (8 * np.pi**2) * ninv @ crystal.lattice.reciprocal_metric @ ninv


#: parameter kinds (:func:`~qcbed._core.parameters.parse_parameter_name`) that
#: :func:`check_structural_name` checks against the crystal
STRUCTURAL_KINDS = ("B", "xyz", "occ", "Uij", "cell")


def check_structural_name(crystal: Crystal, kind: str, detail, canon: str) -> None:
    """Raise :class:`InputError` when a structural parameter name does not fit the crystal.

    ``kind``, ``detail`` and ``canon`` are what
    :func:`qcbed._core.parameters.parse_parameter_name` returned. Checked: the site
    label exists (``B``, ``occ``, ``x/y/z``, ``U11…``); a coordinate or U^{ij}
    component is free under the site symmetry (the error names the free ones); a
    cell parameter is independent in the crystal system (the error names the
    independent ones).
    """
    if kind in ("B", "occ"):
        _site_index(crystal, detail)
    elif kind == "xyz":
        label, axis = detail
        i = _site_index(crystal, label)
        axes, _ = free_coordinates(crystal, i)
        if axis not in axes:
            free = [f"{'xyz'[a]}({label})" for a in axes]
            raise InputError(f"{canon} is fixed by the site symmetry of {label} "
                             f"(xyz = {tuple(round(float(v), 5) for v in crystal.sites[i].xyz)})",
                             expected=free or "no coordinate: the site is fixed", found=canon)
    elif kind == "Uij":
        label, comp = detail
        i = _site_index(crystal, label)
        names, _ = free_u_components(crystal, i)
        if comp not in names:
            raise InputError(f"{canon} is not independent under the site symmetry of {label}",
                             expected=[f"{n}({label})" for n in names], found=canon)
    elif kind == "cell":
        free = [p.name for p in cell_parameters(crystal)]
        if canon not in free:
            system = crystal.space_group.crystal_system_str() if crystal.space_group \
                else "triclinic"
            raise InputError(f"{canon} is fixed by the {system} crystal system",
                             expected=free, found=canon)


def coordinate_parameters(crystal: Crystal, label: str, axes: Iterable[int] | None = None,
                          *, refine: bool = True) -> list[Parameter]:
    """``x(label)``, ``y(label)``, ``z(label)``: the free fractional coordinates of a site.

    The value is the coordinate itself; changing it moves the site along the
    symmetry-allowed direction (:func:`free_coordinates`), so the constrained
    coordinates follow (y = x on (x, x, z)). ``axes`` (0–2) selects some of the
    free ones; a fixed one raises :class:`InputError` naming the free ones.
    """
    i = _site_index(crystal, label)
    free, vec = free_coordinates(crystal, i)
    want = free if axes is None else list(axes)
    xyz = crystal.sites[i].xyz
    out = []
    for a in want:
        name = f"{'xyz'[a]}({label})"
        check_structural_name(crystal, "xyz", (label, a), name)
        v = vec[free.index(a)]
        x0 = float(xyz[a])
        out.append(Parameter(name, x0, "structure", 1e-3, x0 - 0.05, x0 + 0.05, "frac",
                             refine=refine, target=("xyz", i, tuple(float(c) for c in v), x0)))
    return out


def u_aniso_parameters(crystal: Crystal, label: str, components: Iterable[str] | None = None,
                       *, refine: bool = True) -> list[Parameter]:
    """``U11(label)`` … ``U23(label)``: the independent U^{ij} (Å²) of a site.

    Started from the site's U^{ij} (or B_iso/8π² times the metric-isotropic tensor);
    each parameter's value is its component, the constrained components follow
    (:func:`free_u_components`). Every independent component takes part (those not
    in ``components`` fixed), since the site's tensor is rebuilt from them.
    """
    i = _site_index(crystal, label)
    names, tensors = free_u_components(crystal, i)
    want = names if components is None else list(components)
    for c in want:
        check_structural_name(crystal, "Uij", (label, c), f"{c}({label})")
    u = _u_of(crystal, i)
    idx = {"U11": (0, 0), "U22": (1, 1), "U33": (2, 2), "U12": (0, 1), "U13": (0, 2),
           "U23": (1, 2)}
    return [Parameter(f"{n}({label})", float(u[idx[n]]), "structure", 1e-4, -0.5, 0.5, "Å²",
                      refine=refine and n in want, target=("Uaniso", i, tuple(map(tuple, t))))
            for n, t in zip(names, tensors)]


def occupancy_parameter(crystal: Crystal, label: str, *, refine: bool = True) -> Parameter:
    """``occ(label)``: the occupancy of a site (0–1)."""
    i = _site_index(crystal, label)
    return Parameter(f"occ({label})", crystal.sites[i].occupancy, "structure", 0.01, 0.0, 1.0,
                     "", refine=refine, target=("occ", i))


def b_iso_parameter(crystal: Crystal, label: str, *, refine: bool = True) -> Parameter:
    """``B(label)``: the isotropic Debye–Waller factor (Å²) of a site."""
    i = _site_index(crystal, label)
    return Parameter(f"B({label})", crystal.sites[i].b_iso, "structure", 0.01, 0.0, 20.0, "Å²",
                     refine=refine, target=("B", i))


def site_parameters(crystal: Crystal, *, b_iso: bool = True, xyz: bool = False,
                    occupancy: bool = False) -> list[Parameter]:
    """B, free coordinates and occupancy parameters of every site (names as above)."""
    out = []
    for st in crystal.sites:
        if b_iso and st.u_aniso is None:
            out.append(b_iso_parameter(crystal, st.label))
        if xyz:
            out += coordinate_parameters(crystal, st.label)
        if occupancy:
            out.append(occupancy_parameter(crystal, st.label))
    return out


def kappa_parameters(crystal: Crystal, potential, targets: Iterable[str], *,
                     kappa: bool = True, pv: bool = False) -> list[Parameter]:
    """κ and P_v of the kappa charge-density model for sites or elements.

    Parameters
    ----------
    crystal : Crystal
    potential : PotentialModel
        Must use the ``'kappa'`` elastic model; its ``kappa`` entries give the
        start values (otherwise κ = 1 and the neutral valence count).
    targets : iterable of str
        Site labels (``'Si1'``) or element symbols (``'Si'``, every site of it).
    kappa, pv : bool
        Which of the two to refine (both are added; the other is fixed).

    Returns
    -------
    list of Parameter
        ``kappa(T)`` (dimensionless, bounds 0.5–2) and ``Pv(T)`` (electrons, bounds
        0–2 N_val), kind ``structure``, targets ``('kappa', T)`` and ``('Pv', T)``
        (Coppens 1997, §3.4; :mod:`qcbed.scattering.kappa`).
    """
    from ..scattering.kappa import valence_electrons

    if potential is None or potential.elastic != "kappa":
        raise InputError("κ and P_v need the 'kappa' elastic model", tag="kappa",
                         expected="engine elastic = 'kappa'",
                         found=None if potential is None else potential.elastic)
    labels = {s.label: s.element for s in crystal.sites}
    start = {k.target: k for k in potential.kappa}
    out = []
    for t in targets:
        if t in labels:
            el = labels[t]
        elif t.capitalize() in labels.values():
            el = t = t.capitalize()
        else:
            raise InputError("kappa target is neither a site label nor an element of the crystal",
                             expected=sorted(set(labels) | set(labels.values())), found=t)
        nval = valence_electrons(el)
        k0 = start.get(t)
        kv = 1.0 if k0 is None else k0.kappa
        pvv = float(nval) if k0 is None or k0.pv is None else k0.pv
        out.append(Parameter(f"kappa({t})", kv, "structure", 0.01, 0.5, 2.0, "",
                             refine=kappa, target=("kappa", t)))
        out.append(Parameter(f"Pv({t})", pvv, "structure", 0.02, 0.0, 2.0 * nval, "e",
                             refine=pv, target=("Pv", t)))
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
    x = np.asarray(crystal.sites[site_index].xyz)
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
    u = _u_of(crystal, site_index)
    flat_b = basis.reshape(len(basis), -1)
    coeff, *_ = np.linalg.lstsq(flat_b.T, u.ravel(), rcond=None)
    return basis, coeff
