"""Provenance of results: qcbed version, SHA-256 of every input file, dependency versions,
command line, platform and date."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .._version import __version__

DEPENDENCIES = ("numpy", "scipy", "h5py", "gemmi", "matplotlib", "scikit-image",
                "rosettasciio", "click", "tqdm", "threadpoolctl")


# ====================================================================== provenance
def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def dependency_versions() -> dict[str, str]:
    """Installed versions of qcbed's dependencies (and Python)."""
    out = {"python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(input_files: Iterable[str | os.PathLike] = (),
               command_line: Sequence[str] | None = None) -> dict[str, Any]:
    """qcbed version, UTC date, command line, platform, dependency versions, input hashes.

    Parameters
    ----------
    input_files : iterable of paths
        Files to hash (SHA-256); folders are expanded to their files.
    command_line : sequence of str, optional
        Default ``sys.argv``.
    """
    hashes: dict[str, str] = {}
    for f in input_files:
        p = Path(f)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            if q.is_file():
                hashes[str(q.resolve())] = file_sha256(q)
    cmd = list(command_line) if command_line is not None else list(sys.argv)
    return {"qcbed_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command_line": " ".join(cmd), "platform": platform.platform(),
            "dependencies": dependency_versions(), "input_files": hashes}


def _write_prov(grp, prov: Mapping[str, Any]) -> None:
    for k, v in prov.items():
        if isinstance(v, dict):
            sub = grp.create_group(k)
            for kk, vv in v.items():
                sub.attrs[kk] = str(vv)
        else:
            grp.attrs[k] = str(v)


