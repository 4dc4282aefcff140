"""The correlation length of the pixel noise, and the ROI sample step it implies.

Samples closer together than the noise's correlation length do not add
independent information: their noise is (partly) the same. Processed images
(gain-normalised, interpolated, symmetrised, smoothed) and detectors with a
point-spread function have pixel noise that is correlated over a few pixels;
sampling them at every pixel multiplies the cost of a refinement without
adding independent measurements (and makes the χ² of independent samples
count the same noise several times).

Estimator. The 3 × 3 second-difference kernel D = (1, −2, 1) ⊗ (1, −2, 1) (the
one of :mod:`qcbed.experiment.noise`) annihilates locally quadratic signal, so
the filtered field r = D ⊛ I is noise on smooth regions. The noise is modelled
as white noise blurred by a separable Gaussian of widths (σ_r, σ_c) pixels.
For such noise the normalised autocorrelation of r along an axis at lag k is
that of the 1-D kernel d ⊛ g_σ (d = (1, −2, 1), g_σ the sampled Gaussian):
−2/3, 1/6, 0, … for white noise (σ = 0), changing monotonically with σ. σ_r and
σ_c are fitted (least squares over lags 1–4) to the measured autocorrelations
of r along rows and columns, pooled over the images. Pixels whose |r| exceeds 3
robust standard deviations (1.4826 · median |r|) — edges, HOLZ lines, fine
structure that D does not annihilate — are left out of the sums; the
autocorrelations are measured image by image and their median over the images
is fitted (strong, finely structured images leak signal into r, which shows as
positive correlation; weak, noise-dominated ones do not).

Rule. The noise autocorrelation is then ρ(k, l) = ρ_r(k) ρ_c(l) with ρ_σ the
normalised autocorrelation of g_σ, and its *correlation area*
A = Σ_{k,l} ρ(k, l)² (pixels²; the number of pixels per independent noise
value: for a Gaussian random field the variance of a mean over a large area S
is σ² A / S; cf. the "effective number of independent samples", Bartlett 1946,
and the resolution element of a smoothed field, Worsley et al. 1992). White
noise has A = 1. The correlation length is √A: samples closer together share
noise. The ROI step is the smallest whole number of pixels not shorter than
the correlation length, s = ⌈√A⌉ with √A first rounded to one decimal (so that
white noise, A = 1 up to the estimate's scatter, gives s = 1): at most one
sample per correlation area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from ..errors import InputError

__all__ = ["NoiseCorrelation", "noise_correlation", "roi_step"]

#: Lags (pixels) of the fit.
LAGS = (1, 2, 3, 4)
#: Blur widths (σ, pixels) searched.
_SIGMAS = np.round(np.arange(0.0, 6.0001, 0.01), 2)


def _gauss(sigma: float) -> np.ndarray:
    """Sampled, normalised 1-D Gaussian (σ in pixels; σ = 0: the identity)."""
    if sigma <= 0:
        return np.ones(1)
    r = int(np.ceil(5 * sigma))
    x = np.arange(-r, r + 1, dtype=float)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _acf(kernel: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of a 1-D kernel at lags 0, 1, 2, …"""
    full = np.correlate(kernel, kernel, mode="full")
    mid = len(kernel) - 1
    return full[mid:] / full[mid]


def _model_lags() -> np.ndarray:
    """(n_sigma, n_lags) autocorrelation of d ⊛ g_σ at :data:`LAGS`."""
    d = np.array([1.0, -2.0, 1.0])
    out = np.zeros((len(_SIGMAS), len(LAGS)))
    for i, s in enumerate(_SIGMAS):
        a = _acf(np.convolve(d, _gauss(float(s))))
        out[i] = [a[k] if k < len(a) else 0.0 for k in LAGS]
    return out


def correlation_area(sigma_r: float, sigma_c: float) -> float:
    """A = Σ_{k,l} ρ(k, l)² (pixels²) of white noise blurred by Gaussians (σ_r, σ_c) px."""
    out = 1.0
    for s in (sigma_r, sigma_c):
        a = _acf(_gauss(float(s)))
        out *= float(a[0] ** 2 + 2.0 * np.sum(a[1:] ** 2))
    return out


@dataclass(frozen=True)
class NoiseCorrelation:
    """What :func:`noise_correlation` measured.

    Attributes
    ----------
    sigma : (σ_r, σ_c)
        Gaussian blur widths of the pixel noise (pixels) along rows and columns.
    measured, model : (2, n_lags)
        Autocorrelation of the second-difference field at :data:`LAGS`, measured and
        of the fitted blur (rows first).
    area : float
        Correlation area A (pixels²).
    step : int
        Sample step ⌈√A⌉ (√A rounded to one decimal first; pixels, ≥ 1).
    n_used : int
        Pixels of the filtered field used.
    """

    sigma: tuple[float, float]
    measured: np.ndarray
    model: np.ndarray
    area: float
    step: int
    n_used: int

    def reason(self) -> str:
        """One line for a project comment."""
        m = self.measured
        return (f"pixel-noise correlation: blur sigma = {self.sigma[0]:.2f}, "
                f"{self.sigma[1]:.2f} px (rows, cols; second-difference lag-1 "
                f"autocorrelation {m[0, 0]:.2f}, {m[1, 0]:.2f}, white noise -0.67), "
                f"correlation area A = {self.area:.2f} px^2, correlation length "
                f"sqrt(A) = {np.sqrt(self.area):.2f} px: samples closer than that share "
                f"noise; one sample every ceil(sqrt(A)) = {self.step} px")

    def as_dict(self) -> dict:
        return {"sigma_px": list(self.sigma), "area_px2": self.area, "step": self.step,
                "lags": list(LAGS), "measured": self.measured.tolist(),
                "model": self.model.tolist(), "n_used": self.n_used}


def noise_correlation(images: ArrayLike, valid: ArrayLike | None = None
                      ) -> NoiseCorrelation:
    """Correlation length of the pixel noise of images and the ROI step it implies.

    Parameters
    ----------
    images : array (n, H, W) or (H, W)
        Intensities (any units).
    valid : bool array, same shape, optional
        Pixels to use (default: the finite ones).

    Returns
    -------
    NoiseCorrelation
        See the module docstring for the estimator and the rule.
    """
    ims = np.asarray(images, float)
    if ims.ndim == 2:
        ims = ims[None]
    if ims.ndim != 3 or min(ims.shape[1:]) < 3 + 2 * max(LAGS):
        raise InputError("noise correlation needs 2-D images of at least 11 x 11 pixels",
                         found=ims.shape)
    vm = np.isfinite(ims)
    if valid is not None:
        vm &= np.broadcast_to(np.asarray(valid, bool), ims.shape)
    d = np.array([1.0, -2.0, 1.0])
    kern = np.outer(d, d)
    per_image = []
    n_used = 0
    for im, ok in zip(ims, vm):
        r = ndimage.correlate(np.where(ok, im, 0.0), kern, mode="constant")
        use = ndimage.minimum_filter(ok.astype(np.uint8), 3, mode="constant").astype(bool)
        if use.sum() < 100:
            continue
        scale = 1.4826 * float(np.median(np.abs(r[use])))
        if scale > 0:
            use &= np.abs(r) <= 3.0 * scale
        acc = np.zeros((2, len(LAGS), 3))  # axis, lag: Σ a b, Σ a², Σ b²
        rz = np.where(use, r, 0.0)
        for ax in (0, 1):
            for j, k in enumerate(LAGS):
                a = rz[k:] if ax == 0 else rz[:, k:]
                b = rz[:-k] if ax == 0 else rz[:, :-k]
                both = (a != 0) & (b != 0)
                acc[ax, j] = (np.sum(a * b * both), np.sum(a * a * both),
                              np.sum(b * b * both))
        if np.all(acc[..., 1] > 0) and np.all(acc[..., 2] > 0):
            per_image.append(acc[..., 0] / np.sqrt(acc[..., 1] * acc[..., 2]))
            n_used += int(use.sum())
    if not per_image:
        raise InputError("too few usable pixels to measure the noise correlation",
                         expected="an image with ≥ 100 pixels with a valid 3 x 3 "
                         "neighbourhood", found=n_used)
    # the median over images: fine structure that leaks through D in the strong images
    # (positive correlation) does not decide it
    measured = np.median(np.array(per_image), axis=0)
    table = _model_lags()
    sig = []
    for ax in (0, 1):
        i = int(np.argmin(np.sum((table - measured[ax]) ** 2, axis=1)))
        sig.append(float(_SIGMAS[i]))
    area = correlation_area(*sig)
    model = np.array([table[int(np.rint(s / 0.01))] for s in sig])
    return NoiseCorrelation(sigma=(sig[0], sig[1]), measured=measured, model=model,
                            area=area, step=max(1, int(np.ceil(round(np.sqrt(area), 1)))),
                            n_used=n_used)


def roi_step(step: int | str, images: ArrayLike, valid: ArrayLike | None = None,
             unit: str = "px") -> tuple[int, str]:
    """An ROI sample step: ``step`` itself (an integer ≥ 1) or, for ``'auto'``, the one
    :func:`noise_correlation` gives for ``images``; with the reason (one line, empty for a
    given step) for a project comment. ``unit`` names the step in that line."""
    if isinstance(step, str) and step == "auto":
        nc = noise_correlation(images, valid)
        return nc.step, "roi_step = 'auto': " + nc.reason().replace(" px", f" {unit}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise InputError("roi_step must be 'auto' or an integer ≥ 1", tag="roi_step",
                         found=step)
    return int(step), ""
