"""Refinable parameters: a registry with scales, bounds and cost classes.

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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ..crystal import Crystal
from ..errors import InputError

KINDS = ("structure", "thickness", "sampling", "probe", "linear")


@dataclass
class Parameter:
    """One refinable quantity.

    Attributes
    ----------
    name : str
        Unique name, e.g. ``'thickness'``, ``'U(1,-1,-1)'``, ``'Uabs(1,-1,-1)'``,
        ``'B(Si1)'``, ``'cell.a'``, ``'xyz(O1).0'``, ``'shift.x'``.
    value : float
        Current value, in ``unit``.
    kind : str
        Cost class, one of :data:`KINDS`.
    scale : float
        Typical change (optimiser units), > 0.
    lower, upper : float
        Bounds (±inf for none).
    unit : str
        Unit of the value (Å, Å⁻², deg, px, …).
    refine : bool
        False keeps the parameter fixed.
    target : tuple
        What the parameter acts on (e.g. ``('U', (1, -1, -1))``); used by the model.
    esd : float or None
        Estimated standard deviation after a refinement.
    """

    name: str
    value: float
    kind: str
    scale: float = 1.0
    lower: float = -np.inf
    upper: float = np.inf
    unit: str = ""
    refine: bool = True
    target: tuple = ()
    esd: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError("unknown parameter kind", tag=self.name, expected=list(KINDS),
                             found=self.kind)
        if not np.isfinite(self.value):
            raise InputError("parameter value must be finite", tag=self.name, found=self.value)
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise InputError("parameter scale must be > 0", tag=self.name, found=self.scale)
        if self.lower >= self.upper:
            raise InputError("lower bound must be below upper bound", tag=self.name,
                             found=(self.lower, self.upper))
        if not self.lower <= self.value <= self.upper:
            raise InputError("start value outside its bounds", tag=self.name,
                             expected=f"[{self.lower}, {self.upper}]", found=self.value)


@dataclass
class ParameterSet:
    """An ordered collection of :class:`Parameter` with vector views of the refined ones."""

    params: list[Parameter] = field(default_factory=list)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Parameter:
        for p in self.params:
            if p.name == name:
                return p
        raise InputError("unknown parameter", expected=[p.name for p in self.params],
                         found=name)

    def __contains__(self, name: str) -> bool:
        return any(p.name == name for p in self.params)

    def add(self, p: Parameter) -> Parameter:
        """Append a parameter (names must be unique)."""
        if p.name in self:
            raise InputError("duplicate parameter name", found=p.name)
        self.params.append(p)
        return p

    def extend(self, ps: Iterable[Parameter]) -> None:
        for p in ps:
            self.add(p)

    @property
    def free(self) -> list[Parameter]:
        """Parameters that are refined, in order."""
        return [p for p in self.params if p.refine]

    def names(self, kinds: Iterable[str] | None = None) -> list[str]:
        """Names of the free parameters (optionally of some kinds only)."""
        ks = set(kinds) if kinds is not None else set(KINDS)
        return [p.name for p in self.free if p.kind in ks]

    def values(self, kinds: Iterable[str] | None = None) -> np.ndarray:
        ks = set(kinds) if kinds is not None else set(KINDS)
        return np.array([p.value for p in self.free if p.kind in ks], dtype=float)

    def set_values(self, values: np.ndarray, kinds: Iterable[str] | None = None) -> None:
        ks = set(kinds) if kinds is not None else set(KINDS)
        free = [p for p in self.free if p.kind in ks]
        if len(values) != len(free):
            raise InputError("wrong number of parameter values", expected=len(free),
                             found=len(values))
        for p, v in zip(free, values):
            p.value = float(v)

    def bounds(self, kinds: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        ks = set(kinds) if kinds is not None else set(KINDS)
        free = [p for p in self.free if p.kind in ks]
        return (np.array([p.lower for p in free]), np.array([p.upper for p in free]))

    def scales(self, kinds: Iterable[str] | None = None) -> np.ndarray:
        ks = set(kinds) if kinds is not None else set(KINDS)
        return np.array([p.scale for p in self.free if p.kind in ks])

    def copy(self) -> ParameterSet:
        return ParameterSet([replace(p) for p in self.params])

    def as_dict(self) -> dict[str, float]:
        """{name: value} of every parameter."""
        return {p.name: p.value for p in self.params}

    def table(self) -> str:
        """Human-readable table: name, value ± esd, unit."""
        lines = []
        for p in self.params:
            esd = f" ± {p.esd:.3g}" if p.esd is not None else ""
            flag = "" if p.refine else " (fixed)"
            lines.append(f"{p.name:>22s} = {p.value:.8g}{esd} {p.unit}{flag}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- factories
def hkl_name(prefix: str, hkl: Iterable[int]) -> str:
    """``'U(1,-1,-1)'``-style name."""
    return f"{prefix}({','.join(str(int(x)) for x in hkl)})"


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
