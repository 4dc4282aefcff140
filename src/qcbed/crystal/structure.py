"""Crystal structures: sites, space-group expansion and symmetry-equivalent reflections.

Phase convention (see ``docs/conventions.md``): the crystal potential is
V(r) = Σ_g V_g exp(+2πi g·r) with V_g ∝ F_g = Σ_j f_j T_j exp(−2πi g·r_j)
(Spence & Zuo 1992, eq. 2.6). A space-group operation {R|t} maps a
fractional position x to R x + t. With g a row vector of Miller indices the
structure factor obeys

    F(g R) = exp(+2πi g·t) F(g),

which is how :meth:`Crystal.equivalent_reflections` links reflections. The
translation phase matters for non-symmorphic groups and for origin choices
away from a centre of symmetry (PyExtal's ``updateSymUgh`` drops it; qcbed
does not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import gemmi
import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import check_number
from ..errors import InputError
from .lattice import Lattice

#: Largest isotropic Debye–Waller B accepted, Å² (rms displacement ≈ 1.1 Å; real
#: crystals have B < 10 Å²; beyond this the absorption integrals lose all precision).
MAX_B_ISO = 100.0

_ELEMENT_RE = re.compile(r"^([A-Za-z]{1,2})")
_CHARGE_RE = re.compile(r"^([A-Za-z]{1,2})(\d*)([+-])$")
#: Charge written sign first (``Ba+2``, ``O-2``: exports of refinement programs).
_SIGN_FIRST_RE = re.compile(r"^([A-Za-z]{1,2})([+-])(\d+)$")


def parse_type_symbol(symbol: str, *, source: str | None = None,
                      line: int | None = None) -> tuple[str, int]:
    """Element and formal charge from a type symbol or site label.

    Accepts ``Si``, ``Si0+``, ``O2-``, ``Fe3+``, ``Ga+``, ``Ba+2``, ``O-2``, ``Si#1``, ``Si1``,
    ``SI`` (any case). Returns ``(element, charge)`` with the element
    capitalised as in the periodic table and the charge an integer.

    Raises
    ------
    InputError
        When no element symbol can be found.
    """
    text = symbol.strip()
    m = _CHARGE_RE.match(text)
    m_sign = _SIGN_FIRST_RE.match(text)
    if m or m_sign:
        if m:
            el, num, sign = m.groups()
        else:
            el, sign, num = m_sign.groups()
        charge = int(num) if num else 1
        charge = -charge if sign == "-" else charge
    else:
        charge = 0
        m2 = _ELEMENT_RE.match(text)
        if not m2:
            raise InputError("cannot read an element symbol", source=source, line=line,
                             expected="an element symbol such as 'Si' or 'O2-'", found=symbol)
        el = m2.group(1)
    # try the two-letter symbol first, then one letter (e.g. 'SI' -> Si, 'Sn1' -> Sn, 'C1' -> C)
    for cand in (el[:2], el[:1]):
        name = cand.capitalize()
        if gemmi.Element(name).atomic_number > 0 and gemmi.Element(name).name == name:
            return name, charge
    raise InputError("unknown element", source=source, line=line,
                     expected="an element symbol of the periodic table", found=symbol)


def atomic_number(element: str) -> int:
    """Atomic number Z of an element symbol (``'Si'`` → 14)."""
    z = gemmi.Element(element).atomic_number
    if z <= 0:
        raise InputError("unknown element", expected="an element symbol", found=element)
    return z


@dataclass(frozen=True)
class Site:
    """One crystallographic site of the asymmetric unit.

    Parameters
    ----------
    label : str
        Site label (``'Si1'``).
    element : str
        Element symbol (``'Si'``); selects the scattering-factor table row.
    xyz : tuple of 3 float
        Fractional coordinates.
    occupancy : float
        Site occupancy (0–1).
    b_iso : float
        Isotropic Debye–Waller factor B in Å² (T = exp(−B s²), s = |g|/2).
        Ignored when ``u_aniso`` is given.
    u_aniso : 3×3 array or None
        Anisotropic displacement tensor U^{ij} in Å² in the CIF convention
        (T = exp(−2π² Σ h_i h_j a*_i a*_j U^{ij})).
    charge : int
        Formal charge (ions select ionic scattering factors where a table has them).
    """

    label: str
    element: str
    xyz: tuple[float, float, float]
    occupancy: float = 1.0
    b_iso: float = 0.0
    u_aniso: np.ndarray | None = field(default=None, compare=False)
    charge: int = 0

    def __post_init__(self) -> None:
        xyz = tuple(float(x) for x in self.xyz)
        if len(xyz) != 3 or not all(np.isfinite(xyz)):
            raise InputError("site coordinates must be three finite numbers", tag=self.label,
                             found=self.xyz)
        object.__setattr__(self, "xyz", xyz)
        if not (0 <= self.occupancy <= 1 + 1e-9) or not np.isfinite(self.occupancy):
            raise InputError("occupancy out of range", tag=self.label, expected="0 ≤ occ ≤ 1",
                             found=self.occupancy)
        check_number(self.b_iso, "Debye–Waller factor B", low=0.0, high=MAX_B_ISO, unit="Å²",
                     tag=self.label)
        if self.u_aniso is not None:
            u = np.asarray(self.u_aniso, dtype=float)
            if u.shape == (6,):  # U11 U22 U33 U12 U13 U23
                u = np.array([[u[0], u[3], u[4]], [u[3], u[1], u[5]], [u[4], u[5], u[2]]])
            if u.shape != (3, 3) or not np.allclose(u, u.T) or not np.all(np.isfinite(u)):
                raise InputError("anisotropic U must be a symmetric 3×3 tensor or 6 numbers "
                                 "(U11 U22 U33 U12 U13 U23)", tag=self.label, found=self.u_aniso)
            object.__setattr__(self, "u_aniso", u)

    @property
    def atomic_number(self) -> int:
        """Atomic number Z."""
        return atomic_number(self.element)


def _op_text(r: np.ndarray, t: np.ndarray) -> str:
    """'x, x, z'-style text of the operation x' = R x + t."""
    from fractions import Fraction

    rows = []
    for i in range(3):
        terms = ""
        for c, xyz in zip(r[i], "xyz"):
            c = int(c)
            if c:
                sign = "-" if c < 0 else ("+" if terms else "")
                terms += f"{sign}{'' if abs(c) == 1 else abs(c)}{xyz}"
        if t[i]:
            frac = Fraction(float(t[i])).limit_denominator(12)
            terms += f"+{frac}" if terms else f"{frac}"
        rows.append(terms or "0")
    return ", ".join(rows)


def _ops_from_gemmi(ops: gemmi.GroupOps) -> tuple[np.ndarray, np.ndarray]:
    rot, tran = [], []
    for op in ops:
        rot.append(np.array(op.rot, dtype=float) / gemmi.Op.DEN)
        tran.append(np.array(op.tran, dtype=float) / gemmi.Op.DEN)
    return np.rint(np.array(rot)).astype(int), np.mod(np.array(tran), 1.0)


def space_group_from_number(number: int, setting: int | str | None = None) -> gemmi.SpaceGroup:
    """gemmi space group from its International Tables number and setting.

    Parameters
    ----------
    number : int
        IT number, 1–230.
    setting : int or str, optional
        Origin choice (1 or 2) as in the PyExtal ``spg 227 2`` line, or ``'H'``/``'R'``
        for rhombohedral groups. Default: the standard (first) setting in gemmi's table.
    """
    if not 1 <= int(number) <= 230:
        raise InputError("space-group number out of range", expected="1..230", found=number)
    entries = [sg for sg in gemmi.spacegroup_table() if sg.number == int(number)]
    if setting is None or str(setting).strip() in ("", "0"):
        return entries[0]
    want = str(setting).strip().upper()
    for sg in entries:
        if sg.ext.upper() == want:
            return sg
    if want == "1" and all(sg.ext in ("\x00", "") for sg in entries[:1]):
        return entries[0]
    available = sorted({sg.ext for sg in entries if sg.ext not in ("\x00", "")})
    raise InputError(f"space group {number} has no setting {setting!r}",
                     expected=f"one of {available}" if available else "no setting",
                     found=setting)


def space_group_from_symbol(symbol: str) -> gemmi.SpaceGroup:
    """gemmi space group from a Hermann–Mauguin or Hall symbol (``'F d -3 m:2'``, ``'Fd-3m'``)."""
    sg = gemmi.find_spacegroup_by_name(symbol.strip())
    if sg is None:
        try:
            sg = gemmi.SpaceGroup(gemmi.symops_from_hall(symbol.strip()))
        except Exception:
            sg = None
    if sg is None:
        raise InputError("unknown space-group symbol", expected="a Hermann–Mauguin symbol",
                         found=symbol)
    return sg


class Crystal:
    """A crystal: lattice, symmetry operations and the sites of the asymmetric unit.

    Parameters
    ----------
    lattice : Lattice
        Cell parameters.
    sites : sequence of Site
        Asymmetric-unit sites (fractional coordinates).
    space_group : gemmi.SpaceGroup, int, str or None
        Space group as a gemmi object, an IT number (standard setting), or a
        Hermann–Mauguin symbol. Ignored when ``operations`` is given.
    operations : sequence of str or (R, t) arrays, optional
        Explicit symmetry operations (``'-x+1/4, y, z'`` or rotation (n,3,3)
        and translation (n,3) arrays). They take precedence over ``space_group``.
    name : str
        Free-text name.
    """

    def __init__(
        self,
        lattice: Lattice,
        sites: Sequence[Site],
        space_group: gemmi.SpaceGroup | int | str | None = 1,
        *,
        operations: Sequence[str] | tuple[np.ndarray, np.ndarray] | None = None,
        name: str = "",
    ) -> None:
        if not sites:
            raise InputError("a crystal needs at least one site", found=0)
        self.lattice = lattice
        self.sites = tuple(sites)
        self.name = name
        if operations is not None:
            if isinstance(operations, tuple) and len(operations) == 2 and \
                    isinstance(operations[0], np.ndarray):
                rot = np.asarray(operations[0], dtype=int)
                tran = np.mod(np.asarray(operations[1], dtype=float), 1.0)
                ops_g = None
            else:
                try:
                    gops = gemmi.GroupOps([gemmi.Op(s.replace(" ", "")) for s in operations])
                except Exception as exc:
                    raise InputError(f"cannot parse symmetry operation: {exc}",
                                     expected="operations such as '-x+1/2,y,z'",
                                     found=list(operations)[:3]) from exc
                rot, tran = _ops_from_gemmi(gops)
                ops_g = gops
            self.space_group = gemmi.find_spacegroup_by_ops(ops_g) if ops_g is not None else None
        else:
            if isinstance(space_group, gemmi.SpaceGroup):
                sg = space_group
            elif isinstance(space_group, (int, np.integer)):
                sg = space_group_from_number(int(space_group))
            elif isinstance(space_group, str):
                sg = space_group_from_symbol(space_group)
            else:
                sg = space_group_from_number(1)
            self.space_group = sg
            rot, tran = _ops_from_gemmi(sg.operations())
        self._rot = rot
        self._tran = tran
        self._check_group()

    def _check_group(self) -> None:
        if self._rot.ndim != 3 or self._rot.shape[1:] != (3, 3):
            raise InputError("symmetry rotations must have shape (n, 3, 3)", found=self._rot.shape)
        if not any(np.array_equal(r, np.eye(3, dtype=int)) and np.allclose(t, 0)
                   for r, t in zip(self._rot, self._tran)):
            raise InputError("symmetry operations must include the identity x,y,z",
                             found=f"{len(self._rot)} operations")
        # every rotation must be invertible with an integer inverse (det ±1)
        for r, t in zip(self._rot, self._tran):
            det = round(float(np.linalg.det(r)))
            if abs(det) != 1:
                raise InputError("symmetry operation is not a rotation or reflection",
                                 expected="an operation with determinant ±1 (such as "
                                          "'-y, x, z')",
                                 found=f"'{_op_text(r, t)}' (determinant {det})")
        # the metric must be invariant under every rotation
        g = self.lattice.metric
        for r in self._rot:
            if not np.allclose(r.T @ g @ r, g, rtol=1e-4, atol=1e-4):
                raise InputError("symmetry operations are not compatible with the cell "
                                 "(metric not invariant)", expected="a cell of the crystal "
                                 "system of the space group", found=self.lattice.parameters)

    # ------------------------------------------------------------ symmetry
    @property
    def operations(self) -> tuple[np.ndarray, np.ndarray]:
        """(R, t): rotations (n,3,3) int and translations (n,3) acting as x' = R x + t."""
        return self._rot.copy(), self._tran.copy()

    @property
    def space_group_symbol(self) -> str:
        """Hermann–Mauguin symbol with setting (``'F d -3 m:2'``) or ``'(explicit ops)'``."""
        return self.space_group.xhm() if self.space_group is not None else "(explicit ops)"

    @property
    def space_group_number(self) -> int | None:
        """International Tables number, or None for unidentified explicit operations."""
        return self.space_group.number if self.space_group is not None else None

    @cached_property
    def is_centrosymmetric(self) -> bool:
        """True when the group contains an inversion {−1|t}."""
        return any(np.array_equal(r, -np.eye(3, dtype=int)) for r in self._rot)

    def inversion_centre(self) -> np.ndarray | None:
        """Fractional position of a centre of symmetry, or None when there is none.

        For {−1|t}, the centre is t/2. Placing the origin there makes every
        elastic U_g real (Spence & Zuo 1992, §2.5).
        """
        for r, t in zip(self._rot, self._tran):
            if np.array_equal(r, -np.eye(3, dtype=int)):
                return np.mod(t / 2.0, 1.0)
        return None

    def shift_origin(self, shift: ArrayLike) -> Crystal:
        """The same crystal described with the origin moved to ``shift`` (fractional).

        New coordinates are x − shift; operations become {R | t + R s − s}.
        Structure factors change as U_new(g) = U_old(g) · exp(+2πi g·s).
        """
        s = np.asarray(shift, dtype=float)
        sites = [replace(st, xyz=tuple(np.mod(np.asarray(st.xyz) - s, 1.0))) for st in self.sites]
        tran = np.mod(self._tran + np.einsum("nij,j->ni", self._rot, s) - s, 1.0)
        new = Crystal(self.lattice, sites, operations=(self._rot.copy(), tran), name=self.name)
        new.space_group = self.space_group if np.allclose(s, 0) else None
        return new

    def centred(self) -> tuple[Crystal, np.ndarray]:
        """(crystal with origin at a centre of symmetry, the shift used).

        Returns the crystal unchanged and a zero shift for non-centrosymmetric groups.
        """
        c = self.inversion_centre()
        if c is None or np.allclose(c, 0):
            return self, np.zeros(3)
        return self.shift_origin(c), c

    # ------------------------------------------------------------ atoms
    @cached_property
    def atoms(self) -> AtomList:
        """All atoms of the unit cell, generated by the symmetry operations."""
        elements, charges, frac, occ, biso, beta, site_index, ops_used = [], [], [], [], [], [], \
            [], []
        nrec = np.diag(self.lattice.reciprocal_parameters)
        for isite, st in enumerate(self.sites):
            x0 = np.asarray(st.xyz)
            pos = np.mod(np.einsum("nij,j->ni", self._rot, x0) + self._tran, 1.0)
            pos[np.isclose(pos, 1.0, atol=1e-7)] = 0.0
            kept: list[np.ndarray] = []
            for iop, p in enumerate(pos):
                if any(np.all(np.abs(((p - q) + 0.5) % 1.0 - 0.5) < 1e-4) for q in kept):
                    continue
                kept.append(p)
                elements.append(st.element)
                charges.append(st.charge)
                frac.append(p)
                occ.append(st.occupancy)
                if st.u_aniso is not None:
                    b0 = 2 * np.pi**2 * nrec @ st.u_aniso @ nrec
                    r = self._rot[iop].astype(float)
                    beta.append(r @ b0 @ r.T)
                    biso.append(np.nan)
                else:
                    beta.append(None)
                    biso.append(st.b_iso)
                site_index.append(isite)
                ops_used.append(iop)
        return AtomList(
            elements=tuple(elements),
            charges=np.array(charges, dtype=int),
            frac=np.array(frac),
            occupancy=np.array(occ),
            b_iso=np.array(biso),
            beta=tuple(beta),
            site_index=np.array(site_index, dtype=int),
        )

    def site_multiplicity(self, index: int) -> int:
        """Number of atoms in the cell generated from site ``index``."""
        return int(np.sum(self.atoms.site_index == index))

    # ------------------------------------------------------------ reflections
    def equivalent_reflections(self, hkl: ArrayLike, *, friedel: bool = False
                               ) -> EquivalentReflections:
        """Symmetry-equivalent reflections of g with their structure-factor phases.

        For every operation {R|t}: g' = g R and F(g') = exp(+2πi g·t) F(g).
        With ``friedel=True`` the Friedel mates −g' are added with the flag
        ``conjugate``: for a real potential U(−g') = conj(U(g')).

        Parameters
        ----------
        hkl : array_like of 3 ints
            The reflection g.
        friedel : bool
            Also include −g' (Friedel's law; exact for the elastic potential and
            separately for the absorptive potential).

        Returns
        -------
        EquivalentReflections
            ``hkl`` (m,3) int, ``phase`` (m,) complex, ``conjugate`` (m,) bool, and
            ``absent`` True when the phases are inconsistent (systematic absence, U_g ≡ 0).
        """
        g = np.asarray(hkl, dtype=int).reshape(3)
        gp = np.einsum("i,nij->nj", g, self._rot)
        phases = np.exp(2j * np.pi * (self._tran @ g))
        seen: dict[tuple[int, int, int], complex] = {}
        absent = False
        for v, ph in zip(map(tuple, gp), phases):
            if v in seen:
                if abs(seen[v] - ph) > 1e-6:
                    absent = True
            else:
                seen[v] = ph
        keys = list(seen)
        out_hkl = [list(k) for k in keys]
        out_ph = [seen[k] for k in keys]
        conj = [False] * len(keys)
        if friedel:
            for k in keys:
                mk = tuple(-x for x in k)
                if mk not in seen:
                    out_hkl.append(list(mk))
                    out_ph.append(np.conj(seen[k]))
                    conj.append(True)
        return EquivalentReflections(np.array(out_hkl, dtype=int), np.array(out_ph),
                                     np.array(conj, dtype=bool), absent)

    def is_systematically_absent(self, hkl: ArrayLike) -> bool:
        """True when the space group forbids g (F_g ≡ 0 for any atom positions)."""
        return self.equivalent_reflections(hkl).absent

    def point_group_rotations_cartesian(self) -> np.ndarray:
        """Distinct point-group rotations as Cartesian 3×3 matrices acting on reciprocal vectors.

        A reciprocal vector with Cartesian components q maps to q R_cart where
        g' = g R in Miller indices.
        """
        a_star = self.lattice.reciprocal_basis
        inv = np.linalg.inv(a_star)
        mats = []
        for r in self._rot:
            m = inv @ r @ a_star  # q' = q inv(A*) R A*  (row vectors)
            if not any(np.allclose(m, x, atol=1e-8) for x in mats):
                mats.append(m)
        return np.array(mats)

    # ------------------------------------------------------------ editing
    def replace(self, *, lattice: Lattice | None = None, sites: Iterable[Site] | None = None,
                name: str | None = None) -> Crystal:
        """A copy with a new lattice and/or sites (same symmetry operations)."""
        new = Crystal(lattice or self.lattice, tuple(sites) if sites is not None else self.sites,
                      operations=(self._rot.copy(), self._tran.copy()),
                      name=self.name if name is None else name)
        new.space_group = self.space_group
        return new

    def with_b_iso(self, values: dict[str, float] | float) -> Crystal:
        """A copy with isotropic B (Å²) set for all sites or per site label."""
        if isinstance(values, (int, float)):
            values = {s.label: float(values) for s in self.sites}
        unknown = set(values) - {s.label for s in self.sites}
        if unknown:
            raise InputError("unknown site label", expected=[s.label for s in self.sites],
                             found=sorted(unknown))
        return self.replace(sites=[replace(s, b_iso=float(values[s.label]), u_aniso=None)
                                   if s.label in values else s for s in self.sites])

    def __repr__(self) -> str:
        return (f"Crystal({self.name!r}, {self.lattice!r}, {self.space_group_symbol}, "
                f"{len(self.sites)} sites, {len(self.atoms.elements)} atoms/cell)")


@dataclass(frozen=True)
class AtomList:
    """All atoms in the unit cell (output of :attr:`Crystal.atoms`).

    ``b_iso`` is NaN for atoms with an anisotropic ``beta`` (3×3, dimensionless,
    T = exp(−hᵀ β h)); ``beta`` is None for isotropic atoms.
    """

    elements: tuple[str, ...]
    charges: np.ndarray
    frac: np.ndarray
    occupancy: np.ndarray
    b_iso: np.ndarray
    beta: tuple[np.ndarray | None, ...]
    site_index: np.ndarray

    def __len__(self) -> int:
        return len(self.elements)


@dataclass(frozen=True)
class EquivalentReflections:
    """Symmetry equivalents g' of a reflection g and the phases linking U(g') to U(g)."""

    hkl: np.ndarray
    phase: np.ndarray
    conjugate: np.ndarray
    absent: bool

    def __len__(self) -> int:
        return len(self.hkl)
