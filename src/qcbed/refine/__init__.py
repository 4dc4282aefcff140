"""Refinement: parameters, goodness of fit, coarse (correlation) and fine (χ²) refinement.

Both kinds of result share :class:`~qcbed.refine.result.RefinementOutcome` (``x``,
``success``, ``message``, ``nit``, ``nfev``, ``x_esd``, ``correlation_matrix``, ``model``,
``experiment``).
"""

from .coarse import CoarseRefinement, CoarseResult
from .data import DirectData, RegionGrid
from .fine import Refinement, RefinementResult
from .gof import GOF, Chi2, Chi2Poisson, Correlation, RFactor, linear_fit, make_gof, zncc
from .joint import JointRefinement, JointRefinementResult
from .parameters import Parameter, ParameterSet
from .probe import convolve_probe, voigt_kernel
from .result import RefinementOutcome

__all__ = [
    "GOF",
    "Chi2",
    "Chi2Poisson",
    "CoarseRefinement",
    "CoarseResult",
    "Correlation",
    "DirectData",
    "JointRefinement",
    "JointRefinementResult",
    "Parameter",
    "ParameterSet",
    "RFactor",
    "Refinement",
    "RefinementOutcome",
    "RefinementResult",
    "RegionGrid",
    "convolve_probe",
    "linear_fit",
    "make_gof",
    "voigt_kernel",
    "zncc",
]
