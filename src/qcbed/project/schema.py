"""What a project file may hold (``PROJECT_SCHEMA``, the step names) and the parsed project
(:class:`Project`, :class:`CoarseStep`, :class:`FineStep`); see ``docs/project-file.md``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - exercised on Python 3.10 only
    pass




RUN_STATE = "run_state.json"
_MISSING = object()

#: Sections and keys of a project file (the reference is docs/project-file.md).
PROJECT_SCHEMA: dict[str, tuple[str, ...]] = {
    "project": ("name", "output", "density_map", "overwrite"),
    "crystal": ("source", "b_iso"),
    "data": ("kind", "format", "files", "folder", "hkl", "g_vectors", "variance",
             "variance_floor", "clip_negative", "allow_negative", "mask", "background",
             "require_hkl", "detector"),
    "data.detector": ("gain", "mixing", "read_variance", "gain_ref_error", "excess_noise"),
    "geometry": ("voltage_kv", "zone", "x_axis", "normal", "mode", "rotation", "mirror", "gl",
                 "tilt0", "reference", "shift", "disc_shifts", "display_shape"),
    "geometry.disc_shifts": ("hkl", "shift"),
    "roi": ("hkl", "pad", "disc_shifts", "regions"),
    "roi.regions": ("corners", "samples", "pad", "reflections"),
    "engine": ("mode", "coarse_mode", "gmax", "smax", "holz", "min_pool", "pool", "sgmin",
               "omega", "sgmax", "bethe", "min_strong", "elastic", "absorption", "xi",
               "executor", "chunk_size", "memory_limit"),
    "gof": ("metric", "background", "probe"),
    "plan": ("thickness", "coarse", "fine"),
    "plan.coarse": ("step", "thickness_range", "n_scan", "xtol", "margin", "template_size",
                    "template_center", "template_step", "reflections", "rel_range",
                    "half_range", "labels", "b_range"),
    "plan.fine": ("name", "refine", "method", "outer", "max_iter", "ftol", "xtol", "jacobian",
                  "bounds", "scales"),
}

COARSE_STEPS = ("orientation_thickness", "pixel_size", "voltage", "b_iso")
GOF_METRICS = ("chi2", "chi2_poisson", "r_factor", "correlation")
BACKGROUNDS = ("per_disc", "single", "none")
DATA_FORMATS = ("auto", "npy", "dm3", "dm4", "tif", "tiff", "felix", "npy_stack")


# ====================================================================== spec objects
@dataclass(frozen=True)
class CoarseStep:
    """One coarse (correlation) step of the plan; see ``docs/project-file.md``."""

    step: str
    thickness_range: tuple[float, float] | None = None
    n_scan: int = 21
    xtol: float | None = None
    margin: int = 10
    template_size: tuple[int, int] | None = None
    template_center: tuple[float, float] | None = None
    template_step: float = 1.0
    reflections: list[tuple[int, int, int]] | None = None
    rel_range: float = 0.05
    half_range: float = 0.5
    labels: list[str] | None = None
    b_range: tuple[float, float] = (0.0, 2.0)


@dataclass(frozen=True)
class FineStep:
    """One fine (χ²) step: which parameters are refined, with which optimiser."""

    name: str
    refine: list[str]
    method: str = "lm"
    outer: str = "lm"
    max_iter: int = 30
    ftol: float = 1e-9
    xtol: float = 1e-9
    jacobian: str = "analytic"
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)


@dataclass
class Project:
    """A parsed and type-checked project file.

    Attributes
    ----------
    source : str
        The file (or a description when built from a dict).
    base_dir : Path
        Folder that relative paths in the file are resolved against.
    raw : dict
        The TOML content as read.
    text : str
        The file's text (stored in results for provenance).
    name, output : str, Path
        Project name and output folder (absolute).
    overwrite : bool
        Replace the results of an earlier run in ``output`` (``[project] overwrite``).
    crystal, data, geometry, roi, engine, gof : dict
        Checked settings of each section (values in the units of the reference).
    thickness : float
        Start thickness (Å).
    coarse, fine : list
        The plan.
    """

    source: str
    base_dir: Path
    raw: dict
    text: str
    name: str
    output: Path
    density_map: str
    overwrite: bool
    crystal: dict
    data: dict
    geometry: dict
    roi: dict
    engine: dict
    gof: dict
    thickness: float
    coarse: list[CoarseStep]
    fine: list[FineStep]

    def path(self, p: str | os.PathLike) -> Path:
        """A path of the file resolved against the project folder."""
        q = Path(os.path.expanduser(str(p)))
        return q if q.is_absolute() else (self.base_dir / q)

    @property
    def refined_names(self) -> list[str]:
        """Every parameter refined in some fine step (canonical names, first-seen order)."""
        out: list[str] = []
        for st in self.fine:
            for n in st.refine:
                if n not in out:
                    out.append(n)
        return out


