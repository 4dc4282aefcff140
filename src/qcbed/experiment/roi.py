"""Regions of interest: where the experiment is compared with the simulation.

A :class:`Region` is a parallelogram in *display* pixels given by three corners
1, 2, 3 and sampling counts (n12, n13): n12 points from corner 1 to corner 2
(inclusive) and n13 from corner 1 to corner 3,

    P[j, i] = c₁ + i/(n12 − 1)·(c₂ − c₁) + j/(n13 − 1)·(c₃ − c₁),

stored as an image with rows j (along 1→3) and columns i (along 1→2). For a
probe (PSF) convolution the grid is extended by ``pad`` samples on every side
(i, j from −pad to n + pad − 1); :meth:`Region.crop` removes them again.

An :class:`ROI` joins data (:class:`~qcbed.experiment.patterns.LACBEDStack` or
:class:`~qcbed.experiment.patterns.CBEDPattern`), an
:class:`~qcbed.experiment.geometry.ExperimentGeometry` and regions. It fixes the
incident k_t of every sample point once (what the engine solves) from the
geometry it is built with, and samples the experiment for any values of the
sampling parameters (rotation, gl, shifts), which move only the experimental
positions. It implements the dataset protocol of :mod:`qcbed.refine.data`
(``hkl``, ``kt``, ``regions``, ``sample``, ``sampling_parameters``,
``disc_index``).

Interpolation: cubic B-splines (``scipy.ndimage.map_coordinates``, order 3,
coefficients computed once per image). Sample points outside the image
(row ∉ [0, H−1] or column ∉ [0, W−1]) or next to a masked pixel (one of the four
pixels around the point is unusable) are **excluded and counted**, never given a
sentinel value: their intensity and variance are NaN and ``valid`` is False.
Variances are interpolated as log σ² and exponentiated, so they stay positive
(a cubic spline of σ² itself can undershoot to ≤ 0 near sharp minima), and
σ² spans orders of magnitude between Bragg lines and background where a
spline in log σ² is also the smoother interpolant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, optimize

from .._core.checks import check_integer
from .._core.parameters import Parameter
from ..errors import InputError
from .copies import copy_groups, copy_multiplicity
from .geometry import ExperimentGeometry
from .grids import RegionGrid, interior_mask
from .patterns import CBEDPattern, LACBEDStack

__all__ = ["ROI", "GeometryFit", "Region", "Samples"]


# ====================================================================== Region
@dataclass(frozen=True)
class Region:
    """A parallelogram of sample points in display pixels.

    Parameters
    ----------
    corners : array_like (3, 2)
        Corners 1, 2, 3 as display (row, col); the region spans 1→2 and 1→3.
    n12, n13 : int
        Sample points along 1→2 and along 1→3, endpoints included (≥ 2).
    pad : int
        Extra samples on every side for a PSF/probe convolution (≥ 0).
    """

    corners: np.ndarray
    n12: int
    n13: int
    pad: int = 0

    def __post_init__(self) -> None:
        c = np.asarray(self.corners, dtype=float)
        if c.shape != (3, 2) or not np.all(np.isfinite(c)):
            raise InputError("a region needs three corners (row, col)", source="Region",
                             tag="corners", expected="(3, 2) finite", found=c.shape)
        e12, e13 = c[1] - c[0], c[2] - c[0]
        if abs(e12[0] * e13[1] - e12[1] * e13[0]) < 1e-12:
            raise InputError("region corners are collinear", source="Region", tag="corners",
                             found=c.tolist())
        for name in ("n12", "n13"):
            check_integer(getattr(self, name), name, low=2, source="Region")
        check_integer(self.pad, "pad", low=0, source="Region")
        c.setflags(write=False)
        object.__setattr__(self, "corners", c)
        object.__setattr__(self, "n12", int(self.n12))
        object.__setattr__(self, "n13", int(self.n13))
        object.__setattr__(self, "pad", int(self.pad))

    @classmethod
    def from_pyextal(cls, region: ArrayLike, pad: int = 0) -> Region:
        """From PyExtal's ``[[r1, c1], [r2, c2], [r3, c3], [n12, n13]]``."""
        a = np.asarray(region, dtype=float)
        if a.shape != (4, 2):
            raise InputError("PyExtal region must be [[r1,c1],[r2,c2],[r3,c3],[n12,n13]]",
                             source="Region.from_pyextal", found=a.shape)
        return cls(a[:3], int(a[3, 0]), int(a[3, 1]), pad)

    @classmethod
    def rectangle(cls, top_left: ArrayLike, size: ArrayLike, samples: ArrayLike,
                  pad: int = 0) -> Region:
        """An axis-aligned rectangle: top-left (row, col), size (rows, cols) in display
        pixels, samples (n_rows, n_cols)."""
        r0, c0 = np.asarray(top_left, dtype=float)
        h, w = np.asarray(size, dtype=float)
        nr, nc = (int(v) for v in np.asarray(samples).reshape(2))
        return cls(np.array([[r0, c0], [r0, c0 + w], [r0 + h, c0]]), nc, nr, pad)

    # ------------------------------------------------------------ grid
    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the padded sample grid: (n13 + 2 pad, n12 + 2 pad)."""
        return (self.n13 + 2 * self.pad, self.n12 + 2 * self.pad)

    @property
    def interior_shape(self) -> tuple[int, int]:
        """(n13, n12)."""
        return (self.n13, self.n12)

    @property
    def size(self) -> int:
        """Number of sample points including the padding."""
        return self.shape[0] * self.shape[1]

    @property
    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Display-pixel steps (row, col) along i (1→2) and along j (1→3)."""
        c = self.corners
        return (c[1] - c[0]) / (self.n12 - 1), (c[2] - c[0]) / (self.n13 - 1)

    def points(self) -> np.ndarray:
        """Display (row, col) of every sample, (rows, cols, 2), padding included."""
        p = self.pad
        j = np.arange(-p, self.n13 + p, dtype=float)
        i = np.arange(-p, self.n12 + p, dtype=float)
        jj, ii = np.meshgrid(j, i, indexing="ij")
        s12, s13 = self.steps
        return self.corners[0] + ii[..., None] * s12 + jj[..., None] * s13

    def interior(self) -> np.ndarray:
        """Boolean (rows, cols): True on the unpadded samples."""
        return interior_mask(self.shape, self.pad)

    def crop(self, values: ArrayLike) -> np.ndarray:
        """Remove the padding: (..., rows, cols) → (..., n13, n12).

        A flat last axis of length ``size`` is accepted and reshaped first.
        """
        v = np.asarray(values)
        if v.shape[-1] == self.size and v.shape[-2:] != self.shape:
            v = v.reshape(v.shape[:-1] + self.shape)
        if v.shape[-2:] != self.shape:
            raise InputError("values do not have the region's padded shape",
                             expected=self.shape, found=v.shape)
        p = self.pad
        return v[..., p:self.shape[0] - p, p:self.shape[1] - p]

    def outline(self) -> np.ndarray:
        """Display (row, col) of the 4 corners (unpadded), closed: (5, 2)."""
        c = self.corners
        return np.array([c[0], c[1], c[1] + c[2] - c[0], c[2], c[0]])


# ====================================================================== samples
@dataclass
class Samples:
    """Experimental values at the sample points for one set of sampling parameters.

    Attributes
    ----------
    intensity, variance : ndarray (n_refl, n_pts)
        Interpolated intensity and variance (> 0); NaN where not valid.
    valid : ndarray (n_refl, n_pts) bool
        Used by the region's disc mask, inside the image and away from masked pixels.
    positions : ndarray (n_refl, n_pts, 2)
        Experimental pixel (row, col) of every sample.
    outside : ndarray (n_refl, n_pts) bool
        Used samples that fall outside the image (excluded).
    masked : ndarray (n_refl, n_pts) bool
        Used samples inside the image next to an unusable pixel (excluded).
    """

    intensity: np.ndarray
    variance: np.ndarray
    valid: np.ndarray
    positions: np.ndarray
    outside: np.ndarray
    masked: np.ndarray

    @property
    def n_outside(self) -> np.ndarray:
        """Excluded samples outside the image, per reflection."""
        return self.outside.sum(axis=1)

    @property
    def n_masked(self) -> np.ndarray:
        """Excluded samples next to masked pixels, per reflection."""
        return self.masked.sum(axis=1)

    @property
    def n_valid(self) -> np.ndarray:
        """Valid samples per reflection."""
        return self.valid.sum(axis=1)


@dataclass
class GeometryFit:
    """Result of :meth:`ROI.fit_geometry`.

    Attributes
    ----------
    values : dict
        Fitted sampling parameters (name → value).
    chi2 : float
        Σ residual² / (n − p) at the optimum (with the closed-form scale/background).
    scale, background : ndarray (n_refl,)
        Per-reflection scale and background of the simulation.
    n_used : int
        Samples in the fit.
    result : scipy.optimize.OptimizeResult
    """

    values: dict[str, float]
    chi2: float
    scale: np.ndarray
    background: np.ndarray
    n_used: int
    result: optimize.OptimizeResult


# ====================================================================== ROI
class ROI:
    """Regions of interest on a CBED pattern or LACBED stack: the refinement dataset.

    Parameters
    ----------
    data : LACBEDStack or CBEDPattern
    regions : Region or sequence of Region
        Parallelograms in display pixels of ``geometry``.
    geometry : ExperimentGeometry, optional
        Default: ``data.geometry``. The incident k_t of the sample points are fixed
        from it (its gl, rotation and tilt0); later values of the sampling parameters
        move only the experimental positions.
    hkl : array_like (n_refl, 3), optional
        Reflections compared. Default: all images of a stack, or ``data.hkl`` of a
        CBED pattern.
    masks : array_like (n_regions, n_refl) of bool, optional
        Which reflections each region uses (default: all).
    refine : iterable of str
        Sampling parameters refined by default (rotation, gl, shift.row, shift.col).
    disc_shifts : iterable of hkl
        Reflections with their own refined disc shift.
    count_copies_once : bool
        Find images of a stack that are exact copies of each other (mirrored or
        rotated: symmetrised data, :func:`qcbed.experiment.copy_groups`) and let a
        refinement count each group of compared copies once (``multiplicity``).
        Default True; False treats every image as an independent measurement.

    Attributes
    ----------
    kt : ndarray (n_pts, 2)
        Incident k_t (Å⁻¹) of all sample points, regions one after the other,
        row-major within a region (padding included).
    regions : list of RegionGrid
        Where each region's points lie in ``kt`` and their image shape.
    hkl : ndarray (n_refl, 3)
    multiplicity : ndarray (n_refl,) int
        Compared images in each reflection's copy group (1: independent).
    last : Samples or None
        The last sampling (counts of excluded points: ``last.n_outside``).
    """

    def __init__(self, data: LACBEDStack | CBEDPattern, regions: Region | Sequence[Region],
                 geometry: ExperimentGeometry | None = None, hkl: ArrayLike | None = None,
                 masks: ArrayLike | None = None, *,
                 refine: Iterable[str] = ("rotation", "gl", "shift.row", "shift.col"),
                 disc_shifts: Iterable[ArrayLike] = (), count_copies_once: bool = True) -> None:
        src = "ROI"
        if not isinstance(data, (LACBEDStack, CBEDPattern)):
            raise InputError("ROI data must be a LACBEDStack or a CBEDPattern", source=src,
                             found=type(data).__name__)
        self.data = data
        geom = geometry if geometry is not None else data.geometry
        if geom is None:
            raise InputError("an ROI needs the pixel ↔ k_t geometry", source=src,
                             tag="geometry", expected="an ExperimentGeometry", found=None)
        if tuple(geom.image_shape) != tuple(data.shape):
            raise InputError("geometry image shape differs from the data", source=src,
                             expected=tuple(data.shape), found=geom.image_shape)
        is_cbed = isinstance(data, CBEDPattern)
        if (geom.mode == "cbed") != is_cbed:
            raise InputError("geometry mode does not match the data", source=src,
                             tag="mode", expected="cbed" if is_cbed else "lacbed",
                             found=geom.mode)
        self.geometry = geom
        if hkl is None:
            hkl = data.hkl
            if hkl is None:
                raise InputError("a CBED ROI needs the reflections (hkl) of its discs",
                                 source=src, tag="hkl")
        h = np.asarray(hkl, dtype=int).reshape(-1, 3)
        self.hkl = h
        if isinstance(data, LACBEDStack):
            self._image_index = np.array([data.index(x) for x in h])
        else:
            self._image_index = np.zeros(len(h), int)
        self.multiplicity = np.ones(len(h), int)
        if count_copies_once and isinstance(data, LACBEDStack) and len(h) > 1:
            self.multiplicity = copy_multiplicity(
                copy_groups(data.images[self._image_index]))
        regs = [regions] if isinstance(regions, Region) else list(regions)
        if not regs or not all(isinstance(r, Region) for r in regs):
            raise InputError("regions must be Region objects (at least one)", source=src,
                             tag="regions")
        self.region_list: list[Region] = regs
        if masks is None:
            m = np.ones((len(regs), len(h)), bool)
        else:
            m = np.asarray(masks, dtype=bool)
            if m.shape != (len(regs), len(h)):
                raise InputError("disc masks must be (n_regions, n_refl)", source=src,
                                 tag="masks", expected=(len(regs), len(h)), found=m.shape)
        self.masks = m
        grids, kts, start = [], [], 0
        for r in regs:
            s12, s13 = r.steps       # image rows run along 1→3, columns along 1→2
            grids.append(RegionGrid(start, r.shape, r.pad,
                                    (float(np.hypot(*s13)), float(np.hypot(*s12)))))
            kts.append(geom.display_to_kt(r.points()).reshape(-1, 2))
            start += r.size
        self.regions: list[RegionGrid] = grids
        self.kt = np.concatenate(kts, axis=0)
        self._region_of_point = np.concatenate(
            [np.full(r.size, k) for k, r in enumerate(regs)])
        self._used = self.masks[self._region_of_point].T          # (n_refl, n_pts)
        self._parameters = geom.sampling_parameters(refine, disc_shifts)
        self._prepare_splines()
        self.last: Samples | None = None

    # ------------------------------------------------------------ set-up
    def _prepare_splines(self) -> None:
        d = self.data
        if isinstance(d, LACBEDStack):
            images, var, mask = d.images, d.variance, d.mask
            used = np.unique(self._image_index)
        else:
            images, var, mask = d.image[None], d.variance()[None], d.mask[None]
            used = np.array([0])
        self._coef: dict[int, np.ndarray] = {}
        self._logvar: dict[int, np.ndarray] = {}
        self._mask: dict[int, np.ndarray] = {}
        for k in used:
            self._coef[int(k)] = ndimage.spline_filter(images[k], order=3, mode="mirror")
            self._logvar[int(k)] = ndimage.spline_filter(np.log(var[k]), order=3,
                                                         mode="mirror")
            self._mask[int(k)] = np.asarray(mask[k], bool)

    # ------------------------------------------------------------ protocol
    @property
    def n_points(self) -> int:
        """Number of sample points (all regions, padding included)."""
        return len(self.kt)

    @property
    def disc_index(self) -> np.ndarray:
        """(n_refl, n_pts) reflection index of every sample (for per-disc backgrounds)."""
        return np.broadcast_to(np.arange(len(self.hkl))[:, None], (len(self.hkl), len(self.kt)))

    def sampling_parameters(self) -> list[Parameter]:
        """Rotation, gl, shifts (and disc shifts) as refinable ``'sampling'`` parameters."""
        return [Parameter(**vars(p)) for p in self._parameters]

    def geometry_at(self, values: Mapping[str, float] | None = None) -> ExperimentGeometry:
        """The geometry with sampling-parameter ``values`` applied."""
        return self.geometry.with_values(values)

    def positions(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """Experimental pixel (row, col) of every sample, (n_refl, n_pts, 2)."""
        geom = self.geometry_at(values)
        return np.stack([geom.kt_to_pixel(self.kt, h) for h in self.hkl])

    def sample_details(self, values: Mapping[str, float] | None = None) -> Samples:
        """Interpolated experimental intensity and variance with the exclusion bookkeeping."""
        pos = self.positions(values)
        n_refl, n_pts = pos.shape[:2]
        hgt, wid = self.data.shape
        tol = 1e-9
        r, c = pos[..., 0], pos[..., 1]
        inside = (r >= -tol) & (r <= hgt - 1 + tol) & (c >= -tol) & (c <= wid - 1 + tol)
        outside = self._used & ~inside
        inten = np.full((n_refl, n_pts), np.nan)
        var = np.full((n_refl, n_pts), np.nan)
        masked = np.zeros((n_refl, n_pts), bool)
        for k in range(n_refl):
            sel = self._used[k] & inside[k]
            if not sel.any():
                continue
            img = int(self._image_index[k])
            rc = np.clip(pos[k, sel], 0.0, [hgt - 1, wid - 1])
            mk = self._mask[img]
            if not mk.all():
                r0 = np.floor(rc[:, 0]).astype(int)
                c0 = np.floor(rc[:, 1]).astype(int)
                r1 = np.minimum(r0 + 1, hgt - 1)
                c1 = np.minimum(c0 + 1, wid - 1)
                ok = mk[r0, c0] & mk[r0, c1] & mk[r1, c0] & mk[r1, c1]
                bad = np.flatnonzero(sel)[~ok]
                masked[k, bad] = True
                sel[bad] = False
                rc = rc[ok]
            if not sel.any():
                continue
            coords = [rc[:, 0], rc[:, 1]]
            inten[k, sel] = ndimage.map_coordinates(self._coef[img], coords, order=3,
                                                    mode="mirror", prefilter=False)
            var[k, sel] = np.exp(ndimage.map_coordinates(self._logvar[img], coords, order=3,
                                                         mode="mirror", prefilter=False))
        valid = self._used & inside & ~masked
        out = Samples(inten, var, valid, pos, outside, masked)
        self.last = out
        return out

    def sample(self, values: Mapping[str, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(intensity, variance, valid), each (n_refl, n_pts), for sampling ``values``.

        The refinement's dataset protocol. Excluded samples are NaN with
        ``valid`` False; their numbers are in ``self.last``.
        """
        s = self.sample_details(values)
        return s.intensity, s.variance, s.valid

    # ------------------------------------------------------------ images
    def _repr_html_(self) -> str:
        """Jupyter view (:func:`qcbed.experiment.notebook.roi_html`)."""
        from .notebook import roi_html

        return roi_html(self)

    def plot(self, hkl: ArrayLike | None = None, **kw):
        """The regions and sample points on the display image
        (:func:`qcbed.experiment.notebook.plot_roi_display`; the raw-pixel view is
        :func:`qcbed.experiment.plots.plot_roi`)."""
        from .notebook import plot_roi_display

        return plot_roi_display(self, hkl, **kw)

    def split(self, values: ArrayLike, crop: bool = True) -> list[np.ndarray]:
        """Per-point arrays (..., n_pts) → one (..., rows, cols) array per region.

        ``crop`` removes the padding (:meth:`Region.crop`).
        """
        v = np.asarray(values)
        if v.shape[-1] != self.n_points:
            raise InputError("values must have one entry per sample point",
                             expected=self.n_points, found=v.shape)
        out = []
        for reg, grid in zip(self.region_list, self.regions):
            block = v[..., grid.start:grid.start + grid.size].reshape(v.shape[:-1] + reg.shape)
            out.append(reg.crop(block) if crop else block)
        return out

    # ------------------------------------------------------------ geometry fit
    def fit_geometry(self, simulated: ArrayLike, names: Sequence[str] = ("rotation", "gl",
                                                                         "shift.row",
                                                                         "shift.col"),
                     start: Mapping[str, float] | None = None, *,
                     loss: str = "linear", max_nfev: int = 200) -> GeometryFit:
        """Least-squares fit of sampling parameters to simulated intensities at ``kt``.

        Minimises Σ (c_g·I_sim + b_g − I_exp)²/σ² over the valid samples, with a
        closed-form scale c_g and background b_g per reflection, by
        ``scipy.optimize.least_squares`` (trust-region reflective) over ``names``.
        Samples that leave the image during the fit get zero residual (they are
        excluded, as everywhere).

        Parameters
        ----------
        simulated : array_like (n_refl, n_pts)
            Simulation at ``self.kt`` for ``self.hkl`` (e.g. probe-convolved).
        names : sequence of str
            Sampling parameters to fit (see :meth:`ExperimentGeometry.with_values`).
        start : mapping, optional
            Start values (default: the ROI geometry's current values).
        loss : str
            ``least_squares`` loss (``'linear'``, ``'soft_l1'``, ...).
        max_nfev : int
            Evaluation limit.
        """
        sim = np.asarray(simulated, dtype=float)
        if sim.shape != (len(self.hkl), self.n_points):
            raise InputError("simulated intensities must be (n_refl, n_pts)",
                             expected=(len(self.hkl), self.n_points), found=sim.shape)
        names = list(names)
        x0 = np.array([(start or {}).get(n, self.geometry.value(n)) for n in names], float)
        scales = np.array([{"rotation": 0.1, "gl": 1e-3 * self.geometry.gl}.get(n, 0.1)
                           for n in names])
        finite_sim = np.isfinite(sim)

        def linear(exp, var, valid):
            c = np.zeros(len(self.hkl))
            b = np.zeros(len(self.hkl))
            for k in range(len(self.hkl)):
                m = valid[k]
                if m.sum() < 3:
                    continue
                w = 1.0 / var[k, m]
                a = np.array([[np.sum(w * sim[k, m] ** 2), np.sum(w * sim[k, m])],
                              [np.sum(w * sim[k, m]), np.sum(w)]])
                y = np.array([np.sum(w * sim[k, m] * exp[k, m]), np.sum(w * exp[k, m])])
                c[k], b[k] = np.linalg.lstsq(a, y, rcond=None)[0]
            return c, b

        def residuals(x):
            vals = dict(zip(names, x0 + x * scales))
            exp, var, valid = self.sample(vals)
            valid = valid & finite_sim
            c, b = linear(exp, var, valid)
            r = (c[:, None] * sim + b[:, None] - exp) / np.sqrt(var)
            return np.where(valid, r, 0.0).ravel()

        res = optimize.least_squares(residuals, np.zeros(len(names)), loss=loss,
                                     max_nfev=max_nfev, x_scale=1.0, method="trf")
        values = dict(zip(names, (x0 + res.x * scales).tolist()))
        exp, var, valid = self.sample(values)
        valid = valid & finite_sim
        c, b = linear(exp, var, valid)
        n_used = int(valid.sum())
        dof = max(n_used - len(names) - 2 * len(self.hkl), 1)
        chi2 = float(np.sum(np.where(valid, (c[:, None] * sim + b[:, None] - exp) ** 2
                                     / var, 0.0)) / dof)
        return GeometryFit(values, chi2, c, b, n_used, res)
