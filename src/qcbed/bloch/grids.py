"""Tilt grids: the incident directions of CBED discs, LACBED images and rocking curves.

A :class:`TiltGrid` is a set of tangential wave vectors k_t (Å⁻¹, zone frame)
arranged as an image: ``kt[row, col] = center + (col − c₀)·u + (row − r₀)·v``
with per-pixel step vectors u, v, and a mask of the illuminated pixels.
Images are stored row-major with row 0 at the top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import check_integer, check_number
from .._core.guard import check_memory
from ..errors import InputError

#: Bytes per grid pixel while a grid is built (k_t, mask and meshgrid temporaries).
_GRID_BYTES_PER_PIXEL = 64


def guard_grid(ny: int, nx: int, tag: str = "grid shape", limit: str | float | None = None
               ) -> None:
    """InputError when an ny × nx tilt grid would exceed the memory limit
    (:func:`qcbed._core.guard.check_memory`)."""
    check_memory(float(ny) * float(nx) * _GRID_BYTES_PER_PIXEL,
                 f"a tilt grid of {ny} × {nx} directions", tag=tag, limit=limit,
                 hint="use fewer pixels (samp, image_radius, ROI samples, margin)")


@dataclass(frozen=True)
class TiltGrid:
    """Incident tangential wave vectors on an image grid.

    Attributes
    ----------
    kt : ndarray (ny, nx, 2)
        k_t = (k_x, k_y) in Å⁻¹ (zone frame) of every pixel.
    mask : ndarray (ny, nx) bool
        Illuminated pixels (intensities elsewhere are NaN).
    description : str
        How the grid was made (stored in results files).
    """

    kt: np.ndarray
    mask: np.ndarray
    description: str = ""

    def __post_init__(self) -> None:
        kt = np.asarray(self.kt, dtype=float)
        if kt.ndim != 3 or kt.shape[-1] != 2:
            raise InputError("tilt grid must have shape (ny, nx, 2)", found=kt.shape)
        m = np.asarray(self.mask, dtype=bool)
        if m.shape != kt.shape[:2]:
            raise InputError("tilt-grid mask shape differs from the grid", expected=kt.shape[:2],
                             found=m.shape)
        object.__setattr__(self, "kt", kt)
        object.__setattr__(self, "mask", m)

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return self.kt.shape[:2]

    @property
    def points(self) -> np.ndarray:
        """k_t of the illuminated pixels, (n, 2), in row-major order."""
        return self.kt[self.mask]

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """Scatter per-point values (..., n) into images (..., ny, nx), NaN outside the mask."""
        v = np.asarray(values)
        out = np.full(v.shape[:-1] + self.shape, np.nan, dtype=float)
        out[..., self.mask] = v
        return out

    # ------------------------------------------------------------ constructors
    @classmethod
    def regular(cls, center: ArrayLike, u: ArrayLike, v: ArrayLike, shape: tuple[int, int],
                origin: tuple[float, float] | None = None, mask: np.ndarray | None = None,
                description: str = "") -> TiltGrid:
        """kt[r, c] = center + (c − c₀) u + (r − r₀) v (Å⁻¹); (r₀, c₀) default: the middle."""
        ny, nx = (check_integer(v, f"grid shape[{i}]", low=1) for i, v in enumerate(shape))
        guard_grid(ny, nx)
        r0, c0 = origin if origin is not None else ((ny - 1) / 2, (nx - 1) / 2)
        rr, cc = np.meshgrid(np.arange(ny) - r0, np.arange(nx) - c0, indexing="ij")
        kt = (np.asarray(center, float)[None, None, :] + cc[..., None] * np.asarray(u, float)
              + rr[..., None] * np.asarray(v, float))
        return cls(kt, np.ones(shape, bool) if mask is None else mask, description)

    @classmethod
    def disc(cls, center: ArrayLike, radius: float, samp: int,
             direction: ArrayLike = (1.0, 0.0)) -> TiltGrid:
        """CBED disc: (2·samp+1)² pixels spanning ±radius (Å⁻¹), masked to the disc.

        Columns run along ``direction`` (default +x̂), rows along −(ẑ × direction)
        (image "up" = +ŷ for the default), as PyExtal's ``conv``/``samp`` net.
        """
        samp = check_integer(samp, "samp", low=1)
        radius = check_number(radius, "disc radius", low=0.0, low_open=True, unit="Å⁻¹")
        guard_grid(2 * samp + 1, 2 * samp + 1, tag="samp")
        d = np.asarray(direction, float)
        d = d / np.linalg.norm(d)
        perp = np.array([-d[1], d[0]])
        step = radius / samp
        n = 2 * samp + 1
        rr, cc = np.meshgrid(np.arange(n) - samp, np.arange(n) - samp, indexing="ij")
        mask = rr**2 + cc**2 <= samp**2 + 1e-9
        return cls.regular(center, step * d, -step * perp, (n, n), (samp, samp), mask,
                           f"disc radius={radius:g}/A samp={samp}")

    @classmethod
    def felix(cls, convergence: float, image_radius: int, center: ArrayLike = (0.0, 0.0)
              ) -> TiltGrid:
        """The Felix D-LACBED image grid (2R × 2R pixels, Δ = convergence/R Å⁻¹ per pixel).

        Pixel (row r, column c) ↔ k_x = (R − r + ½)Δ, k_y = −(c − R + ½)Δ in qcbed's
        frame (ẑ = −``incident_beam_direction``, ŷ = ẑ × x̂): Felix writes its images
        with columns along +y of its own frame, z = +``incident_beam_direction``, whose
        y is qcbed's −ŷ (docs/conventions.md, "Felix inputs").
        """
        r = check_integer(image_radius, "image_radius", low=1)
        convergence = check_number(convergence, "convergence_angle", low=0.0, low_open=True,
                                   unit="Å⁻¹")
        guard_grid(2 * r, 2 * r, tag="image_radius")
        delta = convergence / r
        return cls.regular(center, (0.0, -delta), (-delta, 0.0), (2 * r, 2 * r),
                           origin=(r + 0.5, r - 0.5),
                           description=f"felix convergence={convergence:g}/A radius={r}")

    @classmethod
    def line(cls, start: ArrayLike, stop: ArrayLike, n: int) -> TiltGrid:
        """A rocking curve: n points from ``start`` to ``stop`` (Å⁻¹), shape (1, n)."""
        n = check_integer(n, "n", low=1)
        guard_grid(1, n, tag="n")
        t = np.linspace(0.0, 1.0, n)
        a, b = np.asarray(start, float), np.asarray(stop, float)
        kt = (a[None, :] + t[:, None] * (b - a)[None, :])[None]
        return cls(kt, np.ones((1, len(t)), bool), f"line n={n}")

    @classmethod
    def from_points(cls, kt: ArrayLike) -> TiltGrid:
        """Any list of k_t (n, 2) as a (1, n) grid."""
        k = np.atleast_2d(np.asarray(kt, float))
        return cls(k[None], np.ones((1, len(k)), bool), "points")
