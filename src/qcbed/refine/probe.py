"""The LARBED probe: a normalised, isotropic 2-D Voigt kernel applied in Fourier space.

The incident-beam profile in reciprocal space (seed paper eq. 8, H′) is modelled
as the 2-D convolution of an isotropic Gaussian (standard deviation σ, pixels)
and an isotropic 2-D Cauchy (Lorentzian) profile (half width γ, pixels),

    G(r) = exp(−r²/2σ²)/(2πσ²),   L(r) = γ / (2π (r² + γ²)^{3/2}),

both normalised to unit integral in 2-D. Their Fourier transforms are
exp(−2π²σ²q²) and exp(−2πγq) (q in cycles per pixel), so the Voigt kernel is
exactly

    Ĥ(q) = exp(−2π²σ²q² − 2πγq),   Ĥ(0) = 1,

a proper 2-D Voigt (unlike a 1-D Voigt of the radius) with analytic derivatives
∂Ĥ/∂σ = −4π²σq²Ĥ, ∂Ĥ/∂γ = −2πqĤ. Convolution is periodic over the
(padded) grid; pad by at least ~3σ + 10γ pixels.

σ and γ are always in detector pixels. An image sampled every ``spacing``
pixels (a region of interest read every k-th pixel) has frequencies
q = fftfreq(n, d=spacing) cycles per pixel, so a width does not change with the
sampling of the region.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..experiment.grids import frequencies_squared


def _frequencies_squared(shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """q² (cycles per pixel)² on the rfft grid of ``shape`` sampled every ``spacing`` px."""
    return frequencies_squared(shape, np.diag([float(spacing[0]), float(spacing[1])]))


def voigt_transfer(shape: tuple[int, int], sigma: float, gamma: float,
                   spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Ĥ(q) on the FFT grid of an image of ``shape``.

    Parameters
    ----------
    shape : (int, int)
        Image shape (rows, columns).
    sigma, gamma : float
        Gaussian standard deviation and Cauchy half width, detector pixels (≥ 0).
    spacing : (float, float)
        Detector pixels between neighbouring samples along (rows, columns).
    """
    if sigma < 0 or gamma < 0 or not np.isfinite(sigma + gamma):
        raise InputError("probe widths must be ≥ 0", found=(sigma, gamma))
    if min(spacing) <= 0 or not np.all(np.isfinite(spacing)):
        raise InputError("sample spacing must be > 0 pixels", found=tuple(spacing))
    q = np.sqrt(_frequencies_squared(shape, spacing))
    return np.exp(-2 * np.pi**2 * sigma**2 * q**2 - 2 * np.pi * gamma * q)


def voigt_kernel(sigma: float, gamma: float, size: int = 41) -> np.ndarray:
    """The real-space kernel on a (size × size) grid centred at the middle (sums to 1)."""
    h = voigt_transfer((size, size), sigma, gamma)
    k = np.fft.irfft2(h, s=(size, size))
    return np.fft.fftshift(k)


def convolve_probe(images: np.ndarray, sigma: float, gamma: float,
                   derivatives: bool = False, spacing: tuple[float, float] = (1.0, 1.0)):
    """Convolve images (..., ny, nx) with the 2-D Voigt probe (periodic boundaries).

    ``sigma`` and ``gamma`` are in detector pixels; ``spacing`` is the number of
    pixels between neighbouring samples along (rows, columns) (1 for every pixel).
    Returns the convolved images, and with ``derivatives=True`` also their
    derivatives with respect to σ and γ (per pixel).
    """
    imgs = np.asarray(images, float)
    shape = imgs.shape[-2:]
    f = np.fft.rfft2(imgs)
    h = voigt_transfer(shape, sigma, gamma, spacing)
    out = np.fft.irfft2(f * h, s=shape)
    if not derivatives:
        return out
    q2 = _frequencies_squared(shape, spacing)
    d_sigma = np.fft.irfft2(f * h * (-4 * np.pi**2 * sigma * q2), s=shape)
    d_gamma = np.fft.irfft2(f * h * (-2 * np.pi * np.sqrt(q2)), s=shape)
    return out, d_sigma, d_gamma
