"""Typed, checked access to the tables of a project file (one reader for every section).

Every problem raises :class:`qcbed.errors.InputError` naming the file, the key
(``tag``), the expected and the found value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._core.checks import check_integer, check_number, check_numbers
from ..errors import InputError
from .schema import _MISSING, PROJECT_SCHEMA


class TableReader:
    """Typed access to a TOML table with messages naming file, key, expected and found."""

    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, msg: str, tag: str, expected: Any = None, found: Any = None) -> InputError:
        return InputError(msg, source=self.source, tag=tag, expected=expected, found=found)

    def table(self, d: Mapping, key: str, tag: str, required: bool = False) -> dict:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if required:
                raise self.err("missing section", tag, expected=f"a [{tag}] table", found=None)
            return {}
        if not isinstance(v, dict):
            raise self.err("must be a table", tag, expected="a table", found=v)
        return v

    def unknown(self, d: Mapping, section: str, prefix: str | None = None,
                extra: Sequence[str] = ()) -> None:
        """Refuse keys not in ``PROJECT_SCHEMA[section]`` (+ ``extra``); tags start with
        ``prefix`` (default the section, e.g. ``data[1].geometry`` for a block's table)."""
        allowed = PROJECT_SCHEMA[section] + tuple(extra)
        pre = prefix or section
        for k in d:
            if k not in allowed:
                raise self.err("unknown key", f"{pre}.{k}" if pre else k,
                               expected="one of " + ", ".join(allowed), found=k)

    def get(self, d: Mapping, key: str, tag: str, kind: str, default: Any = _MISSING, *,
            choices: Sequence[str] | None = None, lo: float | None = None,
            hi: float | None = None, positive: bool = False) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected=f"a {kind}", found=None)
            return default
        if kind == "str":
            if not isinstance(v, str):
                raise self.err("must be a string", tag, expected="a string", found=v)
            if choices is not None and v not in choices:
                raise self.err("unknown value", tag, expected="one of " + ", ".join(choices),
                               found=v)
            return v
        if kind == "bool":
            if not isinstance(v, bool):
                raise self.err("must be true or false", tag, expected="true or false", found=v)
            return v
        if kind == "int":
            return check_integer(v, tag, low=1 if positive else lo, high=hi,
                                 source=self.source)
        if kind == "float":
            return check_number(v, tag, low=0.0 if positive else lo, low_open=positive,
                                high=hi, source=self.source)
        raise AssertionError(kind)  # pragma: no cover

    def vector(self, d: Mapping, key: str, tag: str, n: int, default: Any = _MISSING, *,
               integer: bool = False, nonzero: bool = False) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected=f"a list of {n} numbers", found=None)
            return default
        what = f"a list of {n} {'integers' if integer else 'numbers'}"
        if not isinstance(v, list) or len(v) != n or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise self.err("wrong value", tag, expected=what, found=v)
        if integer:
            for x in v:
                check_integer(x, tag, source=self.source)
        a = check_numbers([float(min(max(x, -1e308), 1e308)) for x in v], tag,
                          source=self.source)
        if not np.all(np.isfinite(a)):
            raise self.err("must be finite", tag, expected=what, found=v)
        if integer and np.any(a != np.round(a)):
            raise self.err("must be integers", tag, expected=what, found=v)
        if nonzero and not np.any(a):
            raise self.err("must not be all zero", tag, expected="a non-zero vector", found=v)
        return tuple(int(x) for x in a) if integer else tuple(float(x) for x in a)

    def vectors(self, d: Mapping, key: str, tag: str, n: int, default: Any = _MISSING, *,
                integer: bool = False, min_len: int = 0) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected=f"a list of {n}-vectors", found=None)
            return default
        if not isinstance(v, list) or len(v) < min_len:
            raise self.err("wrong value", tag,
                           expected=f"a list of at least {min_len} lists of {n} numbers",
                           found=v)
        return [self.vector({"x": x}, "x", f"{tag}[{i}]", n, integer=integer)
                for i, x in enumerate(v)]

    def strings(self, d: Mapping, key: str, tag: str, default: Any = _MISSING) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected="a list of strings", found=None)
            return default
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err("must be a list of strings", tag, expected="a list of strings",
                           found=v)
        return list(v)
