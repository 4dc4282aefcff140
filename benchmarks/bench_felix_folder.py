"""Set-up cost and engine figures of the default simulation of any Felix folder.

For the held-back datasets of issue 12 (other crystals from the source of the Si
data): what `qcbed simulate FOLDER` costs with the defaults, measured where the
time goes. Run from the repository root::

    python benchmarks/bench_felix_folder.py FOLDER [FOLDER ...] [--sample 120] [--full T]

Per folder it prints one JSON line: the crystal (space group, atoms per cell), the
set-up (``Simulation.from_felix``: pool build and the engine's accuracy walk, s),
the pool (and the size before the large-cell cap), the chosen selection, the
convergence and pool errors, the beam counts and ms per direction on a random
sample of the image's directions, and the peak memory (MiB). ``--full T``
also computes the whole image at thickness T (s and ms per solved direction).
Serial: one process, one BLAS thread. The folder needs felix.inp, a CIF and
felix.hkl or images; the Felix-python inputs themselves are not part of qcbed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("QCBED_WORKERS", "1")


def measure(folder: Path, n_sample: int, full: float | None) -> dict:
    """The figures of one folder (see the module docstring)."""
    from qcbed.bloch.simulation import Simulation

    out: dict = {"folder": str(folder)}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        sim = Simulation.from_felix(folder)
        conv = sim.convergence
        out["setup_s"] = round(time.perf_counter() - t0, 2)
        c = sim.crystal
        out.update(space_group=c.space_group_symbol, centrosymmetric=c.is_centrosymmetric,
                   cell_atoms=len(c.atoms.frac), pool=len(sim.pool),
                   convergence=conv.as_dict())
        grid = sim.defaults.grid
        pts = grid.points
        pick = np.random.default_rng(1).choice(len(pts), min(n_sample, len(pts)),
                                               replace=False)
        t1 = time.perf_counter()
        eig = sim.solve(pts[pick])
        out["ms_per_direction_sample"] = round(1e3 * (time.perf_counter() - t1) / len(pick), 1)
        out["beam_counts"] = eig.beam_counts()
        out["pixels"] = int(grid.mask.sum())
        if full is not None:
            t2 = time.perf_counter()
            _, st = sim.pattern(grid, np.array([full]), progress=False, return_stats=True)
            out["full_s"] = round(time.perf_counter() - t2, 1)
            out["ms_per_solved_direction"] = round(1e3 * out["full_s"] / st["directions"], 1)
    out["warnings"] = sorted({str(w.message) for w in rec})
    out["peak_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--sample", type=int, default=120, help="directions timed (default 120)")
    ap.add_argument("--full", type=float, default=None,
                    help="also the whole image at this thickness (Å)")
    args = ap.parse_args()
    for folder in args.folders:
        print(json.dumps(measure(folder, args.sample, args.full), default=str), flush=True)


if __name__ == "__main__":
    main()
