"""``qcbed simulate``: patterns of a PyExtal ``.dat`` set-up or a Felix folder → HDF5.

The output file follows the contract of issue 3: datasets ``hkl`` (n_out × 3 int),
``intensity`` (n_thickness × n_out × ny × nx, float64, NaN outside the illuminated
region), ``thickness`` (Å), ``kt`` (ny × nx × 2, Å⁻¹, zone-frame x, y) and ``mask``;
root attributes ``voltage_kv``, the beam counts (``pool_size``; ``strong_min``,
``strong_mean``, ``strong_max``, ``weak_mean`` over a subsample of the grid of
``beam_count_directions`` directions), ``scattering_factors``, ``absorption``,
``potential``, ``mode``, ``qcbed_version``; group ``provenance`` (input SHA-256
hashes, dependency versions, command line, date). For a Felix folder the images are
Felix's D-LACBED grid, pixel for pixel in the orientation of its DM3 images
(:meth:`qcbed.bloch.grids.TiltGrid.felix`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import click
import numpy as np

from .._core.checks import MAX_GMAX, MAX_THICKNESS, check_number, check_output_path
from ._common import engine_options, executor, settings, wrap


@click.command("simulate")
@click.argument("setup", type=click.Path(exists=True))
@click.option("--thickness", "-t", "thickness", type=float, multiple=True,
              help="Thickness in Å (repeatable). Default for a Felix folder: its scan.")
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False), required=True,
              help="Output HDF5 file.")
@click.option("--gmax", type=float, default=None,
              help="Automatic beam pool: |g| ≤ gmax (1/Å). Ignored with an explicit .dat "
                   "hkl list.")
@click.option("--smax", type=float, default=None,
              help="Automatic beam pool: |S_g| ≤ smax (1/Å).")
@click.option("--mode", type=click.Choice(["fast", "exact"]), default="fast",
              show_default=True, help="Eigen-solver.")
@click.option("--elastic", default=None,
              help="Elastic scattering factors (kirkland, lobato, peng, doyle_turner, wk, "
                   "xray_mott_bethe). Default: the set-up's.")
@click.option("--absorption", default=None,
              help="Absorption model (none, proportional, bird_king, wk, wk_phonon, wk_core). "
                   "Default: the set-up's.")
@click.option("--no-holz", is_flag=True, help="Zero-order Laue zone beams only.")
@click.option("--min-strong", type=int, default=None,
              help="At least this many strong beams per direction (Felix folders default "
                   "to min_strong_beams).")
@click.option("--no-symmetry", is_flag=True,
              help="Solve every direction (no pattern-symmetry reduction).")
@click.option("--force", is_flag=True,
              help="Overwrite OUT when it exists (an input file is never overwritten).")
@click.option("--sgmin", type=float, default=None,
              help="Fix the strong-beam threshold |2K S_g| < sgmin (1/Å²) instead of letting "
                   "the engine choose it (its error is then estimated and reported).")
@click.option("--omega", type=float, default=None,
              help="Fix the strong-beam criterion |2K S_g| < omega·|U_g| (default 30 with "
                   "--sgmin).")
@click.option("--accuracy", type=float, default=None,
              help="Target max |dI|/I_max of the beam settings against every pool beam "
                   "strong (default 1e-3); the engine chooses the pool and selection.")
@click.option("--all-strong", is_flag=True,
              help="Every pool beam strong (no Bethe potentials), on the pool the default "
                   "settings use: the reference that convergence_error is measured against.")
@engine_options
@wrap
def command(setup: str, thickness: tuple[float, ...], out: str, gmax: float | None,
            smax: float | None, mode: str, elastic: str | None, absorption: str | None,
            no_holz: bool, min_strong: int | None, no_symmetry: bool, sgmin: float | None,
            omega: float | None, accuracy: float | None,
            all_strong: bool, force: bool, quiet: bool | None, workers: str | None
            ) -> None:
    """Simulate the patterns of SETUP (a PyExtal .dat file or a Felix folder) and write
    them to OUT (HDF5): a CBED disc per output beam (.dat conv/samp net) or a LACBED
    image per reflection (Felix grid)."""
    from ..bloch.beams import BeamSelection
    from ..bloch.simulation import Simulation
    from ..errors import InputError
    from ..output.results import write_simulation
    from ..scattering.structure_factors import PotentialModel

    q, w = settings(quiet, workers)
    t0 = time.perf_counter()
    p = Path(setup)
    inputs_all = ([p / n for n in ("felix.inp", "felix.cif", "felix.hkl")] if p.is_dir()
                  else [p] + [p.parent / n for n in ("felix.cif", "felix.hkl")])
    check_output_path(out, overwrite=force, inputs=inputs_all, tag="--out")
    t_arg = [check_number(x, "--thickness", low=0.0, low_open=True, high=MAX_THICKNESS,
                          unit="Å") for x in thickness]
    ex = executor(w)
    kw: dict = {"mode": mode}
    if ex is not None:
        kw["executor"] = ex
    if accuracy is not None:
        if not (np.isfinite(accuracy) and 0 < accuracy < 1):
            raise InputError("accuracy must be in (0, 1)", tag="--accuracy",
                             expected="e.g. 1e-3", found=accuracy)
        kw["accuracy"] = accuracy
    if thickness:
        kw["check_thickness"] = np.asarray(thickness, float)
    if sgmin is not None or omega is not None:
        kw["selection"] = BeamSelection(sgmin=0.3 if sgmin is None else sgmin,
                                        omega=30.0 if omega is None else omega,
                                        min_strong=min_strong or 0)
    if p.is_dir() or p.name.lower() == "felix.inp":
        from ..io import read_felix

        folder = p if p.is_dir() else p.parent
        fx = read_felix(folder)
        if elastic or absorption:
            kw["potential"] = PotentialModel(
                elastic or fx.scattering_factors or "kirkland",
                absorption or fx.absorption or "bird_king",
                xi=fx.absorption_xi if fx.absorption_xi is not None else 0.1)
        if min_strong is not None and "selection" not in kw:
            kw["min_strong"] = min_strong
        elif "selection" in kw and min_strong is None:
            # fixed thresholds keep Felix's min_strong_beams as their floor
            kw["selection"] = dataclasses.replace(kw["selection"],
                                                  min_strong=int(fx.min_strong_beams or 0))
        sim = Simulation.from_felix(folder, **kw, **_pool_options(gmax, smax, no_holz))
        inputs = [f for f in (folder / "felix.inp", fx.cif_path, fx.hkl_path) if f is not None]
        setup_kind = "felix"
    elif p.suffix.lower() == ".dat":
        if elastic or absorption:
            kw["potential"] = PotentialModel(elastic or "xray_mott_bethe",
                                             absorption or "bird_king")
        if min_strong is not None:
            raise InputError("--min-strong applies to Felix folders (the .dat selection "
                             "comes from sgmin/omeg)", tag="--min-strong", found=min_strong)
        sim = Simulation.from_dat(p, **kw, **_pool_options(gmax, smax, no_holz))
        inputs = [p]
        setup_kind = "dat"
        if not thickness:
            raise InputError("a .dat file has no thickness", source=p, tag="--thickness",
                             expected="at least one --thickness T (Å)", found=None)
    else:
        raise InputError("unknown set-up", source=p,
                         expected="a PyExtal .dat file or a Felix folder (felix.inp)",
                         found=p.suffix or p.name)
    t = np.asarray(t_arg if t_arg else sim.defaults.thickness, dtype=float)
    if all_strong:
        # the reference: the same pool (and grid), every beam strong
        sim = sim.with_changes(selection=BeamSelection.all_strong())
    conv = sim.convergence
    grid = sim.defaults.grid
    inten, solver = sim.pattern(grid, t, use_symmetry=not no_symmetry, progress=not q,
                                return_stats=True)
    bad = ~np.isfinite(inten[:, :, grid.mask])
    if bad.any():
        it = int(np.nonzero(bad.any(axis=(1, 2)))[0][0])
        raise InputError("the simulated intensities are not finite (overflow); nothing was "
                         "written. Is the absorption right (see the warnings)? Is the "
                         "thickness too large?", source=p, tag="--thickness",
                         expected="finite intensities",
                         found=f"{int(bad.sum())} non-finite values, first at {t[it]:g} Å")
    # beam counts on a subsample of the grid (the pattern path keeps no eigen-systems)
    pts = grid.points
    step = max(1, len(pts) // 400)
    sub = pts[::step]
    counts = sim.solve(sub).beam_counts()
    pm = sim.potential
    # again: the file may have appeared while the patterns were computed
    check_output_path(out, overwrite=force, inputs=inputs_all, tag="--out")
    attrs = {
        "voltage_kv": sim.voltage_kv, "setup": str(p.resolve()), "setup_kind": setup_kind,
        "pattern_kind": sim.defaults.kind, "grid": grid.description,
        "pool_size": len(sim.pool), "n_out": int(sim.pool.n_out),
        "strong_min": counts["strong_min"], "strong_mean": counts["strong_mean"],
        "strong_max": counts["strong_max"], "weak_mean": counts["weak_mean"],
        "beam_count_directions": len(sub),
        "solved_directions": solver["directions"],
        "exact_fallback": solver["exact_fallback"], "rejected": solver["rejected"],
        "clustered": solver["clustered"],
        "scattering_factors": getattr(pm, "elastic", "tabulated"),
        "absorption": getattr(pm, "absorption", "tabulated"), "potential": pm.describe(),
        "mode": sim.mode, "zone": list(sim.frame.zone), "x_axis": list(sim.frame.x_axis),
        "normal": list(sim.frame.normal),
        "engine": json.dumps(sim.describe(), default=str),
        "all_strong": bool(all_strong),
        "convergence_error": 0.0 if all_strong else float(conv.error),
        "convergence": json.dumps(conv.as_dict()),
    }
    path = write_simulation(out, hkl=sim.outputs, intensity=inten, thickness=t, kt=grid.kt,
                            mask=grid.mask, attrs=attrs, input_files=inputs)
    if not q:
        click.echo("every pool beam strong (reference)" if all_strong else conv.summary())
        click.echo(f"{p}: {sim.potential.describe()}; pool {len(sim.pool)} beams, strong "
                   f"{counts['strong_min']}-{counts['strong_max']} (mean "
                   f"{counts['strong_mean']:.1f}); {len(pts)} directions")
    if solver["exact_fallback"] or solver["rejected"]:
        click.echo(f"warning: of {solver['directions']} solved directions, "
                   f"{solver['exact_fallback']} were re-solved with the exact solver and "
                   f"{solver['rejected']} were rejected by the physical guard (NaN in the "
                   "output)", err=True)
    click.echo(f"wrote {path}: intensity {tuple(inten.shape)} at thickness "
               f"{', '.join(f'{x:g}' for x in t)} A ({time.perf_counter() - t0:.1f} s)")
    if setup_kind == "felix" and sim.felix is not None and sim.felix.image_files and not q:
        click.echo(f"against the folder's images: qcbed compare {path} {folder}")


def _pool_options(gmax: float | None, smax: float | None, no_holz: bool) -> dict:
    """Engine keyword arguments from the --gmax/--smax/--no-holz options."""
    kw: dict = {}
    if gmax is not None:
        kw["gmax"] = check_number(gmax, "--gmax", low=0.0, low_open=True, high=MAX_GMAX,
                                  unit="Å⁻¹")
    if smax is not None:
        kw["smax"] = check_number(smax, "--smax", low=0.0, low_open=True, unit="Å⁻¹")
    if no_holz:
        kw["holz"] = False
    return kw
