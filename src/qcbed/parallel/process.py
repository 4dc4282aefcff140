"""Local worker processes: :class:`ProcessExecutor` (``concurrent.futures``, spawn)."""

from __future__ import annotations

import os
import sys
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import InputError, WorkerError
from ._state import (
    run_task,
    worker_init,
)
from .executors import (
    _check_timeout,
    _FuturesExecutor,
    _shutdown_pool,
    available_cores,
)


class ProcessExecutor(_FuturesExecutor):
    """Local worker processes (``concurrent.futures``), one BLAS thread each.

    Parameters
    ----------
    n_workers : int, optional
        Default: the number of CPU cores available to this process.
    context : str, optional
        Multiprocessing start method. Default: ``'fork'`` on Linux (works from
        scripts without an ``if __name__ == '__main__'`` guard and from
        notebooks), else ``'spawn'``; the environment variable
        ``QCBED_MP_CONTEXT`` overrides.
    timeout : float, optional
        Seconds one call may take; then the workers are stopped and
        :class:`~qcbed.errors.WorkerError` is raised.

    Notes
    -----
    A worker that dies (killed, out of memory, ``os._exit``) breaks the pool:
    the call raises :class:`~qcbed.errors.WorkerError` and the next call starts
    fresh workers. After a timeout or Ctrl-C the workers are terminated.
    """

    name = "processes"

    def __init__(self, n_workers: int | None = None, context: str | None = None, *,
                 timeout: float | None = None) -> None:
        n = available_cores() if n_workers is None else n_workers
        if int(n) != n or n < 1:
            raise InputError("n_workers must be an integer ≥ 1", tag="n_workers",
                             found=n_workers)
        self.n_workers = int(n)
        self.timeout = _check_timeout(timeout)
        import multiprocessing as mp

        if context is None:
            context = os.environ.get("QCBED_MP_CONTEXT") or (
                "fork" if sys.platform.startswith("linux") else "spawn")
        try:
            self._ctx = mp.get_context(context)
        except ValueError as exc:
            raise InputError("unknown multiprocessing start method", tag="context",
                             expected=", ".join(mp.get_all_start_methods()),
                             found=context) from exc
        self._pool = None
        self._procs: dict[int, Any] = {}
        self._finalizer: weakref.finalize | None = None

    def _get_pool(self):
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.n_workers, mp_context=self._ctx,
                                             initializer=worker_init)
            self._procs = {}
            self._finalizer = weakref.finalize(self, _shutdown_pool, self._pool, [], False)
        return self._pool

    def _submit(self, fn, payload, chunk, args):
        pool = self._get_pool()
        f = pool.submit(run_task, fn, payload, chunk, args)
        self._procs.update(getattr(pool, "_processes", None) or {})
        return f

    def _died(self, exc):
        if not isinstance(exc, BrokenProcessPool):
            return None
        # The pool notices a death a moment before the process can be reaped, and it
        # terminates the other workers (SIGTERM) itself: wait briefly for the culprit.
        import signal

        procs = list(self._procs.values())
        codes: list[str] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            exits = [(p.pid, getattr(p, "exitcode", None)) for p in procs]
            codes = [f"pid {pid}: " + (f"killed by signal {-c}" if c < 0 else f"exit code {c}")
                     for pid, c in exits if c not in (None, 0, -signal.SIGTERM)]
            if codes or all(c is not None for _, c in exits):
                break
            time.sleep(0.02)
        what = "; ".join(codes) if codes else "exit status unknown"
        return WorkerError(f"a worker process of {self.describe()} died ({what}) — killed, "
                           "out of memory, or it called os._exit; the pool was shut down "
                           "and the next call starts new workers")

    def _on_failure(self, kind: str) -> None:
        if self._pool is not None:
            _shutdown_pool(self._pool, list(self._procs.values()), kill=True)
            if self._finalizer is not None:
                self._finalizer.detach()
            self._pool = None
            self._procs = {}

    def close(self) -> None:
        if self._pool is not None:
            if self._finalizer is not None:
                self._finalizer.detach()
            _shutdown_pool(self._pool, list(self._procs.values()), kill=False)
            self._pool = None
            self._procs = {}


