"""Optional GPU backend: the Bloch-wave solver in torch, with batched eigen-solvers.

:class:`TorchExecutor` runs a torch port of
:func:`qcbed.bloch.solver.solve_chunk` and :func:`~qcbed.bloch.solver.pattern_chunk`
behind the ordinary executor API::

    sim = Simulation.from_felix(folder, executor=TorchExecutor("cuda"))
    images = sim.pattern(sim.defaults.grid, 1480.0)

There is no port: the numpy kernel (:func:`qcbed.bloch.solver.solve_groups`,
the perturbative absorption step and the physical guard) is written against a
small array-module adapter (:mod:`qcbed.bloch.xp`) and runs here on torch tensors
in double precision. Beam selection and excitation errors stay in numpy (cheap,
per chunk); the structure matrices are gathered on the device from the U table,
Bethe potentials are batched matrix products, and the eigen-problems use
``torch.linalg.eigh`` (``fast``) or ``torch.linalg.eig`` (``exact``, analytic
structure-factor derivatives too). The cluster search of the absorption step runs
on the host. This module holds only the device and executor glue. Results come
back as numpy: an :class:`~qcbed.bloch.solver.EigenChunk`, or only the
intensities for patterns (computed on the device).

torch is imported only when a :class:`TorchExecutor` is made or a kernel is
called: importing qcbed never needs torch or a GPU. Install with
``pip install qcbed[gpu]``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, WorkerError
from ._state import ShipStats, fingerprint, nbytes, worker_error
from .executors import Executor, SerialExecutor

if TYPE_CHECKING:  # pragma: no cover
    from ..bloch.solver import EigenChunk, EngineArrays, PatternChunk

__all__ = ["TorchExecutor", "pattern_chunk_torch", "solve_chunk_torch", "torch_available"]


def torch_available() -> bool:
    """True when torch can be imported (nothing is imported here)."""
    return importlib.util.find_spec("torch") is not None


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise InputError("the torch backend needs torch (pip install qcbed[gpu])") from exc
    return torch


def _device(torch, device: Any):
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("no CUDA device is available to torch", tag="device",
                         expected="'cpu' or a machine with a CUDA GPU", found=str(device))
    return dev


# ---------------------------------------------------------------- device glue
def _tables(torch, arrays: EngineArrays, dev, index=None,
            derivatives: tuple[np.ndarray, np.ndarray] | None = None):
    """The engine's tables on the device, for the shared kernel of :mod:`qcbed.bloch.solver`."""
    from ..bloch.solver import KernelTables
    from ..bloch.xp import TorchOps

    return KernelTables.build(TorchOps(torch, dev), arrays, derivatives, index=index)


def _upload_bytes(tb) -> int:
    """Bytes of the U tables (and derivative tables) sent to the device."""
    return sum(int(x.numel() * x.element_size()) for x in (tb.u, tb.ua, tb.dtab)
               if x is not None)


def _intensities(tb, arrays: EngineArrays, kt: np.ndarray,
                 thickness: np.ndarray) -> PatternChunk:
    """Intensities of a chunk of directions, formed on the device (only they leave it)."""
    from ..bloch.solver import PatternChunk, flux_guard, solve_groups

    torch = tb.xp.torch
    t = np.atleast_1d(np.asarray(thickness, dtype=float))
    tt = tb.xp.asarray(t)
    it = solve_groups(tb, arrays, kt)
    n_dir = next(it)[0]
    out = np.empty((len(t), n_dir, arrays.n_out))
    counts = np.zeros(3, int)
    for rows, _n, gam, bo, c, _gm, nc, _lm in it:
        counts += nc
        e = torch.exp((2j * math.pi) * gam[None] * tt[:, None, None]) * c[None]
        psi = torch.einsum("dgj,tdj->tdg", bo.to(torch.complex128), e)
        out[:, rows] = (psi.real**2 + psi.imag**2).cpu().numpy()
    flux_guard(out, t, arrays.max_growth)
    return PatternChunk.from_intensities(out, int(counts[0]), int(counts[2]))


def solve_chunk_torch(arrays: EngineArrays, kt: np.ndarray,
                      derivatives: tuple[np.ndarray, np.ndarray] | None = None, *,
                      device: Any = "cpu") -> EigenChunk:
    """Torch version of :func:`qcbed.bloch.solver.solve_chunk` (same arguments and result).

    Parameters
    ----------
    arrays : EngineArrays
    kt : ndarray (n_dir, 2)
        Tangential wave vectors (Å⁻¹).
    derivatives : (du, dua), optional
        As for :func:`~qcbed.bloch.solver.solve_chunk` (``exact`` mode).
    device : str or torch.device
        ``'cpu'``, ``'cuda'``, ``'cuda:1'``, or ``'auto'``.

    Returns
    -------
    EigenChunk
        numpy arrays.
    """
    from ..bloch.solver import eigen_chunk

    torch = _torch()
    tb = _tables(torch, arrays, _device(torch, device), derivatives=derivatives)
    return eigen_chunk(tb, arrays, kt)


def pattern_chunk_torch(arrays: EngineArrays, kt: np.ndarray, thickness: np.ndarray, *,
                        device: Any = "cpu") -> PatternChunk:
    """Torch version of :func:`qcbed.bloch.solver.pattern_chunk` (intensities and counts).

    Only the intensities leave the device.
    """
    torch = _torch()
    return _intensities(_tables(torch, arrays, _device(torch, device)), arrays, kt, thickness)


# ---------------------------------------------------------------- executor
class TorchExecutor(Executor):
    """Runs the engine's chunks with torch on one device (a GPU, or the CPU).

    Chunks of :func:`~qcbed.bloch.solver.solve_chunk` and
    :func:`~qcbed.bloch.solver.pattern_chunk` run the torch port; consecutive
    chunks are merged into batches of up to ``batch_size`` directions per
    device call (GPUs want large batches) and the results split back per
    chunk. Any other task function runs on the CPU in this process.

    Parameters
    ----------
    device : str or torch.device
        ``'cuda'`` (default), ``'cuda:N'``, ``'cpu'``, or ``'auto'`` (CUDA when
        available, else the CPU).
    batch_size : int, optional
        Most directions per device call. Default: 2048 on a GPU, one chunk at a
        time on the CPU. Lower it if the GPU runs out of memory (the memory of a
        batch grows as directions × strong beams²).
    timeout : float, optional
        Accepted for API symmetry; a running device call cannot be interrupted.

    Raises
    ------
    InputError
        torch is not installed, or no CUDA device is available for ``'cuda'``.
    """

    name = "torch"
    n_workers = 1

    def __init__(self, device: Any = "cuda", batch_size: int | None = None, *,
                 timeout: float | None = None) -> None:
        self._torch = _torch()
        self.device = _device(self._torch, device)
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise InputError("batch_size must be an integer ≥ 1", tag="batch_size",
                             found=batch_size)
        if batch_size is None:
            batch_size = 2048 if self.device.type == "cuda" else 0
        self.batch_size = int(batch_size)
        self.timeout = timeout
        self.last_stats: ShipStats | None = None
        self._index: dict[int, tuple[Any, str, Any]] = {}

    # executor protocol -------------------------------------------------
    def describe(self) -> str:
        """Short description, e.g. ``'torch(cuda:0)'``."""
        return f"{self.name}({self.device})"

    def __repr__(self) -> str:
        return f"<TorchExecutor {self.describe()}>"

    def close(self) -> None:
        """Free the cached device tables (idempotent)."""
        self._index.clear()
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _device_index(self, arrays: EngineArrays):
        """The U-table index on the device, uploaded once per set-up."""
        import weakref

        fp = fingerprint(arrays)
        key = id(arrays)
        hit = self._index.get(key)
        if hit is not None and hit[0]() is arrays and hit[1] == fp:
            return hit[2], 0
        idx = self._torch.as_tensor(np.asarray(arrays.index, dtype=np.int64),
                                    device=self.device)
        cache = self._index

        def forget(_r, k=key):
            cache.pop(k, None)

        self._index[key] = (weakref.ref(arrays, forget), fp, idx)
        while len(self._index) > 4:
            self._index.pop(next(iter(self._index)))
        return idx, int(idx.numel() * idx.element_size())

    def _batches(self, chunks: Sequence) -> list[list[int]]:
        if self.batch_size <= 0:
            return [[i] for i in range(len(chunks))]
        out: list[list[int]] = []
        cur: list[int] = []
        size = 0
        for i, c in enumerate(chunks):
            m = len(c)
            if cur and size + m > self.batch_size:
                out.append(cur)
                cur, size = [], 0
            cur.append(i)
            size += m
        if cur:
            out.append(cur)
        return out

    def map_chunks(self, fn: Callable, arrays: Any, chunks: Sequence, *, args: tuple = (),
                   progress: bool = False) -> list:
        """As :meth:`qcbed.parallel.Executor.map_chunks`, on the torch device."""
        from tqdm.auto import tqdm

        from ..bloch.solver import eigen_chunk, pattern_chunk, solve_chunk

        kind = "solve" if fn is solve_chunk else "pattern" if fn is pattern_chunk else None
        if kind is None:
            return SerialExecutor().map_chunks(fn, arrays, chunks, args=args,
                                               progress=progress)
        n = len(chunks)
        stats = ShipStats(self.name, n_tasks=n)
        out: list[Any] = [None] * n
        try:
            index, up = self._device_index(arrays)
            derivatives = args[0] if (kind == "solve" and args) else None
            tb = _tables(self._torch, arrays, self.device, index=index,
                         derivatives=derivatives)
            stats.state_bytes = up
            stats.state_copies = 1 if up else 0
            stats.delta_bytes = _upload_bytes(tb)
            with tqdm(total=n, desc="Bloch", unit="chunk", disable=not progress,
                      leave=False) as bar:
                for batch in self._batches(chunks):
                    kts = [np.atleast_2d(np.asarray(chunks[i], dtype=float)) for i in batch]
                    kt = np.concatenate(kts) if len(kts) > 1 else kts[0]
                    stats.task_bytes += kt.nbytes
                    if kind == "pattern":
                        res = _intensities(tb, arrays, kt, args[0])
                        pieces = _split_pattern(res, [len(k) for k in kts])
                    else:
                        res = eigen_chunk(tb, arrays, kt)
                        pieces = _split_eigen(res, [len(k) for k in kts])
                    for i, p in zip(batch, pieces):
                        out[i] = p
                        stats.result_bytes += nbytes(p)
                    bar.update(len(batch))
        except Exception as exc:
            hint = ""
            if "out of memory" in str(exc).lower():
                hint = " (lower batch_size or the chunk size)"
            err = worker_error(exc, f"torch {self.device}")
            raise WorkerError(f"torch backend failed{hint}: {err}") from exc
        self.last_stats = stats
        return out


def _split_pattern(res: PatternChunk, sizes: list[int]) -> list[PatternChunk]:
    """Split a PatternChunk by directions (the solver counts go with the first piece)."""
    from ..bloch.solver import PatternChunk

    if len(sizes) == 1:
        return [res]
    parts = np.split(res.intensities, np.cumsum(sizes)[:-1], axis=1)
    return [PatternChunk.from_intensities(p, res.n_fallback if k == 0 else 0,
                                          res.n_clustered if k == 0 else 0)
            for k, p in enumerate(parts)]


def _split_eigen(res: EigenChunk, sizes: list[int]) -> list[EigenChunk]:
    """Split an EigenChunk by directions (the fallback count goes with the first piece)."""
    from ..bloch.solver import EigenChunk

    if len(sizes) == 1:
        return [res]
    out = []
    start = 0
    for k, m in enumerate(sizes):
        s = slice(start, start + m)
        out.append(EigenChunk(res.gamma[s], res.bout[s], res.c[s], res.n_strong[s],
                              res.n_weak[s], res.m_out[s],
                              None if res.gmat is None else res.gmat[s],
                              res.n_fallback if k == 0 else 0,
                              res.n_rejected if k == 0 else 0,
                              res.n_clustered if k == 0 else 0,
                              max_growth=res.max_growth))
        start += m
    return out
