"""Bloch-engine benchmarks: the real jobs, timed, with ratios to anchors.

Run from the repository root (needs ../shared/data for the Si cases)::

    python benchmarks/bench_engine.py            # all cases
    python benchmarks/bench_engine.py felix      # one case: felix, converged, systematic, overhead

Prints wall times, ms per pixel/direction, ratios to the anchors and peak
memory. Timings are best of ``--repeat`` runs (default 3). Serial runs use one
process and one BLAS thread (the anchor's conditions); "2 workers" uses the
default local-process executor.

Anchors (issue 3): Felix-python needs 1.47 ms per pixel single-threaded on this
machine class (33.9 s for the 152 × 152 grid, pool ~115, ~20 strong, no Bethe).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.parallel import ProcessExecutor, SerialExecutor

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
DAT = SHARED / "data" / "pyextal-dat" / "Si_systematic.dat"
FELIX_ANCHOR_MS = 1.47


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def felix_like(executor):
    """Felix-python's settings: ZOLZ pool of ~115, min 20 strong (outputs: 39), no Bethe."""
    sel = BeamSelection(sgmin=0.0, omega=None, bethe=False, min_strong=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Simulation.from_felix(FELIX, holz=False, smax=0.001, gmax=3.0, selection=sel,
                                     executor=executor)


def converged(executor):
    """HOLZ included, Bethe potentials; Bethe vs all strong < 1e-3 of max (see the tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Simulation.from_felix(FELIX, gmax=3.0, smax=0.05, executor=executor,
                                     selection=BeamSelection(sgmin=4.0, omega=None))


def run_dlacbed(name, make, repeat):
    print(f"\n== Si D-LACBED, full 152 x 152 grid, 1480 A: {name}")
    for label, ex in (("serial", SerialExecutor()), ("2 workers", ProcessExecutor(2))):
        sim = make(ex)
        grid = sim.defaults.grid
        n_px = grid.points.shape[0]
        counts = sim.solve(grid.points[::211]).beam_counts()
        red = sim.symmetry_reduction(grid)
        sim.pattern(grid, [1480.0])  # warm up (worker start, symmetry)
        t, _ = best_of(lambda s=sim, g=grid: s.pattern(g, [1480.0]), repeat)
        ms = t / n_px * 1e3
        print(f"  {label:9s}: {t:6.2f} s  {ms:.4f} ms/pixel  ({FELIX_ANCHOR_MS / ms:5.1f}x faster "
              f"than Felix-python's {FELIX_ANCHOR_MS} ms/pixel)")
        if label == "serial":
            print(f"    pool {len(sim.pool)}, strong beams min/mean/max "
                  f"{counts['strong_min']}/{counts['strong_mean']:.1f}/{counts['strong_max']}, "
                  f"weak mean {counts['weak_mean']:.1f}; {len(red.representatives)} of {n_px} "
                  f"directions solved ({red.n_ops} symmetry operations); "
                  f"{sim.potential.describe()}")
            t_nosym, _ = best_of(lambda s=sim, g=grid: s.pattern(g, [1480.0], use_symmetry=False),
                                 1)
            print(f"    without pattern symmetry: {t_nosym:.2f} s, "
                  f"{t_nosym / n_px * 1e3:.4f} ms/pixel")
        ex.close()


def run_systematic(repeat):
    print("\n== Si 111 systematic CBED (Si_systematic.dat, 493-beam pool), samp 40")
    for label, ex in (("serial", SerialExecutor()), ("2 workers", ProcessExecutor(2))):
        sim = Simulation.from_dat(DAT, executor=ex)
        grid = sim.cbed_grid(0.551836, 40, center=sim.defaults.grid.kt[20, 20])
        n = grid.points.shape[0]
        sim.pattern(grid, [3400.0])
        t, _ = best_of(lambda s=sim, g=grid: s.pattern(g, [3400.0]), repeat)
        c = sim.solve(grid.points[::97]).beam_counts()
        print(f"  {label:9s}: {t:6.2f} s for {n} directions, {t / n * 1e3:.3f} ms/direction "
              f"(strong {c['strong_min']}/{c['strong_mean']:.1f}/{c['strong_max']}, "
              f"weak {c['weak_mean']:.0f}, pool {len(sim.pool)}, outputs {sim.pool.n_out})")
        ex.close()


def _engine(arrays, pts):
    from qcbed.bloch.solver import pattern_chunk

    for i in range(0, len(pts), 128):
        pattern_chunk(arrays, pts[i:i + 128], np.array([1480.0]))


def _bare(sizes, rng, complex_):
    """Batched LAPACK on random matrices of the engine's sizes (eigh, or general eig)."""
    for n in np.unique(sizes):
        k = int(np.sum(sizes == n))
        a = rng.standard_normal((k, n, n))
        a = a + np.swapaxes(a, 1, 2)
        if complex_:
            np.linalg.eig(a + 0.01j * rng.standard_normal((k, n, n)))
        else:
            np.linalg.eigh(a)


def run_overhead(repeat):
    """Engine time per direction versus bare batched LAPACK on matrices of the same sizes."""
    from threadpoolctl import threadpool_limits

    print("\n== Engine overhead versus bare batched LAPACK (same matrix sizes, 1 thread)")
    rng = np.random.default_rng(0)
    for name, make, absorb in (("Felix-like, no absorption", felix_like, False),
                               ("Felix-like, Bird-King absorption", felix_like, True)):
        sim = make(SerialExecutor())
        if not absorb:
            sim = sim.with_changes(potential=type(sim.potential)(sim.potential.elastic, "none"))
        pts = sim.defaults.grid.points[::4][:4096]
        sizes = sim.solve(pts).eigen.n_strong
        with threadpool_limits(1):
            t_eng, _ = best_of(lambda a=sim.arrays, p=pts: _engine(a, p), repeat)
            t_bare, _ = best_of(lambda z=sizes: _bare(z, rng, complex_=False), repeat)
            t_bare_c, _ = best_of(lambda z=sizes: _bare(z, rng, complex_=True), 1)
        print(f"  {name}: engine {t_eng / len(pts) * 1e3:.3f} ms/direction, bare eigh "
              f"{t_bare / len(pts) * 1e3:.3f} ms -> ratio {t_eng / t_bare:.2f} "
              f"(general complex eig would be {t_bare_c / len(pts) * 1e3:.3f} ms)")
    print(f"  peak resident memory of this process: {peak_mb():.0f} MB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["felix", "converged", "systematic", "overhead"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not FELIX.is_dir():
        print(f"shared data not found at {SHARED}; set QCBED_SHARED", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    if "felix" in args.cases:
        run_dlacbed("Felix-like settings (pool ~115, 39+ strong, no Bethe, BK absorption)",
                    felix_like, args.repeat)
    if "converged" in args.cases:
        run_dlacbed("converged settings (HOLZ, Bethe, sgmin 4.0)", converged, 1)
    if "systematic" in args.cases:
        run_systematic(args.repeat)
    if "overhead" in args.cases:
        run_overhead(args.repeat)
    print(f"\npeak resident memory: {peak_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
