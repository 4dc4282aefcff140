"""Sample grids: which points of a refinement dataset form which image.

:class:`RegionGrid` says that points ``start .. start + ny·nx`` of a dataset
form a (ny, nx) image, with ``pad`` outer rows/columns that serve the probe
convolution only. :func:`interior_mask` is the one definition of "compared
samples" used by :class:`~qcbed.experiment.Region` and :class:`RegionGrid`.
:func:`frequencies_squared` is the one definition of the Fourier frequencies of a
sampled image, used by every transfer function applied to region images (the
probe, :mod:`qcbed.refine.probe`; the plasmon losses, :mod:`qcbed.experiment.plasmon`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def interior_mask(shape: tuple[int, int], pad: int) -> np.ndarray:
    """Boolean mask ``shape`` that is True except on the outer ``pad`` rows and columns."""
    m = np.zeros(shape, bool)
    m[pad:shape[0] - pad, pad:shape[1] - pad] = True
    return m


def frequencies_squared(shape: tuple[int, int], steps: np.ndarray) -> np.ndarray:
    """|q|² on the ``rfft2`` grid of an image of ``shape`` sampled on a lattice of steps.

    Parameters
    ----------
    shape : (int, int)
        Image shape (rows, columns).
    steps : (2, 2) array
        Row 0: the vector from one sample to the next along the rows (axis 0), row 1:
        along the columns (axis 1), in any length unit u (detector pixels, Å⁻¹).

    Returns
    -------
    (shape[0], shape[1] // 2 + 1) array
        |q|² in (cycles per u)². The DFT frequency (m/N₀, n/N₁) cycles per sample is
        the spatial frequency q with q·a₀ = m/N₀, q·a₁ = n/N₁ (a₀, a₁ the steps), so
        q = A⁻¹ (m/N₀, n/N₁) with A the matrix of the steps (rows); for orthogonal
        steps (s₀, s₁) this is (fftfreq(N₀, s₀), rfftfreq(N₁, s₁)).
    """
    a = np.asarray(steps, float).reshape(2, 2)
    if not np.all(np.isfinite(a)) or abs(np.linalg.det(a)) <= 0:
        raise InputError("sample steps must be finite and not parallel", found=a.tolist())
    f0 = np.fft.fftfreq(shape[0])[:, None]
    f1 = np.fft.rfftfreq(shape[1])[None, :]
    b = np.linalg.inv(a)  # q = b @ f
    qx = b[0, 0] * f0 + b[0, 1] * f1
    qy = b[1, 0] * f0 + b[1, 1] * f1
    return qx**2 + qy**2


@dataclass(frozen=True)
class RegionGrid:
    """Points ``start .. start + ny·nx`` form a (ny, nx) image, row-major; the outer
    ``pad`` rows/columns serve the probe convolution only and are not compared."""

    start: int
    shape: tuple[int, int]
    pad: int = 0
    #: Detector pixels between neighbouring samples along (rows, columns): the probe
    #: widths are in pixels whatever the sampling of the region.
    spacing: tuple[float, float] = (1.0, 1.0)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def interior(self) -> np.ndarray:
        """Boolean mask (ny, nx) of the compared samples."""
        return interior_mask(self.shape, self.pad)
