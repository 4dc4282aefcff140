"""The Löwdin elimination to second order in the weak–weak coupling and in λ: selection
error and cost per direction against the first-order terms, on the engine itself.

For a Felix folder's default engine (``Simulation.from_felix``: its pool and tail), the
strong-beam threshold sgmin is set to each value given and the directions (the set-up's
check sample plus ``--n`` random directions of the image) are solved with the ``fast``
solver in four modes — first order (before session 9), ``WEAK_SECOND_ORDER`` alone,
``ENERGY_SECOND_ORDER`` alone, both (the default) — and compared with every pool beam
strong (same pool and tail): max |ΔI| / I_max over the outputs at 500–3000 Å and at the
check thicknesses, and CPU ms per direction (one process, one BLAS thread).

Run: ``QCBED_SHARED=../shared python benchmarks/bench_second_order.py \\
../shared/data/si-110-dlacbed --sgmin 1.6 2 2.5 3``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # before numpy loads OpenBLAS

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

from qcbed.bloch import Simulation
from qcbed.bloch import lowdin as lowdin_module
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.solver import solve_chunk

T = np.array([500.0, 1000.0, 1480.0, 2000.0, 3000.0])
MODES = {"first order": (False, False), "weak-weak 2nd": (True, False),
         "lambda 2nd": (False, True), "both (default)": (True, True)}


def run(folder: Path, sgmins: list[float], n: int, seed: int = 1) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        sim = Simulation.from_felix(folder, executor="serial")
        setup = time.process_time() - t0
    conv = sim.convergence
    arr = sim.arrays
    print(f"{folder.name}: set-up {setup:.0f} s CPU, pool {len(sim.pool)}, tail "
          f"{0 if arr.tail is None else arr.tail.n_beams}, chosen sgmin {conv.sgmin:g} "
          f"({conv.strong_mean:.1f} strong), selection error {conv.error:.2e}", flush=True)
    grid = sim.defaults.grid
    reps = grid.points[sim.symmetry_reduction(grid).representatives]
    rng = np.random.default_rng(seed)
    kt = np.concatenate([sim._check_kt, reps[rng.choice(len(reps), min(n, len(reps)),
                                                         replace=False)]])
    t_all = np.unique(np.concatenate([T, np.asarray(sim.check_thickness, float)]))
    strong_all = dataclasses.replace(arr, rules=BeamSelection.all_strong())
    ref = solve_chunk(strong_all, kt).intensities(t_all)
    i_max = float(ref.max())
    keep = lowdin_module.WEAK_SECOND_ORDER, lowdin_module.ENERGY_SECOND_ORDER
    try:
        for sg in sgmins:
            a = dataclasses.replace(arr, rules=dataclasses.replace(arr.rules, sgmin=sg))
            for name, (w2, e2) in MODES.items():
                lowdin_module.WEAK_SECOND_ORDER, lowdin_module.ENERGY_SECOND_ORDER = w2, e2
                solve_chunk(a, kt[:8])                          # warm
                t0 = time.process_time()
                eig = solve_chunk(a, kt)
                ms = (time.process_time() - t0) / len(kt) * 1e3
                diff = np.abs(eig.intensities(t_all) - ref) / i_max
                at_check = diff[np.isin(t_all, sim.check_thickness)].max()
                print(f"  sgmin {sg:g} {name:15s} {eig.n_strong.mean():6.1f} strong: max "
                      f"{diff.max():.2e} (check thicknesses {at_check:.2e}), "
                      f"{ms:.2f} ms/direction", flush=True)
    finally:
        lowdin_module.WEAK_SECOND_ORDER, lowdin_module.ENERGY_SECOND_ORDER = keep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--sgmin", type=float, nargs="+", default=[2.0, 2.5, 3.0])
    ap.add_argument("--n", type=int, default=64, help="random image directions")
    args = ap.parse_args(argv)
    run(args.folder, args.sgmin, args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
