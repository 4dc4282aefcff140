"""Where speed is hard (issue 13): non-centrosymmetric LiNbO₃, large-cell YIG, and the
Si D-LACBED at near-converged beam settings.

Run from the repository root::

    python benchmarks/bench_hard.py                 # all cases
    python benchmarks/bench_hard.py linbo3 yig      # some of: linbo3, yig, si

Prints ms per direction (one process, one BLAS thread: the anchors' conditions),
ratios to the anchors, the time against bare batched LAPACK ``eigh`` on the same
matrix sizes, growth with the number of beams and peak memory, and where the time
goes: the same directions without absorption (no perturbative step) and without
weak beams (no Bethe products). Timings are CPU time of the process
(``time.process_time``; with one BLAS thread the wall time of a quiet machine),
median of ``--repeat`` warm runs, so that the load of a shared machine counts less.
Never used by the tests.

Anchors (issue 13, same machine class): Felix-python 9.8 ms per pixel for LiNbO₃
near [1-10] at 200 kV (≥ 80 strong beams, no Bethe, general ``eig`` per pixel) and
1.44 ms per pixel for the Si D-LACBED (≥ 20 strong, ~115-beam pool).

Structures
----------
* LiNbO₃, R3c, hexagonal a = 5.1376 Å, c = 13.8497 Å (issue 13); atomic positions of
  Abrahams, Reddy & Bernstein, J. Phys. Chem. Solids 27, 997 (1966): Nb 6a (0, 0, 0),
  Li 6a (0, 0, 0.2829), O 18b (0.0492, 0.3446, 0.0647). Isotropic B (Å²) Nb 0.40,
  Li 0.90, O 0.55 are representative room-temperature values (the benchmark times
  do not depend on them).
* Y₃Fe₅O₁₂ (YIG), Ia-3d, a = 12.376 Å; positions of Geller & Gilleo, J. Phys. Chem.
  Solids 3, 30 (1957): Y 24c (1/8, 0, 1/4), Fe 16a (0, 0, 0), Fe 24d (3/8, 0, 1/4),
  O 96h (−0.0275, 0.0572, 0.1495); B (Å²) Y 0.35, Fe 0.30, O 0.50 (representative).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.solver import pattern_chunk
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
LINBO3_ANCHOR_MS = 9.8
SI_ANCHOR_MS = 1.44
BIRD_KING = PotentialModel("kirkland", "bird_king")


def linbo3() -> Crystal:
    """LiNbO₃ (Abrahams, Reddy & Bernstein 1966), hexagonal setting of R3c."""
    return Crystal(Lattice(5.1376, 5.1376, 13.8497, 90.0, 90.0, 120.0),
                   [Site("Nb", "Nb", (0.0, 0.0, 0.0), b_iso=0.40),
                    Site("Li", "Li", (0.0, 0.0, 0.2829), b_iso=0.90),
                    Site("O", "O", (0.0492, 0.3446, 0.0647), b_iso=0.55)], "R 3 c:H")


def yig() -> Crystal:
    """Y₃Fe₅O₁₂ (Geller & Gilleo 1957), Ia-3d."""
    a = 12.376
    return Crystal(Lattice(a, a, a),
                   [Site("Y", "Y", (0.125, 0.0, 0.25), b_iso=0.35),
                    Site("Fe1", "Fe", (0.0, 0.0, 0.0), b_iso=0.30),
                    Site("Fe2", "Fe", (0.375, 0.0, 0.25), b_iso=0.30),
                    Site("O", "O", (-0.0275, 0.0572, 0.1495), b_iso=0.50)], "I a -3 d")


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times))


def run_directions(arrays, kt, chunk: int = 128) -> None:
    for i in range(0, len(kt), chunk):
        pattern_chunk(arrays, kt[i:i + chunk], np.array([1000.0]))


def bare_eigh(sizes: np.ndarray, complex_: bool, rng) -> callable:
    """Batched LAPACK ``eigh`` on random Hermitian matrices of the engine's sizes."""
    mats = []
    for n in np.unique(sizes):
        k = int(np.sum(sizes == n))
        a = rng.standard_normal((k, n, n))
        if complex_:
            a = a + 1j * rng.standard_normal((k, n, n))
        mats.append(a + np.conj(np.swapaxes(a, 1, 2)))
    return lambda: [np.linalg.eigh(a) for a in mats]


def peak_mib(arrays, kt) -> float:
    """Peak numpy memory (tracemalloc) of one chunk of directions (MiB)."""
    tracemalloc.start()
    pattern_chunk(arrays, kt, np.array([1000.0]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def report(label: str, sim: Simulation, kt: np.ndarray, repeat: int, anchor: float | None,
           rng) -> None:
    arrays = sim.arrays
    eig = sim.solve(kt)
    counts = eig.beam_counts()
    run_directions(arrays, kt[:16])  # warm up
    t = median_time(lambda: run_directions(arrays, kt), repeat) / len(kt) * 1e3
    sizes = eig.eigen.n_strong
    t_bare = median_time(bare_eigh(sizes, not arrays.real, rng), repeat) / len(kt) * 1e3
    mem = peak_mib(arrays, kt[:128])
    no_abs = dataclasses.replace(arrays, u_abs=np.zeros_like(arrays.u_abs), lowdin=arrays.lowdin)
    no_weak = dataclasses.replace(arrays, rules=dataclasses.replace(arrays.rules, bethe=False),
                                  lowdin=arrays.lowdin)
    t_no_abs, t_no_weak = (median_time(lambda a=a: run_directions(a, kt), repeat)
                           / len(kt) * 1e3 for a in (no_abs, no_weak))
    line = (f"  {label}: {t:.3f} ms/direction; bare batched eigh on the same sizes "
            f"{t_bare:.3f} ms (ratio {t / t_bare:.2f}); without absorption {t_no_abs:.3f} ms, "
            f"without weak beams {t_no_weak:.3f} ms; pool {len(sim.pool)}, strong "
            f"{counts['strong_min']}/{counts['strong_mean']:.1f}/{counts['strong_max']}, weak "
            f"{counts['weak_mean']:.0f}, exact fallback {counts['exact_fallback']}/{len(kt)}, "
            f"clustered {counts['clustered']}; peak {mem:.0f} MiB per 128-direction chunk")
    if anchor:
        line += f"\n    Felix-python's {anchor} ms/pixel / ours: {anchor / t:.2f}"
    print(line, flush=True)


def run_linbo3(repeat: int, rng) -> None:
    print("\n== LiNbO3 near [1-10], 200 kV, Bird-King absorption (non-centrosymmetric)")
    kt = rng.uniform(-0.3, 0.3, (256, 2))
    for label, sel, n_dir in (
            ("Felix-like (>= 80 strong, ~460-beam pool, Bethe)",
             BeamSelection(sgmin=0.3, omega=30.0, min_strong=80), 256),
            ("converged (sgmin 4, omega 30)", BeamSelection(sgmin=4.0, omega=30.0), 64)):
        sim = Simulation(linbo3(), 200.0, [1, -1, 0], [0, 0, 1], potential=BIRD_KING,
                         selection=sel, gmax=3.0, smax=0.05, kt_radius=0.5, min_pool=400,
                         executor="serial")
        report(label, sim, kt[:n_dir], repeat, LINBO3_ANCHOR_MS, rng)


def run_yig(repeat: int, rng) -> None:
    print("\n== YIG off [110] near the (00l) systematic row, 300 kV, Bird-King absorption")
    center = (0.0, 0.35)   # tilted ~7 mrad off the zone, perpendicular to the 00l row
    kt = np.asarray(center) + rng.uniform(-0.05, 0.05, (64, 2))
    row = [(0, 0, l) for l in (-12, -8, -4, 4, 8, 12)]   # outputs: the 00l row
    for n_strong in (60, 100, 166, 220):
        sim = Simulation(yig(), 300.0, [1, 1, 0], [0, 0, 1], potential=BIRD_KING, outputs=row,
                         selection=BeamSelection(sgmin=1e-3, omega=None, min_strong=n_strong),
                         gmax=2.0, smax=0.03, kt_center=center, kt_radius=0.1,
                         min_pool=676, executor="serial")
        report(f"{n_strong} strong", sim, kt, repeat, None, rng)


def run_si(repeat: int, rng) -> None:
    print("\n== Si D-LACBED 152 x 152, 1480 A, near-converged (sgmin 4, omega 30, "
          "min 20 strong, smax 0.05), serial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = Simulation.from_felix(FELIX, gmax=3.0, smax=0.05, executor="serial",
                                    selection=BeamSelection(sgmin=4.0, omega=30.0,
                                                            min_strong=20))
    grid = sim.defaults.grid
    n_px = grid.points.shape[0]
    report("per direction (512 sampled)", sim, grid.points[::43][:512], repeat,
           SI_ANCHOR_MS, rng)
    red = sim.symmetry_reduction(grid)
    t0 = time.perf_counter()
    sim.pattern(grid, [1480.0])
    t = time.perf_counter() - t0
    print(f"  full image: {t:.1f} s, {t / n_px * 1e3:.3f} ms/pixel "
          f"({len(red.representatives)} of {n_px} directions solved, pattern symmetry); "
          f"Felix-python's {SI_ANCHOR_MS} ms/pixel / ours: {SI_ANCHOR_MS / (t / n_px * 1e3):.2f}",
          flush=True)


def main(argv: list[str] | None = None) -> None:
    cases = {"linbo3": run_linbo3, "yig": run_yig, "si": run_si}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help=f"some of {', '.join(cases)} (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    unknown = set(args.cases) - set(cases)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(cases)}")
    rng = np.random.default_rng(0)
    for name in args.cases or list(cases):
        cases[name](args.repeat, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
