"""Freed heap memory kept for reuse by the engine's temporaries (glibc ``M_TOP_PAD``).

Each batch of the Bloch-wave solver (:mod:`qcbed.bloch.solver`) makes a few dozen
temporaries of 0.1–10 MB (gathered blocks, Bethe products, the absorption step) and
frees them before the next batch. glibc's malloc returns the freed top of its heap to
the system once it exceeds its (adaptive) trim threshold, so the next batch
page-faults the same memory in again: on the Si D-LACBED image at the default engine
(5 852 directions, one process) 0.5–2.6 million minor page faults, 0.9–5.0 s of system
time on top of ~30 s. Asking malloc to keep :data:`KEEP_BYTES` of freed memory at the
top of the heap (``mallopt(M_TOP_PAD, …)``; glibc manual, "Malloc Tunable Parameters")
removes them (1.4 × 10⁴ faults, 0.05 s; 64 MiB was not enough, 128 MiB was:
benchmarks/RESULTS.md, session 11).

It is a per-process allocator setting: the engine applies it in every process that
solves (:func:`qcbed.bloch.solver.eigen_chunk`), each of which may then hold up to
:data:`KEEP_BYTES` of freed memory. Setting the environment variable ``MALLOC_TOP_PAD_``
(glibc's own, in bytes; its default is 131072) before Python starts overrides it, and
qcbed then leaves the allocator alone. Other platforms and C libraries: nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["KEEP_BYTES", "keep_freed_heap"]

#: Freed memory (bytes) glibc keeps at the top of the heap in a process that solves.
KEEP_BYTES = 128 * 2**20

#: ``M_TOP_PAD`` of glibc's ``<malloc.h>``.
_M_TOP_PAD = -2


def keep_freed_heap(nbytes: int = KEEP_BYTES) -> bool:
    """Ask glibc's malloc to keep ``nbytes`` of freed memory for reuse (``M_TOP_PAD``).

    Parameters
    ----------
    nbytes : int
        Bytes of freed heap to keep at its top (and to add to each extension of it).

    Returns
    -------
    bool
        True when the setting was applied; False on other platforms or C libraries
        (no ``mallopt``), when ``MALLOC_TOP_PAD_`` is set in the environment (the
        user's choice is kept), or when malloc refused it.

    Examples
    --------
    >>> from qcbed._core.heap import keep_freed_heap
    >>> keep_freed_heap() in (True, False)
    True
    """
    if not sys.platform.startswith("linux") or "MALLOC_TOP_PAD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TOP_PAD, int(nbytes)))
