"""Optional GPU backend: the Bloch-wave solver in torch, with batched eigen-solvers.

:class:`TorchExecutor` runs a torch port of
:func:`qcbed.bloch.solver.solve_chunk` and :func:`~qcbed.bloch.solver.pattern_chunk`
behind the ordinary executor API::

    sim = Simulation.from_felix(folder, executor=TorchExecutor("cuda"))
    images = sim.pattern(sim.defaults.grid, 1480.0)

The port follows the numpy engine step by step in double precision: beam
selection and excitation errors stay in numpy (cheap, per chunk), the
structure matrices are gathered on the device from the U table, Bethe
potentials are batched matrix products, and the eigen-problems use
``torch.linalg.eigh`` (``fast``: real-symmetric or Hermitian, with the same
perturbative absorption and the same fallback to the general solver) or
``torch.linalg.eig`` (``exact``, analytic structure-factor derivatives too).
Results come back as numpy: an :class:`~qcbed.bloch.solver.EigenChunk`, or
only the intensities for patterns (computed on the device).

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


# ---------------------------------------------------------------- device tables
class _Tables:
    """The engine state on the device for one call (index, U tables, derivative tables)."""

    def __init__(self, torch, arrays: EngineArrays, dev, index=None,
                 derivatives: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.torch = torch
        self.dev = dev
        self.exact = arrays.mode == "exact"
        self.real = bool(arrays.real) and not self.exact
        self.absorbing = bool(np.any(arrays.u_abs != 0)) and not self.exact
        self.index = index if index is not None else torch.as_tensor(
            np.asarray(arrays.index, dtype=np.int64), device=dev)
        if self.exact:
            u = arrays.u + 1j * arrays.u_abs
            ua = arrays.u_abs
        elif self.real:
            u, ua = arrays.u.real, arrays.u_abs.real
        else:
            u, ua = arrays.u, arrays.u_abs
        self.u = torch.as_tensor(np.ascontiguousarray(u), device=dev)
        self.ua = torch.as_tensor(np.ascontiguousarray(ua), device=dev)
        self.upload_bytes = int(np.asarray(u).nbytes + np.asarray(ua).nbytes)
        self.dtab = self.dua0 = None
        if derivatives is not None:
            if not self.exact:
                raise InputError("analytic derivatives need the 'exact' solver mode",
                                 found="fast")
            du = np.asarray(derivatives[0], complex)
            dua = np.asarray(derivatives[1], complex)
            dtab = np.atleast_2d(du + 1j * dua)
            row0 = int(arrays.index[0, 0])
            self.dtab = torch.as_tensor(np.ascontiguousarray(dtab), device=dev)
            self.dua0 = torch.as_tensor(dua.reshape(len(dtab), -1)[:, row0], device=dev)
            self.upload_bytes += int(dtab.nbytes)

    def t(self, a: np.ndarray):
        return self.torch.as_tensor(np.ascontiguousarray(a), device=self.dev)

    def gather(self, vec, rows, cols):
        """vec[index[rows_i, cols_j]] batched: (n, a) × (n, b) → (n, a, b)."""
        return vec[self.index[rows[:, :, None], cols[:, None, :]]]


def _inverse_gaps(torch, h):
    """1/(h_k − h_j) for j ≠ k, 0 on the diagonal and for exactly equal h."""
    dh = h[:, None, :] - h[:, :, None]
    n = h.shape[1]
    zero = (dh == 0) | torch.eye(n, dtype=torch.bool, device=h.device)
    return torch.where(zero, torch.zeros((), dtype=dh.dtype, device=h.device),
                       1.0 / torch.where(zero, torch.ones((), dtype=dh.dtype,
                                                          device=h.device), dh))


def _absorb_perturbatively(torch, lam, vec, c0, aabs, kn2, n_out: int):
    """Torch port of :func:`qcbed.bloch.solver._absorb_perturbatively`.

    Directions without clusters of near-degenerate Bloch waves
    (|S_jk| > :data:`~qcbed.bloch.solver.CLUSTER_LIMIT`) stay on the device;
    directions with clusters go through the numpy kernel on the host, which
    diagonalises the clusters exactly (one code path for that step).

    Returns (γ, output rows of the eigenvectors, c, unsafe, n_clustered).
    """
    from ..bloch import solver as npk

    cdt = torch.complex128
    q = vec.conj().transpose(1, 2) @ aabs @ vec
    n = lam.shape[1]
    ar = torch.arange(n, device=lam.device)
    qd = q[:, ar, ar].real if q.is_complex() else q[:, ar, ar]
    h = torch.complex(lam, qd) / kn2
    q = q.clone()
    q[:, ar, ar] = 0.0
    scale = 1j / kn2[:, :, None]
    s1 = (scale * q) * _inverse_gaps(torch, h)
    clustered = (s1.abs() > npk.CLUSTER_LIMIT).any(dim=2).any(dim=1)
    wexc = c0.abs()
    wexc = torch.maximum(wexc[:, :, None], wexc[:, None, :])
    unsafe = (s1.abs() * wexc).amax(dim=(1, 2)) > npk.FAST_MIXING_LIMIT
    if not q.is_complex():
        ps = scale * torch.complex(q @ s1.real, q @ s1.imag)
    else:
        ps = scale * (q @ s1)
    h2mat = ps - s1 @ ps
    h2 = h + h2mat[:, ar, ar]
    h2mat[:, ar, ar] = 0.0
    s2 = h2mat * _inverse_gaps(torch, h2)
    h2 = h2 + torch.sum(h2mat * s2.transpose(1, 2), dim=2)
    unsafe |= (s2.abs() * wexc).amax(dim=(1, 2)) > npk.FAST_MIXING_LIMIT
    vo = vec[:, :n_out, :].to(cdt)
    vo = vo + vo @ s1
    bout = vo + vo @ s2
    eye = torch.eye(n, dtype=cdt, device=lam.device)
    c = torch.linalg.solve(eye + s2, torch.linalg.solve(eye + s1, c0.to(cdt)[..., None]))[..., 0]
    n_cl = int(clustered.sum())
    if n_cl:
        k = torch.nonzero(clustered)[:, 0]

        def host(x):
            return x[k].cpu().numpy()

        g_h, b_h, c_h, u_h, _ = npk._absorb_perturbatively(
            host(lam), host(vec), host(c0), host(aabs), host(kn2), n_out)
        dev = lam.device
        h2[k] = torch.as_tensor(g_h, device=dev)
        bout[k] = torch.as_tensor(b_h, device=dev)
        c[k] = torch.as_tensor(c_h, device=dev)
        unsafe[k] = torch.as_tensor(u_h, device=dev)
    return h2, bout, c, unsafe, n_cl


def _physically_invalid(torch, gam, bout, c, *, check_amplitude: bool = True,
                        max_growth: float = 0.0):
    """Torch version of :func:`qcbed.bloch.solver.physically_invalid` (same rules)."""
    from ..bloch import solver as npk

    bad = ~(torch.isfinite(gam).all(dim=1) & torch.isfinite(c).all(dim=1)
            & torch.isfinite(bout).flatten(1).all(dim=1))
    bad |= (gam.imag < -(npk.GROWTH_TOLERANCE + max_growth)).any(dim=1)
    if check_amplitude:
        amp = torch.einsum("dgj,dj->dg", bout.abs(), c.abs())
        bad |= amp.amax(dim=1) > npk.AMPLITUDE_LIMIT
    return bad


def _solve_exact(torch, a, kn2):
    """General complex eigen-problem: (γ, eigenvectors, excitations from B c = e₀).

    When the device solver fails (no convergence, singular eigenvectors) the
    batch is solved by the numpy kernel, which returns NaN for the failing
    directions; the physical guard then rejects them.
    """
    try:
        lam, vec = torch.linalg.eig(a)
        e0 = torch.zeros(a.shape[:2] + (1,), dtype=torch.complex128, device=a.device)
        e0[:, 0, 0] = 1.0
        c = torch.linalg.solve(vec, e0)[..., 0]
    except RuntimeError:
        from ..bloch.solver import _solve_exact as solve_host

        g_h, v_h, c_h = solve_host(a.cpu().numpy(), kn2.cpu().numpy())
        return tuple(torch.as_tensor(x, device=a.device) for x in (g_h, v_h, c_h))
    return lam / kn2, vec, c


def _groups(tb: _Tables, arrays: EngineArrays, kt: np.ndarray):
    """Solve a batch of directions group by group (directions sharing a matrix size).

    Yields ``(rows, n, gamma, bout, c, gmat, counts)`` with device tensors and
    counts = (n_fallback, n_rejected, n_clustered), after a header tuple
    ``(n_dir, n_max, n_s, n_weak, m_out)`` (numpy). Directions rejected by the
    physical guard are NaN.
    """
    from ..bloch.solver import prepare_directions

    torch = tb.torch
    kt, two_k_sg, k_n, g_n, strong, weak = prepare_directions(arrays, kt)
    n_dir = len(kt)
    n_s = strong.sum(axis=1)
    n_out = arrays.n_out
    m_out = np.sqrt(1.0 + g_n[None, :n_out] / k_n[:, None])
    yield (n_dir, int(n_s.max()), n_s, weak.sum(axis=1), m_out)
    exact, absorbing, real = tb.exact, tb.absorbing, tb.real
    u, ua = tb.u, tb.ua
    n_par = 0 if tb.dtab is None else tb.dtab.shape[0]
    for n in np.unique(n_s):
        n = int(n)
        rows = np.nonzero(n_s == n)[0]
        idx = np.argsort(~strong[rows], axis=1, kind="stable")[:, :n]
        idx_t = tb.t(idx.astype(np.int64))
        diag_sg = tb.t(np.take_along_axis(two_k_sg[rows], idx, axis=1))
        ar = torch.arange(n, device=tb.dev)
        a = tb.gather(u, idx_t, idx_t)
        a[:, ar, ar] = (diag_sg + (1j * float(arrays.u_abs0) if exact else 0.0)).to(a.dtype)
        aabs = tb.gather(ua, idx_t, idx_t) if absorbing else None
        wmask = weak[rows]
        wcols = np.nonzero(wmask.any(axis=0))[0]
        da = None
        if n_par:
            da = tb.dtab[:, tb.index[idx_t[:, :, None], idx_t[:, None, :]]]
            da = da.permute(1, 0, 2, 3).contiguous()
            da[:, :, ar, ar] = (1j * tb.dua0)[None, :, None]
        if len(wcols):
            wsel = tb.t(np.ascontiguousarray(
                np.broadcast_to(wcols, (len(rows), len(wcols))).astype(np.int64)))
            sg_w = two_k_sg[rows][:, wcols]
            d = tb.t(np.where(wmask[:, wcols], 1.0 / np.where(wmask[:, wcols], sg_w, 1.0), 0.0))
            u_sw = tb.gather(u, idx_t, wsel) * d[:, None, :]
            u_ws = tb.gather(u, wsel, idx_t)
            if n_par:
                for p in range(n_par):
                    du_sw = tb.gather(tb.dtab[p], idx_t, wsel) * d[:, None, :]
                    du_ws = tb.gather(tb.dtab[p], wsel, idx_t)
                    da[:, p] -= du_sw @ u_ws + u_sw @ du_ws
            a -= u_sw @ u_ws
            if aabs is not None:
                ua_sw = tb.gather(ua, idx_t, wsel) * d[:, None, :]
                ua_ws = tb.gather(ua, wsel, idx_t)
                aabs -= u_sw @ ua_ws + ua_sw @ u_ws
                a += ua_sw @ ua_ws
        m = tb.t(np.sqrt(1.0 + g_n[idx] / k_n[rows, None]))
        mm = m[:, :, None] * m[:, None, :]
        a /= mm
        kn2 = tb.t(2.0 * k_n[rows, None])
        gmat = None
        n_fb = n_rej = n_cl = 0
        growth = arrays.max_growth
        if exact:
            gam, vec, c = _solve_exact(torch, a, kn2)
            bout = vec[:, :n_out, :]
            rej = _physically_invalid(torch, gam, bout, c, check_amplitude=False,
                                      max_growth=growth)
            if n_par:
                dh = da / (mm[:, None] * kn2[:, :, None, None])
                gmat = torch.linalg.solve(vec[:, None], dh @ vec[:, None])
            if bool(rej.any()):
                gam, bout, c = gam.clone(), bout.clone(), c.clone()
                gam[rej], bout[rej], c[rej] = math.nan, math.nan, math.nan
                n_rej = int(rej.sum())
        else:
            if not real:
                a = 0.5 * (a + a.conj().transpose(1, 2))
            lam, vec = torch.linalg.eigh(a)
            c = vec[:, 0, :].conj()
            if absorbing:
                aabs /= mm
                gam, bout, c, unsafe, n_cl = _absorb_perturbatively(torch, lam, vec, c, aabs,
                                                                    kn2, n_out)
            else:
                gam = (lam / kn2).to(torch.complex128)
                bout = vec[:, :n_out, :].to(torch.complex128)
                c = c.to(torch.complex128)
                unsafe = torch.zeros(len(rows), dtype=torch.bool, device=tb.dev)
            # the physical guard, always on: re-solve failing directions exactly
            unsafe |= _physically_invalid(torch, gam, bout, c, max_growth=growth)
            if bool(unsafe.any()):
                k = torch.nonzero(unsafe)[:, 0]
                a_k = a[k] + 1j * aabs[k] if absorbing else a[k].to(torch.complex128)
                g_x, v_x, c_x = _solve_exact(torch, a_k, kn2[k])
                b_x = v_x[:, :n_out, :]
                rej = _physically_invalid(torch, g_x, b_x, c_x, check_amplitude=False,
                                          max_growth=growth)
                g_x[rej], b_x[rej], c_x[rej] = math.nan, math.nan, math.nan
                gam[k], bout[k], c[k] = g_x, b_x, c_x
                n_fb = int(k.numel())
                n_rej = int(rej.sum())
        yield rows, n, gam, bout, c, gmat, (n_fb, n_rej, n_cl)


def _eigen_chunk(tb: _Tables, arrays: EngineArrays, kt: np.ndarray) -> EigenChunk:
    from ..bloch.solver import EigenChunk

    it = _groups(tb, arrays, kt)
    n_dir, n_max, n_s, n_weak, m_out = next(it)
    n_out = arrays.n_out
    gamma = np.zeros((n_dir, n_max), dtype=complex)
    bout = np.zeros((n_dir, n_out, n_max), dtype=complex)
    cc = np.zeros((n_dir, n_max), dtype=complex)
    gmat = None
    if tb.dtab is not None:
        gmat = np.zeros((n_dir, tb.dtab.shape[0], n_max, n_max), dtype=complex)
    counts = np.zeros(3, int)
    for rows, n, gam, bo, c, gm, nc in it:
        gamma[rows, :n] = gam.cpu().numpy()
        bout[rows, :, :n] = bo.cpu().numpy()
        cc[rows, :n] = c.cpu().numpy()
        if gm is not None:
            gmat[rows, :, :n, :n] = gm.cpu().numpy()
        counts += nc
    return EigenChunk(gamma=gamma, bout=bout, c=cc, n_strong=n_s, n_weak=n_weak,
                      m_out=m_out, gmat=gmat, n_fallback=int(counts[0]),
                      n_rejected=int(counts[1]), n_clustered=int(counts[2]),
                      max_growth=arrays.max_growth)


def _intensities(tb: _Tables, arrays: EngineArrays, kt: np.ndarray,
                 thickness: np.ndarray) -> PatternChunk:
    from ..bloch.solver import PatternChunk, flux_guard

    torch = tb.torch
    t = np.atleast_1d(np.asarray(thickness, dtype=float))
    tt = tb.t(t)
    it = _groups(tb, arrays, kt)
    n_dir, _, _, _, _ = next(it)
    out = np.empty((len(t), n_dir, arrays.n_out))
    counts = np.zeros(3, int)
    for rows, _n, gam, bo, c, _gm, nc in it:
        counts += nc
        gam = gam.to(torch.complex128)
        c = c.to(torch.complex128)
        bo = bo.to(torch.complex128)
        e = torch.exp((2j * math.pi) * gam[None] * tt[:, None, None]) * c[None]
        psi = torch.einsum("dgj,tdj->tdg", bo, e)
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
    torch = _torch()
    tb = _Tables(torch, arrays, _device(torch, device), derivatives=derivatives)
    return _eigen_chunk(tb, arrays, kt)


def pattern_chunk_torch(arrays: EngineArrays, kt: np.ndarray, thickness: np.ndarray, *,
                        device: Any = "cpu") -> PatternChunk:
    """Torch version of :func:`qcbed.bloch.solver.pattern_chunk` (intensities and counts).

    Only the intensities leave the device.
    """
    torch = _torch()
    tb = _Tables(torch, arrays, _device(torch, device))
    return _intensities(tb, arrays, kt, thickness)


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

        from ..bloch.solver import pattern_chunk, solve_chunk

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
            tb = _Tables(self._torch, arrays, self.device, index=index,
                         derivatives=derivatives)
            stats.state_bytes = up
            stats.state_copies = 1 if up else 0
            stats.delta_bytes = tb.upload_bytes
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
                        res = _eigen_chunk(tb, arrays, kt)
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
