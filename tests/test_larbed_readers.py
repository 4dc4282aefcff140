"""4-D readers: tiny files in each format, written with the formats' published layouts.

* EMPAD: 128 × 130 little-endian float32 frames (2 footer rows) + an XML naming
  the raw file (rosettasciio test-data conventions: ``scan_x{nx}_y{ny}.raw``);
* Merlin MIB: 384-byte ASCII frame headers ``MQ1,seq,00384,01,W,H,U16,...``
  followed by big-endian pixels;
* DM4: Gatan tag tree (big-endian tag headers, little-endian data), image data
  in ``ImageList/…/ImageData/Data`` with ``Dimensions`` X-first;
* EMD 1.0 / py4DSTEM: written with :mod:`emdfile` (dims R_x, R_y, Q_x, Q_y);
* HDF5, ``.npy``, zarr: h5py, numpy, dask/zarr.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from felix_synth import write_dm
from qcbed.errors import InputError
from qcbed.larbed import FourDData, detect_format, open_4d
from qcbed.larbed.synthetic import write_empad, write_npy_stream

NY, NX = 3, 4


def _data(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 1009).astype(dtype).reshape(shape)


# ------------------------------------------------------------ writers (test only)
def _mib_header(seq: int, h: int, w: int, depth: str = "U16") -> bytes:
    fields = ["MQ1", f"{seq:06d}", "00384", "01", f"{w:04d}", f"{h:04d}", depth, "   1x1", "01",
              "2024-01-02 10:00:00.000000", "0.001000", "0", "0", "0", "1.200000E+2",
              "5.110000E+2", *["0.000000E+0"] * 6, "3RX", *["000"] * 25, "MQ1A",
              "2024-01-02T10:00:00.000000000Z", "1000000ns", "12", ""]
    text = ",".join(fields).encode()
    assert len(text) <= 384
    return text + b" " * (384 - len(text))


def _write_mib(path: Path, frames: np.ndarray) -> None:
    with open(path, "wb") as fh:
        for k, fr in enumerate(frames.reshape((-1,) + frames.shape[-2:])):
            fh.write(_mib_header(k + 1, *fr.shape))
            fh.write(np.ascontiguousarray(fr, ">u2").tobytes())


def _write_dm4(path: Path, data: np.ndarray) -> None:
    """DM4 (version 4, 8-byte lengths; tests/felix_synth.write_dm) of a 4-D LARBED stack."""
    write_dm(path, data, version=4, units=["1/nm", "1/nm", "mrad", "mrad"], scale=0.25,
             intensity_units="counts", name="larbed")   # DM order: X (det_x), Y, scan_x, scan_y


# ------------------------------------------------------------ formats
def test_empad_xml_and_raw(tmp_path):
    data = _data((NY, NX, 128, 128))
    xml = write_empad(tmp_path / "run.xml", (NY, NX), [data[r] for r in range(NY)])
    raw = tmp_path / f"scan_x{NX}_y{NY}.raw"
    assert raw.stat().st_size == NY * NX * 130 * 128 * 4
    for path in (xml, raw):                       # the .raw is read through its XML
        d = open_4d(path)
        assert d.format == "empad"
        assert d.shape == (NY, NX, 128, 128)
        assert np.array_equal(d.data.compute(), data)
    # a bare raw file: scan shape from its name, or given
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "scan_x4_y3.raw").write_bytes(raw.read_bytes())
    assert np.array_equal(open_4d(bare / "scan_x4_y3.raw").data.compute(), data)
    (bare / "anything.raw").write_bytes(raw.read_bytes())
    d = open_4d(bare / "anything.raw", scan_shape=(2, 6))
    assert d.shape == (2, 6, 128, 128)
    assert np.array_equal(d.data.compute(), data.reshape(2, 6, 128, 128))
    with pytest.raises(InputError, match="needs scan_shape"):
        open_4d(bare / "anything.raw")
    with pytest.raises(InputError, match="file size"):
        open_4d(bare / "anything.raw", scan_shape=(2, 2))


def test_mib(tmp_path):
    frames = _data((NY, NX, 32, 24), "uint16")
    path = tmp_path / "scan.mib"
    _write_mib(path, frames)
    d = open_4d(path, scan_shape=(NY, NX))
    assert d.format == "mib" and d.shape == (NY, NX, 32, 24)
    # rosettasciio shows Merlin frames flipped vertically; qcbed keeps its orientation
    assert np.array_equal(d.data.compute(), frames[:, :, ::-1, :])
    with pytest.raises(InputError, match="scan shape"):
        open_4d(path)                               # no .hdr, equal time stamps
    with pytest.raises(InputError):
        open_4d(path, scan_shape=(5, 5))
    bad = tmp_path / "bad.mib"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="not a Merlin MIB file"):
        open_4d(bad, scan_shape=(1, 1))


def test_dm4(tmp_path):
    data = np.random.default_rng(1).random((NY, NX, 16, 20)).astype(np.float32)
    path = tmp_path / "larbed.dm4"
    _write_dm4(path, data)
    d = open_4d(path)
    assert d.format == "dm" and d.shape == (NY, NX, 16, 20)
    assert np.array_equal(d.data.compute(), data)
    assert d.axes["scan_y"]["units"] == "mrad" and d.axes["det_x"]["units"] == "1/nm"
    bad = tmp_path / "bad.dm4"
    bad.write_bytes(struct.pack(">I", 7) + b"\x00" * 64)
    with pytest.raises(InputError, match=r"bad\.dm4"):
        open_4d(bad)


def test_emd_py4dstem(tmp_path):
    emdfile = pytest.importorskip("emdfile")
    data = _data((NY, NX, 16, 16))
    root = emdfile.Root(name="experiment")
    root.tree(emdfile.Array(
        data=data, name="datacube",
        dims=[np.arange(NY) * 0.5, np.arange(NX) * 0.5, np.arange(16) * 0.02,
              np.arange(16) * 0.02],
        dim_names=["R_x", "R_y", "Q_x", "Q_y"], dim_units=["mrad", "mrad", "A^-1", "A^-1"]))
    root.tree(emdfile.Array(data=np.ones((4, 4)), name="dp_mean"))
    path = tmp_path / "larbed.h5"
    emdfile.save(str(path), root, mode="o")
    assert detect_format(path) == "emd"
    with open_4d(path) as d:
        assert d.shape == (NY, NX, 16, 16)
        assert np.array_equal(d.data.compute(), data)
        # py4DSTEM (R_x, R_y, Q_x, Q_y) = qcbed (scan_y, scan_x, det_y, det_x)
        assert d.axes["scan_y"]["name"] == "R_x" and d.axes["det_x"]["name"] == "Q_y"
        assert d.axes["det_y"]["scale"] == pytest.approx(0.02)
        assert d.axes["scan_x"]["units"] == "mrad"
    # a plain HDF5 file is not EMD
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = data
    with pytest.raises(InputError, match=r"not an EMD 1\.0 file"):
        open_4d(plain, "emd")


def test_hdf5(tmp_path):
    data = _data((NY, NX, 16, 16))
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/frames", data=data.reshape(-1, 16, 16), chunks=(2, 16, 16))
        f.create_dataset("entry/cube", data=data)
        f["entry/small"] = np.ones(3)
    d = open_4d(path, dataset="entry/frames", scan_shape=(NY, NX))
    assert d.format == "hdf5" and np.array_equal(d.data.compute(), data)
    d.close()
    assert np.array_equal(open_4d(path, dataset="/entry/cube").data.compute(), data)
    with pytest.raises(InputError, match="choose the dataset"):
        open_4d(path)
    with pytest.raises(InputError, match="does not store the scan shape"):
        open_4d(path, dataset="entry/frames")
    with pytest.raises(InputError, match="no such dataset"):
        open_4d(path, dataset="entry/nothing")


def test_npy_and_zarr(tmp_path):
    data = _data((NY, NX, 16, 16))
    npy = tmp_path / "d.npy"
    np.save(npy, data)
    d = open_4d(npy, chunk_mb=16 * 16 * 4 * 5 / 2**20)   # 5 frames per block
    assert d.shape == data.shape and d.data.chunks[0] == (1, 1, 1)
    assert np.array_equal(d.data.compute(), data)
    # a 3-D frame series streamed to .npy
    series = tmp_path / "s.npy"
    write_npy_stream(series, (NY * NX, 16, 16), np.float32, [data.reshape(-1, 16, 16)])
    assert np.array_equal(open_4d(series, scan_shape=(NY, NX)).data.compute(), data)
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    with pytest.raises(InputError, match="Fortran"):
        open_4d(tmp_path / "f.npy")
    zarr = pytest.importorskip("zarr")
    import dask.array as da

    da.to_zarr(da.from_array(data, chunks=(1, 2, 16, 16)), str(tmp_path / "d.zarr"))
    z = open_4d(tmp_path / "d.zarr")
    assert z.format == "zarr" and np.array_equal(z.data.compute(), data)
    grp = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    grp.create_array("raw", shape=data.shape, dtype=data.dtype, chunks=(1, 1, 16, 16))[:] = data
    assert np.array_equal(open_4d(tmp_path / "g.zarr").data.compute(), data)


def test_lazy_and_errors(tmp_path):
    data = _data((NY, NX, 8, 8))
    d = FourDData.from_array(data, chunk_mb=8 * 8 * 4 * NX / 2**20)
    assert hasattr(d.data, "dask") and d.data.chunks[0] == (1, 1, 1)
    assert d.scan_shape == (NY, NX) and d.detector_shape == (8, 8)
    assert np.array_equal(d.frame(2, 3), data[2, 3])
    with pytest.raises(InputError, match="not found"):
        open_4d(tmp_path / "missing.npy")
    (tmp_path / "x.tif").write_bytes(b"abc")
    with pytest.raises(InputError, match="unknown 4-D file format"):
        open_4d(tmp_path / "x.tif")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"junk\.h5"):
        open_4d(tmp_path / "junk.h5")
    with pytest.raises(InputError, match="scan_shape does not match"):
        FourDData.from_array(data.reshape(-1, 8, 8), scan_shape=(5, 3))
