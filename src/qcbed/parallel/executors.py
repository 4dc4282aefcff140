"""The executors: serial, local processes, Dask distributed, MPI; ``make_executor``."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..errors import InputError, WorkerError
from ._state import (
    NeedState,
    ShipStats,
    StateShipper,
    delta_nbytes,
    make_delta,
    nbytes,
    pickled_size,
    run_dask_task,
    run_task,
    shipper,
    worker_error,
    worker_init,
)

__all__ = [
    "DaskExecutor",
    "Executor",
    "MPIExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "available_cores",
    "check_executor_spec",
    "default_executor",
    "make_executor",
]


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
        limiter = _blas_limiter() if self.limit_blas else contextlib.nullcontext()
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


def _blas_limiter():
    import contextlib

    try:
        from threadpoolctl import threadpool_limits

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
        from concurrent.futures import FIRST_COMPLETED, wait

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
        from concurrent.futures.process import BrokenProcessPool

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


_DASK_TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"

#: Extra task arguments larger than this (pickled bytes) are scattered once per call.
DASK_SCATTER_ARGS_BYTES = 1 << 18


class _LostState(Exception):
    """The scattered engine state was lost with its workers."""


class DaskExecutor(Executor):
    """Dask distributed: a ``Client`` (local cluster, scheduler address or dask-jobqueue).

    The engine state is scattered to every worker once per set-up
    (``broadcast=True``); each task carries only the U-table delta.

    Parameters
    ----------
    client : distributed.Client, Cluster, str or None
        An existing client; a cluster object (``LocalCluster``, a dask-jobqueue
        ``SLURMCluster``, …) to connect to; a scheduler address
        (``'tcp://host:8786'``); or None to start a ``LocalCluster`` with
        ``n_workers`` single-threaded worker processes.
    n_workers : int, optional
        Workers of the local cluster (default: all cores).
    timeout : float, optional
        Seconds one call may take.

    Notes
    -----
    A worker that dies is restarted by its nanny and its task retried; after
    ``distributed.scheduler.allowed-failures`` deaths (Dask default 3) the
    task fails with ``KilledWorker``, raised here as
    :class:`~qcbed.errors.WorkerError`.
    """

    name = "dask"

    def __init__(self, client: Any = None, n_workers: int | None = None, *,
                 timeout: float | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover
            raise InputError("the Dask executor needs 'distributed' "
                             "(pip install qcbed[distributed])") from exc
        self.timeout = _check_timeout(timeout)
        self._cluster = None
        self._own_client = False
        if client is None:
            n = available_cores() if n_workers is None else n_workers
            if int(n) != n or n < 1:
                raise InputError("n_workers must be an integer ≥ 1", tag="n_workers",
                                 found=n_workers)
            import dask

            # Dask sets MALLOC_TRIM_THRESHOLD_ for its workers, which also freezes
            # glibc's mmap threshold: every large numpy temporary of the solver is
            # then mapped and unmapped (≈ 40 % slower here). Not for our own cluster.
            with dask.config.set({_DASK_TRIM_KEY: None}):
                self._cluster = LocalCluster(n_workers=int(n), threads_per_worker=1,
                                             processes=True, dashboard_address=None)
            self.client = Client(self._cluster)
            self._own_client = True
        elif isinstance(client, str):
            self.client = Client(client)
            self._own_client = True
        elif isinstance(client, Client):
            self.client = client
        elif hasattr(client, "scheduler_address"):  # a Cluster object
            self.client = Client(client)
            self._own_client = True
        else:
            raise InputError("DaskExecutor needs a Client, a cluster, a scheduler address "
                             "or None", found=type(client).__name__)
        self._scattered: dict[int, dict[str, Any]] = {}

    @property
    def n_workers(self) -> int:  # type: ignore[override]
        """Workers currently connected to the scheduler (at least 1)."""
        try:
            return max(len(self.client.nthreads()), 1)
        except Exception:  # pragma: no cover - closed client
            return 1

    def _entry(self, arrays) -> tuple[dict[str, Any], bool]:
        import pickle

        from ._state import fingerprint

        fp = fingerprint(arrays)
        key = id(arrays)
        e = self._scattered.get(key)
        if e is not None and e["ref"]() is arrays and e["fp"] == fp and \
                e["future"].status == "finished":
            return e, False
        import numpy as np

        size = len(pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL))
        fut = self.client.scatter(arrays, broadcast=True, hash=False)
        scattered = self._scattered

        def forget(_r, k=key):
            scattered.pop(k, None)

        e = dict(future=fut, base_u=np.array(arrays.u, copy=True),
                 base_ua=np.array(arrays.u_abs, copy=True), fp=fp,
                 ref=weakref.ref(arrays, forget), nbytes=size)
        self._scattered[key] = e
        while len(self._scattered) > 8:  # release the oldest set-ups on the workers
            self._scattered.pop(next(iter(self._scattered)))
        return e, True

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        try:
            return self._map(fn, arrays, chunks, args, progress)
        except _LostState:
            # every worker holding the scattered state died: scatter again, once
            self._scattered.pop(id(arrays), None)
            return self._map(fn, arrays, chunks, args, progress)

    def _map(self, fn, arrays, chunks, args, progress):
        from distributed import KilledWorker, as_completed

        n = len(chunks)
        entry, new = self._entry(arrays)
        _, delta = make_delta(arrays, entry["base_u"], entry["base_ua"])
        stats = ShipStats(self.name, n_tasks=n, state_bytes=entry["nbytes"] if new else 0,
                          state_copies=self.n_workers if new else 0,
                          delta_rows=0 if delta is None else len(delta[0]),
                          delta_bytes=delta_nbytes(delta))
        common = pickled_size((fn, delta, args))
        targs: Any = args
        if pickled_size(args) > DASK_SCATTER_ARGS_BYTES:
            # large extra arguments (derivative tables) travel once per worker, not per task
            stats.state_bytes += pickled_size(args)
            targs = self.client.scatter([args], hash=False)[0]
            common = pickled_size((fn, delta))
        futs = []
        for c in chunks:
            futs.append(self.client.submit(run_dask_task, fn, entry["future"], delta, c, targs,
                                           pure=False))
            stats.task_bytes += common + pickled_size(c)
        index = {f.key: i for i, f in enumerate(futs)}
        out: list[Any] = [None] * n
        try:
            done = as_completed(futs, with_results=True, raise_errors=False,
                                timeout=self.timeout)
            with self._bar(n, progress) as bar:
                for f, r in done:
                    i = index[f.key]
                    if f.status != "finished":
                        try:
                            f.result()  # raises the task's error (or CancelledError)
                        except WorkerError as exc:
                            raise _chunk_error(exc, i, n, self.name) from None
                    stats.result_bytes += nbytes(r)
                    out[i] = r
                    bar.update()
        except WorkerError:
            self.client.cancel(futs)
            raise
        except KilledWorker as exc:
            self.client.cancel(futs)
            raise WorkerError(f"{self.describe()}: a worker died while running a chunk and "
                              f"the task was given up ({exc})") from exc
        except TimeoutError:
            self.client.cancel(futs)
            raise WorkerError(f"{self.describe()}: no result within {self.timeout:g} s; the "
                              "remaining tasks were cancelled") from None
        except Exception as exc:
            self.client.cancel(futs)
            if entry["future"].status != "finished":
                raise _LostState from exc
            raise WorkerError(f"{self.describe()}: task failed: {type(exc).__name__}: "
                              f"{exc}") from exc
        except BaseException:
            self.client.cancel(futs)
            raise
        self.last_stats = stats
        return out

    def close(self) -> None:
        self._scattered.clear()
        if self._own_client:
            try:
                self.client.close()
            except Exception:  # pragma: no cover
                pass
        if self._cluster is not None:
            try:
                self._cluster.close()
            except Exception:  # pragma: no cover
                pass
            self._cluster = None


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


# ---------------------------------------------------------------- factory
_DEFAULT: Executor | None = None


def default_executor() -> Executor:
    """The process-wide default: local processes on all cores (serial on one core).

    Override with the environment variable ``QCBED_WORKERS`` (an executor
    spec as for :func:`make_executor`, e.g. ``1`` = serial, ``4``,
    ``tcp://host:8786``).
    """
    global _DEFAULT
    if _DEFAULT is None:
        spec = os.environ.get("QCBED_WORKERS", "").strip()
        if spec and spec != "auto":
            _DEFAULT = make_executor(spec)
        else:
            n = available_cores()
            _DEFAULT = SerialExecutor() if n <= 1 else ProcessExecutor(n)
        atexit.register(_DEFAULT.close)
    return _DEFAULT


_DASK_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


def _count(text: str, spec: Any) -> int | None:
    if text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InputError("bad worker count in executor spec", tag="executor",
                         expected="a positive integer", found=spec)
    return int(text)


_SPEC_NAMES = ("auto", "serial", "processes", "process", "local", "dask", "mpi", "torch",
               "cuda", "gpu")


def check_executor_spec(spec: Any, *, source: Any = None, tag: str = "executor") -> None:
    """InputError unless ``spec`` is a valid executor spec (see :func:`make_executor`).

    Only the spelling is checked: nothing is started or imported.
    """
    expected = ("auto, serial, N, processes[:N], dask[:N], tcp://host:port, mpi[:N], "
                "torch[:device], cuda")
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise InputError("bad executor spec", source=source, tag=tag, expected=expected,
                         found=spec)
    if isinstance(spec, int):
        if spec < 1:
            raise InputError("the number of workers must be ≥ 1", source=source, tag=tag,
                             found=spec)
        return
    s = spec.strip()
    if s.startswith(_DASK_SCHEMES):
        return
    low = s.lower()
    if low.isdigit():
        check_executor_spec(int(low), source=source, tag=tag)
        return
    name, _, rest = low.partition(":")
    if name not in _SPEC_NAMES or (name in ("auto", "serial") and rest):
        raise InputError("unknown executor", source=source, tag=tag, expected=expected,
                         found=spec)
    if name in ("processes", "process", "local", "dask", "mpi"):
        try:
            _count(rest, spec)
        except InputError as exc:
            raise InputError(exc.reason, source=source, tag=tag, expected=exc.expected,
                             found=spec) from None


def make_executor(spec: str | int | Executor | Any | None = None, **kwargs: Any) -> Executor:
    """An executor from a CLI/project-file spec.

    Parameters
    ----------
    spec : str, int, Executor, distributed.Client, Cluster or None
        =================================  ==========================================
        ``None``, ``'auto'``               :func:`default_executor` (all local cores)
        ``N`` (int or digits)              N local processes (1 = serial)
        ``'serial'``                       this process
        ``'processes'``, ``'processes:N'`` local processes (all cores, or N)
        ``'dask'``, ``'dask:N'``           a new Dask ``LocalCluster`` (N workers)
        ``'tcp://host:port'``              an existing Dask scheduler (also
                                           ``tls://``, ``ucx://``, ``ws://``)
        ``'mpi'``, ``'mpi:N'``             MPI (``mpi4py.futures``): the world's
                                           workers under ``mpiexec … -m
                                           mpi4py.futures``, else N spawned ones
        ``'torch'``, ``'torch:DEVICE'``    :class:`~qcbed.parallel.TorchExecutor`
                                           (``'cuda'``, ``'cuda:1'``, ``'cpu'``)
        ``'cuda'``, ``'gpu'``              the torch backend on the GPU
        an Executor                        itself
        a ``distributed.Client`` or a      :class:`DaskExecutor` on it
        cluster object
        =================================  ==========================================
    **kwargs
        Passed to the executor's constructor (e.g. ``timeout=600``).

    Returns
    -------
    Executor

    Raises
    ------
    InputError
        Unknown spec, bad count, or the backend is not installed.
    """
    if isinstance(spec, Executor):
        return spec
    if spec is None:
        return default_executor() if not kwargs else ProcessExecutor(**kwargs)
    if isinstance(spec, bool):
        raise InputError("bad executor spec", tag="executor", found=spec)
    if isinstance(spec, int):
        if spec < 1:
            raise InputError("the number of workers must be ≥ 1", tag="executor",
                             found=spec)
        return SerialExecutor() if spec == 1 else ProcessExecutor(spec, **kwargs)
    if not isinstance(spec, str):
        if hasattr(spec, "scheduler_address") or type(spec).__name__ == "Client":
            return DaskExecutor(spec, **kwargs)
        raise InputError("bad executor spec", tag="executor",
                         expected="str, int, Executor, Dask Client or cluster",
                         found=type(spec).__name__)
    check_executor_spec(spec)
    s = spec.strip()
    if s.startswith(_DASK_SCHEMES):
        return DaskExecutor(s, **kwargs)
    low = s.lower()
    name, _, rest = low.partition(":")
    if low == "auto":
        return default_executor() if not kwargs else ProcessExecutor(**kwargs)
    if low.isdigit():
        return make_executor(int(low), **kwargs)
    if low == "serial":
        return SerialExecutor()
    if name in ("processes", "process", "local"):
        return ProcessExecutor(_count(rest, spec), **kwargs)
    if name == "dask":
        return DaskExecutor(None, _count(rest, spec), **kwargs)
    if name == "mpi":
        return MPIExecutor(_count(rest, spec), **kwargs)
    if name in ("torch", "cuda", "gpu"):
        from .gpu import TorchExecutor

        device = rest or ("cuda" if name in ("cuda", "gpu") else "auto")
        if name == "cuda" and rest:
            device = f"cuda:{rest}"
        return TorchExecutor(device=device, **kwargs)
    raise InputError("unknown executor", tag="executor",
                     expected="auto, serial, N, processes[:N], dask[:N], tcp://host:port, "
                              "mpi[:N], torch[:device], cuda", found=spec)
