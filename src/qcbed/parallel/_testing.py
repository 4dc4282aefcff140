"""Diagnostic tasks for checking an executor (used by the tests; handy on a new cluster).

Each has the task signature ``fn(arrays, chunk, *args)`` and lives in the
package so that every kind of worker (spawned, Dask, MPI) can import it::

    from qcbed.parallel import make_executor
    from qcbed.parallel._testing import probe
    ex = make_executor("tcp://scheduler:8786")
    print(ex.map_chunks(probe, sim.arrays, [0, 1, 2, 3]))
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np


def probe(arrays: Any, chunk: Any) -> dict[str, Any]:
    """Where the task ran: host, pid, BLAS threads, cached set-ups, a checksum of U."""
    from . import _state

    try:
        from threadpoolctl import threadpool_info

        blas = [d.get("num_threads") for d in threadpool_info()]
    except Exception:  # pragma: no cover
        blas = []
    return {"host": socket.gethostname(), "pid": os.getpid(), "blas_threads": blas,
            "cached": list(_state._WORKER_CACHE), "chunk": chunk,
            "u_sum": complex(np.sum(arrays.u)), "u_abs_sum": complex(np.sum(arrays.u_abs))}


def fail(arrays: Any, chunk: Any, bad: Any = None) -> Any:
    """Raise ``ValueError`` on chunk ``bad`` (every chunk when None), else return the chunk."""
    if bad is None or chunk == bad:
        raise ValueError(f"deliberate failure on chunk {chunk!r}")
    return chunk


def die(arrays: Any, chunk: Any, bad: Any = None) -> Any:
    """Kill the worker process (``os._exit(3)``) on chunk ``bad`` (every chunk when None)."""
    if bad is None or chunk == bad:
        os._exit(3)
    return chunk


def sleep(arrays: Any, chunk: Any, seconds: float = 30.0) -> Any:
    """Sleep, then return the chunk (for timeouts)."""
    time.sleep(seconds)
    return chunk
