"""The executor interface (:class:`Executor`), the in-process :class:`SerialExecutor` and the
shared machinery of the futures-based executors.

The concrete executors live in :mod:`.process`, :mod:`.dask_cluster`, :mod:`.mpi` and
:mod:`.gpu`; :mod:`.spec` builds one from a spec and holds the process-wide default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Any

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..errors import InputError, WorkerError
from ._state import (
    NeedState,
    ShipStats,
    StateShipper,
    delta_nbytes,
    nbytes,
    pickled_size,
    shipper,
    worker_error,
)

__all__ = ["Executor", "SerialExecutor", "available_cores", "one_blas_thread"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    t = float(timeout)
    if not t > 0:
        raise InputError("timeout must be > 0 seconds (or None)", tag="timeout", found=timeout)
    return t


def _chunk_error(exc: WorkerError, i: int, n: int, name: str) -> WorkerError:
    """Prefix a worker's error with the chunk it failed on (attributes kept)."""
    err = WorkerError(f"chunk {i + 1} of {n} failed ({name} executor): {exc}")
    err.__dict__.update({k: v for k, v in exc.__dict__.items()})
    err.chunk = i
    return err


class Executor:
    """Interface: run ``fn(arrays, chunk, *args)`` over chunks, results in chunk order.

    ``fn`` is a module-level function (it travels by reference), ``arrays`` the
    engine state (:class:`~qcbed.bloch.solver.EngineArrays`), ``chunks`` a
    sequence of direction chunks. Every executor runs the same function on the
    same chunks, so results agree to round-off across executors.

    A failing task raises :class:`~qcbed.errors.WorkerError` (the message names
    the chunk, the worker and the original exception with its traceback); a
    worker that dies, or no result within ``timeout`` seconds, raises it too.

    Attributes
    ----------
    name : str
    n_workers : int
    timeout : float or None
        Seconds one :meth:`map_chunks` call may take (None: no limit).
    last_stats : ShipStats or None
        What the last call moved (see :class:`~qcbed.parallel.ShipStats`).
    """

    name = "executor"
    n_workers = 1
    timeout: float | None = None
    last_stats: ShipStats | None = None

    def map_chunks(self, fn: Callable, arrays: Any, chunks: Sequence, *, args: tuple = (),
                   progress: bool = False) -> list:
        """``[fn(arrays, c, *args) for c in chunks]``, computed by the workers.

        Parameters
        ----------
        fn : callable
            Module-level function ``fn(arrays, chunk, *args)``.
        arrays : EngineArrays
            Engine state: shipped once per set-up, then as U-table deltas.
        chunks : sequence
            Work items (arrays of incident directions).
        args : tuple
            Extra arguments, the same for every chunk (kept small).
        progress : bool
            Show a progress bar.

        Returns
        -------
        list
            One result per chunk, in order.

        Raises
        ------
        WorkerError
            A task raised, a worker died, or the call exceeded ``timeout``.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """Short description, e.g. ``'processes(4)'``."""
        return f"{self.name}({self.n_workers})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # shared helpers
    def _bar(self, n: int, progress: bool):
        return tqdm(total=n, desc="Bloch", unit="chunk", disable=not progress, leave=False)


class SerialExecutor(Executor):
    """Runs chunks one after the other in this process (BLAS single-threaded).

    Errors of a task are raised as :class:`~qcbed.errors.WorkerError` with the
    original exception as the cause, as under every other executor.

    Parameters
    ----------
    limit_blas : bool
        Run BLAS single-threaded while computing (default), so that timings and
        round-off match one worker of the parallel executors. False leaves BLAS
        threading as it is.
    """

    name = "serial"

    def __init__(self, limit_blas: bool = True) -> None:
        self.limit_blas = bool(limit_blas)

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        import contextlib

        stats = ShipStats(self.name, n_tasks=len(chunks))
        out = []
        limiter = one_blas_thread() if self.limit_blas else contextlib.nullcontext()
        with limiter, self._bar(len(chunks), progress) as bar:
            for i, c in enumerate(chunks):
                try:
                    r = fn(arrays, c, *args)
                except Exception as exc:
                    err = worker_error(exc, "serial (this process)")
                    raise _chunk_error(err, i, len(chunks), self.name) from exc
                stats.result_bytes += nbytes(r)
                out.append(r)
                bar.update()
        self.last_stats = stats
        return out


def one_blas_thread():
    """A context manager holding BLAS (and OpenMP) to one thread in this process while it
    is entered, restoring the previous setting after (``threadpoolctl``); a no-op where
    threadpoolctl cannot see or set the library. For work that is already parallel
    (the serial executor's chunks, the set-up threads of
    :func:`qcbed.bloch.tail.on_set_up_threads`): one BLAS thread per Python thread."""
    import contextlib

    try:
        return threadpool_limits(1)
    except Exception:  # pragma: no cover
        return contextlib.nullcontext()


class _FuturesExecutor(Executor):
    """Common loop of the ``concurrent.futures``-style executors (processes, MPI)."""

    _shipper: StateShipper | None = None

    def _submit(self, fn, payload, chunk, args):  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_failure(self, kind: str) -> None:
        """Tidy up after a dead worker (``'died'``), a timeout or an interrupt."""

    def _died(self, exc: BaseException) -> WorkerError:  # pragma: no cover - per executor
        return WorkerError(f"a worker of the {self.name} executor died: {exc}")

    def _ship(self) -> StateShipper:
        return self._shipper if self._shipper is not None else shipper()

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        n = len(chunks)
        payload, entry, new, delta = self._ship().payload(arrays)
        stats = ShipStats(self.name, n_tasks=n, state_bytes=entry.nbytes if new else 0,
                          state_copies=self.n_workers if new else 0,
                          delta_rows=0 if delta is None else len(delta[0]),
                          delta_bytes=delta_nbytes(delta))
        common = pickled_size((fn, payload, args))
        out: list[Any] = [None] * n
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pending: dict[Any, int] = {}
        inline: tuple | None = None
        # a bounded window of tasks in flight: a timeout or an error leaves little
        # queued, and workers that must be sent the state inline ask only once or twice
        window = max(2 * self.n_workers, 2)
        todo = iter(range(n))

        def submit_next() -> None:
            i = next(todo, None)
            if i is not None:
                pending[self._submit(fn, payload, chunks[i], args)] = i
                stats.task_bytes += common + pickled_size(chunks[i])

        try:
            for _ in range(window):
                submit_next()
            with self._bar(n, progress) as bar:
                while pending:
                    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                    done, _ = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                    if not done:
                        raise TimeoutError
                    for f in done:
                        i = pending.pop(f)
                        r = self._result(f, i, n)
                        if isinstance(r, NeedState):
                            if inline is None:
                                inline = self._ship().with_blob(payload)
                            pending[self._submit(fn, inline, chunks[i], args)] = i
                            stats.resent_inline += 1
                            stats.task_bytes += pickled_size((fn, inline, chunks[i], args))
                            continue
                        stats.result_bytes += nbytes(r)
                        out[i] = r
                        bar.update()
                        submit_next()
        except TimeoutError:
            self._on_failure("timeout")  # shuts the pool down, cancelling what is queued
            raise WorkerError(f"{self.describe()}: no result within {self.timeout:g} s "
                              f"({n - len([o for o in out if o is not None])} of {n} chunks "
                              "unfinished); the workers were stopped") from None
        except WorkerError:  # a task failed (or a worker died): running tasks may finish
            self._cancel(pending)
            raise
        except BaseException:  # Ctrl-C or an error here: stop the workers
            if any(not f.done() for f in pending):
                self._on_failure("interrupt")
            raise
        self.last_stats = stats
        return out

    def _result(self, f, i: int, n: int):
        try:
            return f.result()
        except WorkerError as exc:
            raise _chunk_error(exc, i, n, self.name) from None
        except Exception as exc:
            dead = self._died(exc)
            if dead is not None:
                self._on_failure("died")
                raise dead from exc
            raise WorkerError(f"chunk {i + 1} of {n} failed ({self.name} executor): "
                              f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _cancel(pending) -> None:
        for f in pending:
            f.cancel()


def _stop_processes(procs: Sequence) -> None:
    for p in procs:
        try:
            if p.is_alive():
                p.terminate()
        except Exception:  # pragma: no cover
            pass
    for p in procs:
        try:
            p.join(2.0)
            if p.is_alive():  # pragma: no cover - ignored SIGTERM
                p.kill()
                p.join(1.0)
        except Exception:  # pragma: no cover
            pass


def _shutdown_pool(pool, procs: Sequence, kill: bool) -> None:
    try:
        pool.shutdown(wait=not kill, cancel_futures=True)
    except Exception:  # pragma: no cover
        pass
    if kill:
        _stop_processes(procs)


