"""Refinable parameters and the grammar of their names (written once, used by every layer).

:class:`Parameter` is one refinable quantity with a scale, bounds and a cost
class (*kind*); :class:`ParameterSet` an ordered collection with vector views.
:func:`parse_parameter_name` classifies and canonicalises the names used in
project files, run states, checkpoints and results (``docs/project-file.md``).

Every parameter has a *kind*, which says what a change costs:

``structure``  changes the structure matrix (U_g, U′_g, Debye–Waller factors, cell,
               coordinates, occupancies, voltage, orientation): re-diagonalise;
``thickness``  re-uses the stored eigen-systems (Spence & Zuo 1992, eq. 2.29);
``sampling``   moves the experimental sampling points (rotation, ``gl``, shifts): no
               simulation at all;
``probe``      changes a transfer function of the measured pattern: the LARBED probe
               (σ, γ of the 2-D Voigt) or the plasmon losses (``plasmon.lambda_scale``);
``linear``     scale and backgrounds, solved in closed form or as linear parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError
from .hkl import HKL_PATTERN

__all__ = ["KINDS", "PER_DATASET_KINDS", "SAMPLING_NAMES", "THICKNESS_GRADIENT_NAMES",
           "UIJ_NAMES", "Parameter",
           "ParameterSet", "dataset_name", "parse_parameter_name", "split_dataset_name"]

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



SAMPLING_NAMES = ("rotation", "gl", "shift.row", "shift.col")
#: t(k_t) = t₀ + a·k_x + b·k_y: the thickness gradients across the tilt field (Å per Å⁻¹)
THICKNESS_GRADIENT_NAMES = ("thickness.dkx", "thickness.dky")

_HKL_RE = HKL_PATTERN
_SF_RE = re.compile(r"^(U|Uabs|phase|phase_abs)" + _HKL_RE + r"$")
_B_RE = re.compile(r"^B\(\s*([^()\s]+)\s*\)$")
_SITE_RE = re.compile(r"^(x|y|z|occ|U11|U22|U33|U12|U13|U23)\(\s*([^()\s,]+)\s*\)$")
#: the U^{ij} components of a site, in CIF order (``_atom_site_aniso_U_11`` …)
UIJ_NAMES = ("U11", "U22", "U33", "U12", "U13", "U23")
_KAPPA_RE = re.compile(r"^(kappa|Pv)\(\s*([^()\s]+)\s*\)$")
_DISC_RE = re.compile(r"^disc_shift" + _HKL_RE + r"\.(row|col)$")
_CELL = ("a", "b", "c", "alpha", "beta", "gamma")


def parse_parameter_name(name: str, *, source: Any = None, tag: str | None = None
                         ) -> tuple[str, Any, str]:
    """Classify a refinable-parameter name and return its canonical spelling.

    Parameters
    ----------
    name : str
        ``thickness`` (Å), ``thickness.dkx``, ``thickness.dky`` (Å per Å⁻¹: the
        thickness of a direction is t + dkx·Δk_x + dky·Δk_y), ``U(h,k,l)``,
        ``Uabs(h,k,l)`` (Å⁻²), ``phase(h,k,l)``,
        ``phase_abs(h,k,l)`` (deg, phases of U_g and U′_g), ``B(label)`` (Å²),
        ``x(label)``, ``y(label)``, ``z(label)`` (fractional coordinates),
        ``occ(label)``, ``U11(label)`` … ``U23(label)`` (Å², CIF U^{ij}),
        ``kappa(T)``, ``Pv(T)``, ``voltage`` (kV), ``cell.a`` … ``cell.gamma``,
        ``tilt.x``, ``tilt.y`` (Å⁻¹, shift of every simulated k_t), ``rotation`` (deg),
        ``gl``, ``shift.row``, ``shift.col`` (px),
        ``disc_shift(h,k,l).row``/``.col`` (px), ``probe.sigma``, ``probe.gamma`` (px),
        ``plasmon.lambda_scale`` (λ_p over the plasmon model's λ_p; data that are not
        energy-filtered).

    Returns
    -------
    (kind, detail, canonical)
        kind is one of ``thickness``, ``thickness_gradient``, ``U``, ``Uabs``,
        ``phase``, ``phase_abs``, ``B``,
        ``xyz``, ``occ``, ``Uij``, ``kappa``, ``voltage``, ``cell``, ``tilt``,
        ``sampling``, ``probe``; detail the hkl tuple, site label, ``(label, axis)``
        (axis 0–2) for ``xyz``, ``(label, component)`` (``'U11'`` …) for ``Uij``, cell
        parameter or None. Whether a site's coordinate, U^{ij} or a cell parameter is
        free under the crystal's symmetry is checked against the crystal by
        :func:`qcbed.refine.parameters.check_structural_name`.

    Raises
    ------
    InputError
        Unknown name.
    """
    s = str(name).strip()
    if s == "thickness":
        return "thickness", None, s
    if s in THICKNESS_GRADIENT_NAMES:
        return "thickness_gradient", s[-1], s
    if s == "voltage":
        return "voltage", None, s
    m = _SF_RE.match(s)
    if m:
        h = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        return m.group(1), h, f"{m.group(1)}({h[0]},{h[1]},{h[2]})"
    m = _B_RE.match(s)
    if m:
        return "B", m.group(1), f"B({m.group(1)})"
    m = _SITE_RE.match(s)
    if m:
        what, label = m.group(1), m.group(2)
        canon = f"{what}({label})"
        if what in "xyz":
            return "xyz", (label, "xyz".index(what)), canon
        if what == "occ":
            return "occ", label, canon
        return "Uij", (label, what), canon
    m = _KAPPA_RE.match(s)
    if m:
        return "kappa", m.group(2), f"{m.group(1)}({m.group(2)})"
    if s.startswith("cell.") and s[5:] in _CELL:
        return "cell", s[5:], s
    if s in SAMPLING_NAMES:
        return "sampling", None, s
    m = _DISC_RE.match(s)
    if m:
        h = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return "sampling", h, f"disc_shift({h[0]},{h[1]},{h[2]}).{m.group(4)}"
    if s in ("probe.sigma", "probe.gamma", "plasmon.lambda_scale"):
        return "probe", None, s
    if s in ("tilt.x", "tilt.y"):
        return "tilt", s[-1], s
    raise InputError("unknown parameter name", source=source, tag=tag,
                     expected="thickness, thickness.dkx, thickness.dky, U(h,k,l), "
                              "Uabs(h,k,l), phase(h,k,l), phase_abs(h,k,l), B(label), "
                              "x(label), y(label), z(label), occ(label), U11(label)…U23(label), "
                              "kappa(label), Pv(label), "
                              "voltage, cell.a…cell.gamma, tilt.x, tilt.y, rotation, gl, "
                              "shift.row, shift.col, disc_shift(h,k,l).row/.col, probe.sigma, "
                              "probe.gamma, plasmon.lambda_scale", found=name)



# ---------------------------------------------------------------------- several datasets
#: Kinds of :func:`parse_parameter_name` that belong to one dataset of a joint
#: refinement (``thickness[1]``); every other kind is shared by all datasets.
PER_DATASET_KINDS = ("thickness", "thickness_gradient", "voltage", "tilt", "sampling",
                     "probe")

_INDEX_RE = re.compile(r"^(.+)\[(\d+)\]$")


def dataset_name(name: str, k: int) -> str:
    """The joint-refinement name of dataset ``k``'s own parameter (``thickness[1]``)."""
    return f"{name}[{k}]"


def split_dataset_name(name: str) -> tuple[str, int | None]:
    """``'thickness[1]'`` → ``('thickness', 1)``; a name without an index → ``(name, None)``."""
    s = str(name).strip()
    m = _INDEX_RE.match(s)
    return (s, None) if m is None else (m.group(1), int(m.group(2)))
