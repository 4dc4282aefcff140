"""Crystal model: lattice geometry, sites and space-group symmetry."""

from .lattice import Lattice
from .structure import (
    AtomList,
    Crystal,
    EquivalentReflections,
    Site,
    atomic_number,
    parse_type_symbol,
    space_group_from_number,
    space_group_from_symbol,
)

__all__ = [
    "AtomList",
    "Crystal",
    "EquivalentReflections",
    "Lattice",
    "Site",
    "atomic_number",
    "parse_type_symbol",
    "space_group_from_number",
    "space_group_from_symbol",
]
