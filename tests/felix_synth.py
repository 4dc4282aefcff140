"""Synthetic Felix D-LACBED folders for tests: a DM3 writer and a folder builder.

The DM3 layout follows the Gatan DigitalMicrograph version-3 format description
(header: version 3, root length, byte order 1; tag groups ``0x14`` and data tags
``0x15`` with 4-byte big-endian lengths; array data little endian), the same
structure as DM4 (8-byte lengths and a size before every tag's body), which
:func:`write_dm` also writes (``tests/test_larbed_readers.py``). Written for qcbed;
read back by rosettasciio.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["felix_image_name", "make_felix_folder", "write_dm", "write_dm3", "zolz_reflections"]


class _DMTags:
    """Tag encoders of one DigitalMicrograph version: DM3 has 4-byte counts and no
    per-tag sizes, DM4 8-byte counts and an 8-byte size before every tag's body."""

    def __init__(self, version: int) -> None:
        self.v4 = version == 4
        self.count = ">Q" if self.v4 else ">I"

    @staticmethod
    def _name(name: str) -> bytes:
        b = name.encode()
        return struct.pack(">H", len(b)) + b

    def _sized(self, body: bytes) -> bytes:
        return struct.pack(">Q", len(body)) + body if self.v4 else body

    def data(self, name: str, info: Sequence[int], payload: bytes) -> bytes:
        fmt = ">q" if self.v4 else ">I"
        body = (b"%%%%" + struct.pack(fmt, len(info))
                + b"".join(struct.pack(fmt, i) for i in info) + payload)
        return b"\x15" + self._name(name) + self._sized(body)

    def group(self, name: str, tags: Sequence[bytes]) -> bytes:
        body = b"\x00\x01" + struct.pack(self.count, len(tags)) + b"".join(tags)
        return b"\x14" + self._name(name) + self._sized(body)

    def f4(self, name: str, v: float) -> bytes:
        return self.data(name, [6], struct.pack("<f", v))

    def text(self, name: str, s: str) -> bytes:
        return self.data(name, [20, 4, len(s)], np.array([ord(c) for c in s], "<u2").tobytes())


def write_dm(path: str | Path, data: np.ndarray, *, version: int = 3,
             units: Sequence[str] | None = None, scale: float = 1.0,
             intensity_units: str = "", name: str = "felix") -> Path:
    """Write a float32 array as a DigitalMicrograph 3 or 4 file (test data only).

    ``units`` (one per axis in DM order: x = the last numpy axis first) and ``scale``
    calibrate the axes (default: uncalibrated).
    """
    arr = np.ascontiguousarray(data, "<f4")
    t = _DMTags(version)
    units = [""] * arr.ndim if units is None else list(units)
    dims = [t.group("", [t.f4("Origin", 0.0), t.f4("Scale", scale), t.text("Units", u)])
            for u in units]
    image_tag = t.group("", [
        t.group("ImageData", [
            t.group("Calibrations", [
                t.group("Brightness", [t.f4("Origin", 0.0), t.f4("Scale", 1.0),
                                       t.text("Units", intensity_units)]),
                t.group("Dimension", dims)]),
            t.data("Data", [20, 6, arr.size], arr.tobytes()),
            t.data("DataType", [3], struct.pack("<i", 2)),        # 2: float32
            t.group("Dimensions", [t.data("", [5], struct.pack("<I", d))
                                   for d in arr.shape[::-1]])]),  # DM order: x (columns), y
        t.group("ImageTags", []),
        t.text("Name", name)])
    root = b"\x00\x01" + struct.pack(t.count, 1) + t.group("ImageList", [image_tag])
    size = struct.pack(">Q", len(root)) if t.v4 else struct.pack(">I", len(root) + 8)
    p = Path(path)
    with open(p, "wb") as fh:
        fh.write(struct.pack(">I", version) + size + struct.pack(">I", 1))
        fh.write(root + b"\x00" * 8)
    return p


def write_dm3(path: str | Path, image: np.ndarray) -> Path:
    """Write a 2-D float32 image as a DigitalMicrograph 3 file (uncalibrated axes)."""
    if np.ndim(image) != 2:
        raise ValueError("write_dm3 writes one 2-D image")
    return write_dm(path, image, version=3)


def felix_image_name(stem: str, hkl: Sequence[int]) -> str:
    """Felix's image file name ``<stem>_+h+k+l.dm3`` (signs always written)."""
    return f"{stem}_" + "".join(f"{int(v):+d}" for v in hkl) + ".dm3"


def zolz_reflections(crystal, zone: Sequence[float], n: int, hmax: int = 4
                     ) -> list[tuple[int, int, int]]:
    """The ``n`` shortest allowed reflections g with g·zone = 0 (Friedel pairs together)."""
    zone = np.asarray(zone, float)
    cand = []
    rng = range(-hmax, hmax + 1)
    for h in rng:
        for k in rng:
            for m in rng:
                g = (h, k, m)
                if g == (0, 0, 0) or abs(np.dot(g, zone)) > 1e-9:
                    continue
                if crystal.is_systematically_absent(g):
                    continue
                cand.append((round(float(crystal.lattice.g_length(g)), 9), tuple(-v for v in g),
                             g))
    cand.sort()
    return [c[2] for c in cand[:n]]


def make_felix_folder(folder: str | Path, *, inp: str, cif: str,
                      hkl: Sequence[Sequence[int]], stem: str | None = None,
                      images: dict[tuple[int, int, int], np.ndarray] | None = None) -> Path:
    """A Felix folder: ``felix.inp``, ``felix.cif``, ``felix.hkl`` and optional DM3 images.

    ``hkl`` excludes 000 (Felix adds it); ``images`` maps (h, k, l) (000 included) to
    2R × 2R arrays written as ``<stem>_+h+k+l.dm3``.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / "felix.inp").write_text(inp, encoding="utf-8")
    (d / "felix.cif").write_text(cif, encoding="utf-8")
    (d / "felix.hkl").write_text("".join(f"[{h}, {k}, {m}]\n" for h, k, m in hkl),
                                 encoding="utf-8")
    for g, img in (images or {}).items():
        write_dm3(d / felix_image_name(stem or "X", g), img)
    return d
