"""Virtual images and summary patterns of 4-D datasets, computed block by block.

Detector coordinates are (y, x) in pixels with pixel (i, j) centred at (i, j).
A virtual image integrates every frame over a detector mask; the mask is
either fixed (a bright-field disc, an annulus) or follows a position per tilt
(``center`` of shape ``(scan_y, scan_x, 2)``): with the descan off the direct
beam and every Bragg spot move on the detector with the beam tilt, so an
aperture on a spot must move with it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from .readers import FourDData
from .streaming import Block, map_blocks, per_tilt

#: frames converted to float64 at a time inside a block (bounds temporaries)
_SUB_FRAMES_BYTES = 16 * 2**20


def disc_mask(shape: tuple[int, int], center: ArrayLike, radius: float) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie within ``radius`` of ``center`` (y, x)."""
    return annulus_mask(shape, center, -1.0, radius)


def annulus_mask(shape: tuple[int, int], center: ArrayLike, inner: float, outer: float
                 ) -> np.ndarray:
    """Pixels with inner < distance ≤ outer (pixels) from ``center`` (y, x).

    A negative ``inner`` gives a disc (the centre pixel included).
    """
    if outer <= 0 or outer <= inner:
        raise InputError("annulus needs outer > inner (pixels)", found=(inner, outer))
    cy, cx = (float(v) for v in np.asarray(center, float).reshape(2))
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return (d2 > inner * abs(inner)) & (d2 <= outer**2)


def _sub_blocks(frames: np.ndarray):
    """Slices of a (n, dy, dx) frame stack small enough to convert to float64."""
    per = max(1, _SUB_FRAMES_BYTES // max(1, frames[0].size * 8))
    for i in range(0, len(frames), per):
        yield slice(i, min(len(frames), i + per))


def virtual_image(data: FourDData, mask: np.ndarray, *, progress: bool = False,
                  workers: int = 1) -> np.ndarray:
    """Σ over a fixed detector mask (or weight image) for every tilt → (scan_y, scan_x).

    Parameters
    ----------
    data : FourDData
    mask : ndarray (det_y, det_x), bool or float
        Detector mask or weights.
    """
    m = np.asarray(mask)
    if m.shape != data.detector_shape:
        raise InputError("mask shape differs from the detector", expected=data.detector_shape,
                         found=m.shape)
    w = m.astype(float)
    sel = np.nonzero(w)
    wv = w[sel]

    def func(b: Block) -> np.ndarray:
        fr = b.data.reshape((-1,) + b.data.shape[2:])
        out = np.empty(len(fr))
        for s in _sub_blocks(fr):
            out[s] = fr[s][:, sel[0], sel[1]].astype(float) @ wv
        return out.reshape(b.data.shape[:2])

    return per_tilt(func, data, (), progress=progress, workers=workers, desc="virtual image")


def _moving_image(data: FourDData, center: np.ndarray, inner: float, outer: float,
                  progress: bool, workers: int) -> np.ndarray:
    """Σ over an annulus/disc whose centre moves per tilt (center: (ny, nx, 2))."""
    if center.shape != data.scan_shape + (2,):
        raise InputError("per-tilt centres must have shape (scan_y, scan_x, 2)",
                         expected=data.scan_shape + (2,), found=center.shape)
    w = int(np.ceil(outer)) + 1
    off = np.arange(-w, w + 1)
    dy, dx = data.detector_shape

    def func(b: Block) -> np.ndarray:
        fr = b.data.reshape((-1, dy, dx))
        c = center[b.rows, b.cols].reshape(-1, 2)
        iy = np.rint(c[:, 0]).astype(int)[:, None] + off
        ix = np.rint(c[:, 1]).astype(int)[:, None] + off
        inside = ((iy >= 0) & (iy < dy))[:, :, None] & ((ix >= 0) & (ix < dx))[:, None, :]
        win = fr[np.arange(len(fr))[:, None, None], np.clip(iy, 0, dy - 1)[:, :, None],
                 np.clip(ix, 0, dx - 1)[:, None, :]].astype(float)
        d2 = (iy - c[:, :1])[:, :, None] ** 2 + (ix - c[:, 1:])[:, None, :] ** 2
        m = (d2 > inner * abs(inner)) & (d2 <= outer**2) & inside
        return np.sum(win * m, axis=(1, 2)).reshape(b.data.shape[:2])

    return per_tilt(func, data, (), progress=progress, workers=workers, desc="virtual image")


def _centre_arg(data: FourDData, center: ArrayLike | None) -> np.ndarray:
    if center is None:
        return (np.asarray(data.detector_shape, float) - 1) / 2
    return np.asarray(center, float)


def virtual_bright_field(data: FourDData, radius: float, center: ArrayLike | None = None, *,
                         progress: bool = False, workers: int = 1) -> np.ndarray:
    """Bright-field image: Σ within ``radius`` (px) of ``center`` → (scan_y, scan_x).

    ``center`` is (y, x) (default: detector centre) or per-tilt positions
    ``(scan_y, scan_x, 2)`` (e.g. the direct beam from a tilt calibration).
    """
    return virtual_annular(data, -1.0, radius, center, progress=progress, workers=workers)


def virtual_annular(data: FourDData, inner: float, outer: float,
                    center: ArrayLike | None = None, *, progress: bool = False,
                    workers: int = 1) -> np.ndarray:
    """Annular image: Σ over inner < r ≤ outer (px) around ``center`` → (scan_y, scan_x)."""
    c = _centre_arg(data, center)
    if c.shape == (2,):
        return virtual_image(data, annulus_mask(data.detector_shape, c, inner, outer),
                             progress=progress, workers=workers)
    return _moving_image(data, c, inner, outer, progress, workers)


def virtual_aperture(data: FourDData, center: ArrayLike, radius: float, *,
                     progress: bool = False, workers: int = 1) -> np.ndarray:
    """A virtual aperture of ``radius`` px on any spot (fixed (y, x) or per tilt)."""
    return virtual_bright_field(data, radius, center, progress=progress, workers=workers)


def mean_pattern(data: FourDData, *, progress: bool = False, workers: int = 1) -> np.ndarray:
    """Mean diffraction pattern over all tilts (det_y, det_x), float64."""
    total = None
    for s in map_blocks(lambda b: b.data.sum(axis=(0, 1), dtype=float), data,
                        progress=progress, workers=workers, desc="mean pattern"):
        total = s if total is None else total + s
    return total / float(np.prod(data.scan_shape))


def max_pattern(data: FourDData, *, progress: bool = False, workers: int = 1) -> np.ndarray:
    """Maximum over all tilts of every detector pixel (det_y, det_x)."""
    out = None
    for s in map_blocks(lambda b: b.data.max(axis=(0, 1)), data, progress=progress,
                        workers=workers, desc="max pattern"):
        out = s if out is None else np.maximum(out, s)
    return np.asarray(out)
