"""The built-in demo: a noisy Si 111 systematic-row CBED pattern with known truth, refined.

:func:`make_demo` simulates the data and writes a complete project folder::

    DIR/project.toml        the project file (crystal, data, geometry, ROI, plan)
    DIR/si.cif              the crystal (diamond Si, origin at a centre of symmetry)
    DIR/data/pattern.npy    the CBED pattern (counts, Poisson noise)
    DIR/truth.json          the values used to simulate it

and :func:`run_demo` runs that project exactly as ``qcbed refine`` would
(coarse: thickness and orientation by template matching; fine: thickness,
U(111), U′(111), U(222) and the pattern shift by Levenberg–Marquardt with
analytic derivatives), then compares refined and true values.

The data: Si at 200 kV, 111 systematic row (zone [1 −1 0] with the incident beam
tilted ≈ 2.9° about the row, so that only the row is strongly excited), discs
−1−1−1, 000, 111, 222 of convergence 0.12 Å⁻¹ centred at k_x = −0.24 Å⁻¹ (both the
111 and the 222 Bragg lines cross the discs), 64 pixels per |g(111)| (0.005 Å⁻¹ per
pixel). The truth
differs from the independent-atom model (Kirkland factors, Bird–King absorption)
as bonding does: |U(111)| 1.5 % lower, U′(111) 20 % higher, and a bond-charge
U(222) = −1.2·10⁻⁴ Å⁻² where the IAM has 0 (the diamond 222 is forbidden for
spherical atoms). Intensities are scaled to 10⁵ counts per unit of flux-
normalised intensity on a background of 100 counts, then Poisson-sampled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._core.checks import check_integer, check_output_path
from .._core.files import atomic_write
from .._core.hkl import hkl_key
from ..bloch.geometry import ZoneFrame
from ..bloch.simulation import outputs_index
from ..errors import InputError
from ..experiment import ExperimentGeometry
from ..io import read_cif
from ..output.results import _orientation
from ..project import ProjectRun, build_setup, dumps_toml, load_project

__all__ = ["DemoSettings", "make_demo", "run_demo", "truth_table"]


@dataclass(frozen=True)
class DemoSettings:
    """Parameters of the synthetic experiment (units: Å, Å⁻¹, kV, counts)."""

    voltage_kv: float = 200.0
    thickness: float = 1650.0           # true thickness (Å)
    thickness_start: float = 1500.0     # what the user guesses
    tilt0: tuple[float, float] = (-0.24, 2.0)          # true k_t at the 000 disc centre
    tilt0_error: tuple[int, int] = (2, -2)  # start-value error of k_x, k_y (pixels)
    convergence: float = 0.12           # disc radius (Å⁻¹)
    gl: int = 64                        # pixels per |g(111)| (integer: discs on whole pixels)
    u111_factor: float = 0.985          # U(111) = factor × IAM
    uabs111_factor: float = 1.2         # U'(111) = factor × IAM
    u222: float = -1.2e-4               # bond-charge U(222) (Å⁻²); IAM: 0
    counts: float = 1.0e5               # counts per unit intensity
    background: float = 100.0           # counts per pixel
    roi_half: int = 15                  # half-size of the square ROI (px)
    roi_step: int = 2                   # pixels between ROI samples (every other pixel)
    gmax: float = 2.0                   # beam pool (Å⁻¹)
    smax: float = 0.05
    max_iter: int = 20

    @classmethod
    def fast(cls) -> DemoSettings:
        """A smaller version for tests (coarser pixels, fewer samples)."""
        return cls(gl=40, roi_half=9, roi_step=1, gmax=1.6, max_iter=12)


HKL = [(-1, -1, -1), (0, 0, 0), (1, 1, 1), (2, 2, 2)]
#: The files :func:`make_demo` writes, relative to its folder.
DEMO_FILES = ("project.toml", "si.cif", "data/pattern.npy", "truth.json")


def _crystal_file() -> Path:
    return Path(str(resources.files("qcbed.demo").joinpath("si.cif")))


def make_demo(out_dir: str | os.PathLike, *, seed: int = 1, fast: bool = False,
              settings: DemoSettings | None = None, executor: Any = None,
              overwrite: bool = False) -> tuple[Path, dict[str, float]]:
    """Simulate the demo data and write the project folder.

    Parameters
    ----------
    out_dir : path
        Folder to create. Its demo files (``project.toml``, ``si.cif``,
        ``data/pattern.npy``, ``truth.json``) are replaced only with ``overwrite``.
    seed : int
        Seed of the Poisson noise (0 ≤ seed < 2³²).
    fast : bool
        Use :meth:`DemoSettings.fast`.
    settings : DemoSettings, optional
        Override all settings.
    executor : optional
        Engine executor for the truth simulation.

    Returns
    -------
    (project file, truth)
        ``truth`` maps parameter names (``thickness``, ``U(1,1,1)``, ``Uabs(1,1,1)``,
        ``U(2,2,2)``, ``tilt0.x``, ``tilt0.y``) to the true values (signed amplitudes
        along the phase the refinement uses, Å⁻²; thickness in Å; k_t in Å⁻¹).
    """
    st = settings or (DemoSettings.fast() if fast else DemoSettings())
    check_integer(seed, "seed", low=0, high=2**32 - 1)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the demo folder is a file", source=out, tag="--out",
                         expected="a new or existing folder", found="a file")
    for name in DEMO_FILES:
        if (out / name).exists():
            check_output_path(out / name, overwrite=overwrite, tag="--out")
    (out / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_crystal_file(), out / "si.cif")
    crystal = read_cif(out / "si.cif")
    zone, xaxis = (1, -1, 0), (1, 1, 1)
    frame = ZoneFrame(crystal.lattice, zone, xaxis, zone)
    g111 = float(crystal.lattice.g_length(xaxis))
    gl = float(st.gl)
    p = g111 / gl
    radius_px = st.convergence / p
    margin = 8
    h = 2 * int(np.ceil(radius_px)) + 2 * margin + 1
    c000 = int(np.ceil(radius_px)) + int(gl) + margin   # 000 disc centre (−1−1−1 at left)
    w = int(np.ceil(c000 + 2 * gl + radius_px + margin))
    # the 000 disc centre on a pixel centre: with an integer gl every disc is, and the
    # ROI samples fall on pixel centres
    reference = ((h - 1) / 2.0, float(c000))
    # ---------------------------------------------------------------- project file
    r0, c0 = reference
    hs = st.roi_half
    n_roi = 2 * hs // st.roi_step + 1
    start_tilt = [st.tilt0[0] + st.tilt0_error[0] * p, st.tilt0[1] + st.tilt0_error[1] * p]
    proj = {
        "project": {"name": "qcbed demo: Si 111 systematic-row CBED (synthetic)",
                    "output": "results", "density_map": "xray"},
        "crystal": {"source": "si.cif"},
        "data": {"kind": "cbed", "files": ["data/pattern.npy"],
                 "hkl": [list(x) for x in HKL], "variance": "poisson",
                 "clip_negative": False},
        "geometry": {"voltage_kv": st.voltage_kv, "zone": list(zone), "x_axis": list(xaxis),
                     "normal": list(zone), "mode": "cbed", "rotation": 0.0, "mirror": False,
                     "gl": gl, "tilt0": start_tilt, "reference": [r0, c0],
                     "shift": [0.0, 0.0]},
        "roi": {"regions": [{"corners": [[r0 - hs, c0 - hs], [r0 - hs, c0 + hs],
                                         [r0 + hs, c0 - hs]],
                             "samples": [n_roi, n_roi]}]},
        "engine": {"mode": "fast", "coarse_mode": "fast", "gmax": st.gmax, "smax": st.smax,
                   "elastic": "kirkland", "absorption": "bird_king"},
        "gof": {"metric": "chi2", "background": "per_disc"},
        "plan": {
            "thickness": st.thickness_start,
            "coarse": [{"step": "orientation_thickness",
                        "thickness_range": [0.8 * st.thickness_start,
                                            1.33 * st.thickness_start],
                        "n_scan": 17, "margin": 6, "template_size": [2 * hs + 1, 2 * hs + 1]}],
            "fine": [{"name": "thickness and orientation",
                      "refine": ["thickness", "shift.row", "shift.col"], "max_iter": 10},
                     {"name": "structure factors",
                      "refine": ["thickness", "U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)",
                                 "shift.row", "shift.col"], "max_iter": st.max_iter}]},
    }
    comments = {
        "project": "qcbed demo project (written by 'qcbed demo'); see docs/project-file.md",
        "geometry.tilt0": "start value: the true k_t at the 000 disc centre is "
                          f"({st.tilt0[0]}, {st.tilt0[1]}) 1/A",
        "plan.thickness": f"start value (the true thickness is {st.thickness} A)",
    }
    text = dumps_toml(proj, comments,
                      header="qcbed project file (TOML). Units: A, 1/A (no 2 pi), 1/A^2, kV, "
                             "degrees, pixels.")
    path = out / "project.toml"
    path.write_text(text, encoding="utf-8")
    # ---------------------------------------------------------------- truth simulation
    # the data are simulated with the project's own engine set-up (same beam pool), with
    # the true structure factors, thickness and orientation
    data_file = out / "data" / "pattern.npy"
    np.save(data_file, np.zeros((h, w)))   # placeholder so that the project builds
    setup = build_setup(load_project(path), executor=executor)
    sim = setup.simulation(mode="exact")
    geom = ExperimentGeometry(frame, (h, w), gl=gl, tilt0=st.tilt0, reference=reference,
                              mode="cbed")
    iam = {h_: sim.structure_factor(h_) for h_ in [(1, 1, 1), (2, 2, 2)]}
    phase = {h_: sim.default_phase(h_) for h_ in [(1, 1, 1), (2, 2, 2)]}
    true_u = {(1, 1, 1): (st.u111_factor * iam[(1, 1, 1)][0],
                          st.uabs111_factor * iam[(1, 1, 1)][1]),
              (2, 2, 2): (st.u222 * np.exp(1j * phase[(2, 2, 2)]), iam[(2, 2, 2)][1])}
    sim.set_structure_factors(true_u)
    rr, cc = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    rc = np.stack([rr, cc], axis=-1)
    image = np.full((h, w), float(st.background))
    pts, where = [], []
    for k, g in enumerate(HKL):
        kt = geom.pixel_to_kt(rc, g)
        inside = np.linalg.norm(kt - np.asarray(st.tilt0), axis=-1) <= st.convergence
        pts.append(kt[inside])
        where.append((k, inside))
    # the discs sample the same incident directions (whole-pixel disc spacing): each is
    # solved once and gives every disc its intensity
    allpts = np.concatenate(pts)
    _, first, inverse = np.unique(np.rint(allpts / (1e-6 * p)).astype(np.int64), axis=0,
                                  return_index=True, return_inverse=True)
    inten = sim.solve(allpts[first]).intensities([st.thickness])[0][inverse.ravel()]
    col = outputs_index(sim, HKL)
    start = 0
    for (k, inside), pk in zip(where, pts):
        image[inside] += st.counts * inten[start:start + len(pk), col[k]]
        start += len(pk)
    rng = np.random.default_rng(seed)
    image = rng.poisson(image).astype(np.float64)
    atomic_write(data_file, lambda tmp: np.save(tmp, image))
    # ---------------------------------------------------------------- truth
    truth: dict[str, float] = {"thickness": st.thickness}
    for h_, (u, ua) in true_u.items():
        rot = np.exp(-1j * phase[h_])
        key = hkl_key(h_)
        truth[f"U({key})"] = float((u * rot).real)
        truth[f"Uabs({key})"] = float((ua * rot).real)
    truth["tilt0.x"], truth["tilt0.y"] = (float(x) for x in st.tilt0)
    (out / "truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return path, truth


def truth_table(run: Any, truth: dict[str, float]) -> str:
    """Refined versus true values with esd, as printed by ``qcbed demo``."""
    res = run.fine
    lines = [f"{'parameter':<24s} {'true':>13s} {'refined':>13s} {'esd':>10s} "
             f"{'(ref-true)/esd':>15s}"]
    labels = {"thickness": "thickness (A)", "U(1,1,1)": "U(111) (1/A^2)",
              "Uabs(1,1,1)": "U'(111) (1/A^2)", "U(2,2,2)": "U(222) (1/A^2)"}
    for name, lab in labels.items():
        if name not in res.parameters:
            continue
        p = res.parameters[name]
        t = truth.get(name)
        esd = p.esd if p.refine else None
        z = "" if esd is None or t is None or esd == 0 else f"{(p.value - t) / esd:+.2f}"
        tt = "" if t is None else f"{t:13.6g}"
        lines.append(f"{lab:<24s} {tt:>13s} {p.value:13.6g} "
                     f"{'' if esd is None else f'{esd:10.2g}':>10s} {z:>15s}")
    o = _orientation(run)
    for k, ax in enumerate("xy"):
        t = truth.get(f"tilt0.{ax}")
        v = o["tilt0"][k]
        e = None if o["tilt0_esd"] is None else o["tilt0_esd"][k]
        z = "" if not e or t is None else f"{(v - t) / e:+.2f}"
        lines.append(f"{'tilt k_' + ax + ' (1/A)':<24s} {t:13.6g} {v:13.6g} "
                     f"{'' if e is None else f'{e:10.2g}':>10s} {z:>15s}")
    lines.append(f"reduced chi2 = {res.chi2:.4f} (dof {res.dof}), R = {res.r_factor:.4f}, "
                 "ZNCC " + ", ".join(f"({k}) {v:.4f}" for k, v in res.zncc.items()))
    return "\n".join(lines)


def run_demo(out_dir: str | os.PathLike = "qcbed-demo", *, seed: int = 1, fast: bool = False,
             executor: Any = None, progress: bool = True,
             log: Callable[[str], None] | None = None, overwrite: bool = False
             ) -> tuple[Any, dict[str, float], str]:
    """Make the demo data, run the project, and return (RunResult, truth, table).

    ``overwrite`` allows replacing the files of an earlier demo in ``out_dir``.
    """
    log = log or logging.getLogger(__name__).info
    t0 = time.perf_counter()
    path, truth = make_demo(out_dir, seed=seed, fast=fast, executor=executor,
                            overwrite=overwrite)
    log(f"simulated a noisy Si 111 systematic-row CBED pattern (4 discs, seed {seed}) "
        f"in {time.perf_counter() - t0:.1f} s -> {path}")
    proj = load_project(path)
    run = ProjectRun(proj, executor=executor, progress=progress, log=log, truth=truth,
                     overwrite=overwrite).run()
    return run, truth, truth_table(run, truth)
