"""What a project file may hold (``PROJECT_SCHEMA``, the step names) and the parsed project
(:class:`Project`, :class:`CoarseStep`, :class:`FineStep`); see ``docs/project-file.md``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .._core.parameters import split_dataset_name

RUN_STATE = "run_state.json"
_MISSING = object()

#: Sections and keys of a project file (the reference is docs/project-file.md).
PROJECT_SCHEMA: dict[str, tuple[str, ...]] = {
    "project": ("name", "output", "density_map", "overwrite"),
    "crystal": ("source", "b_iso"),
    "data": ("kind", "format", "files", "folder", "hkl", "g_vectors", "variance",
             "variance_floor", "clip_negative", "allow_negative", "mask", "background",
             "require_hkl", "detector", "energy_filtered", "plasmon_energy_ev",
             "plasmon_mean_free_path", "plasmon_cutoff_mrad", "plasmon_acceptance_mrad"),
    "data.detector": ("gain", "mixing", "read_variance", "gain_ref_error", "excess_noise"),
    "geometry": ("voltage_kv", "zone", "x_axis", "normal", "mode", "rotation", "mirror", "gl",
                 "tilt0", "reference", "shift", "disc_shifts", "display_shape"),
    "geometry.disc_shifts": ("hkl", "shift"),
    "roi": ("hkl", "pad", "disc_shifts", "regions", "symmetric"),
    "roi.regions": ("corners", "samples", "pad", "reflections"),
    "engine": ("mode", "coarse_mode", "accuracy", "gmax", "smax", "holz", "min_pool", "pool",
               "sgmin",
               "omega", "sgmax", "bethe", "min_strong", "tail", "elastic", "absorption", "xi",
               "executor", "chunk_size", "memory_limit"),
    "gof": ("metric", "background", "probe"),
    "plan": ("thickness", "coarse", "fine", "regions", "budget"),
    "plan.coarse": ("step", "thickness_range", "n_scan", "xtol", "margin", "template_size",
                    "template_center", "template_step", "reflections", "rel_range",
                    "half_range", "labels", "b_range"),
    "plan.fine": ("name", "refine", "method", "outer", "max_iter", "ftol", "xtol", "jacobian",
                  "bounds", "scales"),
}

COARSE_STEPS = ("orientation_thickness", "pixel_size", "voltage", "b_iso")
GOF_METRICS = ("chi2", "chi2_poisson", "r_factor", "correlation")
BACKGROUNDS = ("per_disc", "single", "none")
DATA_FORMATS = ("auto", "npy", "dm3", "dm4", "tif", "tiff", "felix", "npy_stack", "lacbed_h5")
#: formats that hold a whole LACBED stack
STACK_FORMATS = ("felix", "npy_stack", "lacbed_h5")


# ====================================================================== sections
class _Section(Mapping):
    """Read-only mapping view of a frozen section dataclass (``engine["gmax"]`` and
    ``engine.gmax`` both work)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class CrystalSection(_Section):
    """``[crystal]``: the structure file and B overrides (Å²) by site label."""

    source: str
    b_iso: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class DataSection(_Section):
    """``[data]``: what the experimental data are and how to read them."""

    kind: str
    format: str = "auto"
    files: list[str] | None = None
    folder: str | None = None
    g_vectors: str | None = None
    hkl: list[tuple[int, int, int]] | None = None
    variance: str = "poisson"
    variance_floor: float = 1.0
    clip_negative: bool = False
    allow_negative: bool = False
    mask: str | None = None
    background: float | None = None
    require_hkl: bool = True
    count_copies_once: bool = True
    detector: dict[str, float] = field(default_factory=dict)
    #: False: the images hold plasmon-loss electrons too (:mod:`qcbed.experiment.plasmon`)
    energy_filtered: bool = True
    plasmon_energy_ev: float | None = None
    plasmon_mean_free_path: float | None = None
    plasmon_cutoff_mrad: float | None = None
    #: largest deflection (mrad) a loss electron may have and stay in the recorded field
    plasmon_acceptance_mrad: float | None = None


@dataclass(frozen=True, eq=False)
class GeometrySection(_Section):
    """``[geometry]``: zone frame (kV, [uvw]) and the pixel ↔ k_t mapping (deg, px)."""

    zone: tuple[float, float, float]
    x_axis: tuple[float, float, float]
    gl: float
    mode: str
    voltage_kv: float | None = None
    normal: tuple[float, float, float] | None = None
    rotation: float = 0.0
    mirror: bool = False
    tilt0: tuple[float, float] = (0.0, 0.0)
    reference: tuple[float, float] | None = None
    shift: tuple[float, float] = (0.0, 0.0)
    display_shape: tuple[int, int] | None = None
    disc_shifts: dict[tuple[int, int, int], tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class RoiSection(_Section):
    """``[roi]``: reflections compared and the regions (display pixels) sampled."""

    hkl: list[tuple[int, int, int]] | None
    regions: list[dict[str, Any]]
    disc_shifts: list[tuple[int, int, int]] = field(default_factory=list)
    symmetric: bool = False


@dataclass(frozen=True, eq=False)
class EngineSection(_Section):
    """``[engine]``: beam pool (Å⁻¹), beam selection, scattering model, executor."""

    mode: str = "fast"
    coarse_mode: str = "fast"
    accuracy: float = 1e-3
    gmax: float = 3.0
    smax: float | None = None
    holz: bool = True
    min_pool: int = 0
    pool: list[tuple[int, int, int]] | None = None
    sgmin: float | None = None
    omega: float | None = None
    sgmax: float | None = None
    bethe: bool = True
    min_strong: int = 0
    tail: bool = True
    """The pool's tail (``qcbed.bloch.tail``) with an engine-chosen pool."""
    elastic: str = "kirkland"
    absorption: str = "bird_king"
    xi: float = 0.1
    chunk_size: int | None = None
    """Directions per engine task; None: automatic (``Simulation(chunk_size=None)``)."""
    executor: str | int = "auto"
    memory_limit: int | None = None
    """Bytes (``qcbed._core.guard``; None: ``QCBED_MEMORY_LIMIT`` or half the free memory)."""


@dataclass(frozen=True, eq=False)
class GofSection(_Section):
    """``[gof]``: the metric, the background model and the LARBED probe (px)."""

    metric: str = "chi2"
    background: str = "per_disc"
    probe: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One dataset of a project: a ``[[data]]`` block (or the single ``[data]``,
    ``[geometry]``, ``[roi]``) with its engine settings and start thickness (Å)."""

    index: int
    name: str
    data: DataSection
    geometry: GeometrySection
    roi: RoiSection
    engine: EngineSection
    thickness: float


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
    crystal, data, geometry, roi, engine, gof : frozen section dataclasses
        Checked settings of each section (values in the units of the reference);
        read-only mappings too (``project.engine["gmax"] == project.engine.gmax``).
    thickness : float
        Start thickness (Å).
    coarse, fine : list
        The plan.
    regions : int
        Repeat the last fine step on this many disjoint tiles of the first ROI region
        (0: no; ≥ 2; :mod:`qcbed.refine.reproducibility`).
    budget : bool
        Compute the error budget of the last fine step (:mod:`qcbed.refine.budget`).
    datasets : list of DatasetSpec
        The datasets (several ``[[data]]`` blocks: a joint refinement); ``data``,
        ``geometry``, ``roi``, ``engine`` and ``thickness`` above are dataset 0's.
    """

    source: str
    base_dir: Path
    raw: dict
    text: str
    name: str
    output: Path
    density_map: str
    overwrite: bool
    crystal: CrystalSection
    data: DataSection
    geometry: GeometrySection
    roi: RoiSection
    engine: EngineSection
    gof: GofSection
    thickness: float
    coarse: list[CoarseStep]
    fine: list[FineStep]
    regions: int = 0
    budget: bool = True
    datasets: list[DatasetSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.datasets:
            self.datasets = [DatasetSpec(0, "data", self.data, self.geometry, self.roi,
                                         self.engine, self.thickness)]

    @property
    def joint(self) -> bool:
        """True with several ``[[data]]`` blocks (a joint refinement)."""
        return len(self.datasets) > 1

    def dataset_view(self, k: int) -> Project:
        """This project as if dataset ``k`` were its only one (for :func:`build_setup`):
        its data, geometry, ROI, engine and start thickness, and the plan's fine steps
        with the names that apply to it (:func:`dataset_step`)."""
        ds = self.datasets[k]
        return replace(self, data=ds.data, geometry=ds.geometry, roi=ds.roi, engine=ds.engine,
                       thickness=ds.thickness, datasets=[ds],
                       fine=[dataset_step(st, k) for st in self.fine])

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


def dataset_names(names: Sequence[str], k: int) -> list[str]:
    """The plan's names that apply to dataset ``k``, without the index: a name without
    one applies to every dataset, ``thickness[1]`` to dataset 1 only."""
    out = []
    for n in names:
        base_name, idx = split_dataset_name(n)
        if (idx is None or idx == k) and base_name not in out:
            out.append(base_name)
    return out


def dataset_step(step: FineStep, k: int) -> FineStep:
    """A fine step as dataset ``k`` sees it (refined names, bounds and scales)."""

    def own(d: Mapping) -> dict:
        out = {}
        for n, v in d.items():
            base_name, idx = split_dataset_name(n)
            if (idx is None and base_name not in out) or idx == k:
                out[base_name] = v
        return out

    return replace(step, refine=dataset_names(step.refine, k), bounds=own(step.bounds),
                   scales=own(step.scales))
