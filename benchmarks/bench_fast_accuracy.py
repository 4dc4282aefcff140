"""Accuracy and cost of the ``fast`` solver against ``exact`` up to 3000 Å (issue 13, goal 4).

Run from the repository root::

    python benchmarks/bench_fast_accuracy.py                 # si gaas linbo3 yig
    python benchmarks/bench_fast_accuracy.py linbo3 --repeat 5

For each case: the largest and median per-direction deviation of ``fast`` from
``exact`` on the same beams (max over 300/1000/2000/3000 Å and the output beams,
of the maximum ``exact`` intensity), the directions whose similarity steps the
a-posteriori bound redid (:data:`qcbed.bloch.perturbation.NEGLECTED_LIMIT`), and ms
per direction with the bound and without it (``NEGLECTED_LIMIT = inf``), timed
alternately in one process (medians of ``--repeat``; one BLAS thread). Never used
by the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_hard import BIRD_KING, linbo3, yig
from qcbed.bloch import perturbation as P
from qcbed.bloch import solver as S
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site

THICK = np.array([300.0, 1000.0, 2000.0, 3000.0])


def _cubic(kind: str) -> Crystal:
    if kind == "si":
        a = 5.4307
        return Crystal(Lattice(a, a, a), [Site("Si", "Si", (0.125,) * 3, b_iso=0.47)],
                       "F d -3 m :2")
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25,) * 3, b_iso=0.5)], 216)


def case(name: str):
    """(label, builder(mode) -> EngineArrays, kt)."""
    rng = np.random.default_rng(0)
    if name in ("si", "gaas"):
        def build(mode):
            return Simulation(_cubic(name), 200.0, [1, -1, 0], [0, 0, -1], potential=BIRD_KING,
                              selection=BeamSelection(sgmin=1.0, omega=30.0, min_strong=80),
                              gmax=3.0, smax=0.04, kt_radius=0.3, mode=mode,
                              executor="serial").arrays
        return f"{name} [1-10] 200 kV, >= 80 strong", build, rng.uniform(-0.2, 0.2, (128, 2))
    if name == "linbo3":
        def build(mode):
            return Simulation(linbo3(), 200.0, [1, -1, 0], [0, 0, 1], potential=BIRD_KING,
                              selection=BeamSelection(sgmin=0.3, omega=30.0, min_strong=80),
                              gmax=3.0, smax=0.05, kt_radius=0.5, min_pool=400, mode=mode,
                              executor="serial").arrays
        return "LiNbO3 [1-10] Felix-like, >= 80 strong", build, rng.uniform(-0.3, 0.3, (256, 2))
    center = (0.0, 0.35)
    row = [(0, 0, m) for m in (-12, -8, -4, 4, 8, 12)]

    def build(mode):
        return Simulation(yig(), 300.0, [1, 1, 0], [0, 0, 1], potential=BIRD_KING, outputs=row,
                          selection=BeamSelection(sgmin=1e-3, omega=None, min_strong=166),
                          gmax=2.0, smax=0.03, kt_center=center, kt_radius=0.1, min_pool=676,
                          mode=mode, executor="serial").arrays
    return "YIG off [110], 166 strong", build, np.asarray(center) + rng.uniform(-0.05, 0.05,
                                                                                (64, 2))


def errors(fast, kt, ref) -> tuple[np.ndarray, int, int]:
    """Per-direction error, redone directions, exact fallbacks."""
    redone = []
    steps = P._jacobi_steps

    def spy(*args):
        out = steps(*args)
        redone.append(int(out[4].sum()))
        return out

    P._jacobi_steps = spy
    try:
        eig = S.solve_chunk(fast, kt)
    finally:
        P._jacobi_steps = steps
    err = np.abs(eig.intensities(THICK) - ref).max(axis=(0, 2)) / ref.max()
    return err, sum(redone), eig.n_fallback


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["si", "gaas", "linbo3", "yig"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    limit = P.NEGLECTED_LIMIT
    for name in args.cases:
        label, build, kt = case(name)
        fast = build("fast")
        ref = S.solve_chunk(build("exact"), kt).intensities(THICK)
        times = {limit: [], np.inf: []}
        for _ in range(args.repeat):
            for lim in times:
                P.NEGLECTED_LIMIT = lim
                t0 = time.perf_counter()
                S.solve_chunk(fast, kt)
                times[lim].append((time.perf_counter() - t0) / len(kt) * 1e3)
        out = []
        for lim in times:
            P.NEGLECTED_LIMIT = lim
            err, redone, fb = errors(fast, kt, ref)
            out.append(f"limit {lim:g}: max {err.max():.1e} median {np.median(err):.1e} "
                       f"(>1e-4: {int((err > 1e-4).sum())}), redone {redone}, fallback {fb}, "
                       f"{np.median(times[lim]):.2f} ms/dir")
        P.NEGLECTED_LIMIT = limit
        print(f"{label}, {len(kt)} directions\n  " + "\n  ".join(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
