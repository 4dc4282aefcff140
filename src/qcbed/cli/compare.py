"""``qcbed compare SIM.h5 FOLDER``: simulated LACBED images against a Felix folder's.

Prints, for each thickness of the simulation, the figure of merit Felix reports
(mean over reflections of 1 − ZNCC after a Gaussian blur of the simulation and its
sub-pixel alignment; :mod:`qcbed.refine.compare`), and for the best thickness each
reflection's ZNCC and alignment shift. ``--json`` writes every value.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ._common import settings, wrap


@click.command("compare")
@click.argument("simulation", type=click.Path(dir_okay=False))
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--blur", type=float, default=None, metavar="PX",
              help="Gaussian blur of the simulation, standard deviation in pixels "
                   "(default: felix.inp's blur_radius when its image_processing is 1 or "
                   "2, else 0).")
@click.option("--max-shift", type=float, default=2.0, show_default=True, metavar="PX",
              help="Sub-pixel alignment range of each image, pixels.")
@click.option("--align/--no-align", default=None,
              help="Sub-pixel alignment of each image before its ZNCC (default: as "
                   "felix.inp's correlation_type: none for 1, aligned otherwise).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write every figure (per reflection and thickness) to this JSON file.")
@click.option("--quiet", "-q", is_flag=True, default=None, help="Only the summary line.")
@wrap
def command(simulation: str, folder: str, blur: float | None, max_shift: float,
            align: bool | None, json_out: str | None, quiet: bool | None) -> None:
    """Compare the simulated images of SIMULATION (an HDF5 file of 'qcbed simulate' for a
    Felix folder) with the recorded images of FOLDER (<name>_+h+k+l.dm3, felix.inp).

    The blur and the alignment follow felix.inp (image_processing, blur_radius,
    correlation_type) unless --blur or --align/--no-align say otherwise."""
    import h5py

    from ..errors import InputError
    from ..experiment.readers import read_felix_images
    from ..io import read_felix
    from ..refine.compare import compare_images

    q, _ = settings(quiet, None)
    sim_path = Path(simulation)
    if not sim_path.is_file():
        raise InputError("no such simulation file", source=sim_path,
                         expected="an HDF5 file written by qcbed simulate", found="missing")
    try:
        with h5py.File(sim_path, "r") as f:
            hkl = f["hkl"][()]
            inten = f["intensity"][()]
            thickness = f["thickness"][()]
            conv = f.attrs.get("convergence_error")
    except (OSError, KeyError) as exc:
        raise InputError(f"not a qcbed simulate file ({exc})", source=sim_path,
                         expected="datasets hkl, intensity, thickness") from None
    fx = read_felix(folder)
    stack = read_felix_images(folder, require_hkl=False, allow_negative=True)
    if inten.shape[-2:] != stack.images.shape[-2:]:
        raise InputError("the simulation's images and the folder's differ in size",
                         source=sim_path, expected=stack.images.shape[-2:],
                         found=inten.shape[-2:])
    if blur is None:
        blur = (float(fx.blur_radius or 0.0) if fx.image_processing in (1, 2) else 0.0)
    ctype = fx.correlation_type
    if align is None:
        align = ctype != 1
        if ctype not in (None, 1, 2) and not q:
            click.echo(f"felix.inp asks for correlation_type {ctype}; qcbed compares by "
                       "ZNCC after sub-pixel alignment (type 2)")
    if not align:
        max_shift = 0.0
    cmp = compare_images(inten, hkl, stack.images, stack.hkl, thickness=thickness,
                         blur_radius=blur, max_shift=max_shift)
    fom = cmp.figure_of_merit
    b = cmp.best
    if not q:
        click.echo(f"{len(cmp.hkl)} reflections compared (blur σ {blur:g} px, "
                   + (f"aligned within {max_shift:g} px" if max_shift > 0 else "not aligned")
                   + ")" + (f"; no recorded image for {len(cmp.missing)}: "
                            f"{cmp.missing[:5]}" if cmp.missing else ""))
        for t, v in zip(cmp.thickness, fom):
            click.echo(f"  thickness {t:8.1f} Å: mean 1 - ZNCC {v:.4f}")
        click.echo(f"per reflection at {cmp.thickness[b]:.1f} Å (ZNCC, shift rows/cols px):")
        for h, z, s in zip(cmp.hkl, cmp.zncc[b], cmp.shift[b]):
            click.echo(f"  {' '.join(f'{int(v):3d}' for v in h)}  {z:7.4f}  "
                       f"{s[0]:+5.2f} {s[1]:+5.2f}")
    engine = ("" if conv is None else
              f"; the simulation's engine error {float(conv):.1e} of I_max (convergence_error)")
    t_min = cmp.thickness_at_minimum
    vertex = ("" if t_min is None else
              f"; minimum near {t_min:.0f} Å (parabola through the best thickness and "
              "its neighbours)")
    click.echo(f"figure of merit (mean 1 - ZNCC) {fom[b]:.4f} at {cmp.thickness[b]:.1f} Å "
               f"(mean ZNCC {float(np.mean(cmp.zncc[b])):.4f}){vertex}{engine}")
    if json_out:
        rep = cmp.as_dict()
        rep["simulation"] = str(sim_path)
        rep["folder"] = str(folder)
        rep["convergence_error"] = None if conv is None else float(conv)
        Path(json_out).write_text(json.dumps(rep, indent=1))
