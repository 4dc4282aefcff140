"""Detector model, per-pixel variances and Lucy–Richardson deconvolution.

Noise model (one model, used everywhere in qcbed)
-------------------------------------------------
The detective quantum efficiency of a detector recording I counts in a pixel
is (Zuo 2000, Microsc. Res. Tech. 49, 245–268)

    DQE(I) = 1 / (A + δ·I + varB/I),

with the excess-noise term A = 1 + F + 1/(m G) (F: Fano-like gain variance of
the scintillator, G: conversion gain), δ the squared fractional error of the
gain reference (flat field) and varB the read-out/background variance term.
The per-pixel variance of the recorded intensity is

    σ²(I) = m·g·I / DQE(I) = m·g·(A·I + δ·I² + varB)        (counts²),

with g the gain (counts per electron) and m the mixing factor (the reduction of
the per-pixel variance by the point-spread function, from the measured MTF).
The expanded right-hand form is what qcbed evaluates: it is finite at I = 0,
where σ²(0) = m·g·varB (the read-out floor), so no clipping of I at 1 count is
needed (PyExtal clips). Negative intensities (noise after a background
subtraction) are evaluated as I = 0.

Units: I in counts; A dimensionless; δ in 1/count; varB in counts (so that
δ·I and varB/I are dimensionless, as in the DQE formula). A pure-Poisson
detector is ``DetectorModel()``: g = m = A = 1, δ = varB = 0, σ² = I.

*Reconciliation with PyExtal* (pyextal-notes §3.2 item 12): PyExtal's
Lucy–Richardson code reports χ² with σ² = m·g·I/DQE(I) while its
``Chi2_const`` uses g·I + m·g·(1/DQE − 1), which is not even dimensionally
consistent. qcbed uses σ² = m·g·I/DQE(I) (the form of the seed paper's eq. 2)
for the variance maps, for the GOF variances built from them, for the χ²
stopping rule of the deconvolution and — through its shifted-Poisson form,
below — for the Lucy–Richardson update itself.

Lucy–Richardson deconvolution
-----------------------------
Richardson (1972), J. Opt. Soc. Am. 62, 55–59; Lucy (1974), Astron. J. 79,
745–754. With blur 𝓗 (periodic convolution, 𝓗1 = 1), known background b and
data d, the maximum-likelihood update for Poisson data is

    u ← u · 𝓗ᵀ[ d / (𝓗u + b) ].

The detector is not Poisson, but near low intensity its variance is
σ²(I) ≈ κ (I + s) with κ = m·g·A and s = varB/A; then (d + s)/κ is
approximately Poisson with mean (𝓗u + b + s)/κ (the read-noise correction of
Snyder, Hammoud & White 1993, J. Opt. Soc. Am. A 10, 1014–1023). The update is
invariant to the factor κ, so qcbed iterates

    u ← u · 𝓗ᵀ[ (d + s) / (𝓗u + b + s) ],     s = varB / A      (counts).

(PyExtal adds m·g·varB, a variance in counts², to intensities in counts.)

**Stopping rule.** After every iteration the reduced χ² of the re-blurred
estimate against the data,

    χ²_ν = (1/N) Σ_pixels (d − 𝓗u − b)² / σ²(𝓗u + b),

is computed with the detector variance of the model. Iterating longer fits the
noise (χ²_ν → below 1); the iteration stops at the first estimate with
χ²_ν ≤ ``target`` (default 1: the discrepancy principle), when χ²_ν stops
decreasing by more than ``rtol`` relative per iteration, or after
``max_iter`` iterations. The reason is reported.

LARBED variances
----------------
See :func:`larbed_variance` (seed paper §2.2 eq. 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError

__all__ = [
    "DetectorModel",
    "LucyRichardsonResult",
    "blur",
    "larbed_variance",
    "lucy_richardson",
    "poisson_variance",
    "transfer_function",
]


# ====================================================================== model
@dataclass(frozen=True)
class DetectorModel:
    """Gain, mixing factor and DQE parameters of a detector (Zuo 2000).

    Parameters
    ----------
    gain : float
        g, counts per incident electron (> 0).
    mixing : float
        m, mixing factor from the MTF (0 < m ≤ 1 for a PSF that spreads the signal;
        dimensionless).
    read_variance : float
        varB, read-out/background variance term of the DQE, in counts (≥ 0). The
        variance of a pixel without signal is m·g·varB counts².
    gain_ref_error : float
        δ, squared fractional error of the gain reference, in 1/count (≥ 0).
    excess_noise : float
        A = 1 + F + 1/(mG), dimensionless (> 0).

    Notes
    -----
    DQE(I) = 1/(A + δ·I + varB/I) and σ²(I) = m·g·I/DQE(I) (see the module
    docstring for units and the reconciliation with PyExtal).
    """

    gain: float = 1.0
    mixing: float = 1.0
    read_variance: float = 0.0
    gain_ref_error: float = 0.0
    excess_noise: float = 1.0

    def __post_init__(self) -> None:
        checks = (("gain", self.gain, lambda v: v > 0, "> 0 counts per electron"),
                  ("mixing", self.mixing, lambda v: v > 0, "> 0"),
                  ("read_variance", self.read_variance, lambda v: v >= 0, "≥ 0 counts"),
                  ("gain_ref_error", self.gain_ref_error, lambda v: v >= 0, "≥ 0 per count"),
                  ("excess_noise", self.excess_noise, lambda v: v > 0, "> 0"))
        for name, value, ok, expected in checks:
            v = float(value)
            if not (np.isfinite(v) and ok(v)):
                raise InputError("bad detector parameter", source="DetectorModel", tag=name,
                                 expected=expected, found=value)
            object.__setattr__(self, name, v)

    # ------------------------------------------------------------ PyExtal
    @classmethod
    def from_pyextal_dtpar(cls, dtpar: ArrayLike) -> DetectorModel:
        """From PyExtal's positional ``dtpar = [varB, δ, A, g, m]``.

        Example: PyExtal's CBED example uses ``[3.15, 4e-5, 1.2, 2.2, 0.111]``.
        """
        v = np.asarray(dtpar, dtype=float).ravel()
        if v.shape != (5,):
            raise InputError("dtpar must hold five numbers [varB, δ, A, g, m]",
                             source="dtpar", expected=5, found=v.size)
        var_b, delta, a, g, m = (float(x) for x in v)
        return cls(gain=g, mixing=m, read_variance=var_b, gain_ref_error=delta,
                   excess_noise=a)

    def to_pyextal_dtpar(self) -> list[float]:
        """PyExtal's ``[varB, δ, A, g, m]``."""
        return [self.read_variance, self.gain_ref_error, self.excess_noise, self.gain,
                self.mixing]

    # ------------------------------------------------------------ noise
    def dqe(self, intensity: ArrayLike) -> np.ndarray:
        """DQE(I) = 1/(A + δ·I + varB/I) = I/(A·I + δ·I² + varB), I in counts.

        I ≤ 0 gives 0 when varB > 0 (no signal, only read-out noise), else 1/A.
        """
        i = np.maximum(np.asarray(intensity, dtype=float), 0.0)
        den = self.excess_noise * i + self.gain_ref_error * i * i + self.read_variance
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, i / np.where(den > 0, den, 1.0), 1.0 / self.excess_noise)
        return out

    def variance(self, intensity: ArrayLike) -> np.ndarray:
        """σ²(I) = m·g·I/DQE(I) = m·g·(A·I + δ·I² + varB), counts² (I < 0 taken as 0)."""
        i = np.maximum(np.asarray(intensity, dtype=float), 0.0)
        return self.mixing * self.gain * (self.excess_noise * i + self.gain_ref_error * i * i
                                          + self.read_variance)

    @property
    def read_floor(self) -> float:
        """σ²(0) = m·g·varB, counts²."""
        return self.mixing * self.gain * self.read_variance

    @property
    def poisson_shift(self) -> float:
        """s = varB/A (counts): (I + s)/(m·g·A) is approximately Poisson (Snyder et al. 1993)."""
        return self.read_variance / self.excess_noise


def poisson_variance(intensity: ArrayLike, floor: float = 1.0) -> np.ndarray:
    """σ² = max(I, floor) (counts²): Poisson statistics with a floor for I ≲ 0.

    Parameters
    ----------
    intensity : array_like
        Counts.
    floor : float
        Smallest variance returned (> 0), counts².
    """
    if not (np.isfinite(floor) and floor > 0):
        raise InputError("variance floor must be > 0", tag="floor", found=floor)
    return np.maximum(np.asarray(intensity, dtype=float), float(floor))


# ====================================================================== LARBED
def larbed_variance(integrated: ArrayLike, n_peak: ArrayLike, n_background: ArrayLike,
                    background_mean: ArrayLike, background_std: ArrayLike | None,
                    detector: DetectorModel) -> np.ndarray:
    """Variance of a background-subtracted, integrated LARBED intensity (seed paper eq. 3).

    The LARBED intensity of a reflection at one beam tilt is
    I = Σ_peak pixels − N_p·Ī_b, the sum over the N_p pixels of the Bragg peak minus
    the mean background Ī_b (estimated from N_b background pixels) times N_p. Its
    variance is taken as

        σ²(I) = m·g·I/DQE(I)  +  N_p·σ_b²·(1 + N_p/N_b)          (counts²),

    * first term: the integrated-intensity term, the detector model of the CBED case
      (:meth:`DetectorModel.variance`; Zuo 2000; for a direct electron detector with a
      constant DQE, e.g. 0.94 for the EMPAD at 300 kV (Tate et al. 2016, Microsc.
      Microanal. 22, 237–249), use ``DetectorModel(gain=g, mixing=m,
      excess_noise=1/0.94)``);
    * second term: the background subtraction, from the standard deviation σ_b of the
      background pixels: N_p·σ_b² is the background noise inside the peak area and
      N_p²·σ_b²/N_b the variance of the subtracted estimate N_p·Ī_b.

    The seed paper's printed equation was lost in extraction; this is the standard
    aperture-photometry form with its two terms as the paper describes them. When
    ``background_std`` is None, σ_b² is the detector variance at the mean background,
    σ²(Ī_b) (this is where Ī_b enters).

    Parameters
    ----------
    integrated : array_like
        I, background-subtracted integrated intensity (counts); may be negative (then
        the first term is σ²(0)).
    n_peak : array_like
        N_p, number of pixels integrated (≥ 1).
    n_background : array_like
        N_b, number of background pixels (≥ 1).
    background_mean : array_like
        Ī_b, mean background per pixel (counts).
    background_std : array_like or None
        σ_b, standard deviation of the background pixels (counts), or None.
    detector : DetectorModel

    Returns
    -------
    ndarray
        σ² in counts², broadcast shape of the inputs; > 0 wherever σ_b > 0 or the
        detector has a read-out floor.
    """
    i = np.asarray(integrated, dtype=float)
    n_p = np.asarray(n_peak, dtype=float)
    n_b = np.asarray(n_background, dtype=float)
    mean_b = np.asarray(background_mean, dtype=float)
    for name, arr in (("integrated", i), ("n_peak", n_p), ("n_background", n_b),
                      ("background_mean", mean_b)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(f"{int(bad.sum())} non-finite values", source="larbed_variance",
                             tag=name, found=_first_indices(bad))
    for name, arr in (("n_peak", n_p), ("n_background", n_b)):
        bad = arr < 1
        if bad.any():
            raise InputError(f"{int(bad.sum())} pixel counts below 1",
                             source="larbed_variance", tag=name, expected="≥ 1",
                             found=_first_indices(bad))
    if background_std is None:
        var_b = detector.variance(mean_b)
    else:
        std = np.asarray(background_std, dtype=float)
        bad = ~np.isfinite(std) | (std < 0)
        if bad.any():
            raise InputError(f"{int(bad.sum())} negative or non-finite standard deviations",
                             source="larbed_variance", tag="background_std", expected="≥ 0",
                             found=_first_indices(bad))
        var_b = std * std
    return detector.variance(i) + n_p * var_b * (1.0 + n_p / n_b)


def _first_indices(mask: np.ndarray, n: int = 5) -> list[tuple[int, ...]]:
    """The first ``n`` indices where ``mask`` is True (row-major), as tuples."""
    idx = np.argwhere(np.asarray(mask))[:n]
    return [tuple(int(v) for v in row) for row in idx]


# ====================================================================== blur
def transfer_function(shape: tuple[int, int],
                      mtf: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray],
                      *, normalize: bool = True) -> np.ndarray:
    """The optical transfer function 𝓗̂ on the full FFT grid of an image of ``shape``.

    Parameters
    ----------
    shape : (ny, nx)
    mtf : ndarray or callable
        Either the detector MTF as a real array of the image shape in FFT layout
        (zero frequency at [0, 0], as ``numpy.fft.fft2``), or a point-spread function
        ``psf(dy, dx)`` evaluated on integer pixel offsets (arrays of the image shape,
        wrapped: dy ∈ [−ny/2, ny/2)); its FFT is the transfer function.
    normalize : bool
        Divide by 𝓗̂(0) so that blurring conserves the total intensity (default).

    Returns
    -------
    ndarray (ny, nx), complex
    """
    ny, nx = (int(s) for s in shape)
    if callable(mtf):
        dy = (np.fft.fftfreq(ny) * ny)[:, None] * np.ones((1, nx))
        dx = (np.fft.fftfreq(nx) * nx)[None, :] * np.ones((ny, 1))
        kernel = np.asarray(mtf(dy, dx), dtype=float)
        if kernel.shape != (ny, nx):
            raise InputError("PSF callable returned the wrong shape", source="psf",
                             expected=(ny, nx), found=kernel.shape)
        otf = np.fft.fft2(kernel)
    else:
        arr = np.asarray(mtf)
        if arr.shape != (ny, nx):
            raise InputError("MTF array must have the image shape (FFT layout)",
                             source="mtf", expected=(ny, nx), found=arr.shape)
        otf = arr.astype(complex)
    if not np.all(np.isfinite(otf)):
        raise InputError("MTF/PSF has non-finite values", source="mtf",
                         found=int((~np.isfinite(otf)).sum()))
    dc = otf[0, 0]
    if normalize:
        if abs(dc) < 1e-12:
            raise InputError("MTF is zero at zero frequency; cannot normalise", source="mtf",
                             found=dc)
        otf = otf / dc
    return otf


def blur(image: ArrayLike, otf: np.ndarray, adjoint: bool = False) -> np.ndarray:
    """𝓗x = Re IFFT(FFT(x)·𝓗̂) (periodic); ``adjoint`` uses conj(𝓗̂) (𝓗ᵀ)."""
    f = np.fft.fft2(np.asarray(image, dtype=float))
    h = np.conj(otf) if adjoint else otf
    return np.fft.ifft2(f * h).real


# ====================================================================== LR
@dataclass
class LucyRichardsonResult:
    """Outcome of :func:`lucy_richardson`.

    Attributes
    ----------
    image : ndarray (ny, nx)
        Restored (deconvolved) image, counts, background not included.
    reblurred : ndarray (ny, nx)
        𝓗·image + background: the model of the data.
    chi2 : ndarray (n_iter + 1,)
        Reduced χ² of the re-blurred estimate against the data, for the start
        estimate and after each iteration.
    n_iter : int
        Iterations done.
    reason : str
        ``'target'`` (χ²_ν ≤ target), ``'stalled'`` (no relative decrease larger than
        rtol) or ``'max_iter'``.
    """

    image: np.ndarray
    reblurred: np.ndarray
    chi2: np.ndarray
    n_iter: int
    reason: str
    history: dict = field(default_factory=dict)

    @property
    def final_chi2(self) -> float:
        """χ²_ν of the returned estimate."""
        return float(self.chi2[-1])


def _reduced_chi2(data: np.ndarray, model: np.ndarray, detector: DetectorModel,
                  floor: float) -> float:
    var = np.maximum(detector.variance(model), floor)
    return float(np.mean((data - model) ** 2 / var))


def lucy_richardson(data: ArrayLike,
                    mtf: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray],
                    detector: DetectorModel | None = None, background: ArrayLike | float = 0.0,
                    *, target: float = 1.0, rtol: float = 1e-4, max_iter: int = 500,
                    min_iter: int = 1, normalize_mtf: bool = True,
                    variance_floor: float | None = None) -> LucyRichardsonResult:
    """Lucy–Richardson deconvolution with the detector noise model and a χ² stopping rule.

    Richardson (1972), J. Opt. Soc. Am. 62, 55–59; Lucy (1974), Astron. J. 79,
    745–754; read-noise shift after Snyder, Hammoud & White (1993). See the module
    docstring for the update and the stopping rule.

    Parameters
    ----------
    data : array_like (ny, nx)
        Recorded image, counts (background included).
    mtf : ndarray or callable
        Real MTF in FFT layout of the image shape, or a PSF callable ``psf(dy, dx)``
        (see :func:`transfer_function`). Blurring is periodic: pad images whose edges
        are bright.
    detector : DetectorModel, optional
        Noise model (default: Poisson).
    background : float or array_like
        Known additive background b (counts), not deconvolved.
    target : float
        Stop at the first estimate with reduced χ² ≤ target (default 1).
    rtol : float
        Stop when χ² decreases by less than ``rtol``·χ² in one iteration (or increases).
    max_iter, min_iter : int
        Iteration limits.
    normalize_mtf : bool
        Normalise the transfer function to 1 at zero frequency.
    variance_floor : float, optional
        Lower bound of σ² in the χ² (counts²); default σ²(1 count), which matters only
        for pure-Poisson detectors near zero intensity.

    Returns
    -------
    LucyRichardsonResult

    Raises
    ------
    InputError
        Non-finite data, a non-positive mean signal, bad MTF shape or parameters.
    """
    d = np.asarray(data, dtype=float)
    if d.ndim != 2:
        raise InputError("Lucy–Richardson needs a 2-D image", source="data", found=d.shape)
    bad = ~np.isfinite(d)
    if bad.any():
        raise InputError(f"{int(bad.sum())} non-finite pixels", source="data",
                         found=_first_indices(bad))
    det = detector or DetectorModel()
    b = np.broadcast_to(np.asarray(background, dtype=float), d.shape)
    if not np.all(np.isfinite(b)):
        raise InputError("background has non-finite values", source="background")
    if max_iter < 1 or min_iter < 0 or not target > 0 or not rtol >= 0:
        raise InputError("bad stopping parameters", source="lucy_richardson",
                         found=dict(target=target, rtol=rtol, max_iter=max_iter,
                                    min_iter=min_iter))
    if variance_floor is None:
        variance_floor = float(det.variance(1.0))
    otf = transfer_function(d.shape, mtf, normalize=normalize_mtf)
    s = det.poisson_shift
    signal = float(np.mean(d - b))
    if not signal > 0:
        raise InputError("the mean of data − background must be positive", source="data",
                         found=signal)
    u = np.full(d.shape, signal)
    numerator = np.maximum(d + s, 0.0)
    norm = blur(np.ones(d.shape), otf, adjoint=True)
    norm = np.where(np.abs(norm) > 1e-12, norm, 1.0)
    model = blur(u, otf) + b
    chi2 = [_reduced_chi2(d, model, det, variance_floor)]
    reason = "max_iter"
    n = 0
    for n in range(1, max_iter + 1):
        denom = np.maximum(model + s, 1e-12 * max(abs(signal), 1.0))
        u_new = np.maximum(u * blur(numerator / denom, otf, adjoint=True) / norm, 0.0)
        model_new = blur(u_new, otf) + b
        c = _reduced_chi2(d, model_new, det, variance_floor)
        if n > min_iter and c > chi2[-1]:
            reason = "stalled"     # χ² went up: keep the previous estimate
            n -= 1
            break
        u, model = u_new, model_new
        chi2.append(c)
        if n >= min_iter:
            if c <= target:
                reason = "target"
                break
            if chi2[-2] - c < rtol * chi2[-2]:
                reason = "stalled"
                break
    return LucyRichardsonResult(image=u, reblurred=model, chi2=np.asarray(chi2), n_iter=n,
                                reason=reason)
