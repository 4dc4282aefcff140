"""Scattering factors, absorption and structure factors of the optical potential U + iU′."""

from .models import available_elastic_models, elastic_form_factor
from .structure_factors import (
    PotentialModel,
    StructureFactors,
    mean_inner_potential,
    structure_factors,
    xray_structure_factors,
)

__all__ = [
    "PotentialModel",
    "StructureFactors",
    "available_elastic_models",
    "elastic_form_factor",
    "mean_inner_potential",
    "structure_factors",
    "xray_structure_factors",
]
