"""``tomllib`` (Python ≥ 3.11) or its back-port ``tomli`` (Python 3.10): one import for
every TOML reader of qcbed."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["tomllib"]
