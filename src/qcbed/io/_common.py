"""Helpers shared by the input readers (not public API)."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import InputError

#: A number as written in the input files: optional sign, digits, decimal point,
#: exponent with E or D (Fortran), optional standard uncertainty in parentheses.
_NUMBER_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][+-]?\d+)?)(?:\((?P<esd>\d+)\))?$"
)


def parse_number(text: str) -> tuple[float, float | None]:
    """(value, esd) of a number such as ``5.431``, ``0.4E-01``, ``1.0D-3`` or ``5.431(2)``.

    The standard uncertainty in parentheses applies to the last digits:
    ``5.431(2)`` → (5.431, 0.002); ``1.2e3(4)`` → (1200, 400).

    Raises
    ------
    ValueError
        When ``text`` is not a number (the callers turn it into an InputError).
    """
    m = _NUMBER_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    num = m.group("num").replace("d", "e").replace("D", "e")
    value = float(num)
    esd = None
    if m.group("esd") is not None:
        mant = num.split("e")[0].split("E")[0]
        exp = 0
        if "e" in num.lower():
            exp = int(num.lower().split("e")[1])
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        esd = float(f"{int(m.group('esd'))}e{exp - decimals}")
    return value, esd


def is_number(text: str) -> bool:
    """True when ``text`` reads as a number (see :func:`parse_number`)."""
    return _NUMBER_RE.match(text.strip()) is not None


def with_location(exc: InputError, source: str | PathLike[str] | None, line: int | None = None,
                  tag: str | None = None) -> InputError:
    """A copy of ``exc`` that also names the file, the line and the tag/keyword.

    Used to add the file location to errors raised by the crystal model
    (``Lattice``, ``Site``, ``Crystal``), which know nothing about files.
    """
    tags = [t for t in (tag, exc.tag) if t]
    new_tag = " / ".join(dict.fromkeys(tags)) if tags else None
    return InputError(exc.reason, source=source if exc.source is None else exc.source,
                      line=line if exc.line is None else exc.line, tag=new_tag,
                      expected=exc.expected, found=exc.found)


def u_equivalent_b(u6: np.ndarray, reciprocal_lengths: tuple[float, float, float],
                   metric: np.ndarray) -> float:
    """Equivalent isotropic B = 8π² U_eq (Å²) of a CIF U^{ij} tensor.

    U_eq = (1/3) Σ_ij U^{ij} a*_i a*_j (a_i·a_j) (Fischer & Tillmanns 1988).

    Parameters
    ----------
    u6 : array of 6
        U11 U22 U33 U12 U13 U23 in Å².
    reciprocal_lengths : (a*, b*, c*)
        In Å⁻¹.
    metric : (3, 3) array
        Direct metric tensor G in Å².
    """
    u = np.array([[u6[0], u6[3], u6[4]], [u6[3], u6[1], u6[5]], [u6[4], u6[5], u6[2]]])
    n = np.diag(reciprocal_lengths)
    u_eq = float(np.trace(n @ u @ n @ metric)) / 3.0
    return 8.0 * np.pi**2 * u_eq


def as_path(path: str | PathLike[str]) -> Path:
    """``Path`` of ``path`` (no resolution, so messages show what the user gave)."""
    return Path(path)


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` itself, made read-only (arrays of the frozen input dataclasses)."""
    a.setflags(write=False)
    return a
