"""MPI through ``mpi4py.futures``: :class:`MPIExecutor`."""

from __future__ import annotations

import shutil
import sys
from typing import Any

from ..errors import InputError
from ._state import (
    run_task,
)
from .executors import (
    _check_timeout,
    _FuturesExecutor,
    available_cores,
)


class MPIExecutor(_FuturesExecutor):
    """MPI through ``mpi4py.futures.MPIPoolExecutor``.

    Two ways to run:

    * ``mpiexec -n N python -m mpi4py.futures script.py``: rank 0 runs the
      script, ranks 1…N−1 are the workers (N−1 of them).
    * From a single process: ``MPIExecutor(n_workers)`` spawns the workers
      (needs an MPI with dynamic process management, e.g. MPICH).

    The engine state travels as a file when the workers can read the
    parent's state directory (same node or a shared ``$QCBED_SHIP_DIR``), else
    with the first task each worker gets.

    Parameters
    ----------
    n_workers : int, optional
        Workers to spawn (default: the number of local cores); ignored under
        ``python -m mpi4py.futures``, where the MPI world decides.
    timeout : float, optional
        Seconds one call may take. MPI cannot stop a busy worker: after a
        timeout the pool is abandoned and the next call starts a new one.

    Notes
    -----
    Exceptions in tasks come back as :class:`~qcbed.errors.WorkerError`. A
    worker process that dies usually makes the MPI runtime abort the whole
    job (no hang); use ``timeout`` as a guard otherwise.
    """

    name = "mpi"

    def __init__(self, n_workers: int | None = None, *, timeout: float | None = None) -> None:
        if n_workers is not None and (int(n_workers) != n_workers or n_workers < 1):
            raise InputError("n_workers must be an integer ≥ 1", tag="n_workers",
                             found=n_workers)
        try:
            from mpi4py.futures import MPIPoolExecutor
        except ImportError as exc:
            raise InputError("the MPI executor needs mpi4py and an MPI library "
                             "(pip install qcbed[mpi], or mpi4py with your MPI)") from exc
        except Exception as exc:  # pragma: no cover - MPI library present but broken
            raise InputError(f"mpi4py could not start MPI: {exc}") from exc
        self.timeout = _check_timeout(timeout)
        self._requested = n_workers
        self._cls = MPIPoolExecutor
        self._pool = None
        world = _mpi_world_size()
        self._in_world = world > 1
        if not self._in_world and not any(shutil.which(x) for x in _MPI_LAUNCHERS):
            # spawning MPI workers without a launcher aborts the whole process (MPI_Abort)
            raise InputError("the MPI executor must spawn its workers but no MPI launcher "
                             "was found on PATH", tag="executor",
                             expected="mpiexec/mpirun on PATH, or run under 'mpiexec -n N "
                                      "python -m mpi4py.futures …'",
                             found=f"mpi{'' if n_workers is None else f':{n_workers}'}")
        self.n_workers = (world - 1) if self._in_world else int(n_workers or available_cores())

    def _get_pool(self):
        if self._pool is None:
            kw: dict[str, Any] = {}
            if not self._in_world:
                kw.update(max_workers=self.n_workers, main=False, path=list(sys.path))
            self._pool = self._cls(**kw)
        return self._pool

    def _submit(self, fn, payload, chunk, args):
        return self._get_pool().submit(run_task, fn, payload, chunk, args)

    def _died(self, exc):
        return None

    def _on_failure(self, kind: str) -> None:
        if self._pool is not None:
            try:
                self._pool.shutdown(wait=False, cancel_futures=True)
            except Exception:  # pragma: no cover
                pass
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


_MPI_LAUNCHERS = ("mpiexec", "mpirun", "mpiexec.hydra", "srun")


def _mpi_world_size() -> int:
    try:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size()
    except Exception:  # pragma: no cover
        return 1


