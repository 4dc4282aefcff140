"""Results with provenance: HDF5 file, ``result.json``, hkl table; ``qcbed simulate`` output.

A finished refinement (:class:`qcbed.project.RunResult`) is written to its output
folder as

* ``results.h5`` — inputs and settings (the project file's text, the engine
  settings), every iteration's parameters and GOF (``/history``), final
  parameters with esd, covariance and correlation matrix (``/final``), refined
  structure factors (``/structure_factors``), experimental and simulated
  patterns of the regions of interest (``/patterns``), coarse-step outcomes
  (``/coarse``) and provenance (``/provenance``: qcbed version, SHA-256 of every
  input file, dependency versions, command line, date);
* ``result.json`` — the summary documented by :data:`RESULT_SCHEMA` (JSON
  Schema, draft 2020-12 subset; check a file with :func:`validate_result_json`);
* ``structure_factors.hkl`` — refined structure factors beside the
  independent-atom model (IAM): U, U′ (Å⁻²), electron F_e (Å) and X-ray F_x
  (electrons, Mott–Bethe; :func:`qcbed.scattering.structure_factors.xray_structure_factors`);
* ``report.html`` with ``figures/*.png`` (:mod:`qcbed.output.report`).

The schema lives in :mod:`.schema`, the provenance in :mod:`.provenance` (both
re-exported here).

Every file is written to a temporary name and renamed (``os.replace``), so a
failure never leaves a half-written result, and an existing result is only
replaced by a complete one.

Structure factors of a centrosymmetric crystal are given as signed amplitudes a
along the phase φ fixed by the centre of symmetry: U_g = a·exp(iφ) (φ = 0 or
180° when the origin is at a centre; see ``docs/conventions.md``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.files import atomic_write
from .._core.hkl import hkl_key, key_hkl
from .._core.jsonio import dumps
from .._version import __version__
from ..errors import InputError
from .density import difference_map, write_cube
from .provenance import (
    DEPENDENCIES,
    _write_prov,
    dependency_versions,
    file_sha256,
    provenance,
)
from .report import write_report
from .schema import RESULT_SCHEMA, validate_json, validate_result_json
from .sf_table import structure_factor_table

__all__ = [
    "DEPENDENCIES",
    "RESULT_SCHEMA",
    "atomic_write",
    "dependency_versions",
    "file_sha256",
    "provenance",
    "read_results",
    "structure_factor_table",
    "validate_json",
    "validate_result_json",
    "write_hkl_table",
    "write_results",
    "write_simulation",
]

#: Distributions whose versions go into the provenance.
# ====================================================================== simulate
def write_simulation(path: str | os.PathLike, *, hkl: np.ndarray, intensity: np.ndarray,
                     thickness: np.ndarray, kt: np.ndarray, mask: np.ndarray | None,
                     attrs: Mapping[str, Any], input_files: Iterable[str | os.PathLike] = (),
                     command_line: Sequence[str] | None = None) -> Path:
    """Write a ``qcbed simulate`` result (the issue-3 contract).

    Datasets: ``hkl`` (n_out, 3) int, ``intensity`` (n_t, n_out, ny, nx) float64 (NaN
    outside the illuminated region), ``thickness`` (n_t,) Å, ``kt`` (ny, nx, 2) Å⁻¹
    (zone-frame x, y), ``mask`` (ny, nx) bool. Root attributes: ``attrs`` plus
    ``qcbed_version``; group ``provenance`` with input hashes and dependency versions.
    """
    import h5py

    prov = provenance(input_files, command_line)

    def w(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("hkl", data=np.asarray(hkl, dtype=np.int64))
            f.create_dataset("intensity", data=np.asarray(intensity, dtype=np.float64),
                             compression="gzip", compression_opts=4)
            f.create_dataset("thickness", data=np.asarray(thickness, dtype=np.float64))
            f.create_dataset("kt", data=np.asarray(kt, dtype=np.float64))
            if mask is not None:
                f.create_dataset("mask", data=np.asarray(mask, dtype=bool))
            f["thickness"].attrs["unit"] = "Å"
            f["kt"].attrs["unit"] = "1/Å (zone frame x, y; no 2π)"
            f["intensity"].attrs["normalisation"] = "flux through the exit surface; NaN " \
                                                    "outside the illuminated region"
            f.attrs["format"] = "qcbed-simulation/1"
            f.attrs["qcbed_version"] = __version__
            for k, v in attrs.items():
                f.attrs[k] = v
            _write_prov(f.create_group("provenance"), prov)
    return atomic_write(path, w)


# ====================================================================== refinement results
def write_hkl_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], *,
                    header: str = "") -> Path:
    """Write the structure-factor table (whitespace-separated, ``#`` comment header)."""
    cols = [("h", 4, "d"), ("k", 4, "d"), ("l", 4, "d"), ("g", 9, ".5f"),
            ("phase_deg", 9, ".2f"), ("U_iam", 13, ".6e"), ("U", 13, ".6e"),
            ("U_esd", 10, ".3e"), ("U_abs_iam", 13, ".6e"), ("U_abs", 13, ".6e"),
            ("U_abs_esd", 10, ".3e"), ("Fe_iam", 11, ".6f"), ("Fe", 11, ".6f"),
            ("Fe_esd", 10, ".3e"), ("Fx_iam", 11, ".6f"), ("Fx", 11, ".6f"),
            ("Fx_esd", 10, ".3e")]
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [
        "# U, U_abs (U') in 1/A^2 (optical potential U + iU'); Fe in A (electron structure "
        "factor, F = pi*Omega*U/gamma);",
        "# Fx in electrons per cell (X-ray, Mott-Bethe). Values are signed amplitudes along "
        "the phase phi: U_g = value * exp(i*phi).",
        "# _iam: independent-atom model; esd: estimated standard deviation ('nan': not "
        "refined). g = |g| in 1/A (no 2 pi).",
        "#" + " ".join(f"{n:>{w}s}" for n, w, _ in cols)[1:],
    ]
    for r in rows:
        vals = list(r["hkl"]) + [r[n] for n, _, _ in cols[3:]]
        lines.append(" ".join(f"{'nan':>{w}s}" if v is None else f"{v:{w}{spec}}"
                              for (_n, w, spec), v in zip(cols, vals)))
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _orientation(run: Any) -> dict[str, Any]:
    setup = run.setup
    gs = run.state["geometry"]
    geom = setup.geometry.replace(rotation=gs["rotation"], gl=gs["gl"],
                                  tilt0=tuple(gs["tilt0"]), shift=tuple(gs["shift"]))
    frame = geom.frame
    # incident k_t of the experimental pixel at the reference: the refined shift moves the
    # experimental sampling positions, so it enters (pixel_to_kt subtracts it)
    ref_exp = geom.display_to_experiment(np.asarray(geom.reference))
    kt = geom.pixel_to_kt(ref_exp)
    tilt_esd = None
    res = run.fine
    if res is not None:
        try:
            e = [res.parameters[n].esd if res.parameters[n].refine else 0.0
                 for n in ("shift.row", "shift.col")]
            if all(x is not None for x in e):
                a, _ = geom.affine(None)
                jac = np.linalg.inv(a)  # dkt / dpixel
                cov = np.diag(np.square(e))
                tilt_esd = [float(x) for x in np.sqrt(np.diag(jac @ cov @ jac.T))]
        except InputError:
            tilt_esd = None
    return {"zone": list(map(float, frame.zone)), "x_axis": list(map(float, frame.x_axis)),
            "normal": list(map(float, frame.normal)), "tilt0": [float(kt[0]), float(kt[1])],
            "tilt0_esd": tilt_esd, "kt_unit": "1/Å",
            "reference_pixel": [float(x) for x in geom.reference],
            "rotation_deg": float(gs["rotation"]), "gl": float(gs["gl"]),
            "shift_px": [float(x) for x in gs["shift"]], "mirror": bool(geom.mirror)}


def result_dict(run: Any, rows: Sequence[Mapping[str, Any]], files: Mapping[str, str],
                truth: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The content of ``result.json`` (see :data:`RESULT_SCHEMA`)."""
    res = run.fine
    proj = run.setup.project
    crystal = run.setup.crystal
    truth = dict(truth or {})
    params = []
    if res is not None:
        for p in res.parameters:
            params.append({"name": p.name, "value": float(p.value),
                           "esd": None if p.esd is None or not p.refine else float(p.esd),
                           "unit": p.unit, "refined": bool(p.refine),
                           "true": truth.get(p.name)})
    th = None
    if res is not None:  # a joint refinement names dataset 0's thickness 'thickness[0]'
        th = next((res.parameters[n] for n in ("thickness", "thickness[0]")
                   if n in res.parameters), None)
    out: dict[str, Any] = {
        "format": "qcbed-result/1", "qcbed_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "project": proj.name,
        "crystal": {"name": crystal.name, "space_group": crystal.space_group_symbol,
                    "cell": [float(x) for x in crystal.lattice.parameters]},
        "voltage_kv": float(run.state["voltage_kv"]),
        "thickness": {"value": float(run.state["thickness"]),
                      "esd": None if th is None or th.esd is None or not th.refine
                      else float(th.esd), "unit": "Å"},
        "orientation": _orientation(run),
        "structure_factors": [dict(r) for r in rows],
        "parameters": params,
        "chi2": float(res.chi2) if res is not None else None,
        "gof": {"metric": proj.gof["metric"], "value": float(res.gof) if res else None,
                "background": proj.gof["background"]},
        "dof": int(res.dof) if res is not None else 0,
        "n_used": int(res.n_used) if res is not None else 0,
        "r_factor": float(res.r_factor) if res is not None else None,
        "zncc": [] if res is None else [
            {"hkl": list(key_hkl(k)), "zncc": float(v)}
            for k, v in res.zncc.items()],
        "solver": {} if res is None else {
            k: int(v) for k, v in res.extra.get("solver", {}).items()},
        "convergence": (run.simulation.convergence.as_dict()
                        if run.simulation is not None else None),
        "scale": float(res.scale) if res is not None else 1.0,
        "background": [] if res is None else [float(x) for x in np.atleast_1d(res.background)],
        "correlation": {"names": list(res.free_names) if res is not None else [],
                        "matrix": [] if res is None else np.nan_to_num(
                            res.correlation).tolist()},
        "strong_correlations": [] if res is None else [
            {"a": a, "b": b, "rho": float(r)} for a, b, r in res.strong_correlations],
        "steps": list(run.steps), "coarse": [{k: v for k, v in c.items() if k != "history"}
                                             for c in run.coarse],
        "esd_serial_correlation": (None if res is None else
                                   res.extra.get("serial_correlation")),
        "message": res.message if res is not None else "no fine refinement",
        "elapsed_s": float(run.elapsed_s),
        "files": dict(files),
    }
    if truth:
        out["truth"] = {k: float(v) for k, v in truth.items()}
    if getattr(run, "datasets", None):
        out["datasets"] = [dataset_dict(run, d) for d in run.datasets]
    out.update(getattr(run, "accuracy", None) or {})  # noise_model, error_budget, regions
    return out


def dataset_dict(run: Any, part: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset of a joint refinement in ``result.json``: source, geometry, its
    thickness (joint esd), χ²_ν and fit figures at the joint solution."""
    from types import SimpleNamespace

    k = part["index"]
    res = part["result"]
    joint = run.fine.parameters
    view = part["setup"].project
    d = view.data
    th = joint[f"thickness[{k}]"] if f"thickness[{k}]" in joint else None
    return {
        "index": k, "name": part["name"], "kind": d["kind"], "format": d["format"],
        "source": d["folder"] if d["format"] == "felix" else list(d["files"] or []),
        "voltage_kv": float(part["state"]["voltage_kv"]),
        "thickness": {"value": float(part["state"]["thickness"]),
                      "esd": None if th is None or th.esd is None or not th.refine
                      else float(th.esd), "unit": "Å"},
        "orientation": _orientation(SimpleNamespace(setup=part["setup"], state=part["state"],
                                                    fine=None)),
        "chi2": float(res.chi2), "dof": int(res.dof), "n_used": int(res.n_used),
        "r_factor": float(res.r_factor), "scale": float(res.scale),
        "background": [float(x) for x in np.atleast_1d(res.background)],
        "zncc": [{"hkl": list(key_hkl(kk)), "zncc": float(v)} for kk, v in res.zncc.items()],
        "parameters": [p.name if p.name in joint else f"{p.name}[{k}]"
                       for p in res.parameters],
    }


def _h5_json(obj: Any) -> str:
    return dumps(obj)


def write_results(run: Any, *, command_line: Sequence[str] | None = None,
                  truth: Mapping[str, float] | None = None, report: bool = True
                  ) -> dict[str, Path]:
    """Write every result file of a finished run into ``run.out_dir``.

    Returns
    -------
    dict
        ``{'hdf5', 'json', 'hkl_table', 'cif', 'report', 'density'?: path}``.
    """
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = structure_factor_table(run)
    files = {"hdf5": "results.h5", "json": "result.json", "hkl_table": "structure_factors.hkl",
             "cif": "refined.cif"}
    if report:
        files["report"] = "report.html"
    dmap = run.setup.project.density_map
    if dmap != "none" and rows:
        files["density"] = f"difference_{dmap}.cube"
    res_json = result_dict(run, rows, files, truth)
    prov = provenance(run.setup.input_files, command_line)
    paths: dict[str, Path] = {}
    crystal = run.setup.crystal
    header = (f"{run.setup.project.name}: {crystal!r}\n{run.state['voltage_kv']:g} kV; "
              + (run.simulation.potential.describe() if run.simulation is not None else ""))
    paths["hkl_table"] = write_hkl_table(out / files["hkl_table"], rows, header=header)
    from .structure_cif import cif_from_run

    paths["cif"] = cif_from_run(run, out / files["cif"], rows)
    if "density" in files:
        hk = [r["hkl"] for r in rows]
        sim = run.simulation
        u_ref = np.array([sim.structure_factor(h)[0] for h in hk])
        u_iam = np.array([run.iam[hkl_key(h)][0] for h in hk])
        dm = difference_map(sim.crystal, hk, u_ref, u_iam, sim.voltage_kv, kind=dmap)
        paths["density"] = write_cube(out / files["density"], dm)
    paths["hdf5"] = _write_h5(out / files["hdf5"], run, rows, res_json, prov)
    paths["json"] = atomic_write(out / files["json"], lambda tmp: tmp.write_text(
        dumps(res_json, indent=1, ensure_ascii=False), encoding="utf-8"))
    if report:
        paths["report"] = write_report(out, run, res_json, rows, prov)
    return paths


def _write_accuracy_h5(f: Any, acc: Mapping[str, Any]) -> None:
    """Group ``accuracy``: noise model, error budget table, spread over regions."""
    import h5py

    if not acc:
        return
    g = f.create_group("accuracy")
    sd = h5py.string_dtype()
    if "noise_model" in acc:
        g.attrs["noise_model"] = json.dumps(acc["noise_model"])
        for k, v in acc["noise_model"].items():
            if isinstance(v, (int, float, str, bool)):
                g.attrs[f"noise_{k}"] = v
    if "error_budget" in acc:
        b = g.create_group("error_budget")
        eb = acc["error_budget"]
        names = list(eb["parameters"])
        inputs = [e["input"] for e in eb["inputs"]]
        b.attrs["formula"] = eb["formula"]
        b.create_dataset("parameters", data=np.array(names, dtype=sd))
        b.create_dataset("inputs", data=np.array(inputs, dtype=sd))
        b.create_dataset("deltas", data=np.array([e["delta"] for e in eb["inputs"]], dtype=sd))
        b.create_dataset("shifts", data=np.array(
            [[eb["parameters"][n]["shifts"][i] for n in names] for i in inputs], float))
        b["shifts"].attrs["layout"] = "(input, parameter), parameter units"
        for key in ("value", "esd", "combined"):
            b.create_dataset(key, data=np.array(
                [np.nan if eb["parameters"][n][key] is None else eb["parameters"][n][key]
                 for n in names], float))
    if "regions" in acc:
        r = g.create_group("regions")
        rg = acc["regions"]
        names = list(rg["values"])
        r.attrs["stats"] = json.dumps(rg["stats"])
        r.create_dataset("parameters", data=np.array(names, dtype=sd))
        r.create_dataset("labels", data=np.array(rg["labels"], dtype=sd))
        r.create_dataset("values", data=np.array([rg["values"][n] for n in names], float).T)
        r.create_dataset("esds", data=np.array([rg["esds"][n] for n in names], float).T)


def _write_h5(path: Path, run: Any, rows: Sequence[Mapping[str, Any]], res_json: dict,
              prov: Mapping[str, Any]) -> Path:
    import h5py

    res = run.fine
    proj = run.setup.project

    def w(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "qcbed-results/1"
            f.attrs["qcbed_version"] = __version__
            f.attrs["result_json"] = dumps(res_json, ensure_ascii=False)
            g = f.create_group("inputs")
            g.attrs["project_file"] = str(proj.source)
            g.attrs["project_toml"] = proj.text
            if run.simulation is not None:
                g.attrs["engine"] = _h5_json(run.simulation.describe())
            g.attrs["data"] = f"{type(run.setup.data).__name__} shape " \
                              f"{tuple(run.setup.data.shape)}"
            g.attrs["final_state"] = _h5_json(run.state)
            c = f.create_group("coarse")
            for k, step in enumerate(run.coarse):
                s = c.create_group(f"step{k}")
                s.attrs["result"] = _h5_json({kk: vv for kk, vv in step.items()
                                              if kk != "history"})
                hist = step.get("history", [])
                for key in sorted({kk for hh in hist for kk in hh}):
                    s.create_dataset(key, data=np.array([hh.get(key, np.nan) for hh in hist],
                                                        float))
            h = f.create_group("history")
            hist = run.history
            h.attrs["records"] = _h5_json(hist)
            h.create_dataset("step", data=np.array([str(r.get("step", "")) for r in hist],
                                                   dtype=h5py.string_dtype()))
            for key in sorted({k for r in hist for k, v in r.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)}):
                h.create_dataset(key, data=np.array([r.get(key, np.nan) for r in hist], float))
            if res is not None:
                fi = f.create_group("final")
                ps = list(res.parameters)
                sd = h5py.string_dtype()
                fi.create_dataset("names", data=np.array([p.name for p in ps], dtype=sd))
                fi.create_dataset("values", data=np.array([p.value for p in ps], float))
                fi.create_dataset("esd", data=np.array(
                    [np.nan if p.esd is None or not p.refine else p.esd for p in ps], float))
                fi.create_dataset("units", data=np.array([p.unit for p in ps], dtype=sd))
                fi.create_dataset("refined", data=np.array([p.refine for p in ps], bool))
                fi.create_dataset("free_names", data=np.array(res.free_names, dtype=sd))
                fi.create_dataset("correlation", data=res.correlation)
                fi.create_dataset("covariance", data=res.covariance)
                fi.create_dataset("background", data=np.atleast_1d(res.background))
                for k in ("gof", "chi2", "dof", "n_used", "scale", "r_factor", "message",
                          "n_iterations", "n_solves", "elapsed_s"):
                    fi.attrs[k] = getattr(res, k)
                fi.attrs["zncc"] = json.dumps(res.zncc)
                fi.attrs["solver"] = json.dumps(res.extra.get("solver", {}))
                _write_accuracy_h5(f, getattr(run, "accuracy", None) or {})
                pat = f.create_group("patterns")
                roi = run.roi
                pat.create_dataset("hkl", data=np.asarray(roi.hkl, np.int64))
                pat.create_dataset("kt", data=roi.kt)
                pat["kt"].attrs["unit"] = "1/Å"
                for key in ("experiment", "model", "mask"):
                    pat.create_dataset(key, data=res.extra[key], compression="gzip")
                _exp, var, _valid = roi.sample({p.name: p.value for p in ps
                                                if p.kind == "sampling"})
                pat.create_dataset("variance", data=var, compression="gzip")
                pat.attrs["model"] = "scale * simulation (probe-convolved) + background"
                for k, reg in enumerate(roi.region_list):
                    rg = pat.create_group(f"region{k}")
                    rg.attrs["corners"] = reg.corners
                    rg.attrs["samples"] = (reg.n12, reg.n13)
                    rg.attrs["pad"] = reg.pad
                for k, (e, m, mk) in enumerate(zip(*(roi.split(res.extra[x]) for x in
                                                     ("experiment", "model", "mask")))):
                    rg = pat[f"region{k}"]
                    rg.create_dataset("experiment", data=np.where(mk, e, np.nan))
                    rg.create_dataset("model", data=m)
            for part in getattr(run, "datasets", None) or []:
                _write_dataset_h5(f.require_group("datasets"), part, res_json)
            sfg = f.create_group("structure_factors")
            if rows:
                sfg.create_dataset("hkl", data=np.array([r["hkl"] for r in rows], np.int64))
                for key in ("g", "phase_deg", "U", "U_esd", "U_iam", "U_abs", "U_abs_esd",
                            "U_abs_iam", "Fe", "Fe_esd", "Fe_iam", "Fx", "Fx_esd", "Fx_iam"):
                    sfg.create_dataset(key, data=np.array(
                        [np.nan if r[key] is None else r[key] for r in rows], float))
            sfg.attrs["units"] = "U, U_abs: 1/Å²; Fe: Å; Fx: electrons; g: 1/Å; phase: deg"
            _write_prov(f.create_group("provenance"), prov)
    return atomic_write(path, w)


def _write_dataset_h5(g: Any, part: Mapping[str, Any], res_json: Mapping[str, Any]) -> None:
    """Group ``datasets/<k>``: the dataset's summary (as in result.json) and its patterns."""
    k = part["index"]
    dg = g.create_group(str(k))
    dg.attrs["name"] = part["name"]
    dg.attrs["summary"] = _h5_json(res_json["datasets"][k])
    res, roi = part["result"], part["roi"]
    dg.create_dataset("hkl", data=np.asarray(roi.hkl, np.int64))
    dg.create_dataset("kt", data=roi.kt)
    dg["kt"].attrs["unit"] = "1/Å"
    for key in ("experiment", "model", "mask"):
        dg.create_dataset(key, data=res.extra[key], compression="gzip")


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read the main content of a ``results.h5``: result JSON, final parameters, history."""
    import h5py

    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {"result": json.loads(f.attrs["result_json"]),
                               "qcbed_version": str(f.attrs["qcbed_version"])}
        if "final" in f:
            fi = f["final"]
            names = [x.decode() if isinstance(x, bytes) else str(x) for x in fi["names"][()]]
            out["parameters"] = dict(zip(names, fi["values"][()].tolist()))
            out["esd"] = dict(zip(names, fi["esd"][()].tolist()))
            out["correlation"] = fi["correlation"][()]
        out["history"] = json.loads(f["history"].attrs["records"])
        prov = f["provenance"]
        out["provenance"] = {**{k: str(v) for k, v in prov.attrs.items()},
                             **{k: dict(prov[k].attrs) for k in prov}}
    return out
