"""Reflection keys and names: one spelling of an hkl everywhere.

``"h,k,l"`` keys the JSON/TOML dictionaries (run state, results, truth files);
``"U(h,k,l)"`` names the refinable parameters (``docs/project-file.md``);
``"h k l"`` labels figures and tables.
"""

from __future__ import annotations

from collections.abc import Iterable

HKL_PATTERN = r"\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)"
"""Regular expression of ``(h,k,l)`` with optional blanks; groups are h, k, l."""


def hkl_key(hkl: Iterable[int]) -> str:
    """``(1, -1, 0)`` → ``'1,-1,0'``."""
    return ",".join(str(int(x)) for x in hkl)


def key_hkl(key: str) -> tuple[int, int, int]:
    """``'1,-1,0'`` → ``(1, -1, 0)`` (inverse of :func:`hkl_key`)."""
    h, k, l = (int(x) for x in key.split(","))
    return h, k, l


def hkl_label(hkl: Iterable[int]) -> str:
    """``(1, -1, 0)`` → ``'1 -1 0'`` (figure and table labels)."""
    return " ".join(str(int(x)) for x in hkl)


def hkl_name(prefix: str, hkl: Iterable[int]) -> str:
    """``'U(1,-1,-1)'``-style name: ``prefix`` followed by the hkl in parentheses."""
    return f"{prefix}({hkl_key(hkl)})"
