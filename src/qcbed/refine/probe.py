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
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def voigt_transfer(shape: tuple[int, int], sigma: float, gamma: float) -> np.ndarray:
    """Ĥ(q) on the FFT grid of an image of ``shape`` (σ, γ in pixels, ≥ 0)."""
    if sigma < 0 or gamma < 0 or not np.isfinite(sigma + gamma):
        raise InputError("probe widths must be ≥ 0", found=(sigma, gamma))
    qy = np.fft.fftfreq(shape[0])[:, None]
    qx = np.fft.rfftfreq(shape[1])[None, :]
    q = np.sqrt(qx**2 + qy**2)
    return np.exp(-2 * np.pi**2 * sigma**2 * q**2 - 2 * np.pi * gamma * q)


def voigt_kernel(sigma: float, gamma: float, size: int = 41) -> np.ndarray:
    """The real-space kernel on a (size × size) grid centred at the middle (sums to 1)."""
    h = voigt_transfer((size, size), sigma, gamma)
    k = np.fft.irfft2(h, s=(size, size))
    return np.fft.fftshift(k)


def convolve_probe(images: np.ndarray, sigma: float, gamma: float,
                   derivatives: bool = False):
    """Convolve images (..., ny, nx) with the 2-D Voigt probe (periodic boundaries).

    Returns the convolved images, and with ``derivatives=True`` also their
    derivatives with respect to σ and γ (per pixel).
    """
    imgs = np.asarray(images, float)
    shape = imgs.shape[-2:]
    f = np.fft.rfft2(imgs)
    h = voigt_transfer(shape, sigma, gamma)
    out = np.fft.irfft2(f * h, s=shape)
    if not derivatives:
        return out
    qy = np.fft.fftfreq(shape[0])[:, None]
    qx = np.fft.rfftfreq(shape[1])[None, :]
    q2 = qx**2 + qy**2
    d_sigma = np.fft.irfft2(f * h * (-4 * np.pi**2 * sigma * q2), s=shape)
    d_gamma = np.fft.irfft2(f * h * (-2 * np.pi * np.sqrt(q2)), s=shape)
    return out, d_sigma, d_gamma
