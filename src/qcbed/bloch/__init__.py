"""The Bloch-wave engine: geometry, beam selection, batched eigen-solutions, patterns."""

from .beams import BeamPool, BeamSelection
from .geometry import ZoneFrame
from .grids import TiltGrid
from .pattern import Pattern
from .simulation import Simulation, Solution

__all__ = [
    "BeamPool",
    "BeamSelection",
    "Pattern",
    "Simulation",
    "Solution",
    "TiltGrid",
    "ZoneFrame",
]
