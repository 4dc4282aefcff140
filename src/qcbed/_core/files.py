"""Atomic file writes: a file is either the previous complete one or the new complete one.

Every writer in qcbed (results, reports, figures, checkpoints, run state, the
engine state shipped to workers, demo data) goes through :func:`atomic_write`:
the content is written to a temporary file in the same folder, which is then
renamed over the target with :func:`os.replace` (atomic on POSIX and Windows).
A failure (or a kill) during the write leaves the previous file untouched and
no temporary file behind (except after a hard kill).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temporary_name(path: str | os.PathLike) -> Path:
    """Hidden temporary name next to ``path`` keeping its suffix (``np.save`` and
    ``savefig`` choose the format from it)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp{os.getpid()}{p.suffix}")


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` and rename the temporary file to ``path`` when it succeeds.

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    tmp = temporary_name(p)
    try:
        writer(tmp)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda t: t.write_text(text, encoding=encoding))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` atomically."""
    return atomic_write(path, lambda t: t.write_bytes(data))
