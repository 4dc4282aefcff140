"""Sample grids: which points of a refinement dataset form which image.

:class:`RegionGrid` says that points ``start .. start + ny·nx`` of a dataset
form a (ny, nx) image, with ``pad`` outer rows/columns that serve the probe
convolution only. :func:`interior_mask` is the one definition of "compared
samples" used by :class:`~qcbed.experiment.Region` and :class:`RegionGrid`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def interior_mask(shape: tuple[int, int], pad: int) -> np.ndarray:
    """Boolean mask ``shape`` that is True except on the outer ``pad`` rows and columns."""
    m = np.zeros(shape, bool)
    m[pad:shape[0] - pad, pad:shape[1] - pad] = True
    return m


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
