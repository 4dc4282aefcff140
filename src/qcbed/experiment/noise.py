"""A variance model estimated from the data, for images that are not in counts.

Processed LACBED/CBED images (gain-normalised, background-subtracted, rescaled,
symmetrised…) no longer hold counts, so σ² = I (Poisson) is wrong by an
unknown factor and χ²_ν loses its meaning. qcbed then models the variance as

    σ²(I) = g·I + σ₀²,                                                  (1)

the shot-noise term of a detector with gain g (intensity units per
electron-equivalent) plus a signal-independent floor σ₀² (read-out noise,
background subtraction; intensity units²) — the low-dose limit of Zuo's DQE
model (:mod:`qcbed.experiment.detector`, δ = 0) with g ↦ m·g·A and
σ₀² ↦ m·g·varB. Both g and σ₀² are estimated from the data themselves.

Local scatter (:func:`estimate_noise`)
    In every image the 3 × 3 kernel D = d ⊗ d with d = (1, −2, 1) (the product
    of the second differences along rows and columns) annihilates every
    polynomial of degree ≤ 2 in (row, col) (and more: any f with
    ∂⁴f/∂r²∂c² = 0), so on a smooth region r = D ⊛ I is noise only, with
    E[r²] = σ² Σ D² = 36 σ² for independent pixel noise (the variance of a
    linear combination; e.g. Immerkær 1996, Comput. Vis. Image Underst. 64,
    300–302, for the same idea with another kernel). Pixels are binned by the
    local level Ī = W ⊛ I with W = D²/36 = [[1, 4, 1], [4, 16, 4], [1, 4, 1]]/36:
    with varying pixel variances E[r²] = Σ D_i² σ_i², so E[r²]/36 = g·E[Ī] + σ₀²
    holds exactly for (1) whatever the signal (a box mean or the centre pixel
    would be lifted or lowered at fringe minima and maxima). Ī and r are
    correlated (ρ = 1/3); binning over intensity ranges much wider than the
    noise makes that immaterial. In every bin the variance is
    estimated robustly as median(r²)/(36 · 0.45494) — 0.45494 is the median of
    χ²₁, so sharp features (edges, HOLZ lines), which leave large |r| in a
    minority of pixels, do not bias it — and (1) is fitted to the bin
    variances by weighted least squares (weights n_bin/σ⁴_bin, the inverse
    variance of a variance estimate).

Fit residuals (:func:`estimate_noise_from_residuals`)
    After a first refinement, the same binned fit of (1) to (I_x − I_model)²
    against the (noise-free) model intensity. This absorbs any misfit of the
    model into the "noise", so χ²_ν ≈ 1 by construction: use it only to
    compare with the scatter estimate (a ratio well above 1 measures misfit,
    not noise).

Correlated pixel noise (interpolated or smoothed images) makes the scatter
estimate too small; the symmetrised Si D-LACBED images (mirror averages) are
still independent pixel by pixel away from the mirror line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from ..errors import InputError

__all__ = [
    "NoiseModel",
    "estimate_noise",
    "estimate_noise_from_residuals",
    "looks_like_counts",
    "scatter_residuals",
    "smoothed_variance",
    "with_estimated_variance",
]

#: Σ D² of the 3 × 3 product kernel (1, −2, 1) ⊗ (1, −2, 1).
KERNEL_NORM = 36.0
#: median of the χ² distribution with one degree of freedom.
MEDIAN_CHI2_1 = 0.454936423119573
#: lag-1 autocorrelation of D ⊛ (white noise) along rows or columns.
WHITE_LAG1 = -2.0 / 3.0
#: D²/36: the weights with which the pixel variances enter E[r²]/36.
LEVEL_KERNEL = np.array([[1.0, 4.0, 1.0], [4.0, 16.0, 4.0], [1.0, 4.0, 1.0]]) / 36.0


@dataclass(frozen=True)
class NoiseModel:
    """σ²(I) = g·I + σ₀² (intensity units², I clipped at 0).

    Attributes
    ----------
    gain : float
        g, intensity units per electron-equivalent (≥ 0).
    floor : float
        σ₀², the variance at zero intensity (intensity units², > 0).
    method : str
        ``'scatter'`` or ``'residuals'``.
    n_used : int
        Pixels (samples) used in the fit.
    bins : ndarray (n_bins, 3)
        Mean intensity, estimated variance and number of pixels of every bin.
    lag1 : (float, float) or None
        Lag-1 autocorrelation of the filtered field r along rows and columns
        (``'scatter'`` only): −2/3 for white pixel noise on smooth signal
        (Σ D(i, j) D(i, j+1) / Σ D² = 6·(−4)/36). A value far from −2/3 means
        correlated pixel noise (smoothed or interpolated images: the estimate
        is too low) or fine structure leaking through the filter (too high).
    """

    @property
    def white(self) -> bool | None:
        """True when ``lag1`` is within 0.1 of the white-noise value −2/3."""
        if self.lag1 is None:
            return None
        return bool(max(abs(v - WHITE_LAG1) for v in self.lag1) <= 0.1)


    gain: float
    floor: float
    method: str = "scatter"
    n_used: int = 0
    bins: np.ndarray | None = None
    lag1: tuple[float, float] | None = None

    def variance(self, intensity: ArrayLike) -> np.ndarray:
        """σ² at ``intensity`` (negative intensities count as 0)."""
        i = np.clip(np.nan_to_num(np.asarray(intensity, float), nan=0.0), 0.0, None)
        return self.gain * i + self.floor

    def as_dict(self) -> dict:
        out = {"model": "sigma2 = gain * I + floor", "gain": float(self.gain),
               "floor": float(self.floor), "method": self.method, "n_used": int(self.n_used)}
        if self.lag1 is not None:
            out.update(lag1_rows=float(self.lag1[0]), lag1_cols=float(self.lag1[1]),
                       lag1_white=WHITE_LAG1, white=self.white)
        return out


def scatter_residuals(image: ArrayLike, valid: ArrayLike | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The second-difference residuals of one image and their local intensities.

    Returns
    -------
    r2 : ndarray
        (D ⊛ I)²/36 at every pixel whose 3 × 3 neighbourhood is valid: an
        unbiased estimate of the pixel variance on smooth (locally quadratic)
        signal.
    mean : ndarray
        Local level Ī = W ⊛ I (weights D²/36, module docstring) at those pixels.
    where : ndarray of bool, image shape
        The pixels used.
    """
    im = np.asarray(image, float)
    if im.ndim != 2 or min(im.shape) < 3:
        raise InputError("noise estimation needs 2-D images of at least 3 x 3 pixels",
                         found=im.shape)
    ok = np.isfinite(im)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    x = np.where(ok, im, 0.0)
    d = np.array([1.0, -2.0, 1.0])
    r = ndimage.correlate(x, np.outer(d, d), mode="constant")
    mean = ndimage.correlate(x, LEVEL_KERNEL, mode="constant")
    where = ndimage.minimum_filter(ok.astype(np.uint8), 3, mode="constant").astype(bool)
    return (r[where] ** 2 / KERNEL_NORM, mean[where], where)


def _fit_binned(level: np.ndarray, r2: np.ndarray, n_bins: int, robust: bool,
                method: str) -> NoiseModel:
    """Fit σ² = g·I + σ₀² to variance estimates ``r2`` binned by ``level``."""
    if len(r2) < 10 * n_bins:
        raise InputError("too few pixels to estimate the noise",
                         expected=f">= {10 * n_bins}", found=len(r2))
    edges = np.unique(np.quantile(level, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for k in range(len(edges) - 1):
        sel = idx == k
        n = int(sel.sum())
        if n < 10:
            continue
        v = (np.median(r2[sel]) / MEDIAN_CHI2_1) if robust else float(np.mean(r2[sel]))
        rows.append((float(np.mean(level[sel])), float(v), n))
    b = np.array(rows)
    if len(b) < 2:
        raise InputError("the intensities span too small a range to estimate the noise",
                         found=len(b))
    i, v, n = b[:, 0], b[:, 1], b[:, 2]
    # weights: a variance estimated from n values has variance ∝ σ⁴/n
    sw = np.sqrt(n) / np.maximum(v, 1e-300)
    a = np.stack([np.clip(i, 0, None), np.ones_like(i)], 1) * sw[:, None]
    (g, s0), *_ = np.linalg.lstsq(a, v * sw, rcond=None)
    if g < 0:  # no signal dependence resolved: a constant variance
        g = 0.0
        s0 = float(np.sum(n * v) / np.sum(n))
    if s0 <= 0:  # floor not resolved: refit the gain alone, floor from the lowest bin
        g = float(np.sum(sw**2 * i * v) / np.sum(sw**2 * i * i))
        s0 = max(float(v[np.argmin(i)] - g * max(i.min(), 0.0)), 1e-6 * float(v.max()))
    return NoiseModel(float(g), float(s0), method, int(n.sum()), b)


def estimate_noise(images: ArrayLike, valid: ArrayLike | None = None, *,
                   n_bins: int = 24) -> NoiseModel:
    """Gain and floor of σ² = g·I + σ₀² from the local scatter of the images.

    Parameters
    ----------
    images : array (n, H, W) or (H, W)
        Intensities (any units).
    valid : bool array, same shape, optional
        Pixels to use (default: the finite ones).
    n_bins : int
        Intensity bins (equal-count) of the fit.

    Returns
    -------
    NoiseModel
        With ``method='scatter'``; see the module docstring for the estimator.
    """
    ims = np.asarray(images, float)
    if ims.ndim == 2:
        ims = ims[None]
    vm = None if valid is None else np.broadcast_to(np.asarray(valid, bool), ims.shape)
    r2s, lv = [], []
    acc = np.zeros((2, 3))  # per axis: Σ r r', Σ r², Σ r'²
    d = np.array([1.0, -2.0, 1.0])
    for k in range(len(ims)):
        r2, mean, where = scatter_residuals(ims[k], None if vm is None else vm[k])
        r2s.append(r2)
        lv.append(mean)
        x = np.where(np.isfinite(ims[k]), ims[k], 0.0)
        r = np.where(where, ndimage.correlate(x, np.outer(d, d), mode="constant"), 0.0)
        for ax in (0, 1):
            a = r[1:] if ax == 0 else r[:, 1:]
            b = r[:-1] if ax == 0 else r[:, :-1]
            both = (a != 0) & (b != 0)
            acc[ax] += (np.sum(a * b * both), np.sum(a * a * both), np.sum(b * b * both))
    nm = _fit_binned(np.concatenate(lv), np.concatenate(r2s), n_bins, True, "scatter")
    with np.errstate(invalid="ignore", divide="ignore"):
        lag = tuple(float(c[0] / np.sqrt(c[1] * c[2])) for c in acc)
    nm = NoiseModel(nm.gain, nm.floor, nm.method, nm.n_used, nm.bins, lag)
    if nm.white is False:
        warnings.warn(f"the local scatter is not white pixel noise (lag-1 autocorrelation "
                      f"{lag[0]:.2f}, {lag[1]:.2f}; white: {WHITE_LAG1:.2f}): correlated noise "
                      "or fine structure bias the estimated gain and floor", UserWarning,
                      stacklevel=2)
    return nm


def estimate_noise_from_residuals(model: ArrayLike, experiment: ArrayLike,
                                  mask: ArrayLike | None = None, *, n_params: int = 0,
                                  n_bins: int = 16) -> NoiseModel:
    """Gain and floor of σ² = g·I + σ₀² from the residuals of a fit.

    Parameters
    ----------
    model, experiment : arrays, same shape
        Fitted model (scale and background applied) and data.
    mask : bool array, optional
        Samples used in the fit.
    n_params : int
        Fitted parameters: the mean squared residual is scaled by n/(n − p).
    n_bins : int

    Notes
    -----
    Any misfit is counted as noise (module docstring).
    """
    m = np.asarray(model, float)
    x = np.asarray(experiment, float)
    sel = np.isfinite(m) & np.isfinite(x)
    if mask is not None:
        sel &= np.asarray(mask, bool)
    n = int(sel.sum())
    corr = n / max(n - n_params, 1)
    nm = _fit_binned(m[sel], (x[sel] - m[sel]) ** 2 * corr, n_bins, False, "residuals")
    return nm


def looks_like_counts(images: ArrayLike, *, tol: float = 1e-6) -> bool:
    """True when the finite pixels are non-negative integers (raw counts).

    Gain-normalised, background-subtracted or rescaled images (floats, negative
    values) are not counts, and Poisson variances do not apply to them.
    """
    a = np.asarray(images, float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return False
    return bool(a.min() >= 0 and np.all(np.abs(a - np.round(a)) <= tol * np.maximum(1.0, a)))


def smoothed_variance(images: ArrayLike, noise: NoiseModel) -> np.ndarray:
    """Variance maps σ²(Ī) of images, at the 3 × 3 mean intensity Ī of every pixel.

    Evaluating (1) at the local mean rather than at the noisy pixel value
    avoids most of the bias of data-derived weights (low pixels weighted up).
    """
    ims = np.asarray(images, float)
    flat = ims.reshape((-1,) + ims.shape[-2:])
    out = np.empty_like(flat)
    for k, im in enumerate(flat):
        ok = np.isfinite(im)
        s = ndimage.uniform_filter(np.where(ok, im, 0.0), 3, mode="nearest")
        w = ndimage.uniform_filter(ok.astype(float), 3, mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(w > 0, s / w, 0.0)
        out[k] = noise.variance(mean)
    return out.reshape(ims.shape)


def with_estimated_variance(stack, *, n_bins: int = 24):
    """A LACBED stack whose variance maps follow the noise model estimated from its images.

    Parameters
    ----------
    stack : LACBEDStack
    n_bins : int
        Intensity bins of :func:`estimate_noise`.

    Returns
    -------
    (LACBEDStack, NoiseModel)
        The stack (``variance`` = σ²(Ī) of :func:`smoothed_variance`, the model in
        ``metadata['noise_model']``) and the model.
    """
    from dataclasses import replace

    mask = np.asarray(stack.mask, bool)
    nm = estimate_noise(stack.images, mask, n_bins=n_bins)
    var = smoothed_variance(np.where(mask, stack.images, np.nan), nm)
    var = np.where(np.isfinite(var) & (var > 0), var, nm.floor)
    return replace(stack, variance=var,
                   metadata={**stack.metadata, "noise_model": nm.as_dict()}), nm
