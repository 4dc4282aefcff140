"""Synthetic Felix D-LACBED folders for tests: a DM3 writer and a folder builder.

The DM3 layout follows the Gatan DigitalMicrograph version-3 format description
(header: version 3, root length, byte order 1; tag groups ``0x14`` and data tags
``0x15`` with 4-byte big-endian lengths; array data little endian), the same
structure as the DM4 writer of ``tests/test_larbed_readers.py`` with 4-byte
lengths and no per-tag sizes. Written for qcbed; read back by rosettasciio.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["felix_image_name", "make_felix_folder", "write_dm3", "zolz_reflections"]


def _name(name: str) -> bytes:
    b = name.encode()
    return struct.pack(">H", len(b)) + b


def _data(name: str, info: Sequence[int], payload: bytes) -> bytes:
    head = b"%%%%" + struct.pack(">I", len(info)) + b"".join(struct.pack(">I", i) for i in info)
    return b"\x15" + _name(name) + head + payload


def _group(name: str, tags: Sequence[bytes]) -> bytes:
    return b"\x14" + _name(name) + b"\x00\x01" + struct.pack(">I", len(tags)) + b"".join(tags)


def _f4(name: str, v: float) -> bytes:
    return _data(name, [6], struct.pack("<f", v))


def _text(name: str, s: str) -> bytes:
    return _data(name, [20, 4, len(s)], np.array([ord(c) for c in s], "<u2").tobytes())


def write_dm3(path: str | Path, image: np.ndarray) -> Path:
    """Write a 2-D float32 image as a DigitalMicrograph 3 file (uncalibrated axes)."""
    arr = np.ascontiguousarray(image, "<f4")
    if arr.ndim != 2:
        raise ValueError("write_dm3 writes one 2-D image")
    dims = [_group("", [_f4("Origin", 0.0), _f4("Scale", 1.0), _text("Units", "")])
            for _ in range(2)]
    image_tag = _group("", [
        _group("ImageData", [
            _group("Calibrations", [
                _group("Brightness", [_f4("Origin", 0.0), _f4("Scale", 1.0),
                                      _text("Units", "")]),
                _group("Dimension", dims)]),
            _data("Data", [20, 6, arr.size], arr.tobytes()),
            _data("DataType", [3], struct.pack("<i", 2)),        # 2: float32
            _group("Dimensions", [_data("", [5], struct.pack("<I", d))
                                  for d in arr.shape[::-1]])]),  # DM order: x (columns), y
        _group("ImageTags", []),
        _text("Name", "felix")])
    root = b"\x00\x01" + struct.pack(">I", 1) + _group("ImageList", [image_tag])
    p = Path(path)
    with open(p, "wb") as fh:
        fh.write(struct.pack(">I", 3) + struct.pack(">I", len(root) + 8) + struct.pack(">I", 1))
        fh.write(root + b"\x00" * 8)
    return p


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
