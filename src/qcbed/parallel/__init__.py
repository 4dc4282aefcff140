"""Executors for the engine's per-direction work: serial, local processes, Dask, MPI.

The engine splits incident directions into chunks and calls a pure function
``fn(arrays, chunk, *args)`` on each (:func:`qcbed.bloch.solver.solve_chunk` or
:func:`qcbed.bloch.solver.pattern_chunk`). Every executor implements
:meth:`Executor.map_chunks` with the same semantics, so results agree across
executors to round-off (they run the same code on the same chunks).

Data movement: the engine state (:class:`~qcbed.bloch.solver.EngineArrays`: beam
geometry, the U-table index and values) is shipped to each worker once per
set-up and cached there under a token; later calls ship only the rows of the
U table that changed since (a structure-factor update is a few numbers).
Workers return compact results: eigenvalues, output-beam rows, excitations —
or just intensities for pattern simulations.

Every worker runs BLAS single-threaded (``threadpoolctl``), so N workers use N
cores without oversubscription.
"""

from __future__ import annotations

import atexit
import os
import pickle
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError, WorkerError

__all__ = [
    "DaskExecutor",
    "Executor",
    "MPIExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "default_executor",
    "make_executor",
]

# ---------------------------------------------------------------- worker side
_WORKER_CACHE: dict[str, Any] = {}


def _limit_blas() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl missing or unsupported BLAS
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _resolve(payload: tuple) -> Any:
    """Worker: the engine arrays for (token, path, state, delta), cached by token."""
    token, path, state, delta = payload
    arrays = _WORKER_CACHE.get(token)
    if arrays is None:
        with open(path, "rb") as fh:
            arrays = pickle.load(fh)
        if len(_WORKER_CACHE) >= 4:  # keep at most a few set-ups per worker
            _WORKER_CACHE.pop(next(iter(_WORKER_CACHE)))
        _WORKER_CACHE[token] = arrays
        arrays._base_u = arrays.u.copy()
        arrays._base_ua = arrays.u_abs.copy()
        arrays._state = None
    if arrays._state != state:
        u = arrays._base_u.copy()
        ua = arrays._base_ua.copy()
        if delta is not None:
            rows, du, dua = delta
            u[rows] = du
            ua[rows] = dua
        arrays.u = u
        arrays.u_abs = ua
        arrays._state = state
        arrays.refresh()
    return arrays


def _run_task(fn: Callable, payload: tuple, chunk: Any, args: tuple) -> Any:
    """Worker entry point: resolve the cached arrays, run ``fn``; errors carry the traceback."""
    _limit_blas()
    try:
        arrays = _resolve(payload)
        return fn(arrays, chunk, *args)
    except Exception as exc:  # re-raised in the parent with the worker's traceback
        raise WorkerError(f"{type(exc).__name__} in worker (pid {os.getpid()}): {exc}\n"
                          + traceback.format_exc()) from None


# ---------------------------------------------------------------- parent side
class _Shipper:
    """Writes each engine set-up once to a file the workers load (and cache) by token.

    The token is stored on the arrays object itself; later calls send only the
    rows of the U table that differ from the shipped base.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="qcbed-engine-")
        self._base: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        atexit.register(self.cleanup)

    def payload(self, arrays: Any) -> tuple:
        token = getattr(arrays, "_qcbed_token", None)
        if token is None or token not in self._base:
            token = uuid.uuid4().hex
            arrays._qcbed_token = token
            path = os.path.join(self._dir, f"{token}.pkl")
            with open(path, "wb") as fh:
                pickle.dump(arrays, fh, protocol=pickle.HIGHEST_PROTOCOL)
            self._base[token] = (path, arrays.u.copy(), arrays.u_abs.copy())
        path, base_u, base_ua = self._base[token]
        changed = np.nonzero((arrays.u != base_u) | (arrays.u_abs != base_ua))[0]
        if not len(changed):
            return (token, path, None, None)
        delta = (changed, arrays.u[changed].copy(), arrays.u_abs[changed].copy())
        state = hash((changed.tobytes(), delta[1].tobytes(), delta[2].tobytes()))
        return (token, path, state, delta)

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)


_SHIPPER: _Shipper | None = None
_SHIPPER_LOCK = threading.Lock()


def _shipper() -> _Shipper:
    global _SHIPPER
    with _SHIPPER_LOCK:
        if _SHIPPER is None:
            _SHIPPER = _Shipper()
        return _SHIPPER


class Executor:
    """Interface: run ``fn(arrays, chunk, *args)`` over chunks, results in order."""

    name = "executor"
    n_workers = 1

    def map_chunks(self, fn: Callable, arrays: Any, chunks: Sequence, *, args: tuple = (),
                   progress: bool = False) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name}({self.n_workers})"


class SerialExecutor(Executor):
    """Runs chunks one after the other in this process (BLAS single-threaded)."""

    name = "serial"

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        _limit_blas_local = _blas_limiter()
        out = []
        with _limit_blas_local:
            for c in tqdm(chunks, desc="Bloch", unit="chunk", disable=not progress,
                          leave=False):
                out.append(fn(arrays, c, *args))
        return out


def _blas_limiter():
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except Exception:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()


class ProcessExecutor(Executor):
    """Local worker processes (``concurrent.futures``), one BLAS thread each.

    Parameters
    ----------
    n_workers : int, optional
        Default: the number of CPU cores available to this process.
    context : str
        Multiprocessing start method. Default: ``'fork'`` on Linux (works from
        scripts without an ``if __name__ == '__main__'`` guard and from notebooks),
        else ``'spawn'``; the environment variable ``QCBED_MP_CONTEXT`` overrides.
    """

    name = "processes"

    def __init__(self, n_workers: int | None = None, context: str | None = None) -> None:
        self.n_workers = int(n_workers or _available_cores())
        if self.n_workers < 1:
            raise InputError("n_workers must be ≥ 1", found=n_workers)
        import multiprocessing as mp

        if context is None:
            context = os.environ.get("QCBED_MP_CONTEXT") or (
                "fork" if sys.platform.startswith("linux") else "spawn")
        self._ctx = mp.get_context(context)
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.n_workers, mp_context=self._ctx,
                                             initializer=_limit_blas)
        return self._pool

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        from concurrent.futures.process import BrokenProcessPool

        payload = _shipper().payload(arrays)
        pool = self._get_pool()
        futures = [pool.submit(_run_task, fn, payload, c, args) for c in chunks]
        out = []
        try:
            for f in tqdm(futures, desc="Bloch", unit="chunk", disable=not progress,
                          leave=False):
                out.append(f.result())
        except BrokenProcessPool as exc:
            self.close()
            raise WorkerError("a worker process died (killed or out of memory); "
                              "the pool was shut down") from exc
        except WorkerError:
            for f in futures:
                f.cancel()
            raise
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Dask distributed: a ``Client`` (local cluster, scheduler address or dask-jobqueue).

    Parameters
    ----------
    client : distributed.Client, str or None
        An existing client, a scheduler address (``'tcp://host:8786'``), or None
        to start a ``LocalCluster`` with ``n_workers`` single-threaded workers.
    n_workers : int, optional
        Workers of the local cluster.
    """

    name = "dask"

    def __init__(self, client=None, n_workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover
            raise InputError("the Dask executor needs 'distributed' "
                             "(pip install qcbed[distributed])") from exc
        self._own = client is None or isinstance(client, str)
        if client is None:
            self._cluster = LocalCluster(n_workers=int(n_workers or _available_cores()),
                                         threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self.client = Client(self._cluster)
        elif isinstance(client, str):
            self._cluster = None
            self.client = Client(client)
        else:
            self._cluster = None
            self.client = client
        self.n_workers = len(self.client.scheduler_info()["workers"])
        self._scattered: dict[str, Any] = {}

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        key = getattr(arrays, "_qcbed_dask_token", None)
        entry = self._scattered.get(key) if key is not None else None
        if entry is None:
            key = uuid.uuid4().hex
            arrays._qcbed_dask_token = key
            base = self.client.scatter(arrays, broadcast=True)
            entry = (base, arrays.u.copy(), arrays.u_abs.copy())
            self._scattered[key] = entry
        base, bu, bua = entry
        changed = np.nonzero((arrays.u != bu) | (arrays.u_abs != bua))[0]
        delta = (changed, arrays.u[changed].copy(), arrays.u_abs[changed].copy()) \
            if len(changed) else None
        futs = [self.client.submit(_dask_task, fn, base, delta, c, args, pure=False)
                for c in chunks]
        out = []
        try:
            for f in tqdm(futs, desc="Bloch", unit="chunk", disable=not progress, leave=False):
                out.append(f.result())
        except WorkerError:
            raise
        except Exception as exc:
            raise WorkerError(f"Dask task failed: {type(exc).__name__}: {exc}") from exc
        return out

    def close(self) -> None:
        if self._own:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
        self._scattered.clear()


def _dask_task(fn, arrays, delta, chunk, args):
    _limit_blas()
    try:
        if delta is not None:
            import copy

            arrays = copy.copy(arrays)
            rows, du, dua = delta
            arrays.u = arrays.u.copy()
            arrays.u_abs = arrays.u_abs.copy()
            arrays.u[rows] = du
            arrays.u_abs[rows] = dua
            arrays.refresh()
        return fn(arrays, chunk, *args)
    except Exception as exc:
        raise WorkerError(f"{type(exc).__name__} in Dask worker: {exc}\n"
                          + traceback.format_exc()) from None


class MPIExecutor(Executor):
    """MPI through ``mpi4py.futures.MPIPoolExecutor``.

    Run as ``mpiexec -n N python -m mpi4py.futures script.py`` (workers come from
    the MPI world) or, where the MPI supports dynamic process management, from a
    single process with ``n_workers`` spawned workers.
    """

    name = "mpi"

    def __init__(self, n_workers: int | None = None) -> None:
        try:
            from mpi4py.futures import MPIPoolExecutor
        except ImportError as exc:
            raise InputError("the MPI executor needs mpi4py (pip install qcbed[mpi]) and an "
                             "MPI library") from exc
        self._pool = MPIPoolExecutor(max_workers=n_workers)
        self.n_workers = int(n_workers or max(_mpi_world_size() - 1, 1))

    def map_chunks(self, fn, arrays, chunks, *, args=(), progress=False):
        payload = _shipper().payload(arrays)
        futs = [self._pool.submit(_run_task, fn, payload, c, args) for c in chunks]
        return [f.result() for f in tqdm(futs, desc="Bloch", unit="chunk",
                                          disable=not progress, leave=False)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _mpi_world_size() -> int:
    try:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size()
    except Exception:  # pragma: no cover
        return 1


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_DEFAULT: Executor | None = None


def default_executor() -> Executor:
    """The process-wide default: local processes on all cores (serial on one core).

    Override with the environment variable ``QCBED_WORKERS`` (``1`` = serial).
    """
    global _DEFAULT
    if _DEFAULT is None:
        n = int(os.environ.get("QCBED_WORKERS", _available_cores()))
        _DEFAULT = SerialExecutor() if n <= 1 else ProcessExecutor(n)
        atexit.register(_DEFAULT.close)
    return _DEFAULT


def make_executor(spec: str | int | Executor | None) -> Executor:
    """An executor from a CLI/project-file spec.

    ``None``/``'auto'`` → :func:`default_executor`; an int or ``'N'`` → N local
    processes (1 = serial); ``'serial'``; ``'dask'`` (local cluster);
    ``'tcp://…'`` (Dask scheduler address); ``'mpi'``.
    """
    if isinstance(spec, Executor):
        return spec
    if spec is None or spec == "auto":
        return default_executor()
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        n = int(spec)
        return SerialExecutor() if n <= 1 else ProcessExecutor(n)
    s = str(spec)
    if s == "serial":
        return SerialExecutor()
    if s == "dask":
        return DaskExecutor()
    if s.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        return DaskExecutor(s)
    if s == "mpi":
        return MPIExecutor()
    raise InputError("unknown executor", expected="auto, serial, N, dask, tcp://host:port, mpi",
                     found=spec)
