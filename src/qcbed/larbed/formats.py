"""The readers of the 4-D file formats (EMPAD, Merlin MIB, DM3/DM4, EMD/py4DSTEM, HDF5,
.npy, zarr), each returning a lazy :class:`~qcbed.larbed.fourd.FourDData`."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._deps import require
from .fourd import (
    _AXIS_NAMES,
    DEFAULT_CHUNK_MB,
    EMPAD_FRAME,
    EMPAD_RAW_ROWS,
    FourDData,
    _axes_from_rsciio,
    _check_file,
    _from_rsciio,
    _quiet_rsciio,
    _to_4d,
    _wrap,
    plan_chunks,
)

da = require("dask.array")


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


def read_dm_4d(path: str | PathLike[str], *, scan_shape: tuple[int, int] | None = None,
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


