"""Compare simulated LACBED images with recorded ones, image by image.

The figure of merit is the one Felix reports for a D-LACBED folder whose
``felix.inp`` asks for ``image_processing = 1`` (Gaussian blur of the
simulation, ``blur_radius`` pixels) and ``correlation_type = 2`` (Pearson
correlation after sub-pixel alignment): the mean over reflections of 1 − ZNCC,
ZNCC the zero-normalised cross-correlation (Pearson's r of the pixel values)
of the blurred, shifted simulation and the experiment. It is scale- and
offset-free, so it compares shapes of the images only; χ² and R of a
refinement (:mod:`qcbed.refine.gof`) compare intensities with their noise.

Definitions used here (written for qcbed from that description, not taken
from Felix's source):

* blur: a Gaussian of standard deviation ``blur_radius`` pixels along rows and
  columns (``scipy.ndimage.gaussian_filter``, edges mirrored);
* alignment: the simulation is shifted by the sub-pixel vector (rows, columns)
  that maximises the ZNCC within ``max_shift`` pixels: the best integer shift
  on the grid −m … m, then the vertex of a quadratic fitted to the 3 × 3 ZNCC
  values around it (clamped to ±1 pixel of it), the image resampled by cubic
  splines (``scipy.ndimage.shift``); the ZNCC is taken over the interior that
  no shift within ``max_shift`` moves across the border.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .gof import zncc


def gaussian_blur(image: np.ndarray, radius_px: float) -> np.ndarray:
    """The image convolved with a Gaussian of standard deviation ``radius_px`` pixels
    (rows and columns; edges mirrored). ``radius_px = 0`` returns a copy."""
    image = np.asarray(image, dtype=float)
    if radius_px < 0 or not np.isfinite(radius_px):
        raise InputError("the blur radius must be a finite number ≥ 0 (pixels)",
                         tag="blur_radius", found=radius_px)
    if radius_px == 0:
        return image.copy()
    return ndimage.gaussian_filter(image, float(radius_px), mode="mirror")


def _interior(shape: tuple[int, int], margin: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[margin:shape[0] - margin, margin:shape[1] - margin] = True
    return m


def aligned_zncc(sim: np.ndarray, exp: np.ndarray, max_shift: float = 2.0,
                 mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """ZNCC of ``sim`` shifted onto ``exp`` by the sub-pixel shift that maximises it.

    Parameters
    ----------
    sim, exp : ndarray (ny, nx)
        Simulated and recorded images on the same pixel grid (NaNs are left out).
    max_shift : float
        Largest shift tried along rows and columns (pixels).
    mask : ndarray of bool (ny, nx), optional
        Pixels that count (default: all; eroded by the alignment margin).

    Returns
    -------
    zncc : float
        In [−1, 1], over the interior ``ceil(max_shift) + 1`` pixels from the border.
    shift : ndarray (2,)
        (rows, columns) in pixels: ``sim`` moved by it matches ``exp``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> img = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(64, 64)), 3)
    >>> z, d = aligned_zncc(img, ndimage.shift(img, (0.3, -0.6), order=3))
    >>> np.round(d, 1).tolist(), round(z, 4)
    ([0.3, -0.6], 1.0)
    """
    sim = np.asarray(sim, float)
    exp = np.asarray(exp, float)
    if sim.shape != exp.shape or sim.ndim != 2:
        raise InputError("the simulated and recorded images differ in shape",
                         expected=exp.shape, found=sim.shape)
    if not (np.isfinite(max_shift) and max_shift >= 0):
        raise InputError("max_shift must be a finite number ≥ 0 (pixels)",
                         tag="max_shift", found=max_shift)
    m = int(np.floor(max_shift))
    margin = int(np.ceil(max_shift)) + 1
    if min(sim.shape) <= 2 * margin + 2:
        raise InputError("the images are too small for that alignment range",
                         expected=f"more than {2 * margin + 2} pixels a side",
                         found=sim.shape)
    inner = _interior(sim.shape, margin)
    valid = np.isfinite(sim) if mask is None else np.asarray(mask, bool) & np.isfinite(sim)
    if not valid.all():
        inner &= ndimage.binary_erosion(valid, iterations=margin, border_value=1)
    fill = float(np.nanmean(sim))
    src = np.where(np.isfinite(sim), sim, fill)

    def score(d: np.ndarray) -> float:
        moved = ndimage.shift(src, d, order=3, mode="nearest")
        return zncc(moved, exp, inner)

    grid = np.full((2 * m + 1, 2 * m + 1), -np.inf)
    for i in range(2 * m + 1):
        for j in range(2 * m + 1):
            grid[i, j] = zncc(np.roll(src, (i - m, j - m), axis=(0, 1)), exp, inner)
    i0, j0 = np.unravel_index(int(np.argmax(grid)), grid.shape)
    best = np.array([i0 - m, j0 - m], float)
    # vertex of the quadratic through the 3 × 3 scores around the integer peak
    nb = np.array([[score(best + (a, b)) for b in (-1, 0, 1)] for a in (-1, 0, 1)])
    z = float(nb[1, 1])
    a, b = np.meshgrid((-1.0, 0.0, 1.0), (-1.0, 0.0, 1.0), indexing="ij")
    basis = np.stack([np.ones(9), a.ravel(), b.ravel(), a.ravel() ** 2,
                      (a * b).ravel(), b.ravel() ** 2], axis=1)
    c, *_ = np.linalg.lstsq(basis, nb.ravel(), rcond=None)
    hess = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    if np.all(np.linalg.eigvalsh(hess) < 0):
        step = np.clip(np.linalg.solve(hess, -c[1:3]), -1.0, 1.0)
        cand = np.clip(best + step, -max_shift, max_shift)
        zc = score(cand)
        if zc > z:
            z, best = zc, cand
    k = int(np.argmax(nb))
    if nb.flat[k] > z:                     # a neighbour beats the vertex (flat peak)
        cand = best + (k // 3 - 1, k % 3 - 1)
        if np.all(np.abs(cand) <= max_shift):
            z, best = float(nb.flat[k]), cand
    return float(z), best


@dataclass
class ImageComparison:
    """Simulated against recorded images, reflection by reflection.

    Attributes
    ----------
    hkl : ndarray (n, 3)
        The reflections compared (those both sets hold).
    thickness : ndarray (n_t,)
        Thicknesses of the simulation (Å).
    zncc : ndarray (n_t, n)
        ZNCC of each reflection's image at each thickness.
    shift : ndarray (n_t, n, 2)
        Alignment of each simulated image (rows, columns; pixels; 0 without alignment).
    blur_radius, max_shift : float
        The blur (pixels) and the alignment range (pixels; 0: not aligned).
    missing : list of tuple
        Reflections of the simulation without a recorded image (not compared).
    """

    hkl: np.ndarray
    thickness: np.ndarray
    zncc: np.ndarray
    shift: np.ndarray
    blur_radius: float
    max_shift: float
    missing: list = field(default_factory=list)

    @property
    def figure_of_merit(self) -> np.ndarray:
        """Mean over reflections of 1 − ZNCC at each thickness (0 = identical shapes)."""
        return np.mean(1.0 - self.zncc, axis=1)

    @property
    def best(self) -> int:
        """Index of the thickness with the smallest figure of merit."""
        return int(np.argmin(self.figure_of_merit))

    @property
    def thickness_at_minimum(self) -> float | None:
        """Thickness (Å) at the vertex of the parabola through the figure of merit at the
        best thickness and its two neighbours, or None when the best one is the first or
        last of the simulated thicknesses (the minimum is not bracketed) or they are not
        increasing."""
        t, f, b = self.thickness, self.figure_of_merit, self.best
        if len(t) < 3 or b in (0, len(t) - 1) or not np.all(np.diff(t) > 0):
            return None
        c2, c1, _ = np.polyfit(t[b - 1:b + 2], f[b - 1:b + 2], 2)
        return float(-c1 / (2 * c2)) if c2 > 0 else None

    def as_dict(self) -> dict:
        """Plain JSON-ready summary (per-reflection values at every thickness)."""
        return {
            "definition": "mean over reflections of 1 - ZNCC (Pearson r of the pixels) "
                          "after a Gaussian blur of the simulation (sigma = blur_radius "
                          "px) and its sub-pixel alignment within max_shift px (0: not "
                          "aligned)",
            "blur_radius_px": self.blur_radius, "max_shift_px": self.max_shift,
            "thickness_A": self.thickness.tolist(),
            "figure_of_merit": self.figure_of_merit.tolist(),
            "best_thickness_A": float(self.thickness[self.best]),
            "thickness_at_minimum_A": self.thickness_at_minimum,
            "reflections": [
                {"hkl": [int(v) for v in h], "zncc": self.zncc[:, i].tolist(),
                 "shift_px": self.shift[:, i].tolist()}
                for i, h in enumerate(self.hkl)],
            "not_compared": [list(h) for h in self.missing],
        }


def compare_images(sim: np.ndarray, sim_hkl: np.ndarray, exp: np.ndarray,
                   exp_hkl: np.ndarray, *, thickness: np.ndarray | None = None,
                   blur_radius: float = 1.0, max_shift: float = 2.0) -> ImageComparison:
    """Compare simulated LACBED images with recorded ones (module docstring).

    Parameters
    ----------
    sim : ndarray (n_t, n_sim, ny, nx) or (n_sim, ny, nx)
        Simulated images (``qcbed simulate``'s ``intensity``), one set per thickness.
    sim_hkl : ndarray (n_sim, 3)
    exp : ndarray (n_exp, ny, nx)
        Recorded images on the same pixel grid.
    exp_hkl : ndarray (n_exp, 3)
    thickness : ndarray (n_t,), optional
        Thicknesses of the simulated sets (Å), for the record.
    blur_radius : float
        Standard deviation of the Gaussian blur of the simulation (pixels; 0: none).
    max_shift : float
        Alignment range (pixels; 0: no alignment, ZNCC over the whole image).

    Returns
    -------
    ImageComparison

    Examples
    --------
    >>> import numpy as np
    >>> a = np.add.outer(np.arange(32.0), np.arange(32.0)) ** 2 % 17
    >>> cmp = compare_images(a[None], [(0, 0, 0)], a[None], [(0, 0, 0)], blur_radius=0.0)
    >>> round(float(cmp.figure_of_merit[0]), 6)
    0.0
    """
    sim = np.asarray(sim, float)
    if sim.ndim == 3:
        sim = sim[None]
    exp = np.asarray(exp, float)
    if sim.ndim != 4 or exp.ndim != 3 or sim.shape[-2:] != exp.shape[-2:]:
        raise InputError("simulated (n_t, n, ny, nx) and recorded (n, ny, nx) images on "
                         "the same pixel grid are needed", expected=exp.shape[-2:],
                         found=sim.shape[-2:])
    sim_hkl = np.asarray(sim_hkl, int).reshape(-1, 3)
    exp_hkl = np.asarray(exp_hkl, int).reshape(-1, 3)
    where = {tuple(h): i for i, h in enumerate(exp_hkl.tolist())}
    pairs = [(i, where[tuple(h)]) for i, h in enumerate(sim_hkl.tolist()) if tuple(h) in where]
    missing = [tuple(h) for h in sim_hkl.tolist() if tuple(h) not in where]
    if not pairs:
        raise InputError("no reflection has both a simulated and a recorded image",
                         expected="common hkl", found=f"{len(sim_hkl)} simulated, "
                         f"{len(exp_hkl)} recorded")
    n_t = sim.shape[0]
    z = np.zeros((n_t, len(pairs)))
    shifts = np.zeros((n_t, len(pairs), 2))
    for t in range(n_t):
        for k, (i, j) in enumerate(pairs):
            valid = np.isfinite(sim[t, i])
            s = gaussian_blur(np.where(valid, sim[t, i], np.nanmean(sim[t, i])), blur_radius)
            if max_shift > 0:
                z[t, k], shifts[t, k] = aligned_zncc(s, exp[j], max_shift, valid)
            else:
                z[t, k] = zncc(s, exp[j], valid)
    th = (np.full(n_t, np.nan) if thickness is None
          else np.asarray(thickness, float).reshape(n_t))
    return ImageComparison(hkl=sim_hkl[[i for i, _ in pairs]], thickness=th, zncc=z,
                           shift=shifts, blur_radius=float(blur_radius),
                           max_shift=float(max_shift), missing=missing)
