"""What a refinement compares with: experimental samples at simulation directions.

A refinement dataset provides

* ``hkl`` (n_refl, 3): the reflections compared;
* ``kt`` (n_pts, 2): incident tangential wave vectors (Å⁻¹) of the sample
  points, shared by all reflections (the engine solves each direction once);
* ``regions``: how the points form images (for the probe convolution);
* ``sample(values)``: experimental intensity, variance and a validity mask
  (n_refl, n_pts) for given values of the *sampling* parameters (rotation,
  scale ``gl``, shifts…), which move the experimental sampling positions and
  never the simulation;
* ``sampling_parameters()``: those parameters with their start values.

:class:`DirectData` holds samples that are already at the simulation
directions (synthetic data, or data resampled once); the ROI machinery of
:mod:`qcbed.experiment` provides the general case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..experiment.grids import RegionGrid
from .parameters import Parameter


@dataclass
class DirectData:
    """Experimental samples given directly at the simulation directions.

    Parameters
    ----------
    hkl : (n_refl, 3) int
    kt : (n_pts, 2) Å⁻¹
    intensity, variance : (n_refl, n_pts)
        Counts and their variances (> 0 where valid).
    valid : (n_refl, n_pts) bool, optional
        Samples to compare (default: finite intensity and positive variance).
    regions : list of RegionGrid, optional
        Image structure of the points (needed with a probe).
    multiplicity : (n_refl,) int, optional
        Number of rows that are copies of the same measurement (1: independent;
        :func:`qcbed.experiment.copy_groups`): a refinement counts each group once.
    """

    hkl: np.ndarray
    kt: np.ndarray
    intensity: np.ndarray
    variance: np.ndarray
    valid: np.ndarray | None = None
    regions: list[RegionGrid] = field(default_factory=list)
    multiplicity: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.hkl = np.asarray(self.hkl, int).reshape(-1, 3)
        self.kt = np.asarray(self.kt, float).reshape(-1, 2)
        shape = (len(self.hkl), len(self.kt))
        self.intensity = np.asarray(self.intensity, float)
        self.variance = np.asarray(self.variance, float)
        for name in ("intensity", "variance"):
            if getattr(self, name).shape != shape:
                raise InputError(f"{name} has the wrong shape", expected=shape,
                                 found=getattr(self, name).shape)
        if self.valid is None:
            self.valid = np.isfinite(self.intensity) & (self.variance > 0)
        self.valid = np.asarray(self.valid, bool)
        bad = self.valid & ~(self.variance > 0)
        if bad.any():
            raise InputError("valid samples need a positive variance", found=int(bad.sum()))
        if self.multiplicity is not None:
            m = np.asarray(self.multiplicity)
            if m.shape != (len(self.hkl),) or np.any(m < 1) or np.any(m != np.round(m)):
                raise InputError("multiplicity must be one integer >= 1 per reflection",
                                 tag="multiplicity", expected=len(self.hkl), found=m.tolist())
            self.multiplicity = m.astype(int)
        for reg in self.regions:
            if reg.start + reg.size > len(self.kt):
                raise InputError("region extends beyond the points", found=reg)

    def sampling_parameters(self) -> list[Parameter]:
        return []

    def sample(self, values: dict[str, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.intensity, self.variance, self.valid

    @property
    def disc_index(self) -> np.ndarray:
        """(n_refl, n_pts) disc number of every sample (for per-disc backgrounds)."""
        return np.broadcast_to(np.arange(len(self.hkl))[:, None],
                               (len(self.hkl), len(self.kt)))
