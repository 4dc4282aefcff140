"""Engine-state shipping, the worker-side cache, and the per-call transfer statistics.

Parent side: :class:`StateShipper` writes each engine set-up
(:class:`~qcbed.bloch.solver.EngineArrays`) once to a file and names it by a
random token. A later call with the *same* arrays object and the same static
content (beam geometry, U-table index, rules, …; checked by a fingerprint)
reuses the token and sends only the rows of the U table that differ from the
shipped base (a structure-factor update). A copy of the arrays, a new set-up or
a changed static field gets a new token, so a stale state is never reused.
When the arrays object is garbage-collected its file is deleted.

Worker side: :func:`resolve` loads the set-up by token (from the file, or from
bytes sent with the task when the file cannot be read there, e.g. on another
node of an MPI job), caches it (a few set-ups per worker, least recently used
out), and applies the delta. The delta is always relative to the shipped base,
never to the worker's previous state, so a worker that missed some calls is
still right.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.files import atomic_write_bytes
from ..errors import QcbedError, WorkerError

#: Set-ups each worker keeps (least recently used out).
WORKER_CACHE_SIZE = 4

#: Set-ups the parent keeps shipped (oldest out; its file is deleted).
SHIPPER_MAX_ENTRIES = 16


# ---------------------------------------------------------------- statistics
@dataclass
class ShipStats:
    """What one :meth:`~qcbed.parallel.Executor.map_chunks` call moved.

    Attributes
    ----------
    executor : str
        Name of the executor.
    n_tasks : int
        Chunks submitted (tasks re-sent with inline state not counted).
    state_bytes : int
        Size of the pickled engine state this call wrote or sent (0 when it
        was shipped by an earlier call: workers then use their cached copy, or
        read the file written then).
    state_copies : int
        How many copies of that state travel at most (one per worker).
    delta_rows : int
        U-table rows that differ from the shipped base (carried by every task).
    delta_bytes : int
        Bytes of that delta (row indices, U and U′ values) per task.
    task_bytes : int
        Pickled size of all task messages together (function reference,
        state token, delta, chunk of directions, extra arguments); the state
        itself is not included.
    result_bytes : int
        Bytes of the returned results (array data).
    resent_inline : int
        Tasks re-sent with the state attached because a worker could not read
        the state file (no shared file system).
    """

    executor: str
    n_tasks: int = 0
    state_bytes: int = 0
    state_copies: int = 0
    delta_rows: int = 0
    delta_bytes: int = 0
    task_bytes: int = 0
    result_bytes: int = 0
    resent_inline: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a plain dictionary."""
        return dataclasses.asdict(self)


def nbytes(obj: Any) -> int:
    """Approximate transfer size of a result: array data of arrays and dataclasses."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if obj is None or isinstance(obj, (int, float, complex, bool, np.generic)):
        return 8
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(nbytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    try:
        return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # pragma: no cover - unpicklable results never travel anyway
        return 0


def pickled_size(obj: Any) -> int:
    """Bytes of ``obj`` pickled with the highest protocol."""
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


# ---------------------------------------------------------------- BLAS threads
_BLAS_LIMITED_PID: int | None = None


def limit_blas() -> None:
    """Limit BLAS/OpenMP to one thread in this process (once per process)."""
    global _BLAS_LIMITED_PID
    if _BLAS_LIMITED_PID == os.getpid():
        return
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl missing or unsupported BLAS
        pass
    _BLAS_LIMITED_PID = os.getpid()


def worker_init() -> None:
    """Initializer of local worker processes: one BLAS thread, Ctrl-C left to the parent,
    and a watchdog that ends the worker when its parent dies (see :func:`exit_with_parent`)."""
    import signal

    limit_blas()
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # pragma: no cover - not the main thread
        pass
    exit_with_parent()


#: Seconds between two checks of the parent-death watchdog.
PARENT_POLL_S = 0.5


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """Start a daemon thread that ends this process when its parent process dies.

    A worker whose parent was killed (SIGKILL, OOM killer) is re-parented (to init or
    a subreaper); the thread notices the change of ``os.getppid()`` within ``poll_s``
    seconds and calls ``os._exit(1)``, so no orphaned worker keeps computing.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    t = threading.Thread(target=watch, name="qcbed-parent-watchdog", daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------- fingerprints
def delta_fields(arrays: Any) -> tuple[str, ...]:
    """Fields of ``arrays`` shipped as row deltas after an update (the class declares
    them as ``delta_fields``, e.g. :class:`~qcbed.bloch.solver.EngineArrays`: U, U′)."""
    return tuple(getattr(type(arrays), "delta_fields", ()))


def counter_fields(arrays: Any) -> tuple[str, ...]:
    """Fields that change with every update and are no part of the state's identity
    (the class declares them as ``counter_fields``)."""
    return tuple(getattr(type(arrays), "counter_fields", ()))


def base_values(arrays: Any) -> tuple[np.ndarray, ...]:
    """Copies of the delta fields: the base that later deltas are taken against."""
    return tuple(np.array(getattr(arrays, name), copy=True) for name in delta_fields(arrays))


def fingerprint(arrays: Any) -> str:
    """Digest of everything in the engine state except the values of the delta fields.

    Two arrays objects with the same fingerprint differ at most in the values of
    their delta fields (shipped as a delta; shape and dtype are fingerprinted) and
    their counter fields.
    """
    h = hashlib.blake2b(digest_size=16)
    fields = dataclasses.fields(arrays) if dataclasses.is_dataclass(arrays) else ()
    deltas, counters = delta_fields(arrays), counter_fields(arrays)
    for f in fields:
        v = getattr(arrays, f.name)
        h.update(f.name.encode())
        if f.name in deltas:
            a = np.asarray(v)
            h.update(repr((a.shape, a.dtype.str)).encode())
        elif f.name in counters:
            continue
        elif isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            h.update(repr((a.shape, a.dtype.str)).encode())
            h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def make_delta(arrays: Any, base: tuple[np.ndarray, ...]
               ) -> tuple[str | None, tuple[np.ndarray, ...] | None]:
    """(state digest, delta) of the delta fields against the shipped base; (None, None)
    if equal. The delta is (changed rows, then each delta field's values there)."""
    names = delta_fields(arrays)
    if not names:
        return None, None
    changed_mask = np.zeros(len(base[0]), bool)
    for name, b in zip(names, base):
        changed_mask |= getattr(arrays, name) != b
    changed = np.nonzero(changed_mask)[0]
    if not len(changed):
        return None, None
    delta = (changed.astype(np.int64),
             *(np.array(getattr(arrays, name)[changed]) for name in names))
    h = hashlib.blake2b(digest_size=16)
    for a in delta:
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
    return h.hexdigest(), delta


def delta_nbytes(delta: tuple[np.ndarray, ...] | None) -> int:
    """Array bytes of a delta."""
    return 0 if delta is None else int(sum(a.nbytes for a in delta))


def apply_delta(base: Any, delta: tuple[np.ndarray, ...] | None) -> Any:
    """A shallow copy of ``base`` with the delta applied (``base`` is not changed)."""
    if delta is None:
        return base
    rows, *values = delta
    cur = copy.copy(base)
    for name, v in zip(delta_fields(base), values):
        new = np.array(getattr(base, name), copy=True)
        new[rows] = v
        setattr(cur, name, new)
    if hasattr(cur, "refresh"):
        cur.refresh()
    return cur


# ---------------------------------------------------------------- worker side
class NeedState:
    """Returned by a worker that can neither find the state in its cache nor read its file."""

    def __init__(self, token: str, where: str) -> None:
        self.token = token
        self.where = where


@dataclass
class _Cached:
    base: Any
    current: Any
    state: str | None


_WORKER_CACHE: OrderedDict[str, _Cached] = OrderedDict()
_WORKER_LOCK = threading.Lock()


def worker_where() -> str:
    """'host:pid' of this process (for error messages)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def resolve(payload: tuple) -> Any:
    """Worker: the engine arrays for ``(token, path, state, delta, blob)``, cached by token.

    Returns :class:`NeedState` when the state is neither cached nor readable
    here and no ``blob`` (pickled state) came with the task.
    """
    token, path, state, delta, blob = payload
    with _WORKER_LOCK:
        entry = _WORKER_CACHE.get(token)
        if entry is None:
            if blob is not None:
                base = pickle.loads(blob)
            else:
                try:
                    with open(path, "rb") as fh:
                        base = pickle.load(fh)
                except OSError:
                    return NeedState(token, worker_where())
            entry = _Cached(base, base, None)
            _WORKER_CACHE[token] = entry
            while len(_WORKER_CACHE) > WORKER_CACHE_SIZE:
                _WORKER_CACHE.popitem(last=False)
        else:
            _WORKER_CACHE.move_to_end(token)
        if entry.state != state:
            entry.current = apply_delta(entry.base, delta)
            entry.state = state
        return entry.current


def worker_error(exc: BaseException, where: str) -> WorkerError:
    """A WorkerError naming the original exception, the worker and its traceback.

    Errors about the input or the numerics (qcbed errors, ``LinAlgError`` such as
    "Eigenvalues did not converge") carry no traceback in the message: it says
    nothing to the user (it stays in ``worker_traceback``).
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, (QcbedError, np.linalg.LinAlgError)):
        err = WorkerError(f"{type(exc).__name__} in worker {where}: {exc}")
    else:
        err = WorkerError(f"{type(exc).__name__} in worker {where}: {exc}\n"
                          f"--- worker traceback ---\n{tb.rstrip()}")
    err.worker = where
    err.original_type = type(exc).__name__
    err.original_message = str(exc)
    err.worker_traceback = tb
    return err


def run_task(fn: Callable, payload: tuple, chunk: Any, args: tuple) -> Any:
    """Worker entry point (processes, MPI): resolve the cached state, run ``fn``.

    Any exception (also ``SystemExit``) comes back as a :class:`WorkerError`
    carrying the worker's traceback.
    """
    limit_blas()
    try:
        arrays = resolve(payload)
        if isinstance(arrays, NeedState):
            return arrays
        return fn(arrays, chunk, *args)
    except BaseException as exc:  # everything must come back as an error
        raise worker_error(exc, worker_where()) from None


def run_dask_task(fn: Callable, arrays: Any, delta: tuple | None, chunk: Any,
                  args: tuple) -> Any:
    """Worker entry point (Dask): the scattered base state plus this call's delta."""
    limit_blas()
    try:
        return fn(apply_delta(arrays, delta), chunk, *args)
    except BaseException as exc:
        raise worker_error(exc, worker_where()) from None


# ---------------------------------------------------------------- parent side
@dataclass
class _Shipped:
    token: str
    path: str
    base: tuple[np.ndarray, ...]
    fp: str
    ref: weakref.ref
    nbytes: int


class StateShipper:
    """Writes each engine set-up once to a file the workers load (and cache) by token.

    Parameters
    ----------
    directory : str, optional
        Where the state files go. Default: ``$QCBED_SHIP_DIR`` or a new
        temporary directory (``$TMPDIR``). On a cluster without a shared
        temporary directory the state travels with the first task each worker
        gets instead (see :class:`NeedState`).
    """

    def __init__(self, directory: str | None = None) -> None:
        root = directory or os.environ.get("QCBED_SHIP_DIR") or None
        if root:
            os.makedirs(root, exist_ok=True)
        self._dir = tempfile.mkdtemp(prefix="qcbed-engine-", dir=root)
        self._by_id: dict[int, _Shipped] = {}
        self._lock = threading.RLock()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)

    @property
    def directory(self) -> str:
        """Directory of the state files."""
        return self._dir

    def __len__(self) -> int:
        return len(self._by_id)

    def tokens(self) -> list[str]:
        """Tokens of the set-ups currently shipped."""
        return [e.token for e in self._by_id.values()]

    def _remove_file(self, token: str) -> None:
        try:
            os.remove(os.path.join(self._dir, f"{token}.pkl"))
        except OSError:
            pass

    def _forget(self, key: int, token: str) -> None:
        with self._lock:
            entry = self._by_id.get(key)
            if entry is not None and entry.token == token:
                del self._by_id[key]
        self._remove_file(token)

    def entry(self, arrays: Any) -> tuple[_Shipped, bool]:
        """The shipped entry of ``arrays`` (written now if needed) and whether it is new."""
        fp = fingerprint(arrays)
        key = id(arrays)
        with self._lock:
            entry = self._by_id.get(key)
            if entry is not None and entry.ref() is arrays and entry.fp == fp:
                return entry, False
        if entry is not None:  # same object with changed static content, or a reused id
            self._forget(key, entry.token)
        token = os.urandom(16).hex()
        path = os.path.join(self._dir, f"{token}.pkl")
        blob = pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write_bytes(path, blob)
        ref = weakref.ref(arrays, lambda _r, k=key, t=token: self._forget(k, t))
        entry = _Shipped(token, path, base_values(arrays), fp, ref, len(blob))
        evicted = []
        with self._lock:
            self._by_id[key] = entry
            while len(self._by_id) > SHIPPER_MAX_ENTRIES:
                evicted.append(self._by_id.pop(next(iter(self._by_id))).token)
        for t in evicted:
            self._remove_file(t)
        return entry, True

    def payload(self, arrays: Any) -> tuple[tuple, _Shipped, bool, tuple | None]:
        """(task payload, entry, state newly written, delta) for ``arrays``."""
        entry, new = self.entry(arrays)
        state, delta = make_delta(arrays, entry.base)
        return (entry.token, entry.path, state, delta, None), entry, new, delta

    def with_blob(self, payload: tuple) -> tuple:
        """The payload with the pickled state attached (for workers without the file)."""
        token, path, state, delta, _ = payload
        with open(os.path.join(self._dir, f"{token}.pkl"), "rb") as fh:
            blob = fh.read()
        return (token, path, state, delta, blob)

    def cleanup(self) -> None:
        """Delete every state file."""
        with self._lock:
            self._by_id.clear()
        self._finalizer()


_SHIPPER: StateShipper | None = None
_SHIPPER_LOCK = threading.Lock()


def shipper() -> StateShipper:
    """The process-wide :class:`StateShipper`."""
    global _SHIPPER
    with _SHIPPER_LOCK:
        if _SHIPPER is None:
            _SHIPPER = StateShipper()
        return _SHIPPER
