"""qcbed: quantitative convergent-beam electron diffraction.

The small public API (``import qcbed as qc``)::

    crystal = qc.read_crystal("si.cif")
    sim = qc.Simulation(crystal, 200, zone=[1, -1, 0], x_axis=[0, 0, -1])
    pat = sim.pattern_result(grid, [1000, 1500])       # a labelled qc.Pattern
    data = qc.read_pattern("cbed.dm4")                 # or qc.read_lacbed, qc.open_4d
    geom = qc.ExperimentGeometry(...); roi = qc.ROI(data, qc.Region(...), geom, ...)
    res = qc.Refinement(sim, roi, ...).fit()           # or qc.CoarseRefinement
    run = qc.run_project(qc.load_project("project.toml"))

The names are imported on first use (``import qcbed`` stays fast). Folders, in the
order of the data flow: ``_core`` → ``crystal`` → ``scattering`` → ``io`` →
``parallel`` → ``bloch`` → ``experiment`` → ``larbed`` → ``refine`` → ``output`` →
``project`` → ``cli`` (see ``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import InputError, QcbedError

#: Public name → module that defines it (imported lazily by :func:`__getattr__`).
_API: dict[str, str] = {
    "read_crystal": "qcbed.io",
    "Simulation": "qcbed.bloch.simulation",
    "Pattern": "qcbed.bloch.pattern",
    "TiltGrid": "qcbed.bloch.grids",
    "read_pattern": "qcbed.experiment.readers",
    "read_lacbed": "qcbed.experiment.readers",
    "open_4d": "qcbed.larbed.readers",
    "ExperimentGeometry": "qcbed.experiment.geometry",
    "Region": "qcbed.experiment.roi",
    "ROI": "qcbed.experiment.roi",
    "Refinement": "qcbed.refine.fine",
    "CoarseRefinement": "qcbed.refine.coarse",
    "JointRefinement": "qcbed.refine.joint",
    "load_project": "qcbed.project",
    "run_project": "qcbed.project",
}

__all__ = [
    "ROI",
    "CoarseRefinement",
    "ExperimentGeometry",
    "InputError",
    "JointRefinement",
    "Pattern",
    "QcbedError",
    "Refinement",
    "Region",
    "Simulation",
    "TiltGrid",
    "__version__",
    "load_project",
    "open_4d",
    "read_crystal",
    "read_lacbed",
    "read_pattern",
    "run_project",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .bloch.grids import TiltGrid
    from .bloch.pattern import Pattern
    from .bloch.simulation import Simulation
    from .experiment.geometry import ExperimentGeometry
    from .experiment.readers import read_lacbed, read_pattern
    from .experiment.roi import ROI, Region
    from .io import read_crystal
    from .larbed.readers import open_4d
    from .project import load_project, run_project
    from .refine.coarse import CoarseRefinement
    from .refine.fine import Refinement
    from .refine.joint import JointRefinement


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'qcbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
