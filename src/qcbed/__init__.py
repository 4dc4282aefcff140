"""qcbed: quantitative convergent-beam electron diffraction.

Folders: ``crystal`` (lattice, sites, symmetry), ``scattering`` (form factors,
absorption, structure factors U_g), ``io`` (readers), ``bloch`` (the Bloch-wave
engine), ``experiment`` (patterns, detector, geometry, ROI), ``larbed`` (4-D
datasets), ``refine`` (refinement), ``cli`` (command line).
"""

from ._version import __version__
from .errors import InputError, QcbedError

__all__ = ["InputError", "QcbedError", "__version__"]
