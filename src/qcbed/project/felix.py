"""A project for a Felix D-LACBED folder (used by ``qcbed import-felix`` and ``qcbed gui``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..bloch.geometry import ZoneFrame
from ..experiment import ExperimentGeometry, read_felix_images
from ..experiment.plasmon import estimated_plasmon_energy
from ..experiment.resolution import roi_step as resolve_roi_step
from ..io import read_felix
from ..scattering.structure_factors import PotentialModel, structure_factors

__all__ = ["felix_project"]


def _regions_that_fit(samples: int, wanted: int) -> int:
    """``wanted`` when a samples × samples ROI holds that many tiles of ≥ 2 × 2, else 0."""
    from ..errors import InputError
    from ..refine.reproducibility import tile_slices

    try:
        tile_slices((samples, samples), wanted)
    except InputError:
        return 0
    return wanted


def felix_project(folder: str | Path, *, output: str = "results", thickness: float | None = None,
                  clip_negative: bool | None = None, n_ug: int = 3, roi_fraction: float = 0.8,
                  roi_step: int | str = "auto", energy_filtered: bool | None = None
                  ) -> tuple[dict, dict[str, str], dict]:
    """The project (as a dict for :func:`qcbed.project.dumps_toml`), its comments and facts.

    Parameters
    ----------
    folder : path
        Felix folder (``felix.inp``, ``felix.cif``, ``felix.hkl``, ``<name>_+h+k+l.dm3``).
    output : str
        Output folder written into the project.
    thickness : float, optional
        Start thickness (Å); default Felix's ``initial_thickness``.
    clip_negative : bool, optional
        Set negative pixels to 0 (default: True when the images have any, with a comment).
    n_ug : int
        Number of low-order U_g families refined in the second fine step.
    roi_fraction : float
        Side of the central square ROI as a fraction of the image.
    roi_step : int or 'auto'
        Display pixels between ROI samples. ``'auto'`` (default): the correlation
        length of the images' pixel noise, rounded up
        (:func:`qcbed.experiment.resolution.noise_correlation`; samples closer than
        that share noise and add no independent information); the measurement and
        the step are written into the ROI's comment.
    energy_filtered : bool, optional
        Whether the images were recorded through an energy filter (zero-loss). A Felix
        folder does not record it; the default (None) writes ``energy_filtered =
        false``: the model then adds the plasmon-loss electrons
        (:mod:`qcbed.experiment.plasmon`), with a comment saying it was assumed.
    """
    d = Path(folder).resolve()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fx = read_felix(d)
        stack = read_felix_images(d, allow_negative=True)
    from ..experiment.noise import looks_like_counts

    n_neg = int((stack.images < 0).sum())
    counts = looks_like_counts(stack.images)
    clip = (n_neg > 0) if clip_negative is None else bool(clip_negative)
    crystal = fx.crystal
    frame = ZoneFrame(crystal.lattice, tuple(fx.zone), tuple(fx.x_direction),
                      tuple(fx.zone_normal))
    geom = ExperimentGeometry.felix(frame, fx.convergence_angle, fx.image_radius)
    r = fx.image_radius
    n = 2 * r
    # compared reflections: 000 + felix.hkl that have an image
    have = {tuple(int(v) for v in h) for h in stack.hkl}
    hkl = [(0, 0, 0)] + [tuple(int(v) for v in h) for h in fx.hkl
                         if tuple(int(v) for v in h) in have]
    # low-order U_g families with a non-negligible IAM value
    elastic = fx.scattering_factors or "kirkland"
    absorption = fx.absorption or "bird_king"
    cand = sorted(hkl[1:], key=lambda h: (round(float(crystal.lattice.g_length(h)), 9),
                                          tuple(-v for v in h)))
    sf = structure_factors(crystal, np.array(cand), fx.accelerating_voltage_kv,
                           PotentialModel(elastic, "none"))
    umax = float(np.abs(sf.u).max())
    families: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int, int]] = set()
    for h, u in zip(cand, sf.u):
        if h in seen or abs(u) < 1e-3 * umax or crystal.is_systematically_absent(h):
            continue
        eq = crystal.equivalent_reflections(h, friedel=True).hkl
        seen.update(tuple(int(v) for v in e) for e in eq)
        families.append(h)
        if len(families) == n_ug:
            break
    # reflections with an image that the IAM makes zero only through the special
    # positions of spherical atoms (Si 222): bonding and anharmonic motion make them
    # non-zero (Si U(222): PyExtal's example refines it; on the shared Si D-LACBED it
    # refines to -1.25e-3 Å⁻², 15 esd from 0, docs/si-u111-bias.md). Centrosymmetric
    # crystals only: there the centre of symmetry fixes the phase of the zero IAM value.
    glim = max([float(crystal.lattice.g_length(h)) for h in families] + [0.0]) * 1.1
    if crystal.is_centrosymmetric:
        for h, u in zip(cand, sf.u):
            if (h in seen or abs(u) >= 1e-3 * umax or crystal.is_systematically_absent(h)
                    or float(crystal.lattice.g_length(h)) > glim):
                continue
            eq = crystal.equivalent_reflections(h, friedel=True).hkl
            seen.update(tuple(int(v) for v in e) for e in eq)
            families.append(h)
    # ROI: a central square of the display, one sample every roi_step pixels
    roi_step, step_reason = resolve_roi_step(roi_step, stack.images)
    half = int(roi_fraction * r / roi_step) * roi_step
    c = (n - 1) / 2.0
    ns = 2 * half // roi_step + 1
    corners = [[c - half, c - half], [c - half, c + half], [c + half, c - half]]
    n_regions = _regions_that_fit(ns, 5)
    low = [list(h) for h in hkl if float(crystal.lattice.g_length(h)) <= 0.8]
    t0 = float(thickness if thickness is not None else fx.initial_thickness)
    tpl = 2 * (int(0.6 * r) // 2) + 1
    ug = [f"U({','.join(str(v) for v in h)})" for h in families]
    proj = {
        "project": {"name": f"Felix D-LACBED {d.name}", "output": output},
        "crystal": {"source": str(fx.cif_path or d / "felix.cif")},
        "data": {"format": "felix", "kind": "lacbed", "folder": str(d),
                 "variance": "poisson" if counts else "estimated", "clip_negative": clip,
                 "require_hkl": True, "energy_filtered": bool(energy_filtered)},
        "geometry": {"voltage_kv": float(fx.accelerating_voltage_kv),
                     "zone": [float(v) for v in fx.zone],
                     "x_axis": [float(v) for v in fx.x_direction],
                     "normal": [float(v) for v in fx.zone_normal], "mode": "lacbed",
                     "rotation": float(geom.rotation), "mirror": bool(geom.mirror),
                     "gl": float(geom.gl), "tilt0": [float(v) for v in geom.tilt0],
                     "shift": [0.0, 0.0]},
        "roi": {"hkl": [list(h) for h in hkl],
                "regions": [{"corners": corners, "samples": [ns, ns]}], "symmetric": True},
        "engine": {"mode": "fast", "coarse_mode": "fast",
                   "gmax": float(fx.g_limit) if fx.g_limit else 3.0,
                   "holz": True, "min_pool": int(fx.min_reflection_pool or 0),
                   "min_strong": int(fx.min_strong_beams or 0),
                   "elastic": elastic, "absorption": absorption,
                   "xi": float(fx.absorption_xi) if fx.absorption_xi is not None else 0.1},
        "gof": {"metric": "chi2", "background": "per_disc"},
        "plan": {"thickness": t0,
                 "coarse": [{"step": "orientation_thickness",
                             "thickness_range": [0.6 * t0, 1.6 * t0], "n_scan": 101,
                             "margin": 8, "template_size": [tpl, tpl], "template_step": 2.0,
                             "reflections": low}],
                 "fine": [{"name": "thickness and orientation",
                           "refine": ["thickness", "shift.row", "shift.col"], "max_iter": 10},
                          {"name": "low-order structure factors",
                           "refine": ["thickness", *ug, "shift.row", "shift.col"],
                           "max_iter": 20}],
                 "regions": n_regions},
    }
    e_p, est = estimated_plasmon_energy(crystal)
    ep_note = (f"E_p = {e_p:.1f} eV, the free-electron value, unless plasmon_energy_ev is "
               "given" if not est else
               f"E_p = {e_p:.1f} eV is a free-electron ESTIMATE counting the s and d "
               f"electrons of {', '.join(est)}:\ngive the measured plasmon energy in "
               "plasmon_energy_ev")
    comments = {
        "project": f"qcbed project for the Felix D-LACBED folder {d}\n"
                   "written by 'qcbed import-felix'; reference: docs/project-file.md",
        "data.clip_negative": (f"the images have {n_neg} negative pixels: they are set to 0"
                               if n_neg and clip else
                               f"{n_neg} negative pixels in the images"),
        "data.energy_filtered": (
            ("the images were recorded through an energy filter (import-felix "
             "--energy-filtered): elastic model only") if energy_filtered else
            ("the images are not energy-filtered (import-felix --not-energy-filtered): the "
             f"model adds the plasmon-loss electrons\n(docs/refinement.md; {ep_note})")
            if energy_filtered is not None else
            ("assumed NOT energy-filtered (felix.inp does not say; give import-felix "
             "--energy-filtered if they were):\nthe model adds the plasmon-loss electrons "
             f"(docs/refinement.md; {ep_note})")),
        "data.variance": ("the images are counts: Poisson variances" if counts else
                          "the images are not counts (non-integer or negative values): "
                          "variances sigma^2 = g I + s0^2 estimated from the images' local "
                          "scatter (docs/refinement.md)"),
        "geometry": "the Felix image grid: pixel (r, c) <-> k_x = (R - r + 1/2) D, "
                    "k_y = -(c - R + 1/2) D,\nD = convergence_angle / image_radius "
                    f"= {fx.convergence_angle:g}/{r} 1/A (rotation -90 deg); zone = "
                    "-incident_beam_direction,\nnormal = -normal: Felix's beam travels along "
                    "incident_beam_direction, qcbed's zone points to the source",
        "roi": f"a central square of {2 * half + 1} x {2 * half + 1} display pixels, one "
               f"sample every {roi_step} px" + ("\n" + step_reason if step_reason else ""),
        "roi.symmetric": "fine steps move the region by < 1 sample so that the pattern "
                         "symmetry maps its k_t grid onto itself\n(the finely sampled "
                         "images are interpolated there); the engine then solves one "
                         "direction per symmetry orbit",
        "engine": f"Felix: scatter_factor_method = {fx.scatter_factor_method}, "
                  f"absorption_method = {fx.absorption_method}, holz_flag = {fx.holz_flag}; "
                  "HOLZ beams are included\n(real data need them)",
        "plan.thickness": "start thickness (A), Felix's initial_thickness",
        "plan.regions": ("the last fine step repeated on 5 disjoint tiles of the ROI, none a "
                         "copy of another under the images' copy relations: the spread of "
                         "the results\n(docs/refinement.md, 'Reproducibility across regions')"
                         if n_regions else
                         f"0: the ROI's {ns} x {ns} samples cannot hold 5 tiles of at least "
                         "2 x 2 samples (small images); no spread over regions"),
    }
    facts = {"n_images": len(stack.hkl), "n_compared": len(hkl), "negative_pixels": n_neg,
             "families": families, "image_shape": stack.shape}
    return proj, comments, facts
