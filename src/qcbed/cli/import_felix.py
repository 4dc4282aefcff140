"""``qcbed import-felix DIR``: a project file for a Felix D-LACBED folder, ready to refine."""

from __future__ import annotations

from pathlib import Path

import click

from ..project.felix import felix_project
from ._common import parse_roi_step, wrap

__all__ = ["command", "felix_project"]


@click.command("import-felix")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False), default=None,
              help="Project file to write (default: ./<folder name>.toml).")
@click.option("--output-dir", default=None,
              help="Results folder written into the project (default: <folder name>-results "
                   "next to the project file).")
@click.option("--thickness", type=float, default=None,
              help="Start thickness in Å (default: Felix's initial_thickness).")
@click.option("--clip-negative/--keep-negative", default=None,
              help="Set negative pixels to 0 or keep them (default: clip when there are any).")
@click.option("--n-ug", type=int, default=3, show_default=True,
              help="Low-order U_g families refined in the fine step.")
@click.option("--roi-step", default="auto", show_default=True,
              help="Display pixels between ROI samples, or 'auto': the correlation length "
                   "of the images' pixel noise, rounded up (the project comment says what "
                   "was measured).")
@click.option("--energy-filtered/--not-energy-filtered", "energy_filtered", default=None,
              help="Whether the images were recorded through an energy filter (Felix "
                   "folders do not say). Default: assumed not filtered, and the model adds "
                   "the plasmon-loss electrons (data.energy_filtered = false).")
@click.option("--force", is_flag=True, help="Overwrite an existing project file.")
@wrap
def command(folder: str, out: str | None, output_dir: str | None, thickness: float | None,
            clip_negative: bool | None, n_ug: int, roi_step: str, energy_filtered: bool | None,
            force: bool) -> None:
    """Write a project file for the Felix D-LACBED FOLDER, ready for 'qcbed refine':
    crystal from felix.cif, data = the DM3 images, geometry = the Felix grid, a central
    ROI and a plan (coarse thickness/orientation, then thickness and low-order U_g)."""
    from ..errors import InputError
    from ..project import dumps_toml

    d = Path(folder).resolve()
    step = parse_roi_step(roi_step)
    path = Path(out) if out else Path.cwd() / f"{d.name}.toml"
    if path.exists() and not force:
        raise InputError("project file exists (use --force to overwrite)", source=path,
                         found="existing file")
    proj, comments, facts = felix_project(
        d, output=output_dir or f"{d.name}-results", thickness=thickness,
        clip_negative=clip_negative, n_ug=n_ug, roi_step=step, energy_filtered=energy_filtered)
    text = dumps_toml(proj, comments, header="qcbed project file (TOML). Units: A, 1/A "
                                             "(no 2 pi), 1/A^2, kV, degrees, pixels.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    click.echo(f"wrote {path}: {facts['n_compared']} reflections of {facts['n_images']} "
               f"images {facts['image_shape']}, {facts['negative_pixels']} negative pixels"
               f"{' clipped' if proj['data']['clip_negative'] else ''}; refines "
               + ", ".join(f"U({','.join(map(str, h))})" for h in facts["families"])
               + " and the thickness")
    click.echo(f"next: qcbed validate {path} && qcbed refine {path}")
