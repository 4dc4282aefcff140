"""Executor specs (``4``, ``'dask'``, ``'tcp://…'``, ``'mpi'``, ``'cuda'``) and the
process-wide default executor."""

from __future__ import annotations

import atexit
import os
from typing import Any

from ..errors import InputError
from .dask_cluster import DaskExecutor
from .executors import (
    Executor,
    SerialExecutor,
    available_cores,
)
from .gpu import TorchExecutor
from .mpi import MPIExecutor
from .process import ProcessExecutor

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
        device = rest or ("cuda" if name in ("cuda", "gpu") else "auto")
        if name == "cuda" and rest:
            device = f"cuda:{rest}"
        return TorchExecutor(device=device, **kwargs)
    raise InputError("unknown executor", tag="executor",
                     expected="auto, serial, N, processes[:N], dask[:N], tcp://host:port, "
                              "mpi[:N], torch[:device], cuda", found=spec)
