"""The 4-D data container (:class:`FourDData`), chunk planning and the helpers the
format readers share (see :mod:`qcbed.larbed.readers` for the formats)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._deps import require

da = require("dask.array")

#: Default size of one processing block (MiB).
DEFAULT_CHUNK_MB = 32.0

#: EMPAD frame layout (Tate et al. 2016; rosettasciio ``rsciio.empad``): 128 × 128
#: float32 pixels followed by 2 rows of per-frame metadata, little endian.
EMPAD_FRAME = (128, 128)
EMPAD_RAW_ROWS = 130

_AXIS_NAMES = ("scan_y", "scan_x", "det_y", "det_x")
_FORMATS = ("empad", "mib", "dm", "emd", "hdf5", "npy", "zarr", "array")


@dataclass
class FourDData:
    """A lazily read 4-D dataset ``(scan_y, scan_x, det_y, det_x)``.

    Attributes
    ----------
    data : dask.array.Array
        The data, chunked as ``(rows, cols, det_y, det_x)``: every chunk holds
        whole detector frames.
    path : str or None
        The file it came from.
    format : str
        Reader used (``'empad'``, ``'mib'``, ``'dm'``, ``'emd'``, ``'hdf5'``,
        ``'npy'``, ``'zarr'`` or ``'array'``).
    axes : dict
        Per axis (``scan_y``, ``scan_x``, ``det_y``, ``det_x``): ``name`` in the
        file (py4DSTEM ``R_x``, ``R_y``, ``Q_x``, ``Q_y``), ``scale``, ``offset``
        and ``units`` as the file stores them (pixels when it stores none).
    metadata : dict
        Reader metadata (acquisition date, exposure, file attributes...).
    """

    data: Any
    path: str | None = None
    format: str = "array"
    axes: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.data.ndim != 4:
            raise InputError("4-D data must have shape (scan_y, scan_x, det_y, det_x)",
                             source=self.path, found=tuple(self.data.shape))
        for i, name in enumerate(_AXIS_NAMES):
            ax = self.axes.setdefault(name, {})
            ax.setdefault("name", name)
            ax.setdefault("scale", 1.0)
            ax.setdefault("offset", 0.0)
            ax.setdefault("units", "pixel")
            ax["size"] = int(self.data.shape[i])

    # ------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(scan_y, scan_x, det_y, det_x)."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def scan_shape(self) -> tuple[int, int]:
        """(scan_y, scan_x): the tilt grid of a LARBED dataset."""
        return self.shape[0], self.shape[1]

    @property
    def detector_shape(self) -> tuple[int, int]:
        """(det_y, det_x) in pixels."""
        return self.shape[2], self.shape[3]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def nbytes(self) -> int:
        """Size of the whole dataset in memory (bytes)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def chunk_bytes(self) -> int:
        """Largest block (bytes)."""
        return int(max(self.data.chunks[0]) * max(self.data.chunks[1])
                   * self.shape[2] * self.shape[3] * self.dtype.itemsize)

    # ------------------------------------------------------------ access
    def frame(self, row: int, col: int) -> np.ndarray:
        """One diffraction pattern (det_y, det_x) as a numpy array."""
        return np.asarray(self.data[row, col].compute(scheduler="synchronous"))

    def rechunk(self, chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
        """The same data in blocks of about ``chunk_mb`` MiB of whole frames.

        Prefer ``open_4d(..., chunk_mb=)``: re-chunking reads source chunks that
        straddle the new blocks more than once.
        """
        chunks = block_chunks(self.shape, self.dtype.itemsize, chunk_mb)
        return FourDData(self.data.rechunk(chunks), self.path, self.format, self.axes,
                         self.metadata, self._closers)

    def subset(self, rows: slice = slice(None), cols: slice = slice(None)) -> FourDData:
        """A lazy sub-grid of tilts (no data read)."""
        return FourDData(self.data[rows, cols], self.path, self.format, dict(self.axes),
                         self.metadata, self._closers)

    def close(self) -> None:
        """Close the files held open (HDF5)."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> FourDData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_array(cls, array: Any, *, scan_shape: tuple[int, int] | None = None,
                   chunk_mb: float = DEFAULT_CHUNK_MB, **kw: Any) -> FourDData:
        """Wrap a numpy / dask / array-like object (3-D needs ``scan_shape``)."""
        if _is_dask(array):
            arr = _to_4d(array, scan_shape, kw.get("path") or "array")
            arr = arr.rechunk(block_chunks(arr.shape, np.dtype(arr.dtype).itemsize, chunk_mb))
        else:
            chunks = plan_chunks(np.shape(array), np.dtype(array.dtype).itemsize, chunk_mb,
                                 scan_shape)
            arr = _to_4d(da.from_array(array, chunks=chunks, asarray=False), scan_shape,
                         kw.get("path") or "array")
        return cls(arr, **kw)


# ============================================================ chunking helpers
def block_chunks(shape: tuple[int, ...], itemsize: int, chunk_mb: float
                 ) -> tuple[int, int, int, int]:
    """Chunk shape (rows, cols, det_y, det_x) of about ``chunk_mb`` MiB of whole frames.

    Whole rows of tilts when a row fits, else part of one row.
    """
    ny, nx, dy, dx = (int(s) for s in shape)
    frame = max(1, dy * dx * itemsize)
    n = max(1, int(chunk_mb * 2**20 // frame))
    if n >= nx:
        return min(ny, max(1, n // nx)), nx, dy, dx
    return 1, n, dy, dx


def _align(want: int, native: int, size: int) -> int:
    """A multiple of the native chunk length near ``want`` (at most ``size``)."""
    if native >= size:
        return size
    return min(size, max(native, (want // native) * native))


def plan_chunks(shape: tuple[int, ...], itemsize: int, chunk_mb: float,
                scan_shape: tuple[int, int] | None = None,
                native: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Chunks of a 3-D or 4-D *source* array giving blocks of whole frames.

    After reshaping a 3-D series to ``scan_shape`` every chunk is a block of
    whole tilt rows, or of a divisor of a row, of about ``chunk_mb`` MiB, so no
    re-chunking (which would read source chunks several times) is needed.
    ``native`` (the file's own chunks, HDF5/zarr) makes 4-D blocks multiples of
    them along the scan axes.
    """
    shape = tuple(int(v) for v in shape)
    dy, dx = shape[-2:]
    if len(shape) == 4:
        ny, nx = shape[:2]
    elif len(shape) == 3 and scan_shape is not None and \
            int(scan_shape[0]) * int(scan_shape[1]) == shape[0]:
        ny, nx = (int(v) for v in scan_shape)
    elif len(shape) == 3:
        ny, nx = 1, shape[0]
    else:
        return shape
    rows, cols = block_chunks((ny, nx, dy, dx), itemsize, chunk_mb)[:2]
    if len(shape) == 4:
        if native is not None:
            rows = _align(rows, int(native[0]), ny)
            if cols < nx:
                cols = _align(cols, int(native[1]), nx)
        return rows, cols, dy, dx
    if cols < nx:  # a divisor of the row length keeps the reshape chunk-aligned
        cols = max(d for d in range(1, cols + 1) if nx % d == 0)
        return cols, dy, dx
    return rows * nx, dy, dx


def _is_dask(x: Any) -> bool:
    return hasattr(x, "dask") and hasattr(x, "chunks") and hasattr(x, "compute")


def _to_4d(arr: Any, scan_shape: tuple[int, int] | None, source: str | PathLike[str]) -> Any:
    """(ny, nx, dy, dx) from a 3-D frame series or a 4-D array (``scan_shape`` overrides)."""
    if arr.ndim not in (3, 4):
        raise InputError("expected 4-D data (scan_y, scan_x, det_y, det_x) or a 3-D series "
                         "of frames", source=source, found=f"shape {tuple(arr.shape)}")
    n_frames = int(np.prod(arr.shape[:-2]))
    if scan_shape is None:
        if arr.ndim == 3:
            raise InputError("the file does not store the scan shape; pass scan_shape=(ny, nx)",
                             source=source, found=f"{n_frames} frames")
        return arr
    ny, nx = (int(s) for s in scan_shape)
    if ny < 1 or nx < 1:
        raise InputError("scan_shape must be two positive integers", source=source,
                         found=scan_shape)
    if ny * nx != n_frames:
        raise InputError("scan_shape does not match the number of frames", source=source,
                         expected=f"{ny} × {nx} = {ny * nx} frames", found=f"{n_frames} frames")
    if arr.ndim == 4 and tuple(arr.shape[:2]) == (ny, nx):
        return arr
    dy, dx = (int(s) for s in arr.shape[-2:])
    flat = arr.reshape((n_frames, dy, dx)) if arr.ndim == 4 else arr
    per = max(1, max(flat.chunks[0]) // nx) * nx
    return flat.rechunk((per, dy, dx)).reshape((ny, nx, dy, dx))


@contextmanager
def _quiet_rsciio():
    """Silence rosettasciio's informational warnings (missing .hdr, uncalibrated axes)."""
    log = logging.getLogger("rsciio")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} not found", source=path)


def _wrap(path: Path, expected: str, exc: BaseException) -> InputError:
    return InputError(f"cannot read the file ({type(exc).__name__}: {exc})", source=path,
                      expected=expected)


def _axes_from_rsciio(axes: list[dict[str, Any]], ndim: int) -> tuple[list[int], dict]:
    """Axis order (navigation first, signal last) and qcbed axis records from rsciio axes."""
    by_index = sorted(axes, key=lambda a: a.get("index_in_array", 0))
    if len(by_index) != ndim:
        return list(range(ndim)), {}
    nav = [a for a in by_index if a.get("navigate")]
    sig = [a for a in by_index if not a.get("navigate")]
    order = [int(a["index_in_array"]) for a in nav + sig]
    recs = {}
    names = _AXIS_NAMES[-len(nav + sig):] if len(nav + sig) <= 4 else _AXIS_NAMES
    for name, a in zip(names, nav + sig):
        recs[name] = {"name": a.get("name") or name, "scale": float(a.get("scale", 1.0)),
                      "offset": float(a.get("offset", 0.0)),
                      "units": str(a.get("units") or "pixel")}
    return order, recs


def _from_rsciio(result: dict[str, Any], path: Path, fmt: str,
                 scan_shape: tuple[int, int] | None) -> FourDData:
    """FourDData from a rosettasciio result whose data are chunked by whole frames."""
    data = result["data"]
    order, axes = _axes_from_rsciio(result.get("axes", []), data.ndim)
    if order != list(range(data.ndim)):
        data = data.transpose(order)
    data = _to_4d(data, scan_shape, path)
    if scan_shape is not None:
        axes = {k: v for k, v in axes.items() if k.startswith("det")}
    return FourDData(data, str(path), fmt, axes, dict(result.get("metadata", {})))


