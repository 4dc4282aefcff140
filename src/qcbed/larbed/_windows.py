"""Small square windows around sub-pixel spot positions, gathered for many frames at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Windows:
    """Pixels around one spot in each of n frames.

    Attributes
    ----------
    values : ndarray (n, w, w) float64
        Pixel values (0 outside the detector).
    valid : ndarray (n, w, w) bool
        Inside the detector and not a bad pixel.
    dist2 : ndarray (n, w, w)
        Squared distance (px²) of each pixel centre from the exact spot position.
    ry, rx : ndarray (n, w), (n, w)
        Pixel-centre offsets from the spot position along y and x (px).
    """

    values: np.ndarray
    valid: np.ndarray
    dist2: np.ndarray
    ry: np.ndarray
    rx: np.ndarray


def gather(frames: np.ndarray, centres: np.ndarray, half: int,
           good: np.ndarray | None = None) -> Windows:
    """Windows of (2·half+1)² pixels around ``centres`` (n, 2) (y, x) in ``frames`` (n, dy, dx).

    The window is centred on the pixel nearest to each position; pixels outside
    the detector (or flagged bad in ``good`` (dy, dx)) are marked invalid.
    Non-finite positions give all-invalid windows.
    """
    n, dy, dx = frames.shape
    c = np.asarray(centres, float)
    finite = np.all(np.isfinite(c), axis=1)
    c = np.where(finite[:, None], c, -1e6)
    off = np.arange(-half, half + 1)
    iy = np.rint(c[:, 0]).clip(-1e6, 1e6).astype(np.int64)[:, None] + off
    ix = np.rint(c[:, 1]).clip(-1e6, 1e6).astype(np.int64)[:, None] + off
    iny = (iy >= 0) & (iy < dy)
    inx = (ix >= 0) & (ix < dx)
    valid = iny[:, :, None] & inx[:, None, :] & finite[:, None, None]
    cy = np.clip(iy, 0, dy - 1)
    cx = np.clip(ix, 0, dx - 1)
    vals = frames[np.arange(n)[:, None, None], cy[:, :, None], cx[:, None, :]].astype(float)
    if good is not None:
        valid &= good[cy[:, :, None], cx[:, None, :]]
    valid &= np.isfinite(vals)
    vals = np.where(valid, vals, 0.0)
    ry = iy - c[:, :1]
    rx = ix - c[:, 1:]
    d2 = ry[:, :, None] ** 2 + rx[:, None, :] ** 2
    return Windows(vals, valid, d2, ry.astype(float), rx.astype(float))
