"""Optional dependencies of :mod:`qcbed.larbed` (dask, zarr, emdfile), imported with a hint."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

_HINT = "install the 4-D extra: pip install 'qcbed[fourd]'"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    try:
        return import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"qcbed.larbed needs '{module.split('.')[0]}': {_HINT}") from exc
