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

Modules: :mod:`.fourd` (container, chunk planning), :mod:`.formats` (one reader per
format); this module chooses the reader (:func:`open_4d`, :func:`detect_format`).
"""

from __future__ import annotations

import math
import os
from os import PathLike
from pathlib import Path

from ..errors import InputError
from .formats import (
    read_dm_4d,
    read_emd,
    read_empad,
    read_hdf5,
    read_mib,
    read_npy,
    read_zarr,
)
from .fourd import (
    _FORMATS,
    DEFAULT_CHUNK_MB,
    EMPAD_FRAME,
    EMPAD_RAW_ROWS,
    FourDData,
    _check_file,
    _wrap,
    block_chunks,
    plan_chunks,
)

__all__ = [
    "DEFAULT_CHUNK_MB",
    "EMPAD_FRAME",
    "EMPAD_RAW_ROWS",
    "FourDData",
    "block_chunks",
    "detect_format",
    "open_4d",
    "plan_chunks",
    "read_dm_4d",
    "read_emd",
    "read_empad",
    "read_hdf5",
    "read_mib",
    "read_npy",
    "read_zarr",
]

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
        return read_dm_4d(p, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "emd":
        return read_emd(p, dataset=dataset, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "hdf5":
        return read_hdf5(p, dataset, scan_shape=scan_shape, chunk_mb=chunk_mb)
    if fmt == "npy":
        return read_npy(p, scan_shape=scan_shape, chunk_mb=chunk_mb)
    return read_zarr(p, dataset, scan_shape=scan_shape, chunk_mb=chunk_mb)
