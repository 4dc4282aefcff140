"""Project files: one TOML file describes a whole refinement (see ``docs/project-file.md``).

A project file names the crystal, the data, the experimental geometry, the
regions of interest, the engine settings, the goodness of fit and a
refinement *plan* (coarse steps, then fine steps). This module

* reads and validates it (:func:`load_project`, :func:`parse_project`): every
  problem raises :class:`qcbed.errors.InputError` naming the file, the key
  (``tag``), the expected and the found value;
* builds the objects it describes (:func:`build_setup` → :class:`Setup`: crystal,
  data, :class:`~qcbed.experiment.ExperimentGeometry`, regions, engine set-up);
* checks a project before a long run (:func:`validate_project`);
* runs the plan (:class:`ProjectRun`, :func:`run_project`, :func:`resume_run`),
  writing a checkpoint every iteration and the results with provenance
  (:mod:`qcbed.results`, :mod:`qcbed.report`) at the end;
* writes TOML (:func:`dumps_toml`; the standard library only reads it).

Units are those of ``docs/conventions.md``: Å, Å⁻¹ (no 2π), Å⁻², kV, degrees,
pixels.

Modules: :mod:`.schema` (sections, :class:`Project`), :mod:`.parse`, :mod:`.toml_writer`,
:mod:`.setup` (:func:`build_setup`), :mod:`.validate`, :mod:`.run`, :mod:`.safety`
(resources, output folders, run states, input hashes).
"""

from .._core.parameters import parse_parameter_name
from .parse import load_project, parse_project
from .run import (
    ProjectRun,
    RunFinished,
    RunResult,
    find_run_state,
    resume_run,
    run_project,
)
from .schema import (
    PROJECT_SCHEMA,
    RUN_STATE,
    CoarseStep,
    CrystalSection,
    DataSection,
    DatasetSpec,
    EngineSection,
    FineStep,
    GeometrySection,
    GofSection,
    Project,
    RoiSection,
)
from .setup import Setup, build_dataset_setups, build_setup
from .toml_writer import dumps_toml
from .validate import ValidationReport, validate_project

__all__ = [
    "PROJECT_SCHEMA",
    "RUN_STATE",
    "CoarseStep",
    "CrystalSection",
    "DataSection",
    "DatasetSpec",
    "EngineSection",
    "FineStep",
    "GeometrySection",
    "GofSection",
    "Project",
    "ProjectRun",
    "RoiSection",
    "RunFinished",
    "RunResult",
    "Setup",
    "ValidationReport",
    "build_dataset_setups",
    "build_setup",
    "dumps_toml",
    "find_run_state",
    "load_project",
    "parse_parameter_name",
    "parse_project",
    "resume_run",
    "run_project",
    "validate_project",
]
