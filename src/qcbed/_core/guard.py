"""Memory and work guard: refuse settings that would allocate more than a limit.

Before a large allocation (a Miller-index grid, a tilt grid, a stack of simulated
images, the eigen-systems of a batch of directions) qcbed estimates the bytes it
needs and compares them with a limit. Above the limit it raises
:class:`qcbed.errors.InputError` naming the setting, the estimate and the limit,
instead of ending in a raw ``MemoryError`` (or the kernel's OOM killer) minutes later.

The limit is, in order of precedence:

1. the ``limit`` argument of :func:`check_memory`, else the limit of the enclosing
   :func:`limit_scope` (a project run sets its ``engine.memory_limit`` key this way);
2. the environment variable ``QCBED_MEMORY_LIMIT`` (bytes, or ``'8GiB'``, ``'500MB'``,
   or a fraction of the available memory such as ``'0.8'``);
3. :data:`DEFAULT_FRACTION` of the memory available now (``MemAvailable`` of
   ``/proc/meminfo`` on Linux, else the physical memory).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator

from ..errors import InputError

__all__ = ["DEFAULT_FRACTION", "check_memory", "format_bytes", "limit_scope", "memory_limit",
           "parse_memory"]

#: Default limit as a fraction of the available memory.
DEFAULT_FRACTION = 0.5
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 * 2**30


def parse_memory(text: str | float | int, *, source: str | None = None,
                 tag: str = "memory_limit") -> int:
    """Bytes of a size such as ``8e9``, ``'8GiB'``, ``'500 MB'``; ``'0.5'`` (≤ 1) is a
    fraction of the available memory.

    Raises
    ------
    InputError
        Not a size, not finite or not positive.
    """
    expected = ("bytes (> 0), a size such as '8GiB' or '500MB', or a fraction (0, 1] of "
                "the available memory")
    if isinstance(text, bool):
        raise InputError("bad memory limit", source=source, tag=tag, expected=expected,
                         found=text)
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _SIZE_RE.match(str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError("bad memory limit", source=source, tag=tag, expected=expected,
                             found=text)
        value, unit = float(m.group(1)), m.group(2).lower()
    if not (value > 0) or value == float("inf"):
        raise InputError("bad memory limit", source=source, tag=tag, expected=expected,
                         found=text)
    if unit == "" and value <= 1.0:
        return int(value * available_memory())
    return int(value * _UNITS[unit])


_SCOPE: contextvars.ContextVar[str | float | int | None] = contextvars.ContextVar(
    "qcbed_memory_limit", default=None)


@contextlib.contextmanager
def limit_scope(limit: str | float | int | None) -> Iterator[None]:
    """Within the block, :func:`memory_limit` defaults to ``limit`` (None: no change)."""
    token = _SCOPE.set(limit if limit is not None else _SCOPE.get())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def memory_limit(limit: str | float | int | None = None) -> int:
    """The limit in bytes (see the module docstring for the precedence)."""
    if limit is None:
        limit = _SCOPE.get()
    if limit is not None:
        return parse_memory(limit)
    env = os.environ.get("QCBED_MEMORY_LIMIT")
    if env:
        return parse_memory(env, source="environment", tag="QCBED_MEMORY_LIMIT")
    return int(DEFAULT_FRACTION * available_memory())


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text of a byte count."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def check_memory(nbytes: float, what: str, *, tag: str | None = None,
                 source: str | None = None, limit: str | float | int | None = None,
                 hint: str = "") -> float:
    """Raise an InputError when ``nbytes`` exceed the memory limit; else return ``nbytes``.

    Parameters
    ----------
    nbytes : float
        Estimated bytes (a float: estimates may exceed any integer type).
    what : str
        What would be allocated (``'the tilt grid of 200001 × 200001 directions'``).
    tag, source : str, optional
        The setting(s) responsible and the file they came from.
    limit : optional
        Explicit limit (see :func:`memory_limit`).
    hint : str
        How to reduce the estimate.
    """
    lim = memory_limit(limit)
    if not nbytes <= lim:  # also catches nan/inf estimates
        raise InputError(f"{what} needs about {format_bytes(nbytes)}, above the memory "
                         f"limit of {format_bytes(lim)}" + (f"; {hint}" if hint else "")
                         + " (the limit is set by QCBED_MEMORY_LIMIT or memory_limit)",
                         source=source, tag=tag, expected=f"≤ {format_bytes(lim)}",
                         found=format_bytes(nbytes))
    return nbytes
