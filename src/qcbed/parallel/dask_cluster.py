"""Dask distributed: :class:`DaskExecutor` (``LocalCluster``, a scheduler address or a cluster)."""

from __future__ import annotations

import weakref
from typing import Any

from ..errors import InputError, WorkerError
from ._state import (
    ShipStats,
    base_values,
    delta_nbytes,
    fingerprint,
    make_delta,
    nbytes,
    pickled_size,
    run_dask_task,
)
from .executors import (
    Executor,
    _check_timeout,
    _chunk_error,
    available_cores,
)

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

        fp = fingerprint(arrays)
        key = id(arrays)
        e = self._scattered.get(key)
        if e is not None and e["ref"]() is arrays and e["fp"] == fp and \
                e["future"].status == "finished":
            return e, False
        size = len(pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL))
        fut = self.client.scatter(arrays, broadcast=True, hash=False)
        scattered = self._scattered

        def forget(_r, k=key):
            scattered.pop(k, None)

        e = dict(future=fut, base=base_values(arrays), fp=fp,
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
        _, delta = make_delta(arrays, entry["base"])
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


