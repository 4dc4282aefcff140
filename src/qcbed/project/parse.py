"""Reading project files: TOML → checked :class:`~qcbed.project.schema.Project`.

Every problem raises :class:`qcbed.errors.InputError` naming the file, the key
(``tag``), the expected and the found value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.guard import parse_memory
from .._core.parameters import split_dataset_name
from .._core.tomlcompat import tomllib
from ..errors import InputError
from ..parallel import check_executor_spec
from ..scattering.structure_factors import PotentialModel
from .parse_plan import array_of_tables, check_dataset_indices, parse_coarse, parse_fine
from .reader import TableReader
from .schema import (
    _MISSING,
    BACKGROUNDS,
    DATA_FORMATS,
    GOF_METRICS,
    STACK_FORMATS,
    CrystalSection,
    DataSection,
    DatasetSpec,
    EngineSection,
    GeometrySection,
    GofSection,
    Project,
    RoiSection,
)
from .toml_writer import dumps_toml


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
    r = TableReader(source)
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
    # ---------------------------------------------------------------- [engine]
    en = r.table(raw, "engine", "engine")
    r.unknown(en, "engine")
    engine = _parse_engine(r, en, "engine")
    # ------------------------------------------- [data], [geometry], [roi] or [[data]]
    datasets_raw = raw.get("data", _MISSING)
    if isinstance(datasets_raw, list):
        specs = _parse_datasets(r, raw, en)
    else:
        dt = r.table(raw, "data", "data", required=True)
        r.unknown(dt, "data")
        data = _parse_data(r, dt, "data")
        ge = r.table(raw, "geometry", "geometry", required=True)
        r.unknown(ge, "geometry")
        geom = _parse_geometry(r, ge, "geometry", data["kind"])
        ro = r.table(raw, "roi", "roi", required=True)
        r.unknown(ro, "roi")
        specs = [{"name": "data", "data": data, "geometry": geom, "roi": _parse_roi(r, ro, "roi"),
                  "engine": engine, "thickness": None}]
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
    coarse = [parse_coarse(r, t, i) for i, t in enumerate(array_of_tables(r, pl, "coarse"))]
    fine = [parse_fine(r, t, i) for i, t in enumerate(array_of_tables(r, pl, "fine"))]
    if not coarse and not fine:
        raise r.err("the plan has no steps", "plan",
                    expected="at least one [[plan.coarse]] or [[plan.fine]] step", found=None)
    if gof["probe"] is None:
        for i, st in enumerate(fine):
            for n in st.refine:
                if n.startswith("probe."):
                    raise r.err("probe parameters need gof.probe", f"plan.fine[{i}].refine",
                                expected="gof.probe = [sigma, gamma]", found=n)
    if all(sp["data"]["energy_filtered"] for sp in specs):
        for i, st in enumerate(fine):
            for n in st.refine:
                if split_dataset_name(n)[0] == "plasmon.lambda_scale":
                    raise r.err("the plasmon mean free path is a parameter of data that are "
                                "not energy-filtered", f"plan.fine[{i}].refine",
                                expected="data.energy_filtered = false", found=n)
    n_regions = r.get(pl, "regions", "plan.regions", "int", 0, lo=0)
    if n_regions == 1:
        raise r.err("a spread needs at least two regions", "plan.regions",
                    expected="0 (off) or >= 2", found=1)
    if n_regions and not fine:
        raise r.err("regions repeat the last fine step", "plan.regions",
                    expected="a [[plan.fine]] step", found=None)
    if n_regions and len(specs) > 1:
        raise r.err("the spread over regions needs a single dataset", "plan.regions",
                    expected="0 with several [[data]] blocks", found=n_regions)
    if n_regions:
        from ..refine.reproducibility import tile_slices

        n12, n13 = specs[0]["roi"]["regions"][0]["samples"]
        try:
            tile_slices((int(n13), int(n12)), n_regions)
        except InputError as exc:
            raise r.err(f"the first ROI region cannot hold {n_regions} regions: "
                        f"{exc.reason}", "plan.regions", expected=exc.expected,
                        found=f"{n13} x {n12} samples") from None
    check_dataset_indices(r, fine, coarse, len(specs))
    datasets = [DatasetSpec(index=k, name=sp["name"], data=DataSection(**sp["data"]),
                            geometry=GeometrySection(**sp["geometry"]),
                            roi=RoiSection(**sp["roi"]), engine=EngineSection(**sp["engine"]),
                            thickness=thickness if sp["thickness"] is None else sp["thickness"])
                for k, sp in enumerate(specs)]
    d0 = datasets[0]
    return Project(source=source, base_dir=base, raw=dict(raw), text=text or dumps_toml(raw),
                   name=name, output=_resolve(base, output), density_map=dmap,
                   overwrite=overwrite, crystal=CrystalSection(**crystal), data=d0.data,
                   geometry=d0.geometry, roi=d0.roi, engine=d0.engine, gof=GofSection(**gof),
                   thickness=d0.thickness, coarse=coarse, fine=fine, regions=n_regions,
                   budget=r.get(pl, "budget", "plan.budget", "bool", True), datasets=datasets)


#: Keys of a ``[[data]]`` block besides those of ``[data]``.
DATA_BLOCK_KEYS = ("name", "thickness", "geometry", "roi", "engine")


def _parse_datasets(r: TableReader, raw: Mapping, en: Mapping) -> list[dict[str, Any]]:
    """Several ``[[data]]`` blocks: each with its own data keys, ``geometry`` and ``roi``
    tables, optional ``engine`` table (keys override ``[engine]``), ``thickness`` (start,
    Å; default ``plan.thickness``) and ``name``."""
    blocks = raw["data"]
    if not blocks:
        raise r.err("no data", "data", expected="at least one [[data]] block", found=[])
    for sec in ("geometry", "roi"):
        if sec in raw:
            raise r.err(f"with [[data]] blocks each block has its own {sec}", sec,
                        expected=f"a [data.{sec}] table after each [[data]] header "
                                 f"(no top-level [{sec}])", found=f"a top-level [{sec}]")
    specs, names = [], set()
    for k, dt in enumerate(blocks):
        pfx = f"data[{k}]"
        if not isinstance(dt, dict):
            raise r.err("must be a table", pfx, expected="a [[data]] table", found=dt)
        r.unknown(dt, "data", pfx, extra=DATA_BLOCK_KEYS)
        name = r.get(dt, "name", f"{pfx}.name", "str", f"data[{k}]")
        if name in names:
            raise r.err("two [[data]] blocks with the same name", f"{pfx}.name",
                        expected="a unique name per block", found=name)
        names.add(name)
        data = _parse_data(r, dt, pfx)
        ge = r.table(dt, "geometry", f"{pfx}.geometry", required=True)
        r.unknown(ge, "geometry", f"{pfx}.geometry")
        ro = r.table(dt, "roi", f"{pfx}.roi", required=True)
        r.unknown(ro, "roi", f"{pfx}.roi")
        ben = r.table(dt, "engine", f"{pfx}.engine")
        r.unknown(ben, "engine", f"{pfx}.engine")
        # the block's keys override [engine]'s (already checked there)
        engine = _parse_engine(r, {**en, **ben}, f"{pfx}.engine")
        specs.append({"name": name, "data": data,
                      "geometry": _parse_geometry(r, ge, f"{pfx}.geometry", data["kind"]),
                      "roi": _parse_roi(r, ro, f"{pfx}.roi"), "engine": engine,
                      "thickness": r.get(dt, "thickness", f"{pfx}.thickness", "float", None,
                                         positive=True)})
    return specs


def _parse_data(r: TableReader, dt: Mapping, pfx: str) -> dict[str, Any]:
    """``[data]`` (``pfx`` = ``data``) or one ``[[data]]`` block (``data[k]``)."""
    fmt = r.get(dt, "format", f"{pfx}.format", "str", "auto", choices=DATA_FORMATS)
    files0 = dt.get("files")
    if (fmt == "auto" and isinstance(files0, list) and len(files0) == 1
            and str(files0[0]).lower().endswith((".h5", ".hdf5"))):
        fmt = "lacbed_h5"  # the LACBED stack of 'qcbed extract' (qcbed.larbed.save_stack)
    kind = r.get(dt, "kind", f"{pfx}.kind", "str", "lacbed" if fmt in STACK_FORMATS
                 else _MISSING, choices=("cbed", "lacbed"))
    if fmt in STACK_FORMATS and kind != "lacbed":
        raise r.err(f"format '{fmt}' holds a LACBED stack", f"{pfx}.kind", expected="lacbed",
                    found=kind)
    data: dict[str, Any] = {"kind": kind, "format": fmt}
    if fmt == "felix":
        data["folder"] = r.get(dt, "folder", f"{pfx}.folder", "str")
    else:
        data["files"] = r.strings(dt, "files", f"{pfx}.files")
        if not data["files"]:
            raise r.err("no data files", f"{pfx}.files", expected="at least one file", found=[])
    if fmt == "npy_stack":
        data["g_vectors"] = r.get(dt, "g_vectors", f"{pfx}.g_vectors", "str")
        data["hkl"] = None
    elif fmt == "lacbed_h5":
        if len(data["files"]) != 1:
            raise r.err("a LACBED stack is one HDF5 file", f"{pfx}.files", expected="1 file",
                        found=len(data["files"]))
        data["hkl"] = None
    elif fmt != "felix":
        data["hkl"] = r.vectors(dt, "hkl", f"{pfx}.hkl", 3, integer=True, min_len=1)
        if kind == "cbed" and len(data["files"]) != 1:
            raise r.err("a CBED pattern is one image", f"{pfx}.files", expected="1 file",
                        found=len(data["files"]))
        if kind == "lacbed" and len(data["files"]) != len(data["hkl"]):
            raise r.err("one reflection per LACBED image", f"{pfx}.hkl",
                        expected=f"{len(data['files'])} reflections (one per file)",
                        found=len(data["hkl"]))
    else:
        data["hkl"] = None
    var = r.get(dt, "variance", f"{pfx}.variance", "str",
                "stored" if fmt == "lacbed_h5" else "poisson")
    if (fmt == "lacbed_h5") != (var == "stored"):
        raise r.err("'stored' variances (and only they) come with a LACBED stack file",
                    f"{pfx}.variance", expected="'stored'" if fmt == "lacbed_h5" else
                    "'poisson', 'detector' or a .npy file", found=var)
    if kind == "cbed" and var not in ("poisson", "detector"):
        raise r.err("CBED variances come from the detector model", f"{pfx}.variance",
                    expected="'poisson' or 'detector'", found=var)
    data["variance"] = var
    data["variance_floor"] = r.get(dt, "variance_floor", f"{pfx}.variance_floor", "float", 1.0,
                                   positive=True)
    data["clip_negative"] = r.get(dt, "clip_negative", f"{pfx}.clip_negative", "bool", False)
    data["allow_negative"] = r.get(dt, "allow_negative", f"{pfx}.allow_negative", "bool", False)
    if data["clip_negative"] and data["allow_negative"]:
        raise r.err("clip_negative and allow_negative exclude each other", f"{pfx}.clip_negative",
                    expected="at most one of them true", found=True)
    data["mask"] = r.get(dt, "mask", f"{pfx}.mask", "str", None)
    data["background"] = r.get(dt, "background", f"{pfx}.background", "float", None, lo=0.0)
    data["require_hkl"] = r.get(dt, "require_hkl", f"{pfx}.require_hkl", "bool", True)
    data["count_copies_once"] = r.get(dt, "count_copies_once", f"{pfx}.count_copies_once",
                                      "bool", True)
    data["energy_filtered"] = r.get(dt, "energy_filtered", f"{pfx}.energy_filtered", "bool",
                                    True)
    for key in ("plasmon_energy_ev", "plasmon_mean_free_path", "plasmon_cutoff_mrad",
                "plasmon_acceptance_mrad"):
        data[key] = r.get(dt, key, f"{pfx}.{key}", "float", None, positive=True)
        if data[key] is not None and data["energy_filtered"]:
            raise r.err("plasmon settings apply to data that are not energy-filtered",
                        f"{pfx}.{key}", expected=f"{pfx}.energy_filtered = false",
                        found=f"energy_filtered = true and {key} = {data[key]:g}")
    det = r.table(dt, "detector", f"{pfx}.detector")
    r.unknown(det, "data.detector", f"{pfx}.detector")
    data["detector"] = {k: r.get(det, k, f"{pfx}.detector.{k}", "float") for k in det}
    return data


def _parse_geometry(r: TableReader, ge: Mapping, pfx: str, kind: str) -> dict[str, Any]:
    """``[geometry]`` or a ``[[data]]`` block's ``geometry`` table."""
    geom: dict[str, Any] = {
        "voltage_kv": r.get(ge, "voltage_kv", f"{pfx}.voltage_kv", "float", None,
                            positive=True),
        "zone": r.vector(ge, "zone", f"{pfx}.zone", 3, nonzero=True),
        "x_axis": r.vector(ge, "x_axis", f"{pfx}.x_axis", 3, nonzero=True),
        "normal": r.vector(ge, "normal", f"{pfx}.normal", 3, None, nonzero=True),
        "mode": r.get(ge, "mode", f"{pfx}.mode", "str", kind, choices=("cbed", "lacbed")),
        "rotation": r.get(ge, "rotation", f"{pfx}.rotation", "float", 0.0),
        "mirror": r.get(ge, "mirror", f"{pfx}.mirror", "bool", False),
        "gl": r.get(ge, "gl", f"{pfx}.gl", "float", positive=True),
        "tilt0": r.vector(ge, "tilt0", f"{pfx}.tilt0", 2, (0.0, 0.0)),
        "reference": r.vector(ge, "reference", f"{pfx}.reference", 2, None),
        "shift": r.vector(ge, "shift", f"{pfx}.shift", 2, (0.0, 0.0)),
        "display_shape": r.vector(ge, "display_shape", f"{pfx}.display_shape", 2, None,
                                  integer=True),
    }
    if geom["mode"] != kind:
        raise r.err("geometry mode differs from the data kind", f"{pfx}.mode", expected=kind,
                    found=geom["mode"])
    ds = ge.get("disc_shifts", [])
    if not isinstance(ds, list):
        raise r.err("must be an array of tables", f"{pfx}.disc_shifts",
                    expected="[[geometry.disc_shifts]] with hkl and shift", found=ds)
    shifts = {}
    for i, t in enumerate(ds):
        tag = f"{pfx}.disc_shifts[{i}]"
        if not isinstance(t, dict):
            raise r.err("must be a table", tag, expected="{hkl = [h,k,l], shift = [dr, dc]}",
                        found=t)
        r.unknown(t, "geometry.disc_shifts", tag)
        shifts[r.vector(t, "hkl", tag + ".hkl", 3, integer=True)] = r.vector(
            t, "shift", tag + ".shift", 2)
    geom["disc_shifts"] = shifts
    return geom


def _parse_roi(r: TableReader, ro: Mapping, pfx: str) -> dict[str, Any]:
    """``[roi]`` or a ``[[data]]`` block's ``roi`` table."""
    pad = r.get(ro, "pad", f"{pfx}.pad", "int", 0, lo=0)
    roi: dict[str, Any] = {
        "hkl": r.vectors(ro, "hkl", f"{pfx}.hkl", 3, None, integer=True, min_len=1),
        "disc_shifts": r.vectors(ro, "disc_shifts", f"{pfx}.disc_shifts", 3, [], integer=True),
        "symmetric": r.get(ro, "symmetric", f"{pfx}.symmetric", "bool", False),
    }
    regs = ro.get("regions", _MISSING)
    if regs is _MISSING or not isinstance(regs, list) or not regs:
        raise r.err("no regions of interest", f"{pfx}.regions",
                    expected="at least one [[roi.regions]] table", found=None if regs is
                    _MISSING else regs)
    regions = []
    for i, t in enumerate(regs):
        tag = f"{pfx}.regions[{i}]"
        if not isinstance(t, dict):
            raise r.err("must be a table", tag, expected="a [[roi.regions]] table", found=t)
        r.unknown(t, "roi.regions", tag)
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
    return roi


def _parse_engine(r: TableReader, en: Mapping, pfx: str) -> dict[str, Any]:
    """``[engine]`` or a ``[[data]]`` block's ``engine`` table (merged over ``[engine]``)."""
    engine: dict[str, Any] = {
        "mode": r.get(en, "mode", f"{pfx}.mode", "str", "fast", choices=("fast", "exact")),
        "coarse_mode": r.get(en, "coarse_mode", f"{pfx}.coarse_mode", "str", "fast",
                             choices=("fast", "exact")),
        "gmax": r.get(en, "gmax", f"{pfx}.gmax", "float", 3.0, positive=True),
        "accuracy": r.get(en, "accuracy", f"{pfx}.accuracy", "float", 1e-3, positive=True,
                          hi=0.5),
        "smax": r.get(en, "smax", f"{pfx}.smax", "float", None, positive=True),
        "holz": r.get(en, "holz", f"{pfx}.holz", "bool", True),
        "min_pool": r.get(en, "min_pool", f"{pfx}.min_pool", "int", 0, lo=0),
        "pool": r.vectors(en, "pool", f"{pfx}.pool", 3, None, integer=True, min_len=1),
        "sgmin": r.get(en, "sgmin", f"{pfx}.sgmin", "float", None, lo=0.0),
        "omega": r.get(en, "omega", f"{pfx}.omega", "float", None, lo=0.0),
        "sgmax": r.get(en, "sgmax", f"{pfx}.sgmax", "float", None, positive=True),
        "bethe": r.get(en, "bethe", f"{pfx}.bethe", "bool", True),
        "min_strong": r.get(en, "min_strong", f"{pfx}.min_strong", "int", 0, lo=0),
        "tail": r.get(en, "tail", f"{pfx}.tail", "bool", True),
        "elastic": r.get(en, "elastic", f"{pfx}.elastic", "str", "kirkland"),
        "absorption": r.get(en, "absorption", f"{pfx}.absorption", "str", "bird_king"),
        "xi": r.get(en, "xi", f"{pfx}.xi", "float", 0.1, lo=0.0),
        "chunk_size": r.get(en, "chunk_size", f"{pfx}.chunk_size", "int", None, lo=1),
    }
    ex = en.get("executor", "auto")
    if isinstance(ex, bool) or not isinstance(ex, (str, int)):
        raise r.err("wrong executor", f"{pfx}.executor",
                    expected="auto, serial, N, dask, tcp://host:port or mpi", found=ex)
    check_executor_spec(ex, source=r.source, tag=f"{pfx}.executor")
    engine["executor"] = ex
    ml = en.get("memory_limit", None)
    engine["memory_limit"] = None if ml is None else parse_memory(
        ml, source=r.source, tag=f"{pfx}.memory_limit")
    try:
        PotentialModel(engine["elastic"], engine["absorption"], xi=engine["xi"])
    except InputError as exc:
        which = f"{pfx}.absorption" if "absorption" in exc.reason else f"{pfx}.elastic"
        raise r.err(exc.reason, which, expected=exc.expected, found=exc.found) from None
    return engine

def _resolve(base: Path, p: str) -> Path:
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else base / q
