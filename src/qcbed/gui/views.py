"""Pure image helpers of the app: view grids, fits, ZNCC, profiles (PNG: experiment.notebook).

Everything here is a small function of arrays (no state), shared by the app's
session (:mod:`qcbed.gui.session`) and its tests.

Coordinates are *display pixels* (row, col) of ``docs/conventions.md`` ("Experimental
geometry"): the app samples the experiment and the simulation on a regular grid of
display pixels and sends the results as images covering the same extent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..experiment.notebook import png_bytes, robust_range

__all__ = ["ViewGrid", "disc_mask", "json_list", "linear_fit", "moments", "parallelogram_mask",
           "png_bytes", "profile", "robust_range", "zncc"]


@dataclass(frozen=True)
class ViewGrid:
    """A rectangle of display pixels sampled on an (ny, nx) grid of cell centres.

    Parameters
    ----------
    extent : (row_lo, row_hi, col_lo, col_hi)
        Outer edges of the rectangle in display pixels (a full-resolution grid of
        ``H × W`` pixels starting at pixel 0 has the extent (−½, H − ½, −½, W − ½)).
    shape : (ny, nx)
        Samples; each covers an equal cell of the rectangle, sampled at its centre.
    """

    extent: tuple[float, float, float, float]
    shape: tuple[int, int]

    @property
    def step(self) -> tuple[float, float]:
        """Display pixels per sample (rows, cols)."""
        r0, r1, c0, c1 = self.extent
        return (r1 - r0) / self.shape[0], (c1 - c0) / self.shape[1]

    def points(self) -> np.ndarray:
        """Display (row, col) of every sample, (ny, nx, 2)."""
        r0, _r1, c0, _c1 = self.extent
        sr, sc = self.step
        rows = r0 + (np.arange(self.shape[0]) + 0.5) * sr
        cols = c0 + (np.arange(self.shape[1]) + 0.5) * sc
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        return np.stack([rr, cc], axis=-1)

    def to_index(self, rc: ArrayLike) -> np.ndarray:
        """Fractional (i, j) sample indices of display points (..., 2)."""
        a = np.asarray(rc, dtype=float)
        sr, sc = self.step
        return np.stack([(a[..., 0] - self.extent[0]) / sr - 0.5,
                         (a[..., 1] - self.extent[2]) / sc - 0.5], axis=-1)

    def coarsened(self, max_side: int) -> ViewGrid:
        """The same extent with at most ``max_side`` samples along the longer side."""
        ny, nx = self.shape
        f = max(1, int(np.ceil(max(ny, nx) / max(int(max_side), 2))))
        return ViewGrid(self.extent, (max(2, int(np.ceil(ny / f))), max(2, int(np.ceil(nx / f)))))


def moments(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None
            ) -> tuple[np.ndarray, ...]:
    """Per leading index over the samples where both are finite (and ``mask``):
    (n, mean a, mean b, Σ(a−ā)², Σ(b−b̄)², Σ(a−ā)(b−b̄)), each (k,).

    One pass of sums; the centred sums follow as Σa² − n·ā² etc. (float64; the
    images are counts or intensities of similar magnitude, far from cancellation).
    """
    x = a.reshape(len(a), -1)
    y = b.reshape(len(b), -1)
    m = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        m &= mask.reshape(len(mask), -1)
    x0 = np.where(m, x, 0.0)
    y0 = np.where(m, y, 0.0)
    n = m.sum(axis=1)
    nn = np.maximum(n, 1)
    mx, my = x0.sum(1) / nn, y0.sum(1) / nn
    sxx = np.maximum(np.einsum("ij,ij->i", x0, x0) - n * mx * mx, 0.0)
    syy = np.maximum(np.einsum("ij,ij->i", y0, y0) - n * my * my, 0.0)
    sxy = np.einsum("ij,ij->i", x0, y0) - n * mx * my
    return n, mx, my, sxx, syy, sxy


def linear_fit(sim: np.ndarray, exp: np.ndarray, mask: np.ndarray | None = None,
               mom: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares scale a and background b of exp ≈ a·sim + b, per leading index.

    Parameters
    ----------
    sim, exp : ndarray (n, ...)
        Simulated and experimental values; NaN are ignored.
    mask : ndarray (n, ...) bool, optional
        Samples to use (default: where both are finite).
    mom : tuple, optional
        :func:`moments` of (sim, exp, mask), when already computed.

    Returns
    -------
    (a, b) : ndarrays (n,)
        a = 0, b = mean(exp) when the simulation is flat; when the least-squares scale
        is negative (anti-correlated images) a = std(exp)/std(sim) instead, so that
        the simulation is shown with its own contrast, never inverted.
    """
    _n, ms, me, vs, ve, cse = mom if mom is not None else moments(sim, exp, mask)
    ok = vs > 0
    den = np.where(ok, vs, 1.0)
    a = np.where(ok, cse / den, 0.0)
    a = np.where(a > 0, a, np.sqrt(ve / den))
    return a, me - a * ms


def zncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None,
         mom: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """Zero-normalised cross-correlation per leading index (NaN-aware), in [−1, 1].

    ZNCC = Σ(a−ā)(b−b̄) / √(Σ(a−ā)² Σ(b−b̄)²) over the samples where both are finite
    (and ``mask``); NaN when fewer than 3 samples or a flat image. ``mom``: the
    :func:`moments` of (a, b, mask) when already computed.
    """
    n, _ma, _mb, saa, sbb, sab = mom if mom is not None else moments(a, b, mask)
    den = np.sqrt(saa * sbb)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip(sab / den, -1.0, 1.0)
    return np.where((n >= 3) & (den > 1e-12 * np.maximum(saa + sbb, 1e-300)), out, np.nan)


def disc_mask(images: np.ndarray, level: float = 0.05) -> np.ndarray:
    """Where each CBED disc window (k, ny, nx) is illuminated: a threshold on the 3 × 3
    median-filtered image at background + ``level``·(bright − background), closed and
    with holes filled.

    Background and bright are the 5th and 99th percentiles of the finite values. Used to
    show and compare the simulation only inside the disc (a CBED window holds
    background around it); LACBED images need none.
    """
    from scipy import ndimage

    out = np.zeros(images.shape, bool)
    for k, im in enumerate(images):
        v = im[np.isfinite(im)]
        if v.size < 9:
            continue
        bg, top = np.percentile(v, [5.0, 99.0])
        sm = ndimage.median_filter(np.where(np.isfinite(im), im, bg), size=3)
        m = ndimage.binary_closing(sm > bg + level * (top - bg), iterations=2)
        out[k] = ndimage.binary_fill_holes(m) & np.isfinite(im)
    return out


def parallelogram_mask(points: np.ndarray, corners: ArrayLike) -> np.ndarray:
    """True where display points (..., 2) lie in the parallelogram of 3 corners (3, 2).

    The parallelogram spans corner 1 → 2 and corner 1 → 3 (as
    :class:`qcbed.experiment.Region`).
    """
    c = np.asarray(corners, dtype=float)
    e = np.stack([c[1] - c[0], c[2] - c[0]], axis=1)        # columns e12, e13
    uv = (np.asarray(points, float) - c[0]) @ np.linalg.inv(e).T
    tol = 1e-9
    return np.all((uv >= -tol) & (uv <= 1 + tol), axis=-1)


def profile(images: np.ndarray, grid: ViewGrid, start: ArrayLike, stop: ArrayLike,
            n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Values of images (k, ny, nx) along a line of display pixels (bilinear).

    Returns
    -------
    (s, values) : distance along the line in display pixels (n,), values (k, n);
        NaN outside the grid.
    """
    from scipy import ndimage

    p0 = np.asarray(start, float)
    p1 = np.asarray(stop, float)
    length = float(np.linalg.norm(p1 - p0))
    if n is None:
        n = int(min(max(2, np.ceil(length / min(grid.step)) * 2 + 1), 2000))
    t = np.linspace(0.0, 1.0, n)
    pts = p0 + t[:, None] * (p1 - p0)
    ij = grid.to_index(pts)
    out = np.full((len(images), n), np.nan)
    inside = ((ij[:, 0] >= -0.5) & (ij[:, 0] <= grid.shape[0] - 0.5)
              & (ij[:, 1] >= -0.5) & (ij[:, 1] <= grid.shape[1] - 0.5))
    for k, im in enumerate(images):
        v = ndimage.map_coordinates(im, ij[inside].T, order=1,
                                    mode="nearest")
        out[k, inside] = v
    return t * length, out


def json_list(a: Any) -> list:
    """An array as a JSON list with NaN → None."""
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float).ravel()]
