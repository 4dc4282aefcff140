"""Lazy readers of 4-D (LARBED / 4-D STEM) datasets.

Every reader returns a :class:`FourDData`: a dask array of shape
``(scan_y, scan_x, det_y, det_x)`` — for LARBED ``(tilt_y, tilt_x, det_y, det_x)``,
py4DSTEM's ``(R_x, R_y, Q_x, Q_y)`` — chunked into blocks of whole detector frames,
plus axis calibrations and metadata. Nothing is read until a block is computed,
so a file of any size opens instantly and is processed a few blocks at a time
(:mod:`qcbed.larbed.streaming`).

The file formats are parsed by their maintained readers, not by qcbed:

=========================  ==================================================  ==============
format                     reader                                              scan shape
=========================  ==================================================  ==============
EMPAD ``.xml`` + ``.raw``  :func:`rsciio.empad.file_reader` (``lazy=True``)     from the XML
                           parses the XML; the raw file (128 × 130 float32
                           frames, 2 footer rows) is mapped with
                           :func:`rsciio.utils.file.memmap_distributed`
EMPAD bare ``.raw``        :func:`rsciio.utils.file.memmap_distributed`         file name
                                                                               ``_x{nx}_y{ny}``
                                                                               or
                                                                               ``scan_shape``
Merlin ``.mib``            :func:`rsciio.quantumdetector.file_reader`           ``.hdr``, time
                                                                               stamps or
                                                                               ``scan_shape``
DM3 / DM4                  :func:`rsciio.digitalmicrograph.file_reader`         from the file
py4DSTEM / EMD 1.0         :mod:`emdfile` (validation) + :mod:`h5py`            from the file
generic HDF5               :mod:`h5py` (``dataset`` path)                       the shape or
                                                                               ``scan_shape``
``.npy``                   :func:`rsciio.utils.file.memmap_distributed`         the shape or
                                                                               ``scan_shape``
zarr                       :func:`dask.array.from_zarr`                         the shape or
                                                                               ``scan_shape``
=========================  ==================================================  ==============

Chunks are planned for the source (:func:`plan_chunks`) so that every block is
whole tilt rows (or a divisor of a row) and, for HDF5/zarr, a multiple of the
file's own chunks: re-chunking a memory-mapped or compressed source would read
parts of it many times (rosettasciio's automatic chunks tile the scan in
squares). Memory-mapped blocks map the file afresh and are released after use,
so resident memory stays bounded by the blocks in flight.

Files that store frames as a flat series (MIB without ``.hdr``, 3-D HDF5/npy
arrays, EMPAD "series" acquisitions) need ``scan_shape=(ny, nx)``; frame k is
tilt ``(k // nx, k % nx)`` (row-major, the acquisition order).

Frame orientation is the reader's: rosettasciio flips Merlin frames vertically
(row 0 at the top as displayed by the Merlin software); qcbed keeps that.
"""

from __future__ import annotations

import logging
import math
import os
import re
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


# ============================================================ format readers
def read_empad(path: str | PathLike[str], *, scan_shape: tuple[int, int] | None = None,
               chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """An EMPAD dataset: the ``.xml`` (read by rosettasciio) or a bare ``.raw`` file.

    Parameters
    ----------
    path : path
        ``.xml`` written by the EMPAD software, or its ``.raw`` file. A ``.raw``
        next to an XML that names it is read through the XML.
    scan_shape : (ny, nx), optional
        Scan (tilt-grid) shape for a bare ``.raw`` whose name is not
        ``scan_x{nx}_y{ny}.raw``, or to override the XML.
    chunk_mb : float
        Block size (MiB).

    Notes
    -----
    Frames are 128 × 128 float32 pixels plus two footer rows (130 rows stored),
    little endian, in scan order (rosettasciio ``rsciio.empad``).
    """
    p = Path(path)
    _check_file(p, "EMPAD file")
    if p.suffix.lower() == ".raw":
        xml = _empad_xml_for(p)
        if xml is None:
            return _read_empad_raw(p, scan_shape, chunk_mb)
        p = xml
    from rsciio.empad import file_reader

    try:
        with _quiet_rsciio():
            res = file_reader(str(p), lazy=True)[0]  # parses the XML; data stay unread
    except Exception as exc:
        raise _wrap(p, "an EMPAD .xml naming its .raw file (rsciio.empad)", exc) from exc
    raw = p.parent / str(res["original_metadata"]["root"]["raw_file"]["filename"])
    nav = tuple(int(v) for v in res["data"].shape[:-2])
    # re-map the raw file with blocks of whole tilt rows (rosettasciio's own chunks
    # tile the scan in squares, which a row-wise pass would read many times over)
    data = _empad_array(raw, nav, scan_shape, chunk_mb)
    _, axes = _axes_from_rsciio(res.get("axes", []), res["data"].ndim)
    if scan_shape is not None or len(nav) != 2:
        axes = {k: v for k, v in axes.items() if k.startswith("det")}
    meta = dict(res.get("metadata", {}))
    meta["xml"] = str(p)
    return FourDData(data, str(raw), "empad", axes, meta)


def _empad_array(raw: Path, nav: tuple[int, ...], scan_shape: tuple[int, int] | None,
                 chunk_mb: float) -> Any:
    """The EMPAD raw file as (ny, nx, 128, 128), memory-mapped block by block."""
    from rsciio.utils.file import memmap_distributed

    h, w = EMPAD_FRAME
    n = int(np.prod(nav))
    _check_size(raw, n * EMPAD_RAW_ROWS * w * 4,
                f"{n} EMPAD frames of {w}×{EMPAD_RAW_ROWS} float32")
    if scan_shape is not None:
        ny, nx = (int(v) for v in scan_shape)
        if ny * nx != n:
            raise InputError("scan_shape does not match the number of frames", source=raw,
                             expected=f"{ny} × {nx} = {ny * nx} frames", found=f"{n} frames")
    elif len(nav) == 2:
        ny, nx = nav
    else:
        raise InputError("the file does not store the scan shape; pass scan_shape=(ny, nx)",
                         source=raw, found=f"{n} frames")
    dtype = np.dtype([("data", "<f4", (h, w)), ("footer", "<f4", (EMPAD_RAW_ROWS - h, w))])
    return memmap_distributed(str(raw), dtype=dtype, shape=(ny, nx), key="data",
                              chunks=plan_chunks((ny, nx, h, w), 4, chunk_mb))


def _empad_xml_for(raw: Path) -> Path | None:
    for xml in sorted(raw.parent.glob("*.xml")):
        try:
            text = xml.read_text(errors="replace")
        except OSError:  # pragma: no cover
            continue
        if f'filename="{raw.name}"' in text:
            return xml
    return None


def _check_size(path: Path, expected: int, what: str) -> None:
    _check_file(path, "data file")
    size = path.stat().st_size
    if size != expected:
        raise InputError("file size does not match the expected layout", source=path,
                         expected=f"{expected} bytes ({what})", found=f"{size} bytes")


def _read_empad_raw(p: Path, scan_shape: tuple[int, int] | None, chunk_mb: float
                    ) -> FourDData:
    if scan_shape is None:
        m = re.search(r"_x(\d+)_y(\d+)", p.stem)
        if m is None:
            raise InputError("EMPAD .raw without an XML needs scan_shape=(ny, nx) (or a name "
                             "like scan_x256_y256.raw)", source=p)
        scan_shape = (int(m.group(2)), int(m.group(1)))
    ny, nx = (int(s) for s in scan_shape)
    return FourDData(_empad_array(p, (ny, nx), None, chunk_mb), str(p), "empad")


def read_mib(path: str | PathLike[str], *, scan_shape: tuple[int, int] | None = None,
             chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """A Quantum Detectors Merlin ``.mib`` file through :mod:`rsciio.quantumdetector`.

    Parameters
    ----------
    path : path
        The ``.mib`` file (a ``.hdr`` of the same name, when present, gives the scan
        shape).
    scan_shape : (ny, nx), optional
        Scan shape; needed when there is no ``.hdr`` and the frame time stamps do
        not reveal the line length.
    chunk_mb : float
        Block size (MiB).
    """
    p = Path(path)
    _check_file(p, "MIB file")
    from rsciio.quantumdetector import file_reader

    with open(p, "rb") as fh:
        head = fh.read(16)
    if not head.startswith(b"MQ1"):
        raise InputError("not a Merlin MIB file", source=p, expected="header starting 'MQ1,'",
                         found=head[:16])
    kw: dict[str, Any] = {}
    if scan_shape is not None:
        ny, nx = (int(s) for s in scan_shape)
        kw["navigation_shape"] = (nx, ny)  # rosettasciio: (x, y), reversed array order
    try:
        with _quiet_rsciio():
            res = file_reader(str(p), lazy=True, **kw)[0]
            nav = tuple(int(v) for v in res["data"].shape[:-2])
            if len(nav) == 2:  # again, with blocks of whole tilt rows
                chunks = plan_chunks(res["data"].shape, res["data"].dtype.itemsize, chunk_mb)
                res = file_reader(str(p), lazy=True, navigation_shape=nav[::-1],
                                  chunks=chunks)[0]
    except Exception as exc:
        raise _wrap(p, "a Merlin MIB file (rsciio.quantumdetector)", exc) from exc
    if scan_shape is not None and nav != tuple(scan_shape):
        raise InputError("the MIB file does not hold the requested scan", source=p,
                         expected=f"{scan_shape[0]}×{scan_shape[1]} frames",
                         found=f"frames {nav}")
    return _from_rsciio(dict(res, axes=[]), p, "mib", None)  # MIB axes are uncalibrated


def read_dm(path: str | PathLike[str], *, scan_shape: tuple[int, int] | None = None,
            chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """A Gatan DigitalMicrograph ``.dm4``/``.dm3`` 4-D dataset (rosettasciio).

    The navigation axes (as rosettasciio flags them) come first, the signal
    (detector) axes last. The first image with at least three dimensions is used.
    """
    p = Path(path)
    _check_file(p, "DM file")
    from rsciio.digitalmicrograph import file_reader

    try:
        with _quiet_rsciio():
            results = file_reader(str(p), lazy=True)
    except Exception as exc:
        raise _wrap(p, "a DigitalMicrograph DM3/DM4 file (rsciio.digitalmicrograph)",
                    exc) from exc
    idx = [i for i, r in enumerate(results) if getattr(r["data"], "ndim", 0) >= 3]
    if not idx:
        raise InputError("no 3-D or 4-D image in the DM file", source=p,
                         expected="a 4-D (scan × detector) dataset",
                         found=[tuple(r["data"].shape) for r in results])
    first = results[idx[0]]
    data = first["data"]
    order, _ = _axes_from_rsciio(first.get("axes", []), data.ndim)
    want = plan_chunks(tuple(data.shape[i] for i in order), data.dtype.itemsize, chunk_mb,
                       scan_shape)
    chunks = [0] * data.ndim
    for i, c in zip(order, want):
        chunks[i] = c
    try:  # again, with blocks of whole frames in the file's axis order
        with _quiet_rsciio():
            first = file_reader(str(p), lazy=True, chunks=tuple(chunks))[idx[0]]
    except Exception as exc:  # pragma: no cover - the first read succeeded
        raise _wrap(p, "a DigitalMicrograph DM3/DM4 file", exc) from exc
    return _from_rsciio(first, p, "dm", scan_shape)


def read_emd(path: str | PathLike[str], *, dataset: str | None = None,
             scan_shape: tuple[int, int] | None = None,
             chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """A py4DSTEM / EMD 1.0 file: the 4-D ``Array`` node (``datacube``) read lazily.

    Parameters
    ----------
    path : path
        The ``.h5``/``.emd`` file (validated with :mod:`emdfile`).
    dataset : str, optional
        HDF5 path of the array node (group) or its ``data`` dataset; default the
        4-D array node, preferring one called ``datacube``.

    Notes
    -----
    py4DSTEM stores data cubes as ``(R_x, R_y, Q_x, Q_y)`` where R_x is the slow
    scan axis (array rows): qcbed's ``(scan_y, scan_x, det_y, det_x)``. The dim
    vectors ``dim0``–``dim3`` give the calibrations and their names/units.
    """
    p = Path(path)
    _check_file(p, "EMD file")
    emdfile = require("emdfile")
    import h5py

    try:
        is_emd = bool(emdfile._is_EMD_file(str(p)))
    except Exception as exc:
        raise _wrap(p, "an EMD 1.0 (HDF5) file", exc) from exc
    if not is_emd:
        raise InputError("not an EMD 1.0 file", source=p,
                         expected="root attribute emd_group_type='file', version 1.0")
    version = emdfile._get_EMD_version(str(p))
    f = h5py.File(p, "r")
    try:
        if dataset is not None:
            if dataset not in f:
                raise InputError("no such node in the EMD file", source=p, tag=dataset)
            node = f[dataset]
            grp = node if isinstance(node, h5py.Group) else node.parent
        else:
            nodes: list[h5py.Group] = []

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group) and obj.attrs.get("emd_group_type") == "array" \
                        and "data" in obj and obj["data"].ndim in (3, 4):
                    nodes.append(obj)

            f.visititems(visit)
            if not nodes:
                raise InputError("no 3-D/4-D array node in the EMD file", source=p,
                                 expected="an emdfile Array (e.g. py4DSTEM 'datacube')")
            four = [n for n in nodes if n["data"].ndim == 4] or nodes
            named = [n for n in four if n.name.rsplit("/", 1)[-1] == "datacube"]
            if len(named) == 1:
                grp = named[0]
            elif len(four) == 1:
                grp = four[0]
            else:
                raise InputError("several array nodes; choose one with dataset=",
                                 source=p, found=[n.name for n in four])
        dset = grp["data"]
        axes: dict[str, dict[str, Any]] = {}
        for i in range(dset.ndim):
            key = f"dim{i}"
            if key in grp:
                vec = np.asarray(grp[key][()])
                scale = float(vec[1] - vec[0]) if vec.size > 1 and vec.dtype.kind in "fiu" \
                    else 1.0
                off = float(vec[0]) if vec.size and vec.dtype.kind in "fiu" else 0.0
                axes[_AXIS_NAMES[4 - dset.ndim + i]] = {
                    "name": _attr_str(grp[key].attrs.get("name", key)),
                    "units": _attr_str(grp[key].attrs.get("units", "pixel")),
                    "scale": scale, "offset": off}
        chunks = plan_chunks(dset.shape, dset.dtype.itemsize, chunk_mb, scan_shape,
                             dset.chunks)
        data = _to_4d(da.from_array(dset, chunks=chunks, asarray=False), scan_shape, p)
        meta = {"emd_version": ".".join(map(str, version)), "node": grp.name}
    except BaseException:
        f.close()
        raise
    return FourDData(data, str(p), "emd", axes, meta, [f.close])


def _attr_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_hdf5(path: str | PathLike[str], dataset: str | None = None, *,
              scan_shape: tuple[int, int] | None = None,
              chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """A 3-D or 4-D dataset of any HDF5 file, read lazily with :mod:`h5py`.

    Parameters
    ----------
    dataset : str, optional
        HDF5 path of the dataset; default the only dataset with 3 or 4 dimensions.
    scan_shape : (ny, nx), optional
        Needed for a 3-D ``(frames, det_y, det_x)`` dataset.
    """
    import h5py

    p = Path(path)
    _check_file(p, "HDF5 file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise _wrap(p, "an HDF5 file", exc) from exc
    try:
        if dataset is None:
            found: list[str] = []
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset)
                         and o.ndim in (3, 4) else None)
            if len(found) != 1:
                raise InputError("choose the dataset with dataset='/path'", source=p,
                                 expected="exactly one 3-D/4-D dataset", found=found)
            dataset = found[0]
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise InputError("no such dataset in the HDF5 file", source=p, tag=dataset)
        dset = f[dataset]
        chunks = plan_chunks(dset.shape, dset.dtype.itemsize, chunk_mb, scan_shape,
                             dset.chunks)
        data = _to_4d(da.from_array(dset, chunks=chunks, asarray=False), scan_shape, p)
        meta = {"dataset": dset.name,
                "attrs": {k: _jsonable(v) for k, v in dset.attrs.items()}}
    except (RuntimeError, KeyError, OSError, ValueError, TypeError) as exc:
        f.close()  # a damaged file: h5py raises these while walking or reading it
        if isinstance(exc, InputError):
            raise
        raise _wrap(p, "a readable HDF5 file", exc) from exc
    except BaseException:
        f.close()
        raise
    return FourDData(data, str(p), "hdf5", {}, meta, [f.close])


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_npy(path: str | PathLike[str], *, scan_shape: tuple[int, int] | None = None,
             chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """A ``.npy`` file, memory-mapped block by block (rosettasciio ``memmap_distributed``).

    Each block maps the file afresh and is released after use, so the resident
    memory stays bounded by the blocks in flight, not the file size.
    """
    from rsciio.utils.file import memmap_distributed

    p = Path(path)
    _check_file(p, ".npy file")
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except Exception as exc:
        raise _wrap(p, "a NumPy .npy file", exc) from exc
    if fortran and len(shape) > 1:
        raise InputError("Fortran-ordered .npy files cannot be streamed by frames", source=p,
                         expected="C order", found="fortran_order=True")
    if len(shape) not in (3, 4) or dtype.hasobject:
        raise InputError("expected a 3-D or 4-D numeric array", source=p,
                         found=f"shape {shape}, dtype {dtype}")
    _check_size(p, offset + int(np.prod(shape)) * dtype.itemsize, f"{shape} {dtype}")
    data = memmap_distributed(str(p), dtype=dtype, offset=offset, shape=tuple(shape),
                              chunks=plan_chunks(shape, dtype.itemsize, chunk_mb, scan_shape))
    return FourDData(_to_4d(data, scan_shape, p), str(p), "npy")


def read_zarr(path: str | PathLike[str], dataset: str | None = None, *,
              scan_shape: tuple[int, int] | None = None,
              chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """A zarr array (or the only 3-D/4-D array of a zarr group), through dask."""
    zarr = require("zarr")
    p = Path(path)
    _check_file(p, "zarr store")
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise _wrap(p, "a zarr array or group", exc) from exc
    if dataset is not None:
        try:
            node = node[dataset]
        except Exception as exc:
            raise InputError("no such array in the zarr group", source=p, tag=dataset) from exc
    if not hasattr(node, "shape"):
        arrays = [(k, a) for k, a in _zarr_arrays(node) if len(a.shape) in (3, 4)]
        if len(arrays) != 1:
            raise InputError("choose the array with dataset='name'", source=p,
                             expected="exactly one 3-D/4-D array",
                             found=[k for k, _ in arrays])
        dataset, node = arrays[0]
    chunks = plan_chunks(node.shape, np.dtype(node.dtype).itemsize, chunk_mb, scan_shape,
                         node.chunks)
    data = _to_4d(da.from_zarr(node, chunks=chunks), scan_shape, p)
    return FourDData(data, str(p), "zarr", {}, {"array": dataset or ""})


def _zarr_arrays(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, a in group.arrays():
        out.append((prefix + name, a))
    for name, g in group.groups():
        out.extend(_zarr_arrays(g, prefix + name + "/"))
    return out


# ============================================================ dispatch
_EXT = {".xml": "empad", ".raw": "empad", ".mib": "mib", ".dm4": "dm", ".dm3": "dm",
        ".npy": "npy", ".zarr": "zarr", ".zspy": "zarr", ".h5": "hdf5", ".hdf5": "hdf5",
        ".hdf": "hdf5", ".emd": "hdf5", ".py4dstem": "hdf5"}


def detect_format(path: str | PathLike[str]) -> str:
    """The reader for ``path`` from its extension (HDF5 files: EMD 1.0 or generic)."""
    p = Path(path)
    fmt = _EXT.get(p.suffix.lower())
    if fmt is None and p.is_dir() and any((p / n).exists() for n in
                                          (".zarray", ".zgroup", "zarr.json")):
        fmt = "zarr"
    if fmt is None:
        raise InputError("unknown 4-D file format", source=p,
                         expected="one of " + ", ".join(sorted(_EXT)) + " or format=")
    if fmt == "hdf5":
        import h5py

        try:
            with h5py.File(p, "r") as f:
                if f.attrs.get("emd_group_type") in ("file", b"file"):
                    return "emd"
        except (OSError, KeyError, RuntimeError, ValueError) as exc:  # damaged files
            raise _wrap(p, "an HDF5 file", exc) from exc
    return fmt


def open_4d(path: str | PathLike[str], format: str | None = None, *,
            scan_shape: tuple[int, int] | None = None, dataset: str | None = None,
            chunk_mb: float = DEFAULT_CHUNK_MB) -> FourDData:
    """Open a 4-D dataset lazily.

    Parameters
    ----------
    path : path
        The file (or zarr directory).
    format : str, optional
        ``'empad'``, ``'mib'``, ``'dm'``, ``'emd'``, ``'hdf5'``, ``'npy'`` or
        ``'zarr'``; default from the extension.
    scan_shape : (ny, nx), optional
        Tilt-grid shape for files that do not store it (or to override it).
    dataset : str, optional
        Dataset / node path inside HDF5, EMD or zarr containers.
    chunk_mb : float
        Block size in MiB (whole frames; see :func:`block_chunks`).

    Returns
    -------
    FourDData

    Raises
    ------
    InputError
        Missing or unreadable file, unknown format, shape mismatch.
    """
    if not math.isfinite(chunk_mb) or chunk_mb <= 0:
        raise InputError("chunk_mb must be > 0", tag="chunk_mb", found=chunk_mb)
    p = Path(os.fspath(path))
    _check_file(p, "4-D data file")
    fmt = (format or detect_format(p)).lower()
    if fmt == "h5":
        fmt = "hdf5"
    if fmt not in _FORMATS[:-1]:
        raise InputError("unknown 4-D file format", source=p, tag="format",
                         expected=list(_FORMATS[:-1]), found=format)
    if fmt == "empad":
        return read_empad(p, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "mib":
        return read_mib(p, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "dm":
        return read_dm(p, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "emd":
        return read_emd(p, dataset=dataset, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "hdf5":
        return read_hdf5(p, dataset, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "npy":
        return read_npy(p, scan_shape=scan_shape, chunk_mb=chunk_mb)
    return read_zarr(p, dataset, scan_shape=scan_shape, chunk_mb=chunk_mb)
