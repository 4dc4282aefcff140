"""``qcbed import-larbed STACK.h5 --cif C``: a project for a LACBED stack from ``qcbed extract``.

The stack file (:func:`qcbed.larbed.save_stack`) records the tilt ↔ k_t map that the
extraction knew (``extract --cell``: the zone frame, rotation, mirror, rocking steps
per |g_x⊥| and the k_t of the reference tilt, ``--kt-reference``); the project's
``[geometry]`` repeats it so that ``qcbed validate`` / ``qcbed refine`` sample the
engine at the same k_t as the data (docs/larbed.md, "From a stack to a refinement").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from ._common import parse_roi_step, wrap


def larbed_project(stack_path: str | Path, cif: str | Path, *, thickness: float,
                   voltage_kv: float | None = None, output: str = "results", n_ug: int = 2,
                   roi_step: int | str = 1, elastic: str = "kirkland",
                   absorption: str = "bird_king",
                   xi: float = 0.1, holz: bool = True, gmax: float = 2.5, smax: float = 0.03,
                   accuracy: float | None = None,
                   orientation: bool = True, coarse: bool = True,
                   coarse_margin: int = 4, min_valid: float = 0.5
                   ) -> tuple[dict, dict[str, str], dict[str, Any]]:
    """The project (dict for :func:`qcbed.project.dumps_toml`), its comments and facts.

    Parameters
    ----------
    stack_path : path
        LACBED stack written by ``qcbed extract`` (with ``--cell``, so that it has a
        geometry).
    cif : path
        Crystal structure.
    thickness : float
        Start thickness (Å).
    voltage_kv : float, optional
        Accelerating voltage (kV); default: the one recorded in the stack.
    output : str
        Results folder written into the project.
    n_ug : int
        Low-order U_g families (largest IAM |U_g| first) refined in the second step.
    roi_step : int or 'auto'
        Tilts between ROI samples; ``'auto'``: the correlation length of the noise of
        the disc intensities across the tilt grid, rounded up
        (:func:`qcbed.experiment.resolution.noise_correlation`; the reason goes into the
        ROI comment).
    elastic, absorption, xi : str, str, float
        Engine scattering-factor and absorption models.
    holz, gmax, smax : bool, float, float
        Engine beam pool: higher-order Laue zones (real data need them), |g| ≤ gmax and
        |S_g| ≤ smax (Å⁻¹).
    accuracy : float, optional
        ``[engine] accuracy`` (max |ΔI|/I_max the engine's strong-beam rules may cost);
        default: the engine's.
    orientation : bool
        Also refine the orientation (``tilt.x``, ``tilt.y``: every simulated k_t moved,
        Å⁻¹; the data stay on their tilts, nothing is interpolated).
    coarse : bool
        Start with a coarse ``orientation_thickness`` step (template matching of the
        whole grid, thickness ± 20 %): finds the orientation when the k_t of the
        reference tilt (``extract --kt-reference``) is off by more than about a tilt step.
    coarse_margin : int
        Search half-width of the coarse step, in tilt steps.
    min_valid : float
        Reflections valid at fewer than this fraction of the tilts are not compared.

    Raises
    ------
    InputError
        The stack has no geometry (extracted without ``--cell``), no voltage is known,
        or its cell differs from the CIF's by more than 1 %.
    """
    from ..errors import InputError
    from ..io import read_crystal
    from ..larbed import load_stack
    from ..scattering.structure_factors import PotentialModel, structure_factors

    sp = Path(stack_path).resolve()
    stack = load_stack(sp)
    geo = stack.geometry
    if geo is None:
        raise InputError("the stack has no tilt geometry", source=sp,
                         expected="a stack extracted with 'qcbed extract --cell ...'",
                         found="no geometry_* attributes")
    volt = voltage_kv if voltage_kv is not None else stack.voltage_kv
    if volt is None:
        raise InputError("no accelerating voltage", source=sp, tag="voltage_kv",
                         expected="'extract --voltage' or 'import-larbed --voltage'",
                         found="none recorded")
    crystal = read_crystal(Path(cif))
    a_stack = np.asarray(geo.frame.lattice.parameters, float)
    a_cif = np.asarray(crystal.lattice.parameters, float)
    if np.max(np.abs(a_stack - a_cif) / np.maximum(a_cif, 1e-9)) > 0.01:
        raise InputError("the stack's cell differs from the CIF's", source=sp,
                         expected=[round(float(x), 4) for x in a_cif],
                         found=[round(float(x), 4) for x in a_stack])
    valid = stack.mask.reshape(len(stack.hkl), -1).mean(axis=1)
    hkl = [tuple(int(v) for v in h) for h, f in zip(stack.hkl, valid) if f >= min_valid]
    if (0, 0, 0) in hkl:
        hkl.remove((0, 0, 0))
        hkl.insert(0, (0, 0, 0))
    pm = PotentialModel(elastic, "none")
    cand = sorted((h for h in hkl if any(h)),
                  key=lambda h: (round(float(crystal.lattice.g_length(h)), 9),
                                 tuple(-v for v in h)))
    families: list[tuple[int, int, int]] = []
    if cand:
        sf = structure_factors(crystal, np.array(cand), volt, pm)
        umax = float(np.abs(sf.u).max())
        seen: set[tuple[int, int, int]] = set()
        for h, u in zip(cand, sf.u):
            if h in seen or abs(u) < 1e-3 * umax or crystal.is_systematically_absent(h):
                continue
            seen.update(tuple(int(v) for v in e)
                        for e in crystal.equivalent_reflections(h, friedel=True).hkl)
            families.append(h)
            if len(families) == n_ug:
                break
    ny, nx = stack.shape
    if min(ny, nx) < 2:
        raise InputError("tilt grid too small for a region", source=sp,
                         expected="at least 2 x 2 tilts", found=(ny, nx))
    # the ROI samples sit on the tilts themselves; the orientation is refined as tilt.x,
    # tilt.y (the simulated k_t move) rather than shift.row/.col (the data would be
    # interpolated between tilts, which smooths rocking curves sampled this coarsely)
    from ..experiment.resolution import roi_step as resolve_roi_step

    roi_step, step_reason = resolve_roi_step(roi_step, stack.images, stack.mask, "tilts")
    samples = [(ny - 1) // roi_step + 1, (nx - 1) // roi_step + 1]
    last = [(samples[0] - 1) * roi_step, (samples[1] - 1) * roi_step]
    frame = geo.frame
    shift = ["tilt.x", "tilt.y"] if orientation else []
    ug = [f"U({','.join(str(v) for v in h)})" for h in families]
    proj = {
        "project": {"name": f"LARBED {sp.stem}", "output": output},
        "crystal": {"source": str(Path(cif).resolve())},
        "data": {"format": "lacbed_h5", "kind": "lacbed", "files": [str(sp)],
                 "variance": "stored"},
        "geometry": {"voltage_kv": float(volt),
                     "zone": [float(v) for v in frame.zone],
                     "x_axis": [float(v) for v in frame.x_axis],
                     "normal": [float(v) for v in frame.normal], "mode": "lacbed",
                     "rotation": float(geo.rotation), "mirror": bool(geo.mirror),
                     "gl": float(geo.gl), "tilt0": [float(v) for v in geo.tilt0],
                     "reference": [float(v) for v in geo.reference],
                     "shift": [float(v) for v in geo.shift]},
        "roi": {"hkl": [list(h) for h in hkl],
                "regions": [{"corners": [[0, 0], [0, last[1]], [last[0], 0]],
                             "samples": [samples[1], samples[0]]}]},
        "engine": {"mode": "fast", "coarse_mode": "fast", "gmax": float(gmax),
                   "smax": float(smax), "holz": bool(holz), "elastic": elastic,
                   "absorption": absorption, "xi": xi},
        "gof": {"metric": "chi2", "background": "per_disc"},
        "plan": {"thickness": float(thickness),
                 "fine": [{"name": "thickness and orientation",
                           "refine": ["thickness", *shift], "max_iter": 15},
                          {"name": "low-order structure factors",
                           "refine": ["thickness", *ug, *shift], "max_iter": 25}]},
    }
    if accuracy is not None:
        proj["engine"]["accuracy"] = float(accuracy)
    if coarse:
        proj["plan"]["coarse"] = [{"step": "orientation_thickness",
                                   "thickness_range": [0.8 * thickness, 1.2 * thickness],
                                   "n_scan": 13, "margin": int(coarse_margin),
                                   "template_size": [ny, nx], "template_step": 1.0}]
    comments = {
        "project": f"qcbed project for the LACBED stack {sp}\n"
                   "written by 'qcbed import-larbed'; reference: docs/larbed.md",
        "data": "the stack of 'qcbed extract': images, variances and mask of every tilt",
        "geometry": "the tilt grid recorded by 'qcbed extract --cell' (a similarity fitted "
                    "to the k_t of every tilt;\nlargest deviation "
                    f"{stack.metadata.get('geometry_mismatch_steps', float('nan')):.3g} tilt "
                    "steps); tilt0 = k_t (1/A) at the reference tilt (extract --kt-reference)",
        "roi": f"every {roi_step}. tilt of the {ny} x {nx} grid; reflections valid at "
               f"≥ {min_valid:.0%} of the tilts" + ("\n" + step_reason if step_reason else ""),
        "plan.thickness": "start thickness (A)",
    }
    facts = {"n_images": len(stack.hkl), "n_compared": len(hkl), "families": families,
             "grid": (ny, nx), "voltage_kv": float(volt)}
    return proj, comments, facts


def write_project(path: Path, proj: dict, comments: dict[str, str], *, force: bool) -> Path:
    """Write the project TOML atomically (refuses to overwrite without ``force``)."""
    from ..errors import InputError
    from ..project import dumps_toml

    if path.exists() and not force:
        raise InputError("project file exists (use --force to overwrite)", source=path,
                         found="existing file")
    text = dumps_toml(proj, comments, header="qcbed project file (TOML). Units: A, 1/A "
                                             "(no 2 pi), 1/A^2, kV, degrees, pixels.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


@click.command("import-larbed")
@click.argument("stack", type=click.Path(exists=True, dir_okay=False))
@click.option("--cif", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Crystal structure (CIF).")
@click.option("--thickness", type=float, required=True, help="Start thickness (Å).")
@click.option("--voltage", type=float, default=None,
              help="Accelerating voltage in kV (default: recorded by extract --voltage).")
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False), default=None,
              help="Project file to write (default: ./<stack name>.toml).")
@click.option("--output-dir", default=None,
              help="Results folder written into the project (default: <stack name>-results).")
@click.option("--n-ug", type=int, default=2, show_default=True,
              help="Low-order U_g families refined in the second fine step.")
@click.option("--roi-step", default="1", show_default=True,
              help="Tilts between ROI samples, or 'auto': the correlation length of the "
                   "noise across the tilt grid, rounded up.")
@click.option("--elastic", default="kirkland", show_default=True,
              help="Elastic scattering factors of the engine.")
@click.option("--absorption", default="bird_king", show_default=True,
              help="Absorption model of the engine.")
@click.option("--xi", type=float, default=0.1, show_default=True,
              help="ξ of the proportional absorption model.")
@click.option("--holz/--no-holz", default=True, show_default=True,
              help="Include higher-order Laue zones in the beam pool.")
@click.option("--gmax", type=float, default=2.5, show_default=True,
              help="Beam pool: largest |g| (1/Å).")
@click.option("--smax", type=float, default=0.03, show_default=True,
              help="Beam pool: largest excitation error |S_g| (1/Å).")
@click.option("--accuracy", type=float, default=None,
              help="[engine] accuracy: largest |dI|/I_max of the strong-beam rules "
                   "(default: the engine's).")
@click.option("--coarse/--no-coarse", default=True, show_default=True,
              help="Start with a coarse orientation and thickness search (template matching).")
@click.option("--coarse-margin", type=int, default=4, show_default=True,
              help="Search half-width of the coarse step (tilt steps).")
@click.option("--force", is_flag=True, help="Overwrite an existing project file.")
@wrap
def command(stack: str, cif: str, thickness: float, voltage: float | None, out: str | None,
            output_dir: str | None, n_ug: int, roi_step: str, elastic: str, absorption: str,
            xi: float, holz: bool, gmax: float, smax: float, accuracy: float | None,
            coarse: bool,
            coarse_margin: int, force: bool) -> None:
    """Write a project file for the LACBED STACK of 'qcbed extract', ready for 'qcbed
    refine': crystal from --cif, data = the stack, geometry = the tilt grid the stack
    records, the whole grid as ROI and a plan (thickness + orientation, then low-order
    U_g), after a coarse orientation/thickness search unless --no-coarse."""
    sp = Path(stack).resolve()
    path = Path(out) if out else Path.cwd() / f"{sp.stem}.toml"
    proj, comments, facts = larbed_project(
        sp, cif, thickness=thickness, voltage_kv=voltage,
        output=output_dir or f"{sp.stem}-results", n_ug=n_ug, roi_step=parse_roi_step(roi_step),
        elastic=elastic, absorption=absorption, xi=xi, holz=holz, gmax=gmax, smax=smax,
        accuracy=accuracy, coarse=coarse,
        coarse_margin=coarse_margin)
    write_project(path, proj, comments, force=force)
    click.echo(f"wrote {path}: {facts['n_compared']} of {facts['n_images']} reflections on a "
               f"{facts['grid'][0]} x {facts['grid'][1]} tilt grid at {facts['voltage_kv']:g} "
               "kV; refines " + ", ".join(f"U({','.join(map(str, h))})"
                                          for h in facts["families"]) + " and the thickness")
    click.echo(f"next: qcbed validate {path} && qcbed refine {path}")
