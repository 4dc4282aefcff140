"""Strict JSON: numpy scalars and arrays, paths and complex numbers; NaN and ±inf → null.

``json.dumps`` writes ``NaN``/``Infinity`` by default, which is not JSON (RFC 8259)
and which strict readers (browsers, ``jq``, JSON-schema validators) reject. qcbed
writes every JSON document through :func:`dumps`, which replaces non-finite
numbers by ``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_default(o: Any) -> Any:
    """``default=`` hook of :func:`json.dumps` for the types qcbed stores."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, complex):
        return [o.real, o.imag]
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def strict(obj: Any) -> Any:
    """Copy of ``obj`` with numpy/Path/complex values converted and non-finite floats → None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    return strict(json_default(obj))


def dumps(obj: Any, *, nan_as_null: bool = True, **kw: Any) -> str:
    """JSON text of ``obj`` with the types of :func:`json_default`.

    Parameters
    ----------
    nan_as_null : bool
        True (files for other programs): non-finite numbers become ``null``.
        False (qcbed's own state files, read back by :func:`json.loads`): they stay
        ``NaN``/``Infinity`` so that a resumed run sees the same numbers.
    """
    if nan_as_null:
        return json.dumps(strict(obj), allow_nan=False, **kw)
    return json.dumps(obj, default=json_default, **kw)
