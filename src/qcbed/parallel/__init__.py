"""Executors for the engine's per-direction work: serial, local processes, Dask, MPI, GPU.

The engine splits incident directions into chunks and calls a pure function
``fn(arrays, chunk, *args)`` on each (:func:`qcbed.bloch.solver.solve_chunk` or
:func:`qcbed.bloch.solver.pattern_chunk`). Every executor implements
:meth:`Executor.map_chunks` with the same semantics, so results agree across
executors to round-off (they run the same code on the same chunks).

=====================  ====================================================
:class:`SerialExecutor`   this process
:class:`ProcessExecutor`  local processes (the default, all cores)
:class:`DaskExecutor`     Dask distributed: ``LocalCluster``, a scheduler
                          address, or a dask-jobqueue cluster
:class:`MPIExecutor`      ``mpi4py.futures`` (``mpiexec``, or spawned workers)
:class:`TorchExecutor`    batched eigen-solvers in torch (GPU or CPU)
=====================  ====================================================

:func:`make_executor` builds one from a spec (``4``, ``'dask'``,
``'tcp://host:8786'``, ``'mpi'``, ``'cuda'``, …); ``Simulation(executor=…)``
takes either. See ``docs/parallel.md``.

Data movement: the engine state (:class:`~qcbed.bloch.solver.EngineArrays`: beam
geometry, the U-table index and values) is shipped to each worker once per
set-up and cached there under a token; later calls ship only the rows of the
U table that changed since (a structure-factor update is a few numbers).
Workers return compact results: eigenvalues, output-beam rows, excitations —
or just intensities for pattern simulations. :attr:`Executor.last_stats`
(:class:`ShipStats`) says what a call moved.

Every worker runs BLAS single-threaded (``threadpoolctl``), so N workers use N
cores without oversubscription. A failing task, a dead worker or a call over
its ``timeout`` raises :class:`~qcbed.errors.WorkerError` (never a hang).
Importing this package needs neither torch, mpi4py nor distributed.
"""

from __future__ import annotations

from ._state import ShipStats
from .dask_cluster import DaskExecutor
from .executors import Executor, SerialExecutor, available_cores
from .gpu import TorchExecutor, torch_available
from .mpi import MPIExecutor
from .process import ProcessExecutor
from .spec import check_executor_spec, default_executor, make_executor

__all__ = [
    "DaskExecutor",
    "Executor",
    "MPIExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "ShipStats",
    "TorchExecutor",
    "available_cores",
    "check_executor_spec",
    "default_executor",
    "make_executor",
    "torch_available",
]
