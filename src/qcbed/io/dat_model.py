"""The model of a PyExtal/EMAPS ``.dat`` file: :class:`DatInput` and how it is built.

:func:`build_dat_input` turns what :class:`~qcbed.io.dat_parse.DatParser` read into a
:class:`DatInput`: the crystal (cell, sites with their displacement parameters,
space group), the settings, k_t checked against the zone axis. The ``adj`` values
are kept as written (PyExtal's phase convention); :meth:`DatInput.adjustments_qcbed`
converts them to qcbed's (see the "PyExtal .dat files" section of
``docs/conventions.md``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..crystal import Crystal, Lattice, Site, parse_type_symbol, space_group_from_number
from ..errors import InputError
from ._common import readonly, u_equivalent_b, with_location
from .dat_parse import MANDATORY_KEYWORDS, AtomLine, DatParser

_DW_COUNTS = {"iso": 1, "bij": 6, "uij": 6}
# 'SI+4' (PyExtal's table rows for ions) -> element SI, charge +4
_ION_LABEL_RE = re.compile(r"^([A-Za-z]{1,2})([+-])(\d+)$")
# cosine tolerance of the kt ⟂ zone check
_KT_ZONE_TOL = 1e-3


def _cis_minus(phi_deg: np.ndarray) -> np.ndarray:
    """exp(−iφ) for φ in degrees, exact (no rounding residue) at multiples of 90°."""
    phi = np.asarray(phi_deg, dtype=float)
    out = np.exp(-1j * np.radians(phi))
    quarter = np.isclose(np.mod(phi, 90.0), 0.0, atol=1e-12) | np.isclose(
        np.mod(phi, 90.0), 90.0, atol=1e-12)
    exact = np.array([1, -1j, -1, 1j])[np.mod(np.rint(phi / 90.0).astype(int), 4)]
    return np.where(quarter, exact, out)


@dataclass(frozen=True, eq=False)
class DatInput:
    """Everything a PyExtal/EMAPS ``.dat`` file holds.

    Optional keywords that are absent are ``None``. Arrays are read-only.
    """

    source: Path
    """The file that was read."""
    title: str
    """The title (first line, leading ``#`` removed)."""
    crystal: Crystal
    """The crystal (cell, sites, space group) in the file's own setting and origin."""
    crystal_name: str
    """Name on the ``crystal`` line (``'silicon'``), or ``''``."""
    dw_mode: str
    """Displacement-parameter format of the ``atom`` lines: ``'iso'`` (B, Å²),
    ``'bij'`` (six dimensionless β_ij) or ``'uij'`` (six U_ij, Å²)."""
    occ_mode: str
    """``'1'`` (all occupancies 1) or ``'par'`` (a trailing occupancy on each ``atom`` line)."""
    space_group_number: int
    """International Tables number from the ``spg`` line."""
    space_group_setting: str | None
    """Setting / origin choice from the ``spg`` line (``'2'``), or None."""
    voltage_kv: float
    """Accelerating voltage (``hv``), kV."""
    zone: np.ndarray
    """Zone axis [uvw] (``zone``), direct-lattice components, pointing to the source."""
    normal: np.ndarray | None = None
    """Surface normal (``norm``), direct-lattice components, pointing to the source;
    None when absent (the engine then uses the zone axis)."""
    kt: np.ndarray = field(default_factory=lambda: readonly(np.zeros(3)))
    """Tangential wave vector of the pattern centre (``kt``), in reciprocal-lattice
    components (Å⁻¹ = kt_h a* + kt_k b* + kt_l c*, no 2π); kt·zone = 0. Zero when absent."""
    x_axis: np.ndarray | None = None
    """Reciprocal vector (hkl components) drawn horizontal (``xaxis``)."""
    v0: float | None = None
    """Mean inner potential (``v0``), V."""
    convergence: float | None = None
    """Disc radius (``conv``) in units of |x_axis| (0.5: adjacent discs touch)."""
    samp: int | None = None
    """Pixels from disc centre to edge (``samp``); the tilt net is (2 samp + 1)²."""
    hkl: np.ndarray | None = None
    """Manual beam pool (``hkl N`` + N lines), (N, 3) int."""
    sele: tuple[float, float, float, int] | None = None
    """Automatic beam pool (``sele``): (sgmax in Å⁻², gmax in Å⁻¹, bmin, kflag)."""
    sgmax: float | None = None
    """Largest excitation-error measure 2K|S_g| of the pool (``sgmax``), Å⁻²."""
    sgmin: float | None = None
    """Strong-beam threshold on 2K|S_g| (``sgmin``), Å⁻²."""
    omeg: float | None = None
    """Bethe strength threshold Ω (``omeg``), dimensionless; strong when
    |2K S_g| / |U_g| < omeg."""
    aperture: float | None = None
    """Output-beam aperture radius (``aper``), Å⁻¹."""
    out_hkl: np.ndarray | None = None
    """Explicit output beams (``out N`` + N lines of h k l), (N, 3) int."""
    absorption: float | None = None
    """Mean absorption potential (``abs``), as written (PyExtal: V; a global decay only)."""
    adj_hkl: np.ndarray | None = None
    """Reflections of the ``adj`` lines, (n, 3) int."""
    adj_values: np.ndarray | None = None
    """Raw ``adj`` values as written, (n, 4): |U| (Å⁻²), φ (degrees), |U′| (Å⁻²),
    φ′ (degrees), in **PyExtal's** phase convention (see :meth:`adjustments_qcbed`)."""
    lines: dict[str, int] = field(default_factory=dict)
    """1-based line number of each keyword (the last one for repeated keywords)."""

    # ----------------------------------------------------------------- helpers
    @property
    def kt_cartesian(self) -> np.ndarray:
        """k_t in the crystal Cartesian frame, Å⁻¹ (see ``docs/conventions.md``)."""
        return self.crystal.lattice.cartesian_reciprocal(self.kt)

    @property
    def kt_length(self) -> float:
        """|k_t| in Å⁻¹ (reciprocal metric)."""
        return float(self.crystal.lattice.g_length(self.kt))

    @property
    def surface_normal(self) -> np.ndarray:
        """The surface normal, falling back to the zone axis when ``norm`` is absent."""
        return self.zone if self.normal is None else self.normal

    def adjustments_qcbed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``adj`` structure factors in qcbed's phase convention.

        PyExtal stores the optical potential as the complex conjugate of
        qcbed's (qcbed: phases exp(−2πi g·r), U′ > 0 for normal absorption;
        PyExtal lists e.g. U(1̄11) = 0.0575 at φ = 0° with |U′| = 4.37e-4 at
        φ′ = 180°, i.e. its U′ is negative). Therefore

            U_qcbed  =  |U|  exp(−iφ),
            U′_qcbed = −|U′| exp(−iφ′),

        with φ, φ′ in degrees. Negative "magnitudes" (PyExtal's centrosymmetric
        sign convention, e.g. U222 = −8e-4) pass through the same formulas.

        Returns
        -------
        hkl : ndarray (n, 3) int
            The reflections.
        u : ndarray (n,) complex
            Elastic U_g in Å⁻².
        u_abs : ndarray (n,) complex
            Absorptive U′_g in Å⁻² (positive real part for normal absorption).

        An empty file section gives arrays of length 0.
        """
        if self.adj_hkl is None or self.adj_values is None:
            return np.zeros((0, 3), dtype=int), np.zeros(0, complex), np.zeros(0, complex)
        v = self.adj_values
        u = v[:, 0] * _cis_minus(v[:, 1]) + 0.0  # + 0.0 turns −0 into 0
        u_abs = -v[:, 2] * _cis_minus(v[:, 3]) + 0.0
        return self.adj_hkl.copy(), u, u_abs

    def settings(self) -> dict[str, Any]:
        """The experiment/simulation settings as a plain dict (keys = field names)."""
        keys = ("voltage_kv", "zone", "normal", "kt", "x_axis", "v0", "convergence", "samp",
                "hkl", "sele", "sgmax", "sgmin", "omeg", "aperture", "out_hkl", "absorption")
        return {k: getattr(self, k) for k in keys}


def build_dat_input(parser: DatParser, title: str) -> DatInput:
    """The :class:`DatInput` of a parsed file: mandatory keywords, crystal, k_t ⟂ zone.

    Errors name the file, the keyword's line and the keyword.
    """
    for kw in MANDATORY_KEYWORDS:
        if kw not in parser.lines_of:
            raise parser.error(f"missing mandatory keyword `{kw}`", None, kw,
                               expected=f"a `{kw}` line", found="end of file")
    v = parser.values
    name, dw_mode, occ_mode = v.get("crystal", ("", "iso", "1"))
    try:
        lattice = Lattice(*v["cell"])
    except InputError as exc:
        raise with_location(exc, parser.path, parser.lines_of["cell"], "cell") from None
    sites = [_site(parser, a, lattice, dw_mode, occ_mode) for a in parser.atoms]
    number, setting = v["spg"]
    try:
        sg = space_group_from_number(number, setting)
        crystal = Crystal(lattice, sites, sg, name=name or title)
    except InputError as exc:
        raise with_location(exc, parser.path, parser.lines_of["spg"], "spg") from None

    zone = v["zone"]
    kt = v.get("kt", readonly(np.zeros(3)))
    norm = float(lattice.g_length(kt) * np.sqrt(lattice.direct_dot(zone, zone)))
    if norm > 0:  # (a k_t so small that |k_t| underflows to 0 is zero)
        dot = float(kt @ zone)  # reciprocal · direct components: no metric needed
        if abs(dot) > _KT_ZONE_TOL * norm:
            raise parser.error("`kt` is not perpendicular to the zone axis",
                               parser.lines_of["kt"], "kt",
                               expected=f"kt·zone = h·u ≈ 0 (|cos| ≤ {_KT_ZONE_TOL:g})",
                               found=f"kt·zone = {dot:g} for kt = {kt.tolist()}, "
                                     f"zone = {zone.tolist()} (cos = {dot / norm:.4g})")
    adj_hkl, adj_values = v.get("adj", (None, None))
    return DatInput(
        source=parser.path, title=title, crystal=crystal, crystal_name=name,
        dw_mode=dw_mode, occ_mode=occ_mode, space_group_number=number,
        space_group_setting=setting, voltage_kv=v["hv"], zone=zone,
        normal=v.get("norm"), kt=kt, x_axis=v.get("xaxis"), v0=v.get("v0"),
        convergence=v.get("conv"), samp=v.get("samp"), hkl=v.get("hkl"),
        sele=v.get("sele"), sgmax=v.get("sgmax"), sgmin=v.get("sgmin"),
        omeg=v.get("omeg"), aperture=v.get("aper"), out_hkl=v.get("out"),
        absorption=v.get("abs"), adj_hkl=adj_hkl, adj_values=adj_values,
        lines=dict(parser.lines_of),
    )


def _site(parser: DatParser, a: AtomLine, lattice: Lattice, dw_mode: str,
          occ_mode: str) -> Site:
    """The :class:`Site` of one ``atom`` line (label → element/charge, DW → B or U_ij)."""
    n_dw = _DW_COUNTS[dw_mode]
    n_expected = 3 + n_dw + (1 if occ_mode == "par" else 0)
    if len(a.values) != n_expected:
        occ = " occ" if occ_mode == "par" else ""
        dw = {"iso": "B", "bij": "b11 b22 b33 b12 b13 b23",
              "uij": "U11 U22 U33 U12 U13 U23"}[dw_mode]
        raise parser.error(f"`atom {a.label}`: wrong number of values for dw = {dw_mode}, "
                           f"occ = {occ_mode}", a.line, "atom",
                           expected=f"{n_expected} numbers (x y z {dw}{occ})",
                           found=f"{len(a.values)} numbers")
    xyz = tuple(a.values[:3])
    dw = np.array(a.values[3:3 + n_dw])
    occupancy = a.values[-1] if occ_mode == "par" else 1.0
    label = a.label
    m = _ION_LABEL_RE.match(label)
    symbol = f"{m.group(1)}{m.group(3)}{m.group(2)}" if m else label
    try:
        element, charge = parse_type_symbol(symbol, source=str(parser.path), line=a.line)
    except InputError as exc:
        raise with_location(exc, parser.path, a.line, "atom") from None
    if re.match(r"^[A-Za-z]{1,2}VAL$", label, re.IGNORECASE):
        warnings.warn(f"{parser.path}:{a.line}: label {label} selects PyExtal's valence "
                      f"scattering table; qcbed uses the neutral-atom {element} factors",
                      UserWarning, stacklevel=4)
    b_iso = 0.0
    u_aniso = None
    if dw_mode == "iso":
        b_iso = float(dw[0])
    else:
        if dw_mode == "bij":
            # β_ij = 2π² a*_i a*_j U_ij  (T = exp(−hᵀβh)), order 11 22 33 12 13 23
            ra, rb, rc = lattice.reciprocal_parameters
            scale = 2 * np.pi**2 * np.array([ra * ra, rb * rb, rc * rc, ra * rb, ra * rc,
                                             rb * rc])
            u6 = dw / scale
        else:
            u6 = dw
        u_aniso = u6
        b_iso = max(u_equivalent_b(u6, lattice.reciprocal_parameters, lattice.metric), 0.0)
    try:
        return Site(label=label, element=element, xyz=xyz, occupancy=occupancy,
                    b_iso=b_iso, u_aniso=u_aniso, charge=charge)
    except InputError as exc:
        raise with_location(exc, parser.path, a.line, "atom") from None
