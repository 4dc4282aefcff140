"""Processing closure test for the Si U(111) bias (issue 12 item 6; docs/si-u111-bias.md §6).

Simulates the shared Si [1-10] D-LACBED experiment with qcbed at a known truth, applies
the processing the shared images went through, and refines the result exactly as the
real data are refined (the ``base`` run of ``si_u111_explore.py``: one fine step of
thickness, U(111), U(220), U(113), shift.row/col, legacy selection sgmin 0.3 / Ω 30,
ROI every 8 px, per-disc background, estimated noise model).

Processing steps (each optional, by token in the run name):

``sym``    the copies: every image that is an exact flip of another in the real folder
           (45 images hold 17 independent ones) is replaced by the same flip of its
           source image (the +h+h+l member), flipped about the image centre, while
           the simulated pattern's mirror lines lie OFF px below / COL px right of it;
``blur``   Gaussian blur σ = 0.5 px;
``bg``     a smooth inelastic background per image: a 2-D Gaussian of σ = 60 px about
           the zone axis, scaled so that its mean over the ROI is the image's constant
           background fitted to the real data;
``plasmon[X]`` not energy-filtered: I ⊗ (P₀δ + P₁K + P₂K⊗K + P₃K⊗K⊗K), Poisson P_n
           for t/λ_p = X (default 1: Si, 200 kV, λ_p ≈ 150 nm; Egerton 2011 §3.3,
           §4.1), K the
           single-plasmon angular distribution 1/(θ² + θ_E²) cut at θ_c (Egerton 2011
           eq. 3.23, θ_E = E_p/(γm₀v²) = 16.7 eV/344 keV = 0.049 mrad = 0.22 px, θ_c = 46 px ≈
           10 mrad), 5 × 5 sub-pixel sampled, applied before the copies;
``offX``   the mirror-line offset OFF (row) set to X px instead of 0.45;
``noise``  Gaussian noise of the variance σ² = g·I + σ₀² estimated from the real images,
           negatives clipped to 0 (as import-felix does with the real ones).

Images are c_g·I_g + b_g with c_g, b_g the least-squares scale and background of the
truth simulation against the real image (over the simulated window), so the synthetic
images have the real data's levels. Truths: ``ref`` (|U(111)| = 0.0474, t = 1531 Å:
the same U·t as the data's fit) and ``fit`` (the data's fit: 0.048599, 1492.8 Å);
U(220), U(113) and the orientation are the data's fit in both.

A name may end in ``:VARIANT``: the refinement then uses that ``si_u111_explore.py``
variant instead of ``base`` (e.g. ``ref+plasmon:inel+mfp1531`` refines the plasmon
data with qcbed's plasmon-loss model at the true t/λ_p = 1, ``ref+plasmon:inelfit`` with
t/λ_p refined).

Usage: ``QCBED_SHARED=/work/shared QCBED_BIAS_OUT=/tmp/bias3 PYTHONPATH=src
python benchmarks/si_u111_closure.py ref+clean ref+sym ref+sym+blur+bg+noise …``
(JSON lines in $QCBED_BIAS_OUT/closure.jsonl).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter

import qcbed.project.setup as project_setup
from qcbed.experiment.noise import estimate_noise
from qcbed.project import parse_project
from qcbed.project.setup import build_setup

sys.path.insert(0, os.path.dirname(__file__))
from si_u111_explore import OUT, run_project, variant

warnings.simplefilter("ignore")
LOG = f"{OUT}/closure.jsonl"
TRUTHS = {  # U(111), t (Å); U(220), U(113), shifts: the data's base fit
    "ref": (0.0474, 1531.0),
    "fit": (0.048599043638, 1492.81),
}
U220, U113 = 0.04148119615, 0.02345003996
OFF_ROW, OFF_COL = 0.45, 0.125   # mirror lines of the pattern vs the image centre (px)
WIN = slice(15, 137)             # simulated window (rows and cols) holding the ROI


def copy_relations(images: np.ndarray, hkl: list[tuple]) -> dict[int, tuple[int, str]]:
    """{index of a copy: (index of its source, flip)} for exact flips in the real folder."""
    flips = {"ud": lambda a: a[::-1], "lr": lambda a: a[:, ::-1],
             "udlr": lambda a: a[::-1, ::-1]}
    out: dict[int, tuple[int, str]] = {}
    for i in range(len(hkl)):
        if i in out:
            continue
        for j in range(i + 1, len(hkl)):
            if j in out:
                continue
            for k, f in flips.items():
                if np.array_equal(f(images[i]), images[j]):
                    out[j] = (i, k)
    return out


def flip(a: np.ndarray, how: str) -> np.ndarray:
    return {"ud": a[::-1], "lr": a[:, ::-1], "udlr": a[::-1, ::-1]}[how]


def plasmon_kernel(theta_e: float = 0.22, theta_c: float = 46.0, half: int = 50
                   ) -> np.ndarray:
    """Single-plasmon angular distribution 1/(θ² + θ_E²), θ ≤ θ_c, per pixel (sum 1)."""
    sub = (np.arange(5) - 2) / 5.0
    x = np.arange(-half, half + 1, dtype=float)
    xx = (x[:, None] + sub[None, :]).ravel()
    r2 = xx[:, None] ** 2 + xx[None, :] ** 2
    k = np.where(r2 <= theta_c**2, 1.0 / (r2 + theta_e**2), 0.0)
    n = len(x)
    k = k.reshape(n, 5, n, 5).sum(axis=(1, 3))
    return k / k.sum()


def plasmon(img: np.ndarray, t_over_lambda: float = 1.0) -> np.ndarray:
    """The image with its plasmon-loss copies (Poisson multiple scattering, up to 3)."""
    from math import factorial

    from scipy.signal import fftconvolve

    k = plasmon_kernel()
    pad = k.shape[0] // 2
    out = np.exp(-t_over_lambda) * img
    cur = img
    for n in range(1, 4):
        cur = fftconvolve(np.pad(cur, pad, mode="reflect"), k, mode="same")[pad:-pad, pad:-pad]
        out = out + np.exp(-t_over_lambda) * t_over_lambda**n / factorial(n) * cur
    return out


def synthetic_stack(real, setup, truth: str, steps: set[str], seed: int = 1):
    """The real stack with the ROI reflections' images replaced by processed simulations."""
    u111, t = TRUTHS[truth]
    geom = real.geometry
    # place the pattern: kt = 0 at (centre row + OFF_ROW, centre col + OFF_COL)
    centre = geom.image_centre
    here = geom.kt_to_pixel([0.0, 0.0])
    off = next((float(x[3:]) for x in steps if x.startswith("off")), OFF_ROW)
    geom = geom.replace(shift=tuple(centre + [off, OFF_COL] - here))
    sim = setup.simulation()
    vals = {}
    for h, u in (((1, 1, 1), u111), ((2, 2, 0), U220), ((1, 1, 3), U113)):
        ua = sim.structure_factor(h)[1]
        vals[h] = (u * np.exp(1j * sim.default_phase(h)), ua)
    sim.set_structure_factors(vals)
    rr, cc = np.meshgrid(np.arange(152.0)[WIN], np.arange(152.0)[WIN], indexing="ij")
    kt = geom.pixel_to_kt(np.stack([rr, cc], -1)).reshape(-1, 2)
    t0 = time.time()
    inten = sim.solve_eigen(kt).intensities([t])[0]          # (n_dir, n_out)
    print(f"  simulated {len(kt)} directions in {time.time() - t0:.0f} s", flush=True)
    shape = rr.shape
    hkl_all = [tuple(int(v) for v in h) for h in real.hkl]
    out_hkl = [tuple(int(v) for v in h) for h in setup.hkl]
    images = real.images.astype(float).copy()
    sims = {}
    for k, h in enumerate(out_hkl):
        i = hkl_all.index(h)
        s = inten[:, k].reshape(shape)
        d = images[i][WIN, WIN]
        a = np.stack([s.ravel(), np.ones(s.size)], 1)
        (c, b), *_ = np.linalg.lstsq(a, d.ravel(), rcond=None)
        sims[i] = (c * s, b)
    tl = next((float(x[7:] or 1.0) for x in steps if x.startswith("plasmon")), None)
    if tl is not None:
        sims = {i: (plasmon(s, tl), b) for i, (s, b) in sims.items()}
    kc = geom.kt_to_pixel([0.0, 0.0])
    bgshape = np.exp(-((rr - kc[0])**2 + (cc - kc[1])**2) / (2 * 60.0**2))
    for i, (s, b) in sims.items():
        img = gaussian_filter(s, 0.5) if "blur" in steps else s
        images[i][WIN, WIN] = img + (b * bgshape / bgshape.mean() if "bg" in steps else b)
    if "noise" in steps:
        nm = estimate_noise(real.images, np.asarray(real.mask, bool))
        rng = np.random.default_rng(seed)
        for i in sims:
            w = images[i][WIN, WIN]
            var = nm.gain * np.maximum(w, 0) + nm.floor
            images[i][WIN, WIN] = np.maximum(w + rng.normal(size=w.shape) * np.sqrt(var), 0)
        print(f"  noise: gain {nm.gain:.4g}, floor {nm.floor:.4g}", flush=True)
    # the copies last, exact flips of their source about the image centre (as in the data)
    rel = copy_relations(real.images, hkl_all)
    if "sym" in steps:
        for j, (i, how) in rel.items():
            if i in sims and j in sims:
                images[j] = flip(images[i], how).copy()
    return replace(real, images=images, variance=None), len(rel)


def main(names: list[str]) -> None:
    for name in names:
        data_name, _, how = name.partition(":")
        truth, *steps = data_name.split("+")
        proj, comments = variant(how or "base")
        proj["project"]["output"] = f"{OUT}/run_closure_{name}"
        setup = build_setup(parse_project(proj, source=f"{OUT}/closure.toml", base_dir=OUT))
        real = setup.data
        stack, n_copies = synthetic_stack(real, setup, truth, set(steps))
        orig = project_setup.read_felix_images

        def fake(*a, _stack=stack, **k):  # the project reads the synthetic images
            return _stack

        project_setup.read_felix_images = fake
        try:
            rec = run_project(f"closure_{name}", proj, comments, log=LOG)
        finally:
            project_setup.read_felix_images = orig
        if "u111" in rec:
            u = TRUTHS[truth][0]
            print(f"  {name}: U(111) {rec['u111']:.6f} vs truth {u:.6f} "
                  f"({100 * (rec['u111'] / u - 1):+.2f} %), t {rec['t']:.1f} "
                  f"(truth {TRUTHS[truth][1]}), copies {n_copies}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
