"""Experimental diffraction data with calibration metadata: CBED patterns and LACBED stacks.

* :class:`CBEDPattern`: one recorded CBED pattern (H × W, counts) with its
  detector model, optional background and MTF.
* :class:`LACBEDStack`: one large-angle (LACBED / LARBED / D-LACBED) image per
  reflection, n_refl × H × W, the hkl of every image and per-pixel variance maps.

Images are row-major, row 0 at the top, pixel (r, c) centred at integer
coordinates (see "Experimental geometry" in ``docs/conventions.md``). Both
classes validate their arrays and raise :class:`qcbed.errors.InputError` with the
number and the first locations of bad pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from .detector import DetectorModel, LucyRichardsonResult, lucy_richardson, poisson_variance

if TYPE_CHECKING:
    from ..bloch.grids import TiltGrid
    from .geometry import ExperimentGeometry

__all__ = ["CBEDPattern", "LACBEDStack", "check_pixels"]


def _first(mask: np.ndarray, n: int = 5) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for row in np.argwhere(mask)[:n]]


def check_pixels(data: ArrayLike, source: Any = None, *, clip_negative: bool = False,
                 allow_negative: bool = False, what: str = "pixels") -> np.ndarray:
    """Validate an image or stack: finite values, and no negative pixels unless asked.

    Parameters
    ----------
    data : array_like
        Pixel values (counts).
    source : str or path, optional
        Named in the error message (file or argument).
    clip_negative : bool
        Set negative pixels to 0 (an explicit choice; never done silently).
    allow_negative : bool
        Keep negative pixels as they are (e.g. background-subtracted data).
    what : str
        Word used in messages.

    Returns
    -------
    ndarray (float64)
        A new array (clipped if requested).

    Raises
    ------
    InputError
        NaN/inf pixels (always), or negative pixels when neither option is given; the
        message gives how many and the first few indices.
    """
    kind = np.asarray(data).dtype.kind
    if kind not in "biuf":
        raise InputError(f"{what} must be numbers", source=source,
                         expected="an integer or floating-point array",
                         found=f"dtype {np.asarray(data).dtype}")
    a = np.array(data, dtype=float)
    bad = ~np.isfinite(a)
    if bad.any():
        raise InputError(f"{int(bad.sum())} NaN or infinite {what} (first at {_first(bad)})",
                         source=source, expected="finite values", found=int(bad.sum()))
    neg = a < 0
    if neg.any():
        if clip_negative:
            a[neg] = 0.0
        elif not allow_negative:
            raise InputError(
                f"{int(neg.sum())} negative {what} (first at {_first(neg)}, minimum "
                f"{a.min():g}); pass clip_negative=True to set them to 0 or "
                "allow_negative=True to keep them", source=source, expected="≥ 0",
                found=int(neg.sum()))
    return a


# ====================================================================== CBED
@dataclass
class CBEDPattern:
    """One CBED pattern with its detector model and calibration.

    Parameters
    ----------
    image : array_like (H, W)
        Recorded intensity, counts (background included). Must be finite.
    detector : DetectorModel
        Gain, mixing factor and DQE parameters (default: Poisson, σ² = I).
    background : float or array_like (H, W), optional
        Additive background (counts), e.g. inelastic/diffuse, used by the
        deconvolution and available to the GOF.
    mtf : array_like (H, W), optional
        Detector MTF, real, FFT layout (zero frequency at [0, 0]).
    mask : array_like (H, W) of bool, optional
        Usable pixels (False: beam stop, dead pixels). Default: all usable.
    pixel_size : float, optional
        Calibration, Å⁻¹ per pixel, if known from the file.
    voltage_kv : float, optional
        Accelerating voltage, kV.
    hkl : array_like (n, 3) int, optional
        Reflections whose discs the pattern shows (000 first by convention).
    geometry : ExperimentGeometry, optional
        Pixel ↔ k_t mapping when known.
    source : str, optional
        Where the data came from (file path).
    metadata : dict
        Anything else from the file.
    """

    image: np.ndarray
    detector: DetectorModel = field(default_factory=DetectorModel)
    background: float | np.ndarray | None = None
    mtf: np.ndarray | None = None
    mask: np.ndarray | None = None
    pixel_size: float | None = None
    voltage_kv: float | None = None
    hkl: np.ndarray | None = None
    geometry: ExperimentGeometry | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.source or "CBEDPattern"
        img = np.asarray(self.image, dtype=float)
        if img.ndim != 2 or min(img.shape) < 2:
            raise InputError("a CBED pattern must be a 2-D image", source=src,
                             expected="(H, W), H, W ≥ 2", found=img.shape)
        self.image = check_pixels(img, src, allow_negative=True)
        if self.background is not None:
            bg = np.asarray(self.background, dtype=float)
            if bg.ndim and bg.shape != img.shape:
                raise InputError("background must be a number or an image of the pattern's "
                                 "shape", source=src, tag="background", expected=img.shape,
                                 found=bg.shape)
            self.background = float(bg) if bg.ndim == 0 else check_pixels(
                bg, src, allow_negative=True, what="background pixels")
        if self.mtf is not None:
            m = np.asarray(self.mtf)
            if m.shape != img.shape:
                raise InputError("MTF must have the image shape (FFT layout)", source=src,
                                 tag="mtf", expected=img.shape, found=m.shape)
            if np.iscomplexobj(m) or not np.all(np.isfinite(m)):
                raise InputError("MTF must be a finite real array", source=src, tag="mtf")
            self.mtf = m.astype(float)
        self.mask = (np.ones(img.shape, bool) if self.mask is None
                     else _check_mask(self.mask, img.shape, src))
        if self.hkl is not None:
            self.hkl = _check_hkl(self.hkl, src)
        if self.geometry is not None and tuple(self.geometry.image_shape) != img.shape:
            raise InputError("geometry image shape differs from the pattern", source=src,
                             expected=img.shape, found=self.geometry.image_shape)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.image.shape

    def variance(self, floor: float | None = None) -> np.ndarray:
        """Per-pixel variance σ² = m·g·I/DQE(I) of the recorded image (counts²).

        Parameters
        ----------
        floor : float, optional
            Lower bound (counts²). Default: the variance of one count, σ²(1), so that a
            Poisson detector gives max(I, 1) like :class:`LACBEDStack` and pixels near
            zero counts do not get an unbounded weight (PyExtal clips I at 1).
        """
        f = self.detector.variance(1.0) if floor is None else float(floor)
        return np.maximum(self.detector.variance(self.image), f)

    def _repr_html_(self) -> str:
        """Jupyter view (:func:`qcbed.experiment.notebook.pattern_html`)."""
        from .notebook import pattern_html

        return pattern_html(self)

    def plot(self, **kw: Any):
        """The pattern as a figure (:func:`qcbed.experiment.notebook.plot_pattern`)."""
        from .notebook import plot_pattern

        return plot_pattern(self, **kw)

    def deconvolve(self, mtf: ArrayLike | None = None, **options: Any
                   ) -> tuple[CBEDPattern, LucyRichardsonResult]:
        """Lucy–Richardson deconvolution with the pattern's detector model.

        Parameters
        ----------
        mtf : array_like or callable, optional
            Overrides the pattern's MTF (required when the pattern has none).
        **options
            Passed to :func:`qcbed.experiment.detector.lucy_richardson` (target, rtol,
            max_iter, ...).

        Returns
        -------
        (CBEDPattern, LucyRichardsonResult)
            The restored pattern (background added back, no MTF; its metadata records
            the iterations and final χ²) and the full result.
        """
        h = self.mtf if mtf is None else mtf
        if h is None:
            raise InputError("deconvolution needs an MTF", source=self.source or "CBEDPattern",
                             tag="mtf", expected="an FFT-layout MTF array or a PSF callable",
                             found=None)
        bg = 0.0 if self.background is None else self.background
        res = lucy_richardson(self.image, h, self.detector, bg, **options)
        meta = dict(self.metadata)
        meta["lucy_richardson"] = {"n_iter": res.n_iter, "chi2": res.final_chi2,
                                   "reason": res.reason}
        out = replace(self, image=res.image + bg, mtf=None, metadata=meta)
        return out, res


# ====================================================================== LACBED
@dataclass
class LACBEDStack:
    """One LACBED image per reflection, with variances and (optionally) the k_t geometry.

    Parameters
    ----------
    images : array_like (n_refl, H, W)
        Intensities (counts or consistent arbitrary units); must be finite.
    hkl : array_like (n_refl, 3) int
        Reflection of every image (unique).
    variance : array_like (n_refl, H, W), optional
        Per-pixel variance σ² (same units squared), > 0. Default: Poisson,
        σ² = max(I, variance_floor).
    variance_floor : float
        Floor of the default Poisson variance (> 0).
    mask : array_like (H, W) or (n_refl, H, W) of bool, optional
        Usable pixels. Default: all.
    geometry : ExperimentGeometry, optional
        Pixel ↔ incident k_t mapping (known e.g. for Felix data).
    voltage_kv : float, optional
        Accelerating voltage, kV.
    source : str, optional
        Where the data came from.
    metadata : dict
        Anything else (e.g. the files read).
    """

    images: np.ndarray
    hkl: np.ndarray
    variance: np.ndarray | None = None
    variance_floor: float = 1.0
    mask: np.ndarray | None = None
    geometry: ExperimentGeometry | None = None
    voltage_kv: float | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.source or "LACBEDStack"
        imgs = np.asarray(self.images, dtype=float)
        if imgs.ndim == 2:
            imgs = imgs[None]
        if imgs.ndim != 3 or min(imgs.shape[1:]) < 2:
            raise InputError("a LACBED stack must be (n_refl, H, W)", source=src,
                             tag="images", found=imgs.shape)
        self.images = check_pixels(imgs, src, allow_negative=True)
        self.hkl = _check_hkl(self.hkl, src)
        if len(self.hkl) != len(imgs):
            raise InputError("one hkl per image is needed", source=src, tag="hkl",
                             expected=len(imgs), found=len(self.hkl))
        if not (np.isfinite(self.variance_floor) and self.variance_floor > 0):
            raise InputError("variance floor must be > 0", source=src, tag="variance_floor",
                             found=self.variance_floor)
        if self.variance is None:
            self.variance = poisson_variance(self.images, self.variance_floor)
        else:
            var = np.asarray(self.variance, dtype=float)
            if var.shape != imgs.shape:
                raise InputError("variance maps must have the shape of the images",
                                 source=src, tag="variance", expected=imgs.shape,
                                 found=var.shape)
            bad = ~np.isfinite(var) | (var <= 0)
            if bad.any():
                raise InputError(f"{int(bad.sum())} variance pixels are not positive and "
                                 f"finite (first at {_first(bad)})", source=src,
                                 tag="variance", expected="> 0", found=int(bad.sum()))
            self.variance = var
        if self.mask is not None:
            m = np.asarray(self.mask, dtype=bool)
            if m.shape == imgs.shape[1:]:
                m = np.broadcast_to(m, imgs.shape).copy()
            self.mask = _check_mask(m, imgs.shape, src)
        else:
            self.mask = np.ones(imgs.shape, bool)
        if self.geometry is not None and tuple(self.geometry.image_shape) != imgs.shape[1:]:
            raise InputError("geometry image shape differs from the images", source=src,
                             expected=imgs.shape[1:], found=self.geometry.image_shape)

    # ------------------------------------------------------------ access
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one image."""
        return self.images.shape[1:]

    def __len__(self) -> int:
        return len(self.hkl)

    def index(self, hkl: ArrayLike) -> int:
        """Position of reflection ``hkl`` in the stack.

        Raises
        ------
        InputError
            The reflection has no image.
        """
        h = np.asarray(hkl, dtype=int).reshape(3)
        hits = np.flatnonzero(np.all(self.hkl == h, axis=1))
        if not len(hits):
            raise InputError("no image for this reflection", source=self.source or "LACBEDStack",
                             tag="hkl", found=tuple(int(v) for v in h))
        return int(hits[0])

    def image(self, hkl: ArrayLike) -> np.ndarray:
        """The image of reflection ``hkl`` (H, W)."""
        return self.images[self.index(hkl)]

    def select(self, hkl: ArrayLike) -> LACBEDStack:
        """A stack with the images of the reflections ``hkl`` (n, 3), in that order."""
        idx = [self.index(h) for h in np.asarray(hkl, dtype=int).reshape(-1, 3)]
        return replace(self, images=self.images[idx], hkl=self.hkl[idx],
                       variance=self.variance[idx], mask=self.mask[idx])

    def _repr_html_(self) -> str:
        """Jupyter view (:func:`qcbed.experiment.notebook.stack_html`)."""
        from .notebook import stack_html

        return stack_html(self)

    def plot(self, hkl: ArrayLike | None = None, **kw: Any):
        """Montage of the images (:func:`qcbed.experiment.notebook.plot_stack`)."""
        from .notebook import plot_stack

        return plot_stack(self, hkl, **kw)

    def tilt_grid(self) -> TiltGrid:
        """The incident k_t of every pixel (requires a geometry)."""
        if self.geometry is None:
            raise InputError("the stack has no pixel ↔ k_t geometry",
                             source=self.source or "LACBEDStack", tag="geometry")
        return self.geometry.tilt_grid()


# ====================================================================== helpers
def _check_hkl(hkl: ArrayLike, source: str) -> np.ndarray:
    a = np.asarray(hkl)
    if a.ndim == 1 and a.size == 3:
        a = a.reshape(1, 3)
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError("hkl must be an (n, 3) array", source=source, tag="hkl",
                         found=a.shape)
    af = a.astype(float)
    if not np.all(np.isfinite(af)) or np.any(np.abs(af - np.round(af)) > 1e-9):
        raise InputError("hkl must be integers", source=source, tag="hkl")
    h = np.round(af).astype(int)
    _, first, counts = np.unique(h, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        dup = [tuple(int(v) for v in h[i]) for i, c in zip(first, counts) if c > 1]
        raise InputError(f"{len(dup)} reflections listed more than once", source=source,
                         tag="hkl", found=dup[:5])
    return h


def _check_mask(mask: ArrayLike | None, shape: tuple[int, ...], source: str
                ) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError("mask must have the shape of the data", source=source, tag="mask",
                         expected=tuple(shape), found=m.shape)
    return m.astype(bool)
