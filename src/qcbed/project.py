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
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_integer, check_number, check_numbers
from .errors import InputError, QcbedError
from .guard import limit_scope, parse_memory
from .parallel import check_executor_spec
from .run_safety import (
    MAX_N_SCAN,
    changed_inputs,
    check_output_folder,
    check_resources,
    estimate_resources,
    file_hashes,
    read_run_state,
    resource_summary,
    run_is_finished,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "PROJECT_SCHEMA",
    "CoarseStep",
    "FineStep",
    "Project",
    "ProjectRun",
    "RunFinished",
    "RunResult",
    "Setup",
    "ValidationReport",
    "build_setup",
    "dumps_toml",
    "load_project",
    "parse_parameter_name",
    "parse_project",
    "resume_run",
    "run_project",
    "validate_project",
]

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
SAMPLING_NAMES = ("rotation", "gl", "shift.row", "shift.col")

_HKL_RE = r"\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)"
_SF_RE = re.compile(r"^(U|Uabs|phase)" + _HKL_RE + r"$")
_B_RE = re.compile(r"^B\(\s*([^()\s]+)\s*\)$")
_DISC_RE = re.compile(r"^disc_shift" + _HKL_RE + r"\.(row|col)$")
_CELL = ("a", "b", "c", "alpha", "beta", "gamma")


# ====================================================================== names
def parse_parameter_name(name: str, *, source: Any = None, tag: str | None = None
                         ) -> tuple[str, Any, str]:
    """Classify a refinable-parameter name and return its canonical spelling.

    Parameters
    ----------
    name : str
        ``thickness`` (Å), ``U(h,k,l)``, ``Uabs(h,k,l)`` (Å⁻²), ``phase(h,k,l)`` (deg),
        ``B(label)`` (Å²), ``voltage`` (kV), ``cell.a`` … ``cell.gamma``,
        ``tilt.x``, ``tilt.y`` (Å⁻¹, shift of every simulated k_t), ``rotation`` (deg),
        ``gl``, ``shift.row``, ``shift.col`` (px),
        ``disc_shift(h,k,l).row``/``.col`` (px), ``probe.sigma``, ``probe.gamma`` (px).

    Returns
    -------
    (kind, detail, canonical)
        kind is one of ``thickness``, ``U``, ``Uabs``, ``phase``, ``B``, ``voltage``,
        ``cell``, ``tilt``, ``sampling``, ``probe``; detail the hkl tuple, site label, cell
        parameter or None.

    Raises
    ------
    InputError
        Unknown name.
    """
    s = str(name).strip()
    if s == "thickness":
        return "thickness", None, s
    if s == "voltage":
        return "voltage", None, s
    m = _SF_RE.match(s)
    if m:
        h = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        return m.group(1), h, f"{m.group(1)}({h[0]},{h[1]},{h[2]})"
    m = _B_RE.match(s)
    if m:
        return "B", m.group(1), f"B({m.group(1)})"
    if s.startswith("cell.") and s[5:] in _CELL:
        return "cell", s[5:], s
    if s in SAMPLING_NAMES:
        return "sampling", None, s
    m = _DISC_RE.match(s)
    if m:
        h = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return "sampling", h, f"disc_shift({h[0]},{h[1]},{h[2]}).{m.group(4)}"
    if s in ("probe.sigma", "probe.gamma"):
        return "probe", None, s
    if s in ("tilt.x", "tilt.y"):
        return "tilt", s[-1], s
    raise InputError("unknown parameter name", source=source, tag=tag,
                     expected="thickness, U(h,k,l), Uabs(h,k,l), phase(h,k,l), B(label), "
                              "voltage, cell.a…cell.gamma, tilt.x, tilt.y, rotation, gl, "
                              "shift.row, shift.col, disc_shift(h,k,l).row/.col, probe.sigma, "
                              "probe.gamma", found=name)


def _hkl_key(h: Iterable[int]) -> str:
    return ",".join(str(int(x)) for x in h)


def _key_hkl(k: str) -> tuple[int, int, int]:
    a = tuple(int(x) for x in k.split(","))
    return a  # type: ignore[return-value]


# ====================================================================== reading helpers
class _Reader:
    """Typed access to a TOML table with messages naming file, key, expected and found."""

    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, msg: str, tag: str, expected: Any = None, found: Any = None) -> InputError:
        return InputError(msg, source=self.source, tag=tag, expected=expected, found=found)

    def table(self, d: Mapping, key: str, tag: str, required: bool = False) -> dict:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if required:
                raise self.err("missing section", tag, expected=f"a [{tag}] table", found=None)
            return {}
        if not isinstance(v, dict):
            raise self.err("must be a table", tag, expected="a table", found=v)
        return v

    def unknown(self, d: Mapping, section: str) -> None:
        allowed = PROJECT_SCHEMA[section]
        for k in d:
            if k not in allowed:
                raise self.err("unknown key", f"{section}.{k}" if section else k,
                               expected="one of " + ", ".join(allowed), found=k)

    def get(self, d: Mapping, key: str, tag: str, kind: str, default: Any = _MISSING, *,
            choices: Sequence[str] | None = None, lo: float | None = None,
            hi: float | None = None, positive: bool = False) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected=f"a {kind}", found=None)
            return default
        if kind == "str":
            if not isinstance(v, str):
                raise self.err("must be a string", tag, expected="a string", found=v)
            if choices is not None and v not in choices:
                raise self.err("unknown value", tag, expected="one of " + ", ".join(choices),
                               found=v)
            return v
        if kind == "bool":
            if not isinstance(v, bool):
                raise self.err("must be true or false", tag, expected="true or false", found=v)
            return v
        if kind == "int":
            return check_integer(v, tag, low=1 if positive else lo, high=hi,
                                 source=self.source)
        if kind == "float":
            return check_number(v, tag, low=0.0 if positive else lo, low_open=positive,
                                high=hi, source=self.source)
        raise AssertionError(kind)  # pragma: no cover

    def vector(self, d: Mapping, key: str, tag: str, n: int, default: Any = _MISSING, *,
               integer: bool = False, nonzero: bool = False) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected=f"a list of {n} numbers", found=None)
            return default
        what = f"a list of {n} {'integers' if integer else 'numbers'}"
        if not isinstance(v, list) or len(v) != n or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise self.err("wrong value", tag, expected=what, found=v)
        if integer:
            for x in v:
                check_integer(x, tag, source=self.source)
        a = check_numbers([float(min(max(x, -1e308), 1e308)) for x in v], tag,
                          source=self.source)
        if not np.all(np.isfinite(a)):
            raise self.err("must be finite", tag, expected=what, found=v)
        if integer and np.any(a != np.round(a)):
            raise self.err("must be integers", tag, expected=what, found=v)
        if nonzero and not np.any(a):
            raise self.err("must not be all zero", tag, expected="a non-zero vector", found=v)
        return tuple(int(x) for x in a) if integer else tuple(float(x) for x in a)

    def vectors(self, d: Mapping, key: str, tag: str, n: int, default: Any = _MISSING, *,
                integer: bool = False, min_len: int = 0) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected=f"a list of {n}-vectors", found=None)
            return default
        if not isinstance(v, list) or len(v) < min_len:
            raise self.err("wrong value", tag,
                           expected=f"a list of at least {min_len} lists of {n} numbers",
                           found=v)
        return [self.vector({"x": x}, "x", f"{tag}[{i}]", n, integer=integer)
                for i, x in enumerate(v)]

    def strings(self, d: Mapping, key: str, tag: str, default: Any = _MISSING) -> Any:
        v = d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.err("missing key", tag, expected="a list of strings", found=None)
            return default
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err("must be a list of strings", tag, expected="a list of strings",
                           found=v)
        return list(v)


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


def load_project(path: str | os.PathLike) -> Project:
    """Read and check a project file.

    Parameters
    ----------
    path : str or path
        The ``.toml`` file.

    Raises
    ------
    InputError
        Missing file, TOML syntax error (with the line), or any bad key or value.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("no such project file", source=p, expected="a TOML file",
                         found="missing" if not p.exists() else "a folder")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise InputError("not a project file (not UTF-8 text)", source=p,
                         expected="a TOML project file",
                         found=f"binary data (byte {exc.start}: {bad!r})") from None
    except OSError as exc:
        raise InputError(f"cannot read the project file: {exc.strerror or exc}",
                         source=p) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise InputError(f"not valid TOML: {exc}", source=p,
                         line=int(m.group(1)) if m else None) from None
    return parse_project(raw, source=str(p), base_dir=p.resolve().parent, text=text)


def parse_project(raw: Mapping[str, Any], *, source: str = "project",
                  base_dir: str | os.PathLike = ".", text: str | None = None) -> Project:
    """Check a project given as a dict (the TOML content) and return a :class:`Project`.

    Only the file's structure and values are checked here (types, ranges, allowed
    words, parameter names); files, shapes, geometry and beams are checked by
    :func:`build_setup` / :func:`validate_project`.
    """
    r = _Reader(source)
    base = Path(base_dir)
    for k in raw:
        if k not in ("project", "crystal", "data", "geometry", "roi", "engine", "gof", "plan"):
            raise r.err("unknown section", k, expected="project, crystal, data, geometry, roi, "
                        "engine, gof, plan", found=k)
    # ---------------------------------------------------------------- [project]
    pj = r.table(raw, "project", "project")
    r.unknown(pj, "project")
    name = r.get(pj, "name", "project.name", "str", "qcbed project")
    output = r.get(pj, "output", "project.output", "str", "results")
    dmap = r.get(pj, "density_map", "project.density_map", "str", "none",
                 choices=("none", "xray", "potential"))
    overwrite = r.get(pj, "overwrite", "project.overwrite", "bool", False)
    # ---------------------------------------------------------------- [crystal]
    cr = r.table(raw, "crystal", "crystal", required=True)
    r.unknown(cr, "crystal")
    crystal = {"source": r.get(cr, "source", "crystal.source", "str")}
    b = cr.get("b_iso", {})
    if not isinstance(b, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          and v >= 0 for v in b.values()):
        raise r.err("must map site labels to B ≥ 0 (Å²)", "crystal.b_iso",
                    expected="a table such as {Si1 = 0.47}", found=b)
    crystal["b_iso"] = {str(k): float(v) for k, v in b.items()}
    # ---------------------------------------------------------------- [data]
    dt = r.table(raw, "data", "data", required=True)
    r.unknown(dt, "data")
    fmt = r.get(dt, "format", "data.format", "str", "auto", choices=DATA_FORMATS)
    kind = r.get(dt, "kind", "data.kind", "str", "lacbed" if fmt in ("felix", "npy_stack")
                 else _MISSING, choices=("cbed", "lacbed"))
    if fmt in ("felix", "npy_stack") and kind != "lacbed":
        raise r.err(f"format '{fmt}' holds a LACBED stack", "data.kind", expected="lacbed",
                    found=kind)
    data: dict[str, Any] = {"kind": kind, "format": fmt}
    if fmt == "felix":
        data["folder"] = r.get(dt, "folder", "data.folder", "str")
    else:
        data["files"] = r.strings(dt, "files", "data.files")
        if not data["files"]:
            raise r.err("no data files", "data.files", expected="at least one file", found=[])
    if fmt == "npy_stack":
        data["g_vectors"] = r.get(dt, "g_vectors", "data.g_vectors", "str")
        data["hkl"] = None
    elif fmt != "felix":
        data["hkl"] = r.vectors(dt, "hkl", "data.hkl", 3, integer=True, min_len=1)
        if kind == "cbed" and len(data["files"]) != 1:
            raise r.err("a CBED pattern is one image", "data.files", expected="1 file",
                        found=len(data["files"]))
        if kind == "lacbed" and len(data["files"]) != len(data["hkl"]):
            raise r.err("one reflection per LACBED image", "data.hkl",
                        expected=f"{len(data['files'])} reflections (one per file)",
                        found=len(data["hkl"]))
    else:
        data["hkl"] = None
    var = r.get(dt, "variance", "data.variance", "str", "poisson")
    if kind == "cbed" and var not in ("poisson", "detector"):
        raise r.err("CBED variances come from the detector model", "data.variance",
                    expected="'poisson' or 'detector'", found=var)
    data["variance"] = var
    data["variance_floor"] = r.get(dt, "variance_floor", "data.variance_floor", "float", 1.0,
                                   positive=True)
    data["clip_negative"] = r.get(dt, "clip_negative", "data.clip_negative", "bool", False)
    data["allow_negative"] = r.get(dt, "allow_negative", "data.allow_negative", "bool", False)
    if data["clip_negative"] and data["allow_negative"]:
        raise r.err("clip_negative and allow_negative exclude each other", "data.clip_negative",
                    expected="at most one of them true", found=True)
    data["mask"] = r.get(dt, "mask", "data.mask", "str", None)
    data["background"] = r.get(dt, "background", "data.background", "float", None, lo=0.0)
    data["require_hkl"] = r.get(dt, "require_hkl", "data.require_hkl", "bool", True)
    det = r.table(dt, "detector", "data.detector")
    r.unknown(det, "data.detector")
    data["detector"] = {k: r.get(det, k, f"data.detector.{k}", "float") for k in det}
    # ---------------------------------------------------------------- [geometry]
    ge = r.table(raw, "geometry", "geometry", required=True)
    r.unknown(ge, "geometry")
    geom: dict[str, Any] = {
        "voltage_kv": r.get(ge, "voltage_kv", "geometry.voltage_kv", "float", None,
                            positive=True),
        "zone": r.vector(ge, "zone", "geometry.zone", 3, nonzero=True),
        "x_axis": r.vector(ge, "x_axis", "geometry.x_axis", 3, nonzero=True),
        "normal": r.vector(ge, "normal", "geometry.normal", 3, None, nonzero=True),
        "mode": r.get(ge, "mode", "geometry.mode", "str", kind, choices=("cbed", "lacbed")),
        "rotation": r.get(ge, "rotation", "geometry.rotation", "float", 0.0),
        "mirror": r.get(ge, "mirror", "geometry.mirror", "bool", False),
        "gl": r.get(ge, "gl", "geometry.gl", "float", positive=True),
        "tilt0": r.vector(ge, "tilt0", "geometry.tilt0", 2, (0.0, 0.0)),
        "reference": r.vector(ge, "reference", "geometry.reference", 2, None),
        "shift": r.vector(ge, "shift", "geometry.shift", 2, (0.0, 0.0)),
        "display_shape": r.vector(ge, "display_shape", "geometry.display_shape", 2, None,
                                  integer=True),
    }
    if geom["mode"] != kind:
        raise r.err("geometry mode differs from the data kind", "geometry.mode", expected=kind,
                    found=geom["mode"])
    ds = ge.get("disc_shifts", [])
    if not isinstance(ds, list):
        raise r.err("must be an array of tables", "geometry.disc_shifts",
                    expected="[[geometry.disc_shifts]] with hkl and shift", found=ds)
    shifts = {}
    for i, t in enumerate(ds):
        tag = f"geometry.disc_shifts[{i}]"
        if not isinstance(t, dict):
            raise r.err("must be a table", tag, expected="{hkl = [h,k,l], shift = [dr, dc]}",
                        found=t)
        r.unknown(t, "geometry.disc_shifts")
        shifts[r.vector(t, "hkl", tag + ".hkl", 3, integer=True)] = r.vector(
            t, "shift", tag + ".shift", 2)
    geom["disc_shifts"] = shifts
    # ---------------------------------------------------------------- [roi]
    ro = r.table(raw, "roi", "roi", required=True)
    r.unknown(ro, "roi")
    pad = r.get(ro, "pad", "roi.pad", "int", 0, lo=0)
    roi: dict[str, Any] = {
        "hkl": r.vectors(ro, "hkl", "roi.hkl", 3, None, integer=True, min_len=1),
        "disc_shifts": r.vectors(ro, "disc_shifts", "roi.disc_shifts", 3, [], integer=True),
    }
    regs = ro.get("regions", _MISSING)
    if regs is _MISSING or not isinstance(regs, list) or not regs:
        raise r.err("no regions of interest", "roi.regions",
                    expected="at least one [[roi.regions]] table", found=None if regs is
                    _MISSING else regs)
    regions = []
    for i, t in enumerate(regs):
        tag = f"roi.regions[{i}]"
        if not isinstance(t, dict):
            raise r.err("must be a table", tag, expected="a [[roi.regions]] table", found=t)
        r.unknown(t, "roi.regions")
        corners = r.vectors(t, "corners", tag + ".corners", 2)
        if len(corners) != 3:
            raise r.err("a region has three corners (display row, col)", tag + ".corners",
                        expected="3 corners [[r1,c1],[r2,c2],[r3,c3]]", found=len(corners))
        c = np.asarray(corners)
        e12, e13 = c[1] - c[0], c[2] - c[0]
        if abs(e12[0] * e13[1] - e12[1] * e13[0]) < 1e-9:
            raise r.err("region corners are collinear", tag + ".corners",
                        expected="three corners spanning a parallelogram", found=corners)
        samples = r.vector(t, "samples", tag + ".samples", 2, integer=True)
        if min(samples) < 2:
            raise r.err("a region needs at least 2 samples per side", tag + ".samples",
                        expected="[n12, n13], each ≥ 2", found=list(samples))
        regions.append({
            "corners": corners, "samples": samples,
            "pad": r.get(t, "pad", tag + ".pad", "int", pad, lo=0),
            "reflections": r.vectors(t, "reflections", tag + ".reflections", 3, None,
                                     integer=True, min_len=1)})
    roi["regions"] = regions
    # ---------------------------------------------------------------- [engine]
    en = r.table(raw, "engine", "engine")
    r.unknown(en, "engine")
    engine: dict[str, Any] = {
        "mode": r.get(en, "mode", "engine.mode", "str", "exact", choices=("fast", "exact")),
        "coarse_mode": r.get(en, "coarse_mode", "engine.coarse_mode", "str", "fast",
                             choices=("fast", "exact")),
        "gmax": r.get(en, "gmax", "engine.gmax", "float", 3.0, positive=True),
        "smax": r.get(en, "smax", "engine.smax", "float", 0.05, positive=True),
        "holz": r.get(en, "holz", "engine.holz", "bool", True),
        "min_pool": r.get(en, "min_pool", "engine.min_pool", "int", 0, lo=0),
        "pool": r.vectors(en, "pool", "engine.pool", 3, None, integer=True, min_len=1),
        "sgmin": r.get(en, "sgmin", "engine.sgmin", "float", 0.3, lo=0.0),
        "omega": r.get(en, "omega", "engine.omega", "float", 30.0, lo=0.0),
        "sgmax": r.get(en, "sgmax", "engine.sgmax", "float", None, positive=True),
        "bethe": r.get(en, "bethe", "engine.bethe", "bool", True),
        "min_strong": r.get(en, "min_strong", "engine.min_strong", "int", 0, lo=0),
        "elastic": r.get(en, "elastic", "engine.elastic", "str", "kirkland"),
        "absorption": r.get(en, "absorption", "engine.absorption", "str", "bird_king"),
        "xi": r.get(en, "xi", "engine.xi", "float", 0.1, lo=0.0),
        "chunk_size": r.get(en, "chunk_size", "engine.chunk_size", "int", 256, lo=1),
    }
    ex = en.get("executor", "auto")
    if isinstance(ex, bool) or not isinstance(ex, (str, int)):
        raise r.err("wrong executor", "engine.executor",
                    expected="auto, serial, N, dask, tcp://host:port or mpi", found=ex)
    check_executor_spec(ex, source=source, tag="engine.executor")
    engine["executor"] = ex
    ml = en.get("memory_limit", None)
    engine["memory_limit"] = None if ml is None else parse_memory(
        ml, source=source, tag="engine.memory_limit")
    try:
        from .scattering.structure_factors import PotentialModel

        PotentialModel(engine["elastic"], engine["absorption"], xi=engine["xi"])
    except InputError as exc:
        which = "engine.absorption" if "absorption" in exc.reason else "engine.elastic"
        raise r.err(exc.reason, which, expected=exc.expected, found=exc.found) from None
    # ---------------------------------------------------------------- [gof]
    go = r.table(raw, "gof", "gof")
    r.unknown(go, "gof")
    gof = {"metric": r.get(go, "metric", "gof.metric", "str", "chi2", choices=GOF_METRICS),
           "background": r.get(go, "background", "gof.background", "str", "per_disc",
                               choices=BACKGROUNDS),
           "probe": r.vector(go, "probe", "gof.probe", 2, None)}
    if gof["probe"] is not None and min(gof["probe"]) < 0:
        raise r.err("probe widths must be ≥ 0", "gof.probe", expected="[sigma, gamma] ≥ 0 px",
                    found=list(gof["probe"]))
    # ---------------------------------------------------------------- [plan]
    pl = r.table(raw, "plan", "plan", required=True)
    r.unknown(pl, "plan")
    thickness = r.get(pl, "thickness", "plan.thickness", "float", positive=True)
    coarse = [_parse_coarse(r, t, i) for i, t in enumerate(_array_of_tables(r, pl, "coarse"))]
    fine = [_parse_fine(r, t, i) for i, t in enumerate(_array_of_tables(r, pl, "fine"))]
    if not coarse and not fine:
        raise r.err("the plan has no steps", "plan",
                    expected="at least one [[plan.coarse]] or [[plan.fine]] step", found=None)
    if gof["probe"] is None:
        for i, st in enumerate(fine):
            for n in st.refine:
                if n.startswith("probe."):
                    raise r.err("probe parameters need gof.probe", f"plan.fine[{i}].refine",
                                expected="gof.probe = [sigma, gamma]", found=n)
    return Project(source=source, base_dir=base, raw=dict(raw), text=text or dumps_toml(raw),
                   name=name, output=_resolve(base, output), density_map=dmap,
                   overwrite=overwrite,
                   crystal=crystal, data=data, geometry=geom, roi=roi, engine=engine, gof=gof,
                   thickness=thickness, coarse=coarse, fine=fine)


def _resolve(base: Path, p: str) -> Path:
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else base / q


def _array_of_tables(r: _Reader, d: Mapping, key: str) -> list[dict]:
    v = d.get(key, [])
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
        raise r.err("must be an array of tables", f"plan.{key}",
                    expected=f"[[plan.{key}]] tables", found=v)
    return v


def _parse_coarse(r: _Reader, t: Mapping, i: int) -> CoarseStep:
    tag = f"plan.coarse[{i}]"
    r.unknown(t, "plan.coarse")
    step = r.get(t, "step", tag + ".step", "str", "orientation_thickness", choices=COARSE_STEPS)
    tr = r.vector(t, "thickness_range", tag + ".thickness_range", 2, None)
    if tr is not None and not 0 < tr[0] < tr[1]:
        raise r.err("thickness range must satisfy 0 < t_min < t_max", tag + ".thickness_range",
                    expected="[t_min, t_max] in Å", found=list(tr))
    ts = r.vector(t, "template_size", tag + ".template_size", 2, None, integer=True)
    if ts is not None and min(ts) < 3:
        raise r.err("template too small", tag + ".template_size", expected="[rows, cols] ≥ 3",
                    found=list(ts))
    br = r.vector(t, "b_range", tag + ".b_range", 2, (0.0, 2.0))
    if not 0 <= br[0] < br[1]:
        raise r.err("B range must satisfy 0 ≤ B_min < B_max", tag + ".b_range",
                    expected="[B_min, B_max] in Å²", found=list(br))
    return CoarseStep(
        step=step, thickness_range=tr,
        n_scan=r.get(t, "n_scan", tag + ".n_scan", "int", 21, lo=3, hi=MAX_N_SCAN),
        xtol=r.get(t, "xtol", tag + ".xtol", "float", None, positive=True),
        margin=r.get(t, "margin", tag + ".margin", "int", 10, lo=1),
        template_size=ts,
        template_center=r.vector(t, "template_center", tag + ".template_center", 2, None),
        template_step=r.get(t, "template_step", tag + ".template_step", "float", 1.0,
                            positive=True),
        reflections=r.vectors(t, "reflections", tag + ".reflections", 3, None, integer=True,
                              min_len=1),
        rel_range=r.get(t, "rel_range", tag + ".rel_range", "float", 0.05, positive=True,
                        hi=0.5),
        half_range=r.get(t, "half_range", tag + ".half_range", "float", 0.5, positive=True),
        labels=r.strings(t, "labels", tag + ".labels", None), b_range=br)


def _parse_fine(r: _Reader, t: Mapping, i: int) -> FineStep:
    tag = f"plan.fine[{i}]"
    r.unknown(t, "plan.fine")
    names = r.strings(t, "refine", tag + ".refine")
    if not names:
        raise r.err("nothing to refine", tag + ".refine", expected="at least one parameter",
                    found=[])
    canon = []
    for n in names:
        c = parse_parameter_name(n, source=r.source, tag=tag + ".refine")[2]
        if c in canon:
            raise r.err("parameter listed twice", tag + ".refine", expected="unique names",
                        found=c)
        canon.append(c)
    bounds = {}
    bt = r.table(t, "bounds", tag + ".bounds")
    for k, v in bt.items():
        c = parse_parameter_name(k, source=r.source, tag=f"{tag}.bounds")[2]
        lo, hi = r.vector(bt, k, f"{tag}.bounds.{k}", 2)
        if not lo < hi:
            raise r.err("lower bound must be below the upper bound", f"{tag}.bounds.{k}",
                        expected="[lower, upper] with lower < upper", found=v)
        bounds[c] = (lo, hi)
    scales = {}
    st = r.table(t, "scales", tag + ".scales")
    for k in st:
        c = parse_parameter_name(k, source=r.source, tag=f"{tag}.scales")[2]
        scales[c] = r.get(st, k, f"{tag}.scales.{k}", "float", positive=True)
    method = r.get(t, "method", tag + ".method", "str", "lm", choices=("lm", "nested"))
    outer = r.get(t, "outer", tag + ".outer", "str", "lm",
                  choices=("lm", "nelder-mead", "powell"))
    return FineStep(name=r.get(t, "name", tag + ".name", "str", f"fine {i + 1}"),
                    refine=canon, method=method, outer=outer,
                    max_iter=r.get(t, "max_iter", tag + ".max_iter", "int", 30, lo=1),
                    ftol=r.get(t, "ftol", tag + ".ftol", "float", 1e-9, positive=True),
                    xtol=r.get(t, "xtol", tag + ".xtol", "float", 1e-9, positive=True),
                    jacobian=r.get(t, "jacobian", tag + ".jacobian", "str", "analytic",
                                   choices=("analytic", "numeric")),
                    bounds=bounds, scales=scales)


# ====================================================================== TOML writer
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        s = repr(x)
        return s if any(ch in s for ch in ".eEn") else s + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, Path):
        return json.dumps(str(v), ensure_ascii=False)
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def dumps_toml(data: Mapping[str, Any], comments: Mapping[str, str] | None = None,
               header: str = "") -> str:
    """Write a dict as TOML (tables, arrays of tables, inline values).

    Parameters
    ----------
    data : mapping
        Nested dicts and lists of numbers, strings, booleans; a list of dicts becomes
        an array of tables.
    comments : mapping, optional
        ``{'section.key': 'text'}`` comments written above keys (``'section'`` for a
        table header).
    header : str
        Comment lines at the top of the file.
    """
    comments = comments or {}
    out: list[str] = [f"# {line}".rstrip() for line in header.splitlines()] if header else []

    def emit(table: Mapping[str, Any], prefix: str, array: bool) -> None:
        scalars = [(k, v) for k, v in table.items() if v is not None and not (
            isinstance(v, dict)) and not _is_table_array(v)]
        subs = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
        if prefix and (scalars or array or not (subs or arrays)):
            if out:
                out.append("")
            if prefix in comments:
                out.extend(f"# {c}" for c in comments[prefix].splitlines())
            out.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        elif prefix in comments:
            out.extend(["", *(f"# {c}" for c in comments[prefix].splitlines())])
        for k, v in scalars:
            key = f"{prefix}.{k}" if prefix else k
            if key in comments:
                out.extend(f"# {c}" for c in comments[key].splitlines())
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subs:
            emit(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), False)
        for k, v in arrays:
            for item in v:
                emit(item, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), True)

    emit(data, "", False)
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


# ====================================================================== building
@dataclass
class Setup:
    """The objects a project describes, built and checked.

    Attributes
    ----------
    project : Project
    crystal : Crystal
        With the ``crystal.b_iso`` overrides applied.
    data : CBEDPattern or LACBEDStack
    geometry : ExperimentGeometry
    hkl : ndarray (n_refl, 3)
        Reflections compared.
    regions : list of Region
    masks : ndarray (n_regions, n_refl) bool
        Which reflections each region uses.
    voltage_kv : float
    executor : Executor or None
    input_files : list of Path
        Every file read (hashed into the results' provenance).
    warnings : list of str
    """

    project: Project
    crystal: Any
    data: Any
    geometry: Any
    hkl: np.ndarray
    regions: list
    masks: np.ndarray
    voltage_kv: float
    executor: Any = None
    input_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _pool_kt: tuple[np.ndarray, float] | None = None

    # ------------------------------------------------------------ engine
    def pool_range(self) -> tuple[np.ndarray, float]:
        """(kt centre, radius) in Å⁻¹ over which the automatic pool must be complete."""
        if self._pool_kt is None:
            kts = [self.geometry.display_to_kt(reg.points()).reshape(-1, 2)
                   for reg in self.regions]
            p = self.geometry.pixel_size
            for st in self.project.coarse:
                c, size = self.template(st)
                half = (np.asarray(size) - 1) / 2 * st.template_step + st.margin * \
                    st.template_step
                corners = np.array([[c[0] - half[0], c[1] - half[1]],
                                    [c[0] + half[0], c[1] + half[1]],
                                    [c[0] - half[0], c[1] + half[1]],
                                    [c[0] + half[0], c[1] - half[1]]])
                kts.append(self.geometry.display_to_kt(corners))
            k = np.concatenate(kts)
            centre = 0.5 * (k.min(axis=0) + k.max(axis=0))
            radius = float(np.max(np.linalg.norm(k - centre, axis=1))) + 5 * p
            self._pool_kt = (centre, radius)
        return self._pool_kt

    def template(self, step: CoarseStep) -> tuple[np.ndarray, tuple[int, int]]:
        """Centre (display row, col) and size (rows, cols) of a coarse step's template."""
        if step.template_center is not None:
            centre = np.asarray(step.template_center, float)
        else:
            centre = np.asarray(self.geometry.reference, float)
        if step.template_size is not None:
            size = step.template_size
        else:
            reg = self.regions[0]
            pts = reg.points().reshape(-1, 2)
            ext = (pts.max(axis=0) - pts.min(axis=0)) / step.template_step
            size = (max(int(ext[0]) | 1, 3), max(int(ext[1]) | 1, 3))
        return centre, (int(size[0]), int(size[1]))

    def simulation(self, *, crystal=None, voltage_kv: float | None = None,
                   mode: str | None = None):
        """The engine set-up of the project (automatic or explicit pool, outputs = ``hkl``)."""
        from .bloch.beams import BeamSelection
        from .bloch.simulation import Simulation
        from .scattering.structure_factors import PotentialModel

        e = self.project.engine
        g = self.project.geometry
        centre, radius = self.pool_range()
        sel = BeamSelection(sgmin=e["sgmin"], omega=e["omega"], sgmax=e["sgmax"],
                            bethe=e["bethe"], min_strong=e["min_strong"])
        kw: dict[str, Any] = dict(
            normal=g["normal"], outputs=self.hkl,
            potential=PotentialModel(e["elastic"], e["absorption"], xi=e["xi"]),
            selection=sel, mode=mode or e["mode"], gmax=e["gmax"], smax=e["smax"],
            holz=e["holz"], kt_center=centre, kt_radius=radius, min_pool=e["min_pool"],
            chunk_size=e["chunk_size"], executor=self.executor)
        if e["pool"] is not None:
            kw["pool"] = e["pool"]
        return Simulation(crystal or self.crystal, voltage_kv or self.voltage_kv, g["zone"],
                          g["x_axis"], **kw)

    def roi(self, geometry=None, refine: Iterable[str] = ()):
        """The refinement dataset (:class:`~qcbed.experiment.ROI`) for a geometry."""
        from .experiment import ROI

        return ROI(self.data, self.regions, geometry or self.geometry, hkl=self.hkl,
                   masks=self.masks, refine=tuple(refine),
                   disc_shifts=self.project.roi["disc_shifts"])


def _err(project: Project, msg: str, tag: str, expected: Any = None, found: Any = None
         ) -> InputError:
    return InputError(msg, source=project.source, tag=tag, expected=expected, found=found)


def _read_crystal(project: Project) -> tuple[Any, dict, Path]:
    from .io import read_input

    src = project.path(project.crystal["source"])
    if not src.exists():
        raise _err(project, "crystal source not found", "crystal.source",
                   expected="an existing CIF, .dat file or Felix folder", found=str(src))
    crystal, settings = read_input(src)
    if project.crystal["b_iso"]:
        try:
            crystal = crystal.with_b_iso(project.crystal["b_iso"])
        except InputError as exc:
            raise _err(project, "unknown site label", "crystal.b_iso", expected=exc.expected,
                       found=exc.found) from None
    return crystal, settings or {}, src


def _load_array(project: Project, name: str, tag: str) -> tuple[np.ndarray, Path]:
    p = project.path(name)
    if not p.is_file():
        raise _err(project, "file not found", tag, expected="an existing file", found=str(p))
    from .experiment.readers import load_npy

    return load_npy(p, tag=tag), p


def _read_data(project: Project) -> tuple[Any, list[Path]]:
    """The data object and the files read."""
    from .experiment import (
        DetectorModel,
        LACBEDStack,
        read_felix_images,
        read_image,
        read_npy_stack,
    )

    d = project.data
    neg = dict(clip_negative=d["clip_negative"], allow_negative=d["allow_negative"])
    files: list[Path] = []
    try:
        detector = DetectorModel(**d["detector"]) if d["detector"] else None
    except InputError as exc:
        raise _err(project, exc.reason, f"data.detector.{exc.tag}", expected=exc.expected,
                   found=exc.found) from None
    if d["format"] == "felix":
        folder = project.path(d["folder"])
        if not folder.is_dir():
            raise _err(project, "Felix folder not found", "data.folder",
                       expected="an existing folder", found=str(folder))
        stack = read_felix_images(folder, require_hkl=d["require_hkl"],
                                  variance_floor=d["variance_floor"], **neg)
        files = [Path(f) for f in stack.metadata.get("files", [])]
    elif d["format"] == "npy_stack":
        img = project.path(d["files"][0])
        gv = project.path(d["g_vectors"])
        for p, tag in ((img, "data.files"), (gv, "data.g_vectors")):
            if not p.is_file():
                raise _err(project, "file not found", tag, expected="an existing file",
                           found=str(p))
        var = None
        if d["variance"] not in ("poisson",):
            var = project.path(d["variance"])
            if not var.is_file():
                raise _err(project, "variance file not found", "data.variance",
                           expected="'poisson' or an existing .npy file", found=str(var))
            files.append(var)
        stack = read_npy_stack(img, var, gv, variance_floor=d["variance_floor"], **neg)
        files += [img, gv]
    else:
        paths = []
        for i, f in enumerate(d["files"]):
            p = project.path(f)
            if not p.is_file():
                raise _err(project, "data file not found", f"data.files[{i}]",
                           expected="an existing image file", found=str(p))
            if d["format"] not in ("auto",) and p.suffix.lower().lstrip(".") != d["format"]:
                raise _err(project, "file suffix differs from data.format", f"data.files[{i}]",
                           expected=f".{d['format']}", found=p.suffix)
            paths.append(p)
        files += paths
        if d["kind"] == "cbed":
            pat = read_image(paths[0], detector=detector, **neg)
            changes: dict[str, Any] = {"hkl": np.asarray(d["hkl"], int)}
            if d["background"] is not None:
                changes["background"] = d["background"]
            if d["mask"] is not None:
                m, mp = _load_array(project, d["mask"], "data.mask")
                if m.shape != pat.shape:
                    raise _err(project, "mask shape differs from the image", "data.mask",
                               expected=pat.shape, found=m.shape)
                changes["mask"] = m.astype(bool)
                files.append(mp)
            from .experiment import CBEDPattern

            try:
                return CBEDPattern(**{**_fields(pat), **changes}), files
            except InputError as exc:
                raise _err(project, exc.reason, f"data.{exc.tag or 'files'}",
                           expected=exc.expected, found=exc.found) from None
        imgs = []
        for i, p in enumerate(paths):
            im = read_image(p, **neg).image
            if imgs and im.shape != imgs[0].shape:
                raise _err(project, "LACBED images differ in shape", f"data.files[{i}]",
                           expected=imgs[0].shape, found=im.shape)
            imgs.append(im)
        var = None
        if d["variance"] != "poisson":
            var, vp = _load_array(project, d["variance"], "data.variance")
            files.append(vp)
            if var.shape != (len(imgs),) + imgs[0].shape:
                raise _err(project, "variance maps must have the shape of the stack",
                           "data.variance", expected=(len(imgs),) + imgs[0].shape,
                           found=var.shape)
        mask = None
        if d["mask"] is not None:
            mask, mp = _load_array(project, d["mask"], "data.mask")
            files.append(mp)
        try:
            stack = LACBEDStack(np.stack(imgs), np.asarray(d["hkl"], int), variance=var,
                                variance_floor=d["variance_floor"], mask=mask,
                                source=str(paths[0].parent))
        except InputError as exc:
            raise _err(project, exc.reason, f"data.{exc.tag or 'files'}", expected=exc.expected,
                       found=exc.found) from None
    return stack, files


def _fields(obj: Any) -> dict:
    from dataclasses import fields

    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def build_setup(project: Project, *, executor: Any = None) -> Setup:
    """Read the crystal and the data and build geometry and regions of a project.

    Parameters
    ----------
    project : Project
    executor : Executor, str or int, optional
        Engine executor (:func:`qcbed.parallel.make_executor`); default the project's
        ``engine.executor``.

    Raises
    ------
    InputError
        Missing or unreadable files, wrong shapes, a geometry that does not fit the
        data, reflections without an image, bad regions.
    """
    from .bloch.geometry import ZoneFrame
    from .experiment import ExperimentGeometry, LACBEDStack, Region
    from .parallel import make_executor

    crystal, settings, csrc = _read_crystal(project)
    data, files = _read_data(project)
    g = project.geometry
    voltage = g["voltage_kv"] or settings.get("voltage_kv") or getattr(data, "voltage_kv", None)
    if voltage is None:
        raise _err(project, "no accelerating voltage", "geometry.voltage_kv",
                   expected="voltage_kv in kV (or a .dat/Felix crystal source)", found=None)
    try:
        frame = ZoneFrame(crystal.lattice, g["zone"], g["x_axis"], g["normal"])
    except InputError as exc:
        raise _err(project, exc.reason, "geometry." + {"xaxis": "x_axis", "norm": "normal"}.get(
            exc.tag or "zone", exc.tag or "zone"), expected=exc.expected,
            found=exc.found) from None
    zc = crystal.lattice.cartesian_direct(g["zone"])
    gx = crystal.lattice.cartesian_reciprocal(g["x_axis"])
    if np.linalg.norm(np.cross(zc, gx)) < 1e-6 * np.linalg.norm(zc) * np.linalg.norm(gx):
        raise _err(project, "x axis is parallel to the zone axis", "geometry.x_axis",
                   expected="a reciprocal vector not parallel to the zone axis",
                   found=list(g["x_axis"]))
    try:
        geom = ExperimentGeometry(
            frame, data.shape, rotation=g["rotation"], gl=g["gl"], tilt0=g["tilt0"],
            reference=g["reference"], mirror=g["mirror"], shift=g["shift"],
            disc_shifts=g["disc_shifts"], mode=g["mode"], display_shape=g["display_shape"])
    except InputError as exc:
        raise _err(project, exc.reason, f"geometry.{exc.tag or ''}".rstrip("."),
                   expected=exc.expected, found=exc.found) from None
    # reflections
    data_hkl = data.hkl if isinstance(data, LACBEDStack) else np.asarray(data.hkl, int)
    if project.roi["hkl"] is not None:
        hkl = np.asarray(project.roi["hkl"], int).reshape(-1, 3)
        have = {tuple(h) for h in np.asarray(data_hkl)}
        for h in hkl:
            if tuple(h) not in have:
                raise _err(project, "reflection has no image/disc in the data", "roi.hkl",
                           expected="reflections of data.hkl", found=tuple(int(x) for x in h))
    elif isinstance(data, LACBEDStack) and data.metadata.get("felix_hkl") is not None:
        hkl = np.vstack([np.zeros((1, 3), int), np.asarray(data.metadata["felix_hkl"], int)])
    else:
        hkl = np.asarray(data_hkl, int).reshape(-1, 3)
    regions, masks = [], []
    for i, rs in enumerate(project.roi["regions"]):
        try:
            regions.append(Region(np.asarray(rs["corners"]), rs["samples"][0], rs["samples"][1],
                                  rs["pad"]))
        except InputError as exc:
            raise _err(project, exc.reason, f"roi.regions[{i}].{exc.tag}",
                       expected=exc.expected, found=exc.found) from None
        m = np.ones(len(hkl), bool)
        if rs["reflections"] is not None:
            use = {tuple(x) for x in rs["reflections"]}
            known = {tuple(int(v) for v in h) for h in hkl}
            bad = sorted(use - known)
            if bad:
                raise _err(project, "region uses a reflection that is not compared",
                           f"roi.regions[{i}].reflections", expected="reflections of roi.hkl",
                           found=bad[0])
            m = np.array([tuple(int(v) for v in h) in use for h in hkl])
        masks.append(m)
    for h in project.roi["disc_shifts"]:
        if not any(np.array_equal(h, x) for x in hkl):
            raise _err(project, "disc shift of a reflection that is not compared",
                       "roi.disc_shifts", expected="reflections of roi.hkl", found=tuple(h))
    ex = executor if executor is not None else project.engine["executor"]
    try:
        # 'auto': the engine picks (local processes for large jobs, serial for small ones)
        ex_obj = None if ex in (None, "auto") else make_executor(ex)
    except InputError as exc:
        raise _err(project, exc.reason, "engine.executor", expected=exc.expected,
                   found=exc.found) from None
    inputs = [csrc] if csrc.is_file() else sorted(p for p in csrc.iterdir()
                                                  if p.suffix in (".inp", ".cif", ".hkl"))
    return Setup(project=project, crystal=crystal, data=data, geometry=geom, hkl=hkl,
                 regions=regions, masks=np.array(masks), voltage_kv=float(voltage),
                 executor=ex_obj, input_files=inputs + list(files))


# ====================================================================== validation
@dataclass
class ValidationReport:
    """Outcome of :func:`validate_project`.

    Attributes
    ----------
    checks : list of (str, str)
        (class of check, what was found) for every passed check.
    errors : list of InputError
    warnings : list of str
    """

    checks: list[tuple[str, str]] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    beam_counts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        lines = [f"ok    {c:<11s} {msg}" for c, msg in self.checks]
        lines += [f"warn  {w}" for w in self.warnings]
        lines += [f"ERROR {e}" for e in self.errors]
        lines.append("project is valid" if self.ok else f"{len(self.errors)} error(s)")
        return "\n".join(lines)


def validate_project(path_or_project: str | os.PathLike | Project, *, executor: Any = "serial"
                     ) -> ValidationReport:
    """Check a project before a long run: file, data, geometry, ROI, beams, parameters.

    Every class of problem gives an :class:`InputError` naming the key, the expected
    and the found value; the checks stop at the first class that fails when later
    ones depend on it.
    """
    rep = ValidationReport()
    try:
        proj = path_or_project if isinstance(path_or_project, Project) else \
            load_project(path_or_project)
    except InputError as exc:
        rep.errors.append(exc)
        return rep
    rep.checks.append(("file", f"{proj.source}: sections and keys, {len(proj.coarse)} coarse "
                               f"and {len(proj.fine)} fine steps"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            setup = build_setup(proj, executor=executor)
        except InputError as exc:
            rep.errors.append(exc)
            return rep
        finally:
            rep.warnings.extend(str(w.message) for w in caught
                                if issubclass(w.category, UserWarning))
    rep.checks.append(("data", f"{type(setup.data).__name__} {tuple(setup.data.shape)}, "
                               f"{len(setup.hkl)} reflections compared"))
    rep.checks.append(("geometry", f"pixel size {setup.geometry.pixel_size:.4g} 1/A, "
                                   f"g_x length {setup.geometry.g_x_length:.4g} 1/A"))
    limit = proj.engine["memory_limit"]
    try:
        with limit_scope(limit):
            check_resources(estimate_resources(proj, len(setup.hkl)), source=proj.source)
            _check_roi(setup, rep)
            sim = _check_beams(setup, rep)
            n_strong = int(rep.beam_counts.get("strong_max", 0)) or None
            items = estimate_resources(proj, len(setup.hkl), n_strong=n_strong,
                                       n_pool=len(sim.pool))
            check_resources(items, source=proj.source)
            rep.checks.append(("resources", resource_summary(items, limit)))
            _check_parameters(setup, sim, rep)
            check_output_folder(proj.output, source=proj.source, overwrite=proj.overwrite,
                                inputs=setup.input_files)
    except InputError as exc:
        rep.errors.append(exc)
    return rep


def _check_roi(setup: Setup, rep: ValidationReport) -> None:
    roi = setup.roi()
    s = roi.sample_details()
    n_used = roi._used.sum(axis=1)
    for k, h in enumerate(setup.hkl):
        if n_used[k] and s.n_valid[k] == 0:
            raise _err(setup.project, f"no sample of reflection {tuple(int(x) for x in h)} "
                       "falls inside the image", "roi.regions",
                       expected="regions inside the image (display pixels)",
                       found=f"{int(s.n_outside[k])} outside, {int(s.n_masked[k])} masked")
    frac = float(s.n_outside.sum()) / max(float(n_used.sum()), 1.0)
    if frac > 0:
        rep.warnings.append(f"roi.regions: {int(s.n_outside.sum())} of {int(n_used.sum())} "
                            f"samples ({100 * frac:.1f} %) fall outside the image and are "
                            "excluded")
    rep.checks.append(("roi", f"{len(setup.regions)} region(s), {roi.n_points} points, "
                              f"{int(s.valid.sum())} valid samples"))


def _check_beams(setup: Setup, rep: ValidationReport):
    try:
        sim = setup.simulation()
    except InputError as exc:
        raise _err(setup.project, exc.reason, "engine", expected=exc.expected,
                   found=exc.found) from None
    rot, tran = setup.crystal.operations
    cen = tran[np.all(rot == np.eye(3, dtype=int), axis=(1, 2))]
    tag = "roi.hkl" if setup.project.roi["hkl"] is not None else "data.hkl"
    for h in setup.hkl:
        if np.any(np.abs(np.exp(2j * np.pi * (cen @ h)) - 1) > 1e-6):
            raise _err(setup.project, "reflection is absent by the lattice centring (never "
                       "excited)", tag, expected="reflections allowed by the lattice",
                       found=tuple(int(v) for v in h))
    pool = {tuple(int(v) for v in h) for h in sim.pool.hkl}
    for h in setup.hkl:
        if tuple(int(v) for v in h) not in pool:
            raise _err(setup.project, "compared reflection is not in the beam pool",
                       "engine.pool", expected="every reflection of roi.hkl in the pool",
                       found=tuple(int(v) for v in h))
    centre, radius = setup.pool_range()
    # the centre and a ring of directions over the tilt range: beam counts and
    # what the solver had to do there (exact re-solves, rejected directions)
    ang = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    ring = np.asarray(centre, float) + 0.9 * radius * np.c_[np.cos(ang), np.sin(ang)]
    counts = sim.solve(np.vstack([np.asarray(centre, float)[None], ring])).beam_counts()
    rep.beam_counts = counts
    if counts["exact_fallback"] or counts["rejected"]:
        rep.warnings.append(f"engine: of 9 sample directions {counts['exact_fallback']} "
                            f"needed the exact solver and {counts['rejected']} were "
                            "rejected by the physical guard")
    rep.checks.append(("beams", f"pool {len(sim.pool)} beams (k_t radius {radius:.3g} 1/A), "
                                f"{sim.pool.n_out} outputs, up to {counts['strong_max']} "
                                f"strong over 9 directions of the tilt range; "
                                f"{sim.potential.describe()}"))
    return sim


def _start_value(setup: Setup, sim, name: str) -> float | None:
    """Start value of a refinable parameter before any step (None: not known here)."""
    kind, detail, canon = parse_parameter_name(name)
    g = setup.geometry
    if kind == "thickness":
        return float(setup.project.thickness)
    if kind == "voltage":
        return float(setup.voltage_kv)
    if kind == "B":
        return next((float(s.b_iso) for s in setup.crystal.sites if s.label == detail), None)
    if kind == "cell":
        return float(getattr(setup.crystal.lattice, detail))
    if kind in ("U", "Uabs"):
        u = sim.structure_factor(detail)[0 if kind == "U" else 1]
        return float((u * np.exp(-1j * sim.default_phase(detail))).real)
    if canon in ("shift.row", "shift.col"):
        return float(g.shift[0 if canon.endswith("row") else 1])
    if canon in ("rotation", "gl"):
        return float(getattr(g, canon))
    if kind == "tilt":
        return 0.0
    return None


def _check_parameters(setup: Setup, sim, rep: ValidationReport) -> None:
    proj = setup.project
    crystal = setup.crystal
    labels = [s.label for s in crystal.sites]
    roi_shift = {tuple(h) for h in proj.roi["disc_shifts"]}
    n = 0
    for i, st in enumerate(proj.fine):
        tag = f"plan.fine[{i}].refine"
        for name in st.refine + list(st.bounds) + list(st.scales):
            kind, detail, canon = parse_parameter_name(name, source=proj.source, tag=tag)
            if kind in ("U", "Uabs", "phase"):
                if crystal.is_systematically_absent(detail):
                    raise _err(proj, "reflection is forbidden by the space group (U_g ≡ 0)",
                               tag, expected="an allowed reflection", found=canon)
                eq = crystal.equivalent_reflections(detail, friedel=True).hkl
                if not np.any(sim.table.lookup(eq) >= 0):
                    raise _err(proj, "the beam pool never couples this reflection", tag,
                               expected="U_g of a difference of pool beams (raise gmax/smax)",
                               found=canon)
                if kind == "phase" and crystal.is_centrosymmetric:
                    raise _err(proj, "phases of a centrosymmetric crystal are fixed", tag,
                               expected="U(h,k,l) or Uabs(h,k,l)", found=canon)
            elif kind == "B" and detail not in labels:
                raise _err(proj, "unknown site label", tag, expected=labels, found=canon)
            elif kind == "sampling" and detail is not None and detail not in roi_shift:
                raise _err(proj, "disc shift not declared in roi.disc_shifts", tag,
                           expected=f"{list(detail)} in roi.disc_shifts", found=canon)
            n += 1
        for k, (lo, hi) in st.bounds.items():
            start = _start_value(setup, sim, k)
            if start is None or (k == "thickness" and proj.coarse):
                continue  # set by an earlier step
            if not lo <= start <= hi:
                raise _err(proj, f"start value of {k} outside its bounds",
                           f"plan.fine[{i}].bounds.{k}", expected=f"[{lo:g}, {hi:g}]",
                           found=start)
    for i, st in enumerate(proj.coarse):
        tag = f"plan.coarse[{i}]"
        if st.reflections is not None:
            known = {tuple(int(v) for v in h) for h in setup.hkl}
            for h in st.reflections:
                if tuple(h) not in known:
                    raise _err(proj, "template reflection is not compared",
                               tag + ".reflections", expected="reflections of roi.hkl",
                               found=tuple(h))
        if st.step == "b_iso" and st.labels:
            for lab in st.labels:
                if lab not in labels:
                    raise _err(proj, "unknown site label", tag + ".labels", expected=labels,
                               found=lab)
    rep.checks.append(("parameters", f"{n} parameter references in {len(proj.fine)} fine "
                                     f"step(s), {len(proj.coarse)} coarse step(s)"))


# ====================================================================== running
@dataclass
class RunResult:
    """What :func:`run_project` returns.

    Attributes
    ----------
    setup : Setup
    state : dict
        Final values (thickness, voltage, B, geometry, structure factors).
    fine : RefinementResult or None
        The last fine step's result (esd, correlation, model patterns).
    coarse : list of dict
        Coarse-step outcomes.
    history : list of dict
        Every fine iteration of every step (``step`` names the step).
    out_dir : Path
    files : dict
        Written files by role (``hdf5``, ``json``, ``hkl_table``, ``report``…).
    elapsed_s : float
    roi : ROI or None
        The last fine step's dataset (region images for the report).
    simulation : Simulation or None
        The last fine step's engine set-up (with the refined structure factors).
    iam : dict
        IAM (U, U′) of every refined reflection, keyed by 'h,k,l'.
    """

    setup: Setup
    state: dict
    fine: Any
    coarse: list[dict]
    history: list[dict]
    out_dir: Path
    files: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    roi: Any = None
    simulation: Any = None
    iam: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, complex):
        return [o.real, o.imag]
    raise TypeError(type(o).__name__)


class ProjectRun:
    """Runs a project's plan: coarse steps, then fine steps, then the results.

    Parameters
    ----------
    project : Project
    out_dir : path, optional
        Output folder (default ``project.output``).
    executor : optional
        Engine executor spec (overrides ``engine.executor``).
    progress : bool
        Progress bars.
    log : callable, optional
        ``log(str)`` for step summaries (default: print).
    callback : callable, optional
        Called with every fine iteration's history record (may raise to stop).
    command_line : list of str, optional
        Recorded in the provenance (default ``sys.argv``).
    truth : dict, optional
        Known true values {parameter name: value} (synthetic data), written to
        ``result.json`` and the report.
    overwrite : bool, optional
        Replace the results of an earlier run in the output folder (default
        ``[project] overwrite``; without it such a folder is refused).

    The run keeps ``run_state.json`` in the output folder (atomically rewritten
    after every step) and one checkpoint per fine step (rewritten after every
    iteration), so :func:`resume_run` continues a killed run.
    """

    def __init__(self, project: Project, *, out_dir: str | os.PathLike | None = None,
                 executor: Any = None, progress: bool = True,
                 log: Callable[[str], None] | None = None,
                 callback: Callable[[dict], None] | None = None,
                 command_line: Sequence[str] | None = None,
                 truth: Mapping[str, float] | None = None,
                 overwrite: bool | None = None) -> None:
        self.project = project
        self.overwrite = project.overwrite if overwrite is None else bool(overwrite)
        self.started = False  # True once the run state is written (a resume is possible)
        self.out_dir = Path(out_dir) if out_dir is not None else project.output
        self.executor = executor
        self.progress = progress
        self.log = log or print
        self.callback = callback
        self.command_line = list(command_line) if command_line is not None else list(sys.argv)
        self.truth = dict(truth or {})

    # ------------------------------------------------------------ state
    def _initial_state(self, setup: Setup) -> dict:
        g = setup.geometry
        return {"thickness": self.project.thickness, "voltage_kv": setup.voltage_kv,
                "b_iso": {s.label: s.b_iso for s in setup.crystal.sites},
                "geometry": {"rotation": g.rotation, "gl": g.gl, "tilt0": list(g.tilt0),
                             "shift": list(g.shift),
                             "disc_shifts": {_hkl_key(k): list(v)
                                             for k, v in g.disc_shifts.items()}},
                "structure_factors": {}, "probe": None}

    def _geometry(self, setup: Setup, state: dict):
        gs = state["geometry"]
        return setup.geometry.replace(
            rotation=gs["rotation"], gl=gs["gl"], tilt0=tuple(gs["tilt0"]),
            shift=tuple(gs["shift"]),
            disc_shifts={_key_hkl(k): tuple(v) for k, v in gs["disc_shifts"].items()})

    def _crystal(self, setup: Setup, state: dict):
        from .refine.parameters import apply_cell

        crystal = setup.crystal.with_b_iso(state["b_iso"]) if state["b_iso"] else setup.crystal
        if state.get("cell"):
            crystal = apply_cell(crystal, state["cell"], state["cell_system"])
        return crystal

    def _sim(self, setup: Setup, base, state: dict, mode: str | None = None):
        sim = base.with_changes(crystal=self._crystal(setup, state),
                                voltage_kv=state["voltage_kv"], mode=mode)
        sf = {_key_hkl(k): (complex(v[0], v[1]), complex(v[2], v[3]))
              for k, v in state["structure_factors"].items()}
        if sf:
            sim.set_structure_factors(sf)
        return sim

    def _save(self, rs: dict) -> None:
        _atomic_json(self.out_dir / RUN_STATE, rs)

    # ------------------------------------------------------------ run
    def run(self, *, resume: bool = False) -> RunResult:
        """Run the plan (continue a previous run of the same project with ``resume``).

        Before any work: the output folder is checked (an existing file, an input, or
        earlier results without ``overwrite`` are refused) and the memory the
        settings imply is estimated (:mod:`qcbed.run_safety`).
        """
        with limit_scope(self.project.engine["memory_limit"]):
            return self._run(resume)

    def _input_hashes(self, setup: Setup) -> dict[str, str]:
        files = list(setup.input_files)
        if Path(self.project.source).is_file():
            files.append(Path(self.project.source))
        return file_hashes(files)

    def _run(self, resume: bool) -> RunResult:
        t0 = time.perf_counter()
        setup = build_setup(self.project, executor=self.executor)
        check_output_folder(self.out_dir, source=self.project.source,
                            overwrite=self.overwrite or resume, inputs=setup.input_files)
        check_resources(estimate_resources(self.project, len(setup.hkl)),
                        source=self.project.source)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = True
        rs_path = self.out_dir / RUN_STATE
        hashes = self._input_hashes(setup)
        if resume and rs_path.exists():
            rs = read_run_state(rs_path)
            self.log(f"resuming: {len(rs['done'])} step(s) done")
            changed = changed_inputs(rs.get("input_hashes", {}), hashes)
            if changed:
                warnings.warn("inputs changed since the run started (the run continues "
                              "with the project as it was when started, and the data files "
                              "as they are now): " + "; ".join(changed), UserWarning,
                              stacklevel=3)
            rs["input_hashes"] = hashes
            rs["results_written"] = False
        else:
            rs = {"format": "qcbed-run-state/1", "project_file": self.project.source,
                  "project_base": str(self.project.base_dir), "project_text": self.project.text,
                  "out_dir": str(self.out_dir), "done": [], "state": self._initial_state(setup),
                  "coarse": [], "fine": [], "history": [], "truth": self.truth,
                  "command_line": self.command_line, "input_hashes": hashes,
                  "results_written": False}
            for p in self.out_dir.glob("checkpoint_*.h5"):
                p.unlink()
            self._save(rs)
        if not self.truth and rs.get("truth"):
            self.truth = rs["truth"]
        base = setup.simulation(crystal=self._crystal(setup, rs["state"]),
                                voltage_kv=rs["state"]["voltage_kv"])
        iam = {}
        result = None
        roi = None
        sim = None
        steps = [("coarse", i, s) for i, s in enumerate(self.project.coarse)] + \
            [("fine", i, s) for i, s in enumerate(self.project.fine)]
        last_fine = len(self.project.fine) - 1
        for kind, i, step in steps:
            key = f"{kind}:{i}"
            if key in rs["done"] and not (kind == "fine" and i == last_fine):
                continue
            ts = time.perf_counter()
            if kind == "coarse":
                out = self._coarse(setup, base, rs["state"], step, i)
                rs["coarse"].append(out)
                self.log(f"coarse {i + 1}/{len(self.project.coarse)} {step.step}: "
                         + out["summary"] + f" ({time.perf_counter() - ts:.1f} s)")
            else:
                ckpt = self.out_dir / f"checkpoint_fine{i}.h5"
                cont = resume and ckpt.exists()
                result, roi, sim, iam_i = self._fine(setup, base, rs["state"], step, i,
                                                     ckpt, cont, rs)
                iam.update(iam_i)
                rs["fine"] = [f for f in rs["fine"] if f["index"] != i]
                rs["fine"].append({"index": i, "name": step.name, "gof": result.gof,
                                   "chi2": result.chi2, "message": result.message,
                                   "n_iterations": result.n_iterations})
                self.log(f"fine {i + 1}/{len(self.project.fine)} '{step.name}': "
                         f"chi2 = {result.chi2:.4g}, R = {result.r_factor:.4f}, "
                         f"{result.n_iterations} iterations ({time.perf_counter() - ts:.1f} s)")
            if key not in rs["done"]:
                rs["done"].append(key)
            self._save(rs)
        elapsed = time.perf_counter() - t0
        run = RunResult(setup=setup, state=rs["state"], fine=result, coarse=rs["coarse"],
                        history=rs["history"], out_dir=self.out_dir, elapsed_s=elapsed,
                        roi=roi, simulation=sim, iam=iam, steps=rs["fine"])
        from .results import write_results

        run.files = write_results(run, command_line=self.command_line, truth=self.truth)
        rs["results_written"] = True
        self._save(rs)
        return run

    # ------------------------------------------------------------ coarse
    def _coarse(self, setup: Setup, base, state: dict, step: CoarseStep, i: int) -> dict:
        from .experiment import ROI, Region
        from .refine.coarse import CoarseRefinement

        geom = self._geometry(setup, state)
        hkl = np.asarray(step.reflections, int) if step.reflections is not None else setup.hkl
        centre, (h, w) = setup.template(step)
        s = step.template_step
        reg = Region.rectangle((centre[0] - (h - 1) / 2 * s, centre[1] - (w - 1) / 2 * s),
                               ((h - 1) * s, (w - 1) * s), (h, w))
        roi = ROI(setup.data, reg, geom, hkl=hkl, refine=())
        exp, _var, valid = roi.sample()
        tpl = np.where(valid, exp, np.nan).reshape(len(hkl), h, w)
        kt_c = geom.display_to_kt(centre)
        sim = self._sim(setup, base, state, mode=self.project.engine["coarse_mode"])
        cr = CoarseRefinement(sim, tpl, hkl, geom.pixel_size * s, kt_c, state["thickness"],
                              margin=step.margin)
        out: dict[str, Any] = {"index": i, "step": step.step}
        if step.step == "orientation_thickness":
            t = state["thickness"]
            rng = step.thickness_range or (0.85 * t, 1.15 * t)
            res = cr.refine_orientation_thickness(rng, n_scan=step.n_scan,
                                                  xtol=step.xtol or 0.05)
            state["thickness"] = float(res.thickness)
        elif step.step == "pixel_size":
            res = cr.refine_pixel_size(rel_range=step.rel_range, xtol=step.xtol or 1e-4)
            state["geometry"]["gl"] = float(geom.g_x_length / (res.pixel_size / s))
        elif step.step == "voltage":
            res = cr.refine_voltage(half_range=step.half_range, xtol=step.xtol or 1e-3)
            state["voltage_kv"] = float(res.values["voltage_kv"])
        else:
            res = cr.refine_b_iso(step.labels, tuple(step.b_range))
            for k, v in res.values.items():
                state["b_iso"][k[2:-1]] = float(v)
        # tilt0 such that the template centre has the matched k_t (in the updated geometry)
        d = np.asarray(res.tilt0) - self._geometry(setup, state).display_to_kt(centre)
        t0 = np.asarray(state["geometry"]["tilt0"]) + d
        state["geometry"]["tilt0"] = [float(t0[0]), float(t0[1])]
        out.update(thickness=float(res.thickness), tilt0=[float(x) for x in t0],
                   correlation=float(res.correlation), pixel_size=float(res.pixel_size),
                   values={k: float(v) for k, v in res.values.items()},
                   history=[{k: float(v) for k, v in hh.items()} for hh in res.history])
        extra = ", ".join(f"{k} = {v:.5g}" for k, v in out["values"].items())
        out["summary"] = (f"thickness {state['thickness']:.1f} A, tilt0 ({t0[0]:.5f}, "
                          f"{t0[1]:.5f}) 1/A, NCC {res.correlation:.4f}"
                          + (f", {extra}" if extra else ""))
        return out

    # ------------------------------------------------------------ fine
    def _fine(self, setup: Setup, base, state: dict, step: FineStep, i: int, ckpt: Path,
              resume: bool, rs: dict):
        from .refine.fine import Refinement
        from .refine.parameters import cell_parameters

        proj = self.project
        sim = self._sim(setup, base, state)
        geom = self._geometry(setup, state)
        roi = setup.roi(geom, refine=())
        probe = None
        if proj.gof["probe"] is not None:
            probe = tuple(state["probe"]) if state.get("probe") else tuple(proj.gof["probe"])
        ref = Refinement(sim, roi, gof=proj.gof["metric"], background=proj.gof["background"],
                         probe=probe, jacobian=step.jacobian, checkpoint=ckpt,
                         progress=self.progress)
        refine = set(step.refine)
        # every parameter refined anywhere in the plan takes part (fixed when not in this step)
        names = proj.refined_names
        iam: dict[str, tuple[complex, complex]] = {}
        sf_done: set[tuple[int, int, int]] = set()
        for n in names:
            kind, detail, canon = parse_parameter_name(n)
            if kind == "thickness":
                ref.add_thickness(state["thickness"], refine=canon in refine)
            elif kind in ("U", "Uabs", "phase") and detail not in sf_done:
                sf_done.add(detail)
                hk = _hkl_key(detail)
                u0, ua0 = base.structure_factor(detail)
                iam[hk] = (u0, ua0)
                ref.add_structure_factor(detail, refine_u=f"U({hk})" in refine,
                                         refine_uabs=f"Uabs({hk})" in refine,
                                         refine_phase=f"phase({hk})" in names)
                if f"phase({hk})" in names:
                    ref.params[f"phase({hk})"].refine = f"phase({hk})" in refine
            elif kind == "B":
                ref.add_b_iso(detail, refine=canon in refine)
                ref.params[canon].value = state["b_iso"].get(detail, ref.params[canon].value)
            elif kind == "voltage":
                ref.add_voltage(refine=canon in refine)
            elif kind == "tilt" and "tilt.x" not in ref.params:
                for p in ref.add_orientation(refine=False):
                    p.refine = p.name in refine
            elif kind == "cell" and canon not in ref.params:
                for p in cell_parameters(sim.crystal):
                    if p.name not in ref.params:
                        p.refine = p.name in refine
                        ref.add(p)
        if "thickness" not in ref.params:
            ref.add_thickness(state["thickness"], refine=False)
        for p in ref.params:
            if p.kind in ("sampling", "probe"):
                p.refine = p.name in refine
            if p.name in step.bounds:
                p.lower, p.upper = step.bounds[p.name]
                if not p.lower <= p.value <= p.upper:
                    raise _err(proj, "start value outside its bounds",
                               f"plan.fine[{i}].bounds.{p.name}",
                               expected=f"[{p.lower:g}, {p.upper:g}]", found=p.value)
            if p.name in step.scales:
                p.scale = step.scales[p.name]
        missing = [n for n in step.refine if n not in ref.params]
        if missing:
            raise _err(proj, "parameter is not available for this data", f"plan.fine[{i}].refine",
                       expected=[p.name for p in ref.params], found=missing[0])
        stage = step.name

        def cb(rec: dict) -> None:
            rec = dict(rec, step=stage)
            rs["history"].append({k: v for k, v in rec.items()
                                  if isinstance(v, (int, float, str))})
            if self.callback is not None:
                self.callback(rec)

        if resume:  # drop this step's records of the interrupted attempt
            rs["history"] = [h for h in rs["history"] if h.get("step") != stage]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="strongly correlated")
            result = ref.fit(step.method, outer=step.outer, max_iter=step.max_iter,
                             ftol=step.ftol, xtol=step.xtol, resume=resume, callback=cb)
        if resume:
            rs["history"] = [h for h in rs["history"] if h.get("step") != stage] + [
                dict({k: v for k, v in h.items() if isinstance(v, (int, float, str))},
                     step=stage) for h in result.history]
        # carry the values forward
        ps = result.parameters
        state["thickness"] = float(ps["thickness"].value)
        for p in ps:
            if p.kind == "sampling":
                gs = state["geometry"]
                if p.name in ("rotation", "gl"):
                    gs[p.name] = float(p.value)
                elif p.name.startswith("shift."):
                    gs["shift"][0 if p.name.endswith("row") else 1] = float(p.value)
                else:
                    m = _DISC_RE.match(p.name)
                    if m:
                        k = _hkl_key((m.group(1), m.group(2), m.group(3)))
                        cur = gs["disc_shifts"].setdefault(k, [0.0, 0.0])
                        cur[0 if m.group(4) == "row" else 1] = float(p.value)
            elif p.name.startswith("B("):
                state["b_iso"][p.name[2:-1]] = float(p.value)
            elif p.name.startswith("cell."):
                state.setdefault("cell", {})[p.name[5:]] = float(p.value)
                state["cell_system"] = p.target[2]
            elif p.name == "voltage":
                state["voltage_kv"] = float(p.value)
            elif p.name in ("tilt.x", "tilt.y"):
                # a tilt shifts every simulated k_t: fold it into the geometry's tilt0
                state["geometry"]["tilt0"][0 if p.name == "tilt.x" else 1] += float(p.value)
        if probe is not None:
            state["probe"] = [float(ps["probe.sigma"].value), float(ps["probe.gamma"].value)]
        for hk in sf_done:
            u, ua = ref.sim.structure_factor(hk)
            state["structure_factors"][_hkl_key(hk)] = [u.real, u.imag, ua.real, ua.imag]
        return result, roi, ref.sim, iam


def run_project(project: Project | str | os.PathLike, **kw: Any) -> RunResult:
    """Run a project (path or :class:`Project`); keywords as :class:`ProjectRun`."""
    proj = project if isinstance(project, Project) else load_project(project)
    return ProjectRun(proj, **kw).run()


def find_run_state(path: str | os.PathLike) -> Path:
    """The ``run_state.json`` of a project file, an output folder or a checkpoint."""
    p = Path(path)
    if p.is_dir():
        cand = p / RUN_STATE
    elif p.suffix.lower() == ".toml":
        cand = load_project(p).output / RUN_STATE
    else:
        cand = p.parent / RUN_STATE
    if not cand.is_file():
        raise InputError("no run to resume", source=p,
                         expected=f"{RUN_STATE} of an interrupted run (project file, output "
                                  "folder or checkpoint)", found="missing")
    return cand


class RunFinished(QcbedError):
    """:func:`resume_run` was asked to continue a run that is already finished."""


def resume_run(path: str | os.PathLike, *, force: bool = False, **kw: Any) -> RunResult:
    """Continue a killed run from its checkpoint.

    The project as it was when the run started is used (stored in the run
    state); files whose SHA-256 changed since are named in a warning.

    Parameters
    ----------
    path : str or path
        The project file, its output folder, or a checkpoint in that folder.
    force : bool
        Also "resume" a finished run (the last fine step is run again from its
        checkpoint and the results are rewritten); without it :class:`RunFinished`
        is raised and nothing changes.
    **kw
        As :class:`ProjectRun` (executor, progress, log, callback).
    """
    rs_path = find_run_state(path)
    rs = read_run_state(rs_path)
    proj_file = Path(rs["project_file"])
    try:
        raw = tomllib.loads(rs["project_text"])
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the run state is damaged (project text: {exc})", source=rs_path,
                         tag="project_text") from None
    proj = parse_project(raw, source=str(proj_file), base_dir=rs["project_base"],
                         text=rs["project_text"])
    if run_is_finished(rs, len(proj.coarse), len(proj.fine), rs_path.parent) and not force:
        raise RunFinished(f"{rs_path.parent}: the run is finished (every step done, results "
                          "written); nothing was changed. Pass --force (force=True) to run "
                          "the last fine step again and rewrite the results.")
    kw.setdefault("command_line", rs.get("command_line"))
    kw.setdefault("truth", rs.get("truth"))
    return ProjectRun(proj, out_dir=rs_path.parent, **kw).run(resume=True)

