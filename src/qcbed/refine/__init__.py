"""Refinement: parameters, goodness of fit, coarse (correlation) and fine (χ²) refinement."""

from .data import DirectData, RegionGrid
from .fine import Refinement, RefinementResult
from .gof import GOF, Chi2, Chi2Poisson, Correlation, RFactor, linear_fit, make_gof, zncc
from .parameters import Parameter, ParameterSet
from .probe import convolve_probe, voigt_kernel

__all__ = [
    "GOF",
    "Chi2",
    "Chi2Poisson",
    "Correlation",
    "DirectData",
    "Parameter",
    "ParameterSet",
    "RFactor",
    "Refinement",
    "RefinementResult",
    "RegionGrid",
    "convolve_probe",
    "linear_fit",
    "make_gof",
    "voigt_kernel",
    "zncc",
]
