"""Experimental data: patterns, detector model, geometry, regions of interest, readers, plots.

* :mod:`~qcbed.experiment.patterns` — :class:`CBEDPattern`, :class:`LACBEDStack`;
* :mod:`~qcbed.experiment.detector` — :class:`DetectorModel` (gain, mixing factor,
  DQE; Zuo 2000), variances, :func:`lucy_richardson`, :func:`larbed_variance`;
* :mod:`~qcbed.experiment.geometry` — :class:`ExperimentGeometry`: experimental
  pixels ↔ display ↔ incident k_t (seed paper §3.3);
* :mod:`~qcbed.experiment.roi` — :class:`Region`, :class:`ROI` (the refinement
  dataset: k_t of the sample points, sampled intensities, variances, validity);
* :mod:`~qcbed.experiment.readers` — DM3/DM4, Felix D-LACBED folders, PyExtal
  ``.npy`` stacks, TIFF;
* :mod:`~qcbed.experiment.plots` — figures (imported on demand, needs matplotlib).

Conventions: ``docs/conventions.md``, section "Experimental geometry".
"""

from .copies import copies_summary, copy_groups, copy_multiplicity, copy_operations
from .detector import (
    DetectorModel,
    LucyRichardsonResult,
    larbed_variance,
    lucy_richardson,
    poisson_variance,
    transfer_function,
)
from .geometry import ExperimentGeometry, rotation_from_gx_angle
from .patterns import CBEDPattern, LACBEDStack, check_pixels
from .readers import (
    read_dm,
    read_felix_images,
    read_image,
    read_lacbed,
    read_npy_stack,
    read_pattern,
)
from .roi import ROI, GeometryFit, Region, Samples

__all__ = [
    "ROI",
    "CBEDPattern",
    "DetectorModel",
    "ExperimentGeometry",
    "GeometryFit",
    "LACBEDStack",
    "LucyRichardsonResult",
    "Region",
    "Samples",
    "check_pixels",
    "copies_summary",
    "copy_groups",
    "copy_multiplicity",
    "copy_operations",
    "larbed_variance",
    "lucy_richardson",
    "poisson_variance",
    "read_dm",
    "read_felix_images",
    "read_image",
    "read_lacbed",
    "read_npy_stack",
    "read_pattern",
    "rotation_from_gx_angle",
    "transfer_function",
]
