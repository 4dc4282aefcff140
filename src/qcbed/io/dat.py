"""Reader for PyExtal/EMAPS ``.dat`` simulation input files.

The format (Ni, Busch & Zuo, PyExtal; EMAPS) is a sequential keyword file:
the first line is a title, ``#`` starts a comment (whole line or trailing),
and each further line starts with a keyword::

    crystal silicon : dw = iso occ = 1
    cell 5.4307 5.4307 5.4307 90.0 90.0 90.0
    atom Si 0.125 0.125 0.125 0.4668
    spg 227 2
    hv 300
    zone 1 1 0
    ...
    hkl 19
     0 0 0
     1 -1 -1
    ...
    adj 2
    -1 1 1 0.0575 0 4.37E-04 180

Known keywords: see :data:`KEYWORDS`. Units follow ``docs/conventions.md``.
The ``adj`` values are kept exactly as written (PyExtal's phase convention);
:meth:`DatInput.adjustments_qcbed` converts them to qcbed's convention (see the
"PyExtal .dat files" section of ``docs/conventions.md``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._core.checks import MAX_MILLER_INDEX, check_integer
from ..crystal import Crystal, Lattice, Site, parse_type_symbol, space_group_from_number
from ..errors import InputError
from ._common import is_number, parse_number, u_equivalent_b, with_location

__all__ = ["KEYWORDS", "MANDATORY_KEYWORDS", "DatInput", "read_dat"]

#: Every keyword the reader knows, in the order of the PyExtal documentation.
KEYWORDS: tuple[str, ...] = (
    "crystal", "cell", "atom", "spg", "v0", "hv", "zone", "norm", "kt", "xaxis", "conv",
    "samp", "hkl", "sele", "sgmax", "sgmin", "omeg", "aper", "out", "abs", "adj",
)
#: Keywords a file must contain.
MANDATORY_KEYWORDS: tuple[str, ...] = ("cell", "atom", "spg", "hv", "zone")

_DW_COUNTS = {"iso": 1, "bij": 6, "uij": 6}
# 'SI+4' (PyExtal's table rows for ions) -> element SI, charge +4
_ION_LABEL_RE = re.compile(r"^([A-Za-z]{1,2})([+-])(\d+)$")
# '#' starts a comment at the line start or after white space (not in 'Si#1')
_COMMENT_RE = re.compile(r"(^|\s)#.*$")
# cosine tolerance of the kt ⟂ zone check
_KT_ZONE_TOL = 1e-3
# largest `samp` (pixels per disc radius): a (2·samp + 1)² tilt net of 4·10⁸ directions
_MAX_SAMP = 10_000


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


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
    kt: np.ndarray = field(default_factory=lambda: _readonly(np.zeros(3)))
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


# ====================================================================== parsing
@dataclass
class _AtomLine:
    line: int
    label: str
    values: list[float]


class _DatParser:
    """Line-by-line parser; keeps the position for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.pos = 1  # index into self.lines; line 0 is the title
        self.values: dict[str, Any] = {}
        self.lines_of: dict[str, int] = {}
        self.atoms: list[_AtomLine] = []

    # ---------------------------------------------------------------- errors
    def error(self, message: str, line: int | None, tag: str | None = None,
              expected: Any = None, found: Any = None) -> InputError:
        if line is None:
            message += " (at end of file)"
        return InputError(message, source=self.path, line=line, tag=tag, expected=expected,
                          found=found)

    # ---------------------------------------------------------------- tokens
    @staticmethod
    def content(raw: str) -> str:
        """The line without its comment, stripped.

        ``#`` starts a comment at the start of a line or after white space;
        inside a word it is part of it (site labels such as ``Si#1``).
        """
        return _COMMENT_RE.sub("", raw).strip()

    def next_content(self, start: int) -> tuple[int, str] | None:
        """(index, content) of the first non-blank, non-comment line at or after ``start``."""
        for i in range(start, len(self.lines)):
            c = self.content(self.lines[i])
            if c:
                return i, c
        return None

    def numbers(self, tokens: list[str], line: int, tag: str) -> list[float]:
        out = []
        for t in tokens:
            try:
                value, _ = parse_number(t)
            except ValueError:
                raise self.error(f"`{tag}`: value is not a number", line, tag,
                                 expected="a number", found=t) from None
            if not np.isfinite(value):
                raise self.error(f"`{tag}`: number too large (not finite)", line, tag,
                                 expected="a finite number", found=t)
            out.append(value)
        return out

    def fixed(self, tokens: list[str], n: int, line: int, tag: str, what: str) -> list[float]:
        if len(tokens) != n:
            raise self.error(f"`{tag}` takes {n} value{'s' if n > 1 else ''} ({what})", line,
                             tag, expected=f"{n} value{'s' if n > 1 else ''}",
                             found=f"{len(tokens)}: {' '.join(tokens) or '(none)'}")
        return self.numbers(tokens, line, tag)

    def integer(self, value: float, line: int, tag: str, what: str, token: str,
                low: int | None = None, high: int | None = None) -> int:
        try:
            return check_integer(value, what, low=low, high=high)
        except InputError as exc:
            raise self.error(f"`{tag}`: {exc.reason}", line, tag, expected=exc.expected,
                             found=token) from None

    def miller(self, value: float, line: int, tag: str, token: str) -> int:
        return self.integer(value, line, tag, "a Miller index", token, -MAX_MILLER_INDEX,
                            MAX_MILLER_INDEX)

    def hkl_lines(self, n: int, line: int, tag: str) -> np.ndarray:
        """Read n lines of three integers after the ``tag n`` line."""
        rows: list[list[int]] = []
        i = self.pos
        while len(rows) < n:
            nxt = self.next_content(i)
            if nxt is None:
                raise self.error(f"`{tag} {n}` announces {n} reflections but the file ends "
                                 f"after {len(rows)}", None, tag, expected=f"{n} lines of h k l",
                                 found=f"{len(rows)} lines")
            i, c = nxt
            toks = c.split()
            if not is_number(toks[0]):
                raise self.error(f"`{tag} {n}` (line {line}) announces {n} reflections but "
                                 f"only {len(rows)} follow before `{toks[0]}`", i + 1, tag,
                                 expected=f"{n} lines of h k l", found=f"{len(rows)} lines")
            vals = self.fixed(toks, 3, i + 1, tag, "h k l")
            rows.append([self.miller(v, i + 1, tag, t) for v, t in zip(vals, toks)])
            i += 1
        self.pos = i
        nxt = self.next_content(i)
        if nxt is not None and is_number(nxt[1].split()[0]):
            extra = 0
            j = i
            while (nx := self.next_content(j)) is not None and is_number(nx[1].split()[0]):
                extra += 1
                j = nx[0] + 1
            raise self.error(f"`{tag} {n}` (line {line}) is followed by more than {n} "
                             "reflection lines", nxt[0] + 1, tag, expected=f"{n} lines",
                             found=f"{n + extra} lines")
        return _readonly(np.array(rows, dtype=int).reshape(-1, 3))

    # ---------------------------------------------------------------- keywords
    def store(self, key: str, value: Any, line: int) -> None:
        if key in self.values:
            warnings.warn(f"{self.path}:{line}: keyword `{key}` repeated (first on line "
                          f"{self.lines_of[key]}); the last value is used", UserWarning,
                          stacklevel=4)
        self.values[key] = value
        self.lines_of[key] = line

    def parse(self) -> None:
        while True:
            nxt = self.next_content(self.pos)
            if nxt is None:
                break
            idx, c = nxt
            self.pos = idx + 1
            line = idx + 1
            toks = c.split()
            kw = toks[0].lower()
            if is_number(kw):
                raise self.error("a line of numbers where a keyword was expected (does a "
                                 "count such as `hkl N` or `adj N` match the lines that "
                                 "follow?)", line, expected=f"one of {list(KEYWORDS)}",
                                 found=c)
            if kw not in KEYWORDS:
                raise self.error(f"unknown keyword `{toks[0]}`", line, toks[0],
                                 expected=f"one of {list(KEYWORDS)}", found=toks[0])
            getattr(self, f"kw_{kw}")(toks[1:], line, c)

    def kw_crystal(self, args: list[str], line: int, text: str) -> None:
        rest = text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else ""
        if ":" in rest:
            name, _, opts = rest.partition(":")
        else:  # tolerate a missing ':' before the options
            m0 = re.search(r"\S+\s*=", rest)
            name, opts = (rest[:m0.start()], rest[m0.start():]) if m0 else (rest, "")
        modes = {"dw": "iso", "occ": "1"}
        opts = opts.strip()
        for m in re.finditer(r"(\S+?)\s*=\s*(\S+)", opts):
            key, val = m.group(1).lower(), m.group(2).lower()
            if key not in modes:
                raise self.error(f"unknown `crystal` option `{m.group(1)}`", line, "crystal",
                                 expected="dw = iso|bij|uij, occ = 1|par", found=m.group(0))
            allowed = ("iso", "bij", "uij") if key == "dw" else ("1", "par")
            if val not in allowed:
                raise self.error(f"`crystal`: bad value of `{key}`", line, "crystal",
                                 expected=" | ".join(allowed), found=m.group(2))
            modes[key] = val
        leftover = re.sub(r"(\S+?)\s*=\s*(\S+)", "", opts).strip()
        if leftover:
            raise self.error("`crystal`: cannot read the options after ':'", line, "crystal",
                             expected="dw = iso|bij|uij occ = 1|par", found=leftover)
        self.store("crystal", (name.strip(), modes["dw"], modes["occ"]), line)

    def kw_cell(self, args: list[str], line: int, text: str) -> None:
        self.store("cell", self.fixed(args, 6, line, "cell", "a b c in Å, α β γ in degrees"),
                   line)

    def kw_atom(self, args: list[str], line: int, text: str) -> None:
        if len(args) < 5:
            raise self.error("`atom` needs a label, x y z and the displacement parameter(s)",
                             line, "atom", expected="atom Lbl x y z DW... [occ]",
                             found=f"{len(args)} values: {' '.join(args) or '(none)'}")
        self.atoms.append(_AtomLine(line, args[0], self.numbers(args[1:], line, "atom")))
        self.lines_of.setdefault("atom", line)

    def kw_spg(self, args: list[str], line: int, text: str) -> None:
        if len(args) not in (1, 2):
            raise self.error("`spg` takes the space-group number and an optional setting",
                             line, "spg", expected="1 or 2 values (N [setting])",
                             found=f"{len(args)}: {' '.join(args) or '(none)'}")
        num = self.numbers(args[:1], line, "spg")[0]
        n = self.integer(num, line, "spg", "the space-group number", args[0], 1, 230)
        self.store("spg", (n, args[1] if len(args) == 2 else None), line)

    def _scalar(self, key: str, args: list[str], line: int, what: str,
                positive: bool = False, nonnegative: bool = False) -> float:
        v = self.fixed(args, 1, line, key, what)[0]
        if positive and not v > 0:
            raise self.error(f"`{key}` must be positive", line, key, expected=f"{what} > 0",
                             found=args[0])
        if nonnegative and not v >= 0:
            raise self.error(f"`{key}` must not be negative", line, key,
                             expected=f"{what} ≥ 0", found=args[0])
        return v

    def kw_v0(self, args: list[str], line: int, text: str) -> None:
        self.store("v0", self._scalar("v0", args, line, "mean inner potential in V"), line)

    def kw_hv(self, args: list[str], line: int, text: str) -> None:
        self.store("hv", self._scalar("hv", args, line, "voltage in kV", positive=True), line)

    def _vector(self, key: str, args: list[str], line: int, what: str,
                nonzero: bool = True) -> np.ndarray:
        v = np.array(self.fixed(args, 3, line, key, what))
        if nonzero and not np.any(v):
            raise self.error(f"`{key}` must not be the zero vector", line, key,
                             expected="three numbers, not all zero", found=" ".join(args))
        return _readonly(v)

    def kw_zone(self, args: list[str], line: int, text: str) -> None:
        self.store("zone", self._vector("zone", args, line, "u v w"), line)

    def kw_norm(self, args: list[str], line: int, text: str) -> None:
        self.store("norm", self._vector("norm", args, line, "u v w"), line)

    def kw_kt(self, args: list[str], line: int, text: str) -> None:
        self.store("kt", self._vector("kt", args, line, "reciprocal components",
                                      nonzero=False), line)

    def kw_xaxis(self, args: list[str], line: int, text: str) -> None:
        self.store("xaxis", self._vector("xaxis", args, line, "h k l"), line)

    def kw_conv(self, args: list[str], line: int, text: str) -> None:
        self.store("conv", self._scalar("conv", args, line, "disc radius in |xaxis|",
                                        positive=True), line)

    def kw_samp(self, args: list[str], line: int, text: str) -> None:
        v = self._scalar("samp", args, line, "pixels per disc radius", positive=True)
        self.store("samp", self.integer(v, line, "samp", "the pixel count", args[0], 1,
                                        _MAX_SAMP), line)

    def _count(self, key: str, args: list[str], line: int, minimum: int) -> int:
        v = self.fixed(args, 1, line, key, "a count")[0]
        return self.integer(v, line, key, "the count", args[0], minimum, len(self.lines))

    def kw_hkl(self, args: list[str], line: int, text: str) -> None:
        n = self._count("hkl", args, line, 1)
        self.store("hkl", self.hkl_lines(n, line, "hkl"), line)

    def kw_out(self, args: list[str], line: int, text: str) -> None:
        n = self._count("out", args, line, 1)
        self.store("out", self.hkl_lines(n, line, "out"), line)

    def kw_sele(self, args: list[str], line: int, text: str) -> None:
        v = self.fixed(args, 4, line, "sele", "sgmax gmax bmin kflag")
        kflag = self.integer(v[3], line, "sele", "kflag", args[3])
        for value, token, what in zip(v[:2], args[:2], ("sgmax", "gmax")):
            if not value > 0:
                raise self.error(f"`sele`: {what} must be positive", line, "sele",
                                 expected=f"{what} > 0", found=token)
        self.store("sele", (v[0], v[1], v[2], kflag), line)

    def kw_sgmax(self, args: list[str], line: int, text: str) -> None:
        self.store("sgmax", self._scalar("sgmax", args, line, "2K|S_g| in Å⁻²",
                                        positive=True), line)

    def kw_sgmin(self, args: list[str], line: int, text: str) -> None:
        self.store("sgmin", self._scalar("sgmin", args, line, "2K|S_g| in Å⁻²",
                                        nonnegative=True), line)

    def kw_omeg(self, args: list[str], line: int, text: str) -> None:
        self.store("omeg", self._scalar("omeg", args, line, "Bethe strength threshold",
                                        nonnegative=True), line)

    def kw_aper(self, args: list[str], line: int, text: str) -> None:
        self.store("aper", self._scalar("aper", args, line, "radius in Å⁻¹",
                                        nonnegative=True), line)

    def kw_abs(self, args: list[str], line: int, text: str) -> None:
        self.store("abs", self._scalar("abs", args, line, "mean absorption potential",
                                        nonnegative=True), line)

    def kw_adj(self, args: list[str], line: int, text: str) -> None:
        n = self._count("adj", args, line, 0)
        rows_hkl: list[list[int]] = []
        rows_val: list[list[float]] = []
        i = self.pos
        while (nxt := self.next_content(i)) is not None:
            j, c = nxt
            toks = c.split()
            if not is_number(toks[0]):
                break
            if len(toks) != 7:
                raise self.error("`adj` line needs h k l |U| φ |U′| φ′", j + 1, "adj",
                                 expected="7 values", found=f"{len(toks)}: {c}")
            vals = self.numbers(toks, j + 1, "adj")
            rows_hkl.append([self.miller(v, j + 1, "adj", t) for v, t in zip(vals[:3], toks[:3])])
            rows_val.append(vals[3:])
            i = j + 1
        self.pos = i
        if len(rows_hkl) != n:
            warnings.warn(f"{self.path}:{line}: `adj {n}` announces {n} reflections but "
                          f"{len(rows_hkl)} adj lines follow; all {len(rows_hkl)} are read",
                          UserWarning, stacklevel=3)
        self.store("adj", (_readonly(np.array(rows_hkl, dtype=int).reshape(-1, 3)),
                           _readonly(np.array(rows_val, dtype=float).reshape(-1, 4))), line)

    # ---------------------------------------------------------------- build
    def build(self, title: str) -> DatInput:
        for kw in MANDATORY_KEYWORDS:
            if kw not in self.lines_of:
                raise self.error(f"missing mandatory keyword `{kw}`", None, kw,
                                 expected=f"a `{kw}` line", found="end of file")
        v = self.values
        name, dw_mode, occ_mode = v.get("crystal", ("", "iso", "1"))
        try:
            lattice = Lattice(*v["cell"])
        except InputError as exc:
            raise with_location(exc, self.path, self.lines_of["cell"], "cell") from None
        sites = [self._site(a, lattice, dw_mode, occ_mode) for a in self.atoms]
        number, setting = v["spg"]
        try:
            sg = space_group_from_number(number, setting)
            crystal = Crystal(lattice, sites, sg, name=name or title)
        except InputError as exc:
            raise with_location(exc, self.path, self.lines_of["spg"], "spg") from None

        zone = v["zone"]
        kt = v.get("kt", _readonly(np.zeros(3)))
        norm = float(lattice.g_length(kt) * np.sqrt(lattice.direct_dot(zone, zone)))
        if norm > 0:  # (a k_t so small that |k_t| underflows to 0 is zero)
            dot = float(kt @ zone)  # reciprocal · direct components: no metric needed
            if abs(dot) > _KT_ZONE_TOL * norm:
                raise self.error("`kt` is not perpendicular to the zone axis", self.lines_of["kt"],
                                 "kt", expected=f"kt·zone = h·u ≈ 0 (|cos| ≤ {_KT_ZONE_TOL:g})",
                                 found=f"kt·zone = {dot:g} for kt = {kt.tolist()}, "
                                       f"zone = {zone.tolist()} (cos = {dot / norm:.4g})")
        adj_hkl, adj_values = v.get("adj", (None, None))
        return DatInput(
            source=self.path, title=title, crystal=crystal, crystal_name=name,
            dw_mode=dw_mode, occ_mode=occ_mode, space_group_number=number,
            space_group_setting=setting, voltage_kv=v["hv"], zone=zone,
            normal=v.get("norm"), kt=kt, x_axis=v.get("xaxis"), v0=v.get("v0"),
            convergence=v.get("conv"), samp=v.get("samp"), hkl=v.get("hkl"),
            sele=v.get("sele"), sgmax=v.get("sgmax"), sgmin=v.get("sgmin"),
            omeg=v.get("omeg"), aperture=v.get("aper"), out_hkl=v.get("out"),
            absorption=v.get("abs"), adj_hkl=adj_hkl, adj_values=adj_values,
            lines=dict(self.lines_of),
        )

    def _site(self, a: _AtomLine, lattice: Lattice, dw_mode: str, occ_mode: str) -> Site:
        n_dw = _DW_COUNTS[dw_mode]
        n_expected = 3 + n_dw + (1 if occ_mode == "par" else 0)
        if len(a.values) != n_expected:
            occ = " occ" if occ_mode == "par" else ""
            dw = {"iso": "B", "bij": "b11 b22 b33 b12 b13 b23",
                  "uij": "U11 U22 U33 U12 U13 U23"}[dw_mode]
            raise self.error(f"`atom {a.label}`: wrong number of values for dw = {dw_mode}, "
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
            element, charge = parse_type_symbol(symbol, source=str(self.path), line=a.line)
        except InputError as exc:
            raise with_location(exc, self.path, a.line, "atom") from None
        if re.match(r"^[A-Za-z]{1,2}VAL$", label, re.IGNORECASE):
            warnings.warn(f"{self.path}:{a.line}: label {label} selects PyExtal's valence "
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
            raise with_location(exc, self.path, a.line, "atom") from None


def read_dat(path: str | PathLike[str]) -> DatInput:
    """Read a PyExtal/EMAPS ``.dat`` input file.

    Parameters
    ----------
    path : str or path
        The ``.dat`` file.

    Returns
    -------
    DatInput
        Crystal and settings; see its field docstrings for units.

    Raises
    ------
    InputError
        Unreadable file, unknown keyword, wrong number of values, a value that
        is not a number, ``hkl N`` / ``out N`` with a different number of lines,
        missing mandatory keywords (``cell``, ``atom``, ``spg``, ``hv``,
        ``zone``), k_t not perpendicular to the zone axis, or a crystal the
        model rejects. The message names the file, the line (or "end of file"),
        the keyword and the expected versus the found value.

    Warns
    -----
    UserWarning
        ``adj N`` followed by a different number of adj lines (all are read),
        a repeated keyword (the last wins), a PyExtal valence label (``SIVAL``),
        or a title line that looks like a keyword.

    Notes
    -----
    * ``atom`` labels select the element (``Si``, ``Si#1``, ``SIVAL``, ``SI+4``);
      the label is kept as the site label.
    * ``dw = iso``: one B in Å². ``dw = bij``: β11 β22 β33 β12 β13 β23
      (T = exp(−Σ β_ij h_i h_j)), converted to U_ij = β_ij / (2π² a*_i a*_j).
      ``dw = uij``: U11 U22 U33 U12 U13 U23 in Å².
    * ``kt`` is checked against the zone axis: |h·u| ≤ 10⁻³ |k_t| |u|.
    * ``adj`` values are kept as written; see :meth:`DatInput.adjustments_qcbed`.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", source=p) from None
    if not text.strip():
        raise InputError("empty file", source=p, expected="a title line and keywords",
                         found="an empty file")
    parser = _DatParser(p, text)
    first = parser.lines[0] if parser.lines else ""
    title = first.strip().lstrip("#").strip()
    first_word = _COMMENT_RE.sub("", first).split()[:1]
    if first_word and first_word[0].lower() in KEYWORDS:
        warnings.warn(f"{p}:1: the first line is the title, but it starts with the keyword "
                      f"`{first_word[0]}`; it is not read as a keyword", UserWarning,
                      stacklevel=2)
    parser.parse()
    return parser.build(title)
