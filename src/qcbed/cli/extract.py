"""``qcbed extract``: a 4-D LARBED file → LACBED stack (HDF5) with variances."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from .._core.checks import check_output_path
from ..errors import QcbedError
from ..experiment.readers import load_npy

_FORMATS = ["empad", "mib", "dm", "emd", "hdf5", "npy", "zarr"]


def _parse_hkl(text: str) -> list[int]:
    parts = text.replace(",", " ").split()
    if len(parts) != 3:
        raise click.BadParameter(f"expected 'h,k,l', got {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError as exc:
        raise click.BadParameter(f"Miller indices must be integers: {text!r}") from exc


@click.command("extract")
@click.argument("source", type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
              help="Output HDF5 file (datasets images, variance, hkl).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default=None,
              help="Input format (default: from the extension).")
@click.option("--dataset", default=None, help="Dataset/node path inside HDF5, EMD or zarr.")
@click.option("--scan-shape", nargs=2, type=int, default=None, metavar="NY NX",
              help="Tilt-grid shape for files that do not store it (MIB, bare EMPAD .raw, "
                   "3-D arrays).")
@click.option("--chunk-mb", type=float, default=32.0, show_default=True,
              help="Block size read at a time (MiB).")
@click.option("--zone", nargs=3, type=float, required=True, metavar="U V W",
              help="Zone axis [uvw] of the reference pattern.")
@click.option("--g1", nargs=5, type=float, required=True, metavar="H K L Y X",
              help="First reference reflection and its detector position (px) at the "
                   "reference tilt.")
@click.option("--g2", nargs=5, type=float, required=True, metavar="H K L Y X",
              help="Second reference reflection (not collinear with g1).")
@click.option("--origin", nargs=2, type=float, default=None, metavar="Y X",
              help="Detector position of 000 at the reference tilt (default: the brightest "
                   "spot of that frame).")
@click.option("--reference-tilt", nargs=2, type=int, default=None, metavar="ROW COL",
              help="Tilt of the reference pattern (default: the grid centre).")
@click.option("--locate/--no-locate", default=True, show_default=True,
              help="Refine the reference positions by a local centre of mass.")
@click.option("--calibration", "cal_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Tilt calibration JSON (from --save-calibration).")
@click.option("--vacuum", type=click.Path(exists=True), default=None,
              help="Vacuum tilt scan (same format and scan shape) to fit the calibration.")
@click.option("--no-beam-motion", is_flag=True,
              help="Descan on: the pattern does not move with the tilt.")
@click.option("--self-calibrate", is_flag=True,
              help="Fit the calibration to the dataset's own direct beam (only when it is "
                   "the brightest spot at most tilts; refused when the fit is poor).")
@click.option("--save-calibration", type=click.Path(dir_okay=False), default=None,
              help="Write the fitted tilt calibration to this JSON file.")
@click.option("--hkl", "hkl_list", multiple=True,
              help="Reflection 'h,k,l' to extract (repeatable). Default: every reflection "
                   "a·g1 + b·g2 (|a|, |b| ≤ --hmax) that stays on the detector.")
@click.option("--hmax", type=int, default=4, show_default=True,
              help="Largest multiple of g1, g2 when choosing reflections automatically.")
@click.option("--disc-radius", type=float, default=3.0, show_default=True,
              help="Integration disc radius (px).")
@click.option("--annulus", nargs=2, type=float, default=(5.0, 8.0), show_default=True,
              metavar="R_IN R_OUT", help="Background annulus radii (px).")
@click.option("--background", type=click.Choice(["mean", "median", "plane"]), default="mean",
              show_default=True, help="Background estimator.")
@click.option("--bad-pixels", type=click.Path(exists=True, dir_okay=False), default=None,
              help=".npy boolean mask (det_y, det_x), True = bad pixel.")
@click.option("--refine/--no-refine", default=True, show_default=True,
              help="Track the spots and fit a smooth drift before integrating.")
@click.option("--drift-order", type=int, default=2, show_default=True,
              help="Polynomial order of the drift over the tilt grid.")
@click.option("--stride", type=int, default=1, show_default=True,
              help="Track every n-th tilt row/column.")
@click.option("--track-method", type=click.Choice(["com", "xcorr"]), default="com",
              show_default=True, help="Spot-position measurement.")
@click.option("--gain", type=float, default=1.0, show_default=True,
              help="Detector units per primary electron.")
@click.option("--dqe", type=float, default=1.0, show_default=True,
              help="Detective quantum efficiency (EMPAD at 300 kV: 0.94).")
@click.option("--mixing", type=float, default=1.0, show_default=True,
              help="Mixing factor m (Zuo 2000).")
@click.option("--read-variance", type=float, default=0.0, show_default=True,
              help="Read-out variance term varB (counts; a dark pixel has variance m·g·varB).")
@click.option("--voltage", type=float, default=None,
              help="Accelerating voltage (kV), recorded in the stack.")
@click.option("--cell", nargs=6, type=float, default=None, metavar="A B C AL BE GA",
              help="Cell (Å, degrees): stores the k_t of every tilt with the stack.")
@click.option("--x-axis", nargs=3, type=int, default=None, metavar="H K L",
              help="Zone-frame x-axis reflection with --cell (default g1).")
@click.option("--kt-reference", nargs=2, type=float, default=None, metavar="KX KY",
              help="Incident k_t (1/Å, zone frame) at the reference tilt, with --cell "
                   "(default 0 0: the reference pattern is on the zone axis).")
@click.option("--project", "project_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a project file for the stack (as 'qcbed import-larbed'; "
                   "needs --cell, --voltage, --cif and --thickness).")
@click.option("--cif", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Crystal structure for --project.")
@click.option("--thickness", type=float, default=None,
              help="Start thickness (Å) for --project.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Blocks processed concurrently (threads).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")
@click.option("--force", is_flag=True,
              help="Overwrite OUTPUT and the --save-calibration file when they exist.")
def command(source: str, output: str, fmt: str | None, dataset: str | None,
            scan_shape: tuple[int, int] | None, chunk_mb: float, zone: tuple[float, ...],
            g1: tuple[float, ...], g2: tuple[float, ...], origin: tuple[float, float] | None,
            reference_tilt: tuple[int, int] | None, locate: bool, cal_file: str | None,
            vacuum: str | None, no_beam_motion: bool, self_calibrate: bool,
            save_calibration: str | None,
            hkl_list: tuple[str, ...], hmax: int, disc_radius: float,
            annulus: tuple[float, float], background: str, bad_pixels: str | None,
            refine: bool, drift_order: int, stride: int, track_method: str, gain: float,
            dqe: float, mixing: float, read_variance: float, voltage: float | None,
            cell: tuple[float, ...] | None, x_axis: tuple[int, int, int] | None,
            kt_reference: tuple[float, float] | None, project_out: str | None,
            cif: str | None, thickness: float | None, workers: int, quiet: bool,
            force: bool) -> None:
    """Extract LACBED images with variances from the LARBED dataset SOURCE.

    The spot of every reflection is located at every tilt from a reference
    pattern (000, g1 and g2 positions at one tilt) and the tilt calibration
    (beam motion per scan step), optionally tracked with a smooth drift model,
    integrated over a disc and background-subtracted with an annulus. The data
    are read block by block, so files larger than memory are fine.
    """
    from .. import larbed as lb

    progress = not quiet
    n_given = sum(x is not None for x in (cal_file, vacuum)) + int(no_beam_motion) + \
        int(self_calibrate)
    try:
        if n_given != 1:
            raise click.UsageError("give exactly one of --vacuum, --calibration, "
                                   "--no-beam-motion, --self-calibrate")
        if kt_reference is not None and not cell:
            raise click.UsageError("--kt-reference needs --cell (the k_t map of the tilts)")
        if project_out and not (cell and voltage and cif and thickness):
            raise click.UsageError("--project needs --cell, --voltage, --cif and --thickness")
        inputs = [x for x in (source, vacuum, cal_file, bad_pixels) if x]
        check_output_path(output, overwrite=force, inputs=inputs, tag="--output")
        if save_calibration:
            check_output_path(save_calibration, overwrite=force, inputs=inputs,
                              tag="--save-calibration")
        mask = load_npy(bad_pixels, tag="--bad-pixels") if bad_pixels else None
        shape = tuple(scan_shape) if scan_shape else None
        data = lb.open_4d(source, fmt, scan_shape=shape, dataset=dataset, chunk_mb=chunk_mb)
        ny, nx = data.scan_shape
        ref = (np.array(reference_tilt, float) if reference_tilt is not None
               else np.array([ny // 2, nx // 2], float))
        rr, cc = int(ref[0]), int(ref[1])
        if not (0 <= rr < ny and 0 <= cc < nx):
            raise click.BadParameter(f"reference tilt {rr, cc} outside the {ny}×{nx} grid")
        frame = data.frame(rr, cc)

        # --- tilt calibration
        if cal_file:
            cal = lb.TiltCalibration.from_dict(json.loads(Path(cal_file).read_text()))
            how = f"from {cal_file}"
        elif vacuum:
            vac = lb.open_4d(vacuum, fmt, scan_shape=shape, dataset=dataset,
                             chunk_mb=chunk_mb)
            cal = lb.calibrate_from_vacuum(vac, progress=progress, workers=workers)
            vac.close()
            how = f"fitted to the vacuum scan {vacuum}"
        elif no_beam_motion:
            cal = None
            how = "none (descan on)"
        else:
            cal = lb.calibrate_from_vacuum(data, progress=progress, workers=workers)
            how = "fitted to the direct beam of the dataset (robust)"
            if cal.rms > 0.5 or cal.n_used < 0.5 * ny * nx:
                raise click.UsageError(
                    f"self-calibration failed ({cal.n_used} of {ny * nx} tilts fit, rms "
                    f"{cal.rms:.2f} px): the direct beam is not the brightest spot at most "
                    "tilts; use --vacuum or --calibration")
        if save_calibration and cal is not None:
            Path(save_calibration).write_text(json.dumps(cal.to_dict(), indent=2))

        # --- reference pattern → spot map
        o = np.array(origin, float) if origin is not None else \
            lb.calibration.locate_spot(frame, None)
        p1 = np.array(g1[3:], float)
        p2 = np.array(g2[3:], float)
        if locate:
            o = lb.calibration.locate_spot(frame, o)
            p1 = lb.calibration.locate_spot(frame, p1)
            p2 = lb.calibration.locate_spot(frame, p2)
        h1 = [int(round(v)) for v in g1[:3]]
        h2 = [int(round(v)) for v in g2[:3]]
        zf = None
        if cell:
            from ..bloch.geometry import ZoneFrame
            from ..crystal import Lattice

            zf = ZoneFrame(Lattice(*cell), tuple(zone), tuple(x_axis or h1))
        spots = lb.SpotMap.from_reference(zone, o, h1, p1, h2, p2, frame=zf,
                                          reference_tilt=ref)
        pred = lb.SpotPredictor(spots, cal)

        # --- reflections
        if hkl_list:
            hkl = np.array([_parse_hkl(h) for h in hkl_list])
        else:
            hkl = lb.select_reflections(spots, cal, data.scan_shape, data.detector_shape,
                                        hmax=hmax, margin=annulus[1] + 1, net=(h1, h2))
            if not len(hkl):
                raise click.UsageError("no reflection stays on the detector; give --hkl")

        # --- tracking + extraction
        report = None
        if refine:
            pred, report = lb.refine_positions(
                data, pred, hkl, order=drift_order, radius=disc_radius,
                annulus=tuple(annulus), method=track_method, stride=stride,
                progress=progress, workers=workers)
        det = lb.detector_from_dqe(gain, dqe, mixing, read_variance)
        stack = lb.extract_lacbed(
            data, pred, hkl, disc_radius=disc_radius, annulus=tuple(annulus),
            background=background, detector=det, bad_pixels=mask, progress=progress,
            workers=workers, metadata={"command": " ".join(sys.argv)}, voltage_kv=voltage,
            kt_reference=kt_reference)
        lb.save_stack(stack, output)
        data.close()
        if project_out:
            from .import_larbed import larbed_project, write_project

            assert cif is not None and thickness is not None
            proj, comments, _facts = larbed_project(output, cif, thickness=thickness)
            write_project(Path(project_out), proj, comments, force=True)
    except QcbedError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if quiet:
        return
    valid = stack.mask
    click.echo(f"# {source}: {data.format}, tilts {ny}×{nx}, detector "
               f"{data.detector_shape[0]}×{data.detector_shape[1]}")
    click.echo(f"# tilt calibration {how}: {cal!r}")
    click.echo(f"# 000 at ({o[0]:.2f}, {o[1]:.2f}) px at tilt ({rr}, {cc})")
    if report is not None:
        click.echo(f"# drift: order {drift_order}, rms {report['rms']:.3f} px over "
                   f"{report['n_used']} spot measurements")
    click.echo(f"# {len(hkl)} reflections → {output}")
    click.echo(f"# {'h':>3} {'k':>3} {'l':>3} {'valid':>6} {'mean I':>12} {'mean σ':>10}")
    for j, h in enumerate(hkl):
        v = valid[j]
        mi = float(np.mean(stack.images[j][v])) if v.any() else float("nan")
        ms = float(np.mean(np.sqrt(stack.variance[j][v]))) if v.any() else float("nan")
        click.echo(f"  {h[0]:3d} {h[1]:3d} {h[2]:3d} {v.mean():6.1%} {mi:12.5g} {ms:10.4g}")
