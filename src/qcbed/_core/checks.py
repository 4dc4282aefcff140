"""Validation of numbers where they are read: finite, in range, integer-valued.

One mechanism for every entry point (file readers, project files, the Python
API and the CLI): a bad value raises :class:`qcbed.errors.InputError` naming the
source (file and line, key or argument), what was expected and what was found.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["MAX_GMAX", "MAX_MILLER_INDEX", "MAX_THICKNESS", "MAX_THICKNESS_COUNT",
           "MAX_VOLTAGE_KV", "check_hkl",
           "check_integer", "check_number", "check_numbers", "check_output_path"]

#: Largest |h|, |k|, |l| accepted anywhere (|g| ≈ 1000/a ≫ any physical beam pool).
MAX_MILLER_INDEX = 1000
#: Largest accelerating voltage accepted, kV.
MAX_VOLTAGE_KV = 10_000.0
#: Largest automatic-pool radius |g| accepted, Å⁻¹ (d = 0.05 Å; the scattering-factor
#: parameterisations end near 6 Å⁻¹ in s = g/2).
MAX_GMAX = 20.0
#: Largest crystal thickness accepted anywhere, Å (0.1 mm; electrons do not get through).
MAX_THICKNESS = 1.0e6
#: Most thicknesses of one scan.
MAX_THICKNESS_COUNT = 100_000
#: Largest integer accepted for counts and indices (fits a C long everywhere).
_INT_LIMIT = 2**31 - 1


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool,
                unit: str) -> str:
    u = f" {unit}" if unit else ""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '≥'} {low:g}{u}")
    if high is not None:
        parts.append(f"{'<' if high_open else '≤'} {high:g}{u}")
    return " and ".join(parts)


def _as_float(value: Any) -> float | None:
    """``value`` as a Python float, or None when it is not a real number."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except (OverflowError, ValueError):  # a huge int
            return math.inf if value > 0 else -math.inf
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return float(value)
    return None


def check_number(value: Any, name: str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False,
                 unit: str = "", source: str | PathLike[str] | None = None,
                 line: int | None = None, tag: str | None = None) -> float:
    """``value`` as a finite float in [low, high] (or an open bound), else an InputError.

    Parameters
    ----------
    value : any
        The value as given (a Python or NumPy real number; strings are refused).
    name : str
        The key, keyword or argument name (the error's tag).
    low, high : float, optional
        Bounds; ``None`` is unbounded on that side.
    low_open, high_open : bool
        Exclude the bound itself (``low_open=True``: value > low).
    unit : str
        Unit shown in the message (``'Å'``, ``'kV'``).
    source, line : optional
        File (or object) and 1-based line the value came from.
    tag : str, optional
        Key or keyword shown in brackets (default: ``name``).

    Returns
    -------
    float

    Raises
    ------
    InputError
        Not a real number, not finite (nan, ±inf, an overflowing literal such as
        ``1e999``) or out of range.
    """
    rng = _range_text(low, high, low_open, high_open, unit)
    expected = "a finite number" + (f" {rng}" if rng else "")
    tag = name if tag is None else tag
    v = _as_float(value)
    if v is None:
        raise InputError(f"{name} must be a number", source=source, line=line, tag=tag,
                         expected=expected, found=value)
    if not math.isfinite(v):
        raise InputError(f"{name} must be a finite number", source=source, line=line, tag=tag,
                         expected=expected, found=value)
    bad = ((low is not None and (v <= low if low_open else v < low))
           or (high is not None and (v >= high if high_open else v > high)))
    if bad:
        raise InputError(f"{name} out of range", source=source, line=line, tag=tag,
                         expected=expected, found=value)
    return v


def check_integer(value: Any, name: str, *, low: int | None = None, high: int | None = None,
                  source: str | PathLike[str] | None = None, line: int | None = None) -> int:
    """``value`` as an int in [low, high] when it is integer-valued (``3`` or ``3.0``).

    Raises
    ------
    InputError
        Not a number, not finite, not integer-valued (``1.5``), or out of range
        (|value| is also limited to 2³¹ − 1).
    """
    lo = -_INT_LIMIT if low is None else max(low, -_INT_LIMIT)
    hi = _INT_LIMIT if high is None else min(high, _INT_LIMIT)
    rng = _range_text(lo if low is not None else None, hi if high is not None else None,
                      False, False, "")
    expected = "an integer" + (f" {rng}" if rng else "")
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        iv = int(value)
    else:
        v = _as_float(value)
        if v is None or not math.isfinite(v) or v != round(v):
            raise InputError(f"{name} must be an integer", source=source, line=line, tag=name,
                             expected=expected, found=value)
        iv = round(v) if abs(v) < 2.0**62 else (hi + 1 if v > 0 else lo - 1)
    if not lo <= iv <= hi:
        raise InputError(f"{name} out of range", source=source, line=line, tag=name,
                         expected=expected if rng else f"|{name}| ≤ {_INT_LIMIT}", found=value)
    return iv


def check_numbers(values: Any, name: str, *, low: float | None = None,
                  high: float | None = None, low_open: bool = False, high_open: bool = False,
                  unit: str = "", source: str | PathLike[str] | None = None,
                  line: int | None = None) -> np.ndarray:
    """A float array of ``values``, each finite and in range (see :func:`check_number`).

    The message names the first bad element (``name[i]``).
    """
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be numbers", source=source, line=line, tag=name,
                         expected="an array of finite numbers", found=values) from None
    flat = a.reshape(-1)
    ok = np.isfinite(flat)
    if low is not None:
        ok &= (flat > low) if low_open else (flat >= low)
    if high is not None:
        ok &= (flat < high) if high_open else (flat <= high)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        check_number(float(flat[i]), f"{name}[{i}]", low=low, high=high, low_open=low_open,
                     high_open=high_open, unit=unit, source=source, line=line)
    return a


def check_hkl(hkl: Any, name: str = "hkl", *, source: str | PathLike[str] | None = None,
              line: int | None = None) -> np.ndarray:
    """Miller indices as an (n, 3) int array; each index integer-valued, |h| ≤ 1000.

    A single triple gives shape (1, 3).

    Raises
    ------
    InputError
        Not an array of triples, a non-integer (``1.5``) or non-finite index, or
        |index| > :data:`MAX_MILLER_INDEX`.
    """
    try:
        a = np.asarray(hkl, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: Miller indices must be integers", source=source, line=line,
                         tag=name, expected="triples of integers (h, k, l)",
                         found=hkl) from None
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"{name}: Miller indices must be triples", source=source, line=line,
                         tag=name, expected="shape (n, 3)", found=f"shape {a.shape}")
    bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) > MAX_MILLER_INDEX)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(f"{name}: Miller indices must be integers with |h| ≤ "
                         f"{MAX_MILLER_INDEX}", source=source, line=line, tag=name,
                         expected="integer-valued h k l", found=tuple(a[i].tolist()))
    return a.astype(int)


def check_output_path(path: str | PathLike[str], *, overwrite: bool = False,
                      inputs: Iterable[str | PathLike[str]] = (), tag: str = "output",
                      source: str | PathLike[str] | None = None,
                      option: str = "--force") -> Path:
    """Check, before any work is done, that a result may be written to ``path``.

    Parameters
    ----------
    path : str or path
        The file to write.
    overwrite : bool
        Allow replacing an existing output file (``--force`` / ``overwrite = true``).
    inputs : paths
        Input files of the run: never overwritten, whatever ``overwrite`` says.
    tag, source, option : str
        The option or key naming the path, the project file, and the switch that
        allows overwriting (for the message).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        The folder does not exist, ``path`` is a folder, ``path`` is one of the
        inputs, or ``path`` exists and ``overwrite`` is false.
    """
    p = Path(path)
    src = source if source is not None else p
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("the folder of the output file does not exist", source=src, tag=tag,
                         expected="an existing folder", found=str(parent))
    if p.is_dir():
        raise InputError("the output is a folder", source=src, tag=tag,
                         expected="a file name", found=str(p))
    if p.exists():
        for q in inputs:
            qq = Path(q)
            try:
                same = qq.exists() and os.path.samefile(p, qq)
            except OSError:
                same = False
            if same:
                raise InputError("the output would overwrite an input file", source=src,
                                 tag=tag, expected="a new file name", found=str(p))
        if not overwrite:
            raise InputError(f"the output file exists; pass {option} to overwrite it",
                             source=src, tag=tag, expected="a new file name", found=str(p))
    return p
