"""Writing TOML (:func:`dumps_toml`; the standard library only reads it)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


# ====================================================================== TOML writer
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        s = repr(x)
        return s if any(ch in s for ch in ".eEn") else s + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, Path):
        return json.dumps(str(v), ensure_ascii=False)
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def dumps_toml(data: Mapping[str, Any], comments: Mapping[str, str] | None = None,
               header: str = "") -> str:
    """Write a dict as TOML (tables, arrays of tables, inline values).

    Parameters
    ----------
    data : mapping
        Nested dicts and lists of numbers, strings, booleans; a list of dicts becomes
        an array of tables.
    comments : mapping, optional
        ``{'section.key': 'text'}`` comments written above keys (``'section'`` for a
        table header).
    header : str
        Comment lines at the top of the file.
    """
    comments = comments or {}
    out: list[str] = [f"# {line}".rstrip() for line in header.splitlines()] if header else []

    def emit(table: Mapping[str, Any], prefix: str, array: bool) -> None:
        scalars = [(k, v) for k, v in table.items() if v is not None and not (
            isinstance(v, dict)) and not _is_table_array(v)]
        subs = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
        if prefix and (scalars or array or not (subs or arrays)):
            if out:
                out.append("")
            if prefix in comments:
                out.extend(f"# {c}" for c in comments[prefix].splitlines())
            out.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        elif prefix in comments:
            out.extend(["", *(f"# {c}" for c in comments[prefix].splitlines())])
        for k, v in scalars:
            key = f"{prefix}.{k}" if prefix else k
            if key in comments:
                out.extend(f"# {c}" for c in comments[key].splitlines())
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subs:
            emit(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), False)
        for k, v in arrays:
            for item in v:
                emit(item, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), True)

    emit(data, "", False)
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


