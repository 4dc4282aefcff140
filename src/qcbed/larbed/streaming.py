"""Block-by-block processing of 4-D datasets with bounded memory.

A :class:`~qcbed.larbed.readers.FourDData` is chunked into blocks of whole
detector frames (``(rows, cols, det_y, det_x)``, about ``chunk_mb`` MiB each).
:func:`map_blocks` loads one block, applies a function that reduces it to small
per-tilt results, drops the block and moves on; with ``workers > 1`` at most
``workers`` blocks are in memory at once (threads: numpy and the file readers
release the GIL). Peak memory is therefore a few blocks plus the results,
whatever the file size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .readers import FourDData

T = TypeVar("T")


@dataclass(frozen=True)
class Block:
    """One block of tilts.

    Attributes
    ----------
    rows, cols : slice
        Where the block lies in the scan (tilt) grid.
    data : ndarray (n_rows, n_cols, det_y, det_x)
        The frames, in the file's dtype.
    """

    rows: slice
    cols: slice
    data: np.ndarray

    @property
    def tilt_index(self) -> np.ndarray:
        """(n_rows, n_cols, 2) integer scan (row, col) of every frame of the block."""
        r = np.arange(self.rows.start, self.rows.stop)
        c = np.arange(self.cols.start, self.cols.stop)
        return np.stack(np.meshgrid(r, c, indexing="ij"), axis=-1)


def block_slices(data: FourDData) -> list[tuple[slice, slice]]:
    """(rows, cols) slices of the blocks, row-major."""
    edges = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in data.data.chunks[:2]]
    return [(slice(int(r0), int(r1)), slice(int(c0), int(c1)))
            for r0, r1 in zip(edges[0][:-1], edges[0][1:])
            for c0, c1 in zip(edges[1][:-1], edges[1][1:])]


def load_block(data: FourDData, rows: slice, cols: slice) -> Block:
    """Read one block into memory (dask synchronous scheduler: one thread, no copies kept)."""
    arr = data.data[rows, cols].compute(scheduler="synchronous")
    return Block(rows, cols, np.ascontiguousarray(arr))


def _progress(total: int, desc: str, enabled: bool, unit: str = "block"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


def map_blocks(func: Callable[[Block], T], data: FourDData, *, progress: bool = False,
               desc: str = "4-D", workers: int = 1) -> Iterator[T]:
    """Apply ``func`` to every block, yielding the results in block order.

    Parameters
    ----------
    func : callable(Block) -> result
        Reduces a block to something small (per-tilt numbers, partial sums).
    data : FourDData
    progress : bool
        Show a tqdm progress bar (frames processed).
    desc : str
        Progress-bar label.
    workers : int
        Blocks processed concurrently (threads); memory ≈ ``workers`` blocks.
    """
    slices = block_slices(data)
    n_frames = int(np.prod(data.scan_shape))
    bar = _progress(n_frames, desc, progress, "frame")

    def task(rs: slice, cs: slice) -> T:
        return func(load_block(data, rs, cs))

    try:
        if workers <= 1:
            for rs, cs in slices:
                out = task(rs, cs)
                bar.update((rs.stop - rs.start) * (cs.stop - cs.start))
                yield out
            return
        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            pending: deque[tuple[Future, int]] = deque()
            it = iter(slices)
            for rs, cs in it:
                pending.append((pool.submit(task, rs, cs),
                                (rs.stop - rs.start) * (cs.stop - cs.start)))
                if len(pending) >= workers:
                    fut, n = pending.popleft()
                    yield fut.result()
                    bar.update(n)
            while pending:
                fut, n = pending.popleft()
                yield fut.result()
                bar.update(n)
    finally:
        bar.close()


def reduce_blocks(func: Callable[[Block], Any], combine: Callable[[Any, Any], Any],
                  data: FourDData, **kw: Any) -> Any:
    """Fold the per-block results of ``func`` with ``combine`` (e.g. sums, maxima)."""
    acc = None
    for res in map_blocks(func, data, **kw):
        acc = res if acc is None else combine(acc, res)
    return acc


def per_tilt(func: Callable[[Block], np.ndarray], data: FourDData, shape: tuple[int, ...],
             dtype: Any = float, fill: float = np.nan, **kw: Any) -> np.ndarray:
    """Assemble per-tilt block results into an array ``(scan_y, scan_x) + shape``.

    ``func(block)`` must return an array ``(n_rows, n_cols) + shape``.
    """
    out = np.full(data.scan_shape + tuple(shape), fill, dtype=dtype)
    slices = block_slices(data)
    for (rs, cs), res in zip(slices, map_blocks(func, data, **kw)):
        out[rs, cs] = res
    return out
