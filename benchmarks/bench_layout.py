"""Costs the reorganisation (issue 11) could change: ``import qcbed`` and a symmetric pattern.

``import qcbed`` should load no sub-package (lazy top-level API); ``Simulation.pattern``
now checks the pattern symmetry against the current U tables and keys its caches on
the table version and a hash of the grid.

Run with ``OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_layout.py``
(and with the ``src`` of another checkout to compare).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import qcbed; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def pattern_time(n: int, repeats: int) -> float:
    from qcbed.bloch.grids import TiltGrid
    from qcbed.bloch.simulation import Simulation
    from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
    from qcbed.scattering.structure_factors import PotentialModel

    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    out = [[0, 0, 2], [0, 0, -2], [1, 1, 1], [1, 1, -1], [-1, -1, 1], [-1, -1, -1],
           [2, 2, 0], [-2, -2, 0]]
    sim = Simulation(cr, 200.0, [1, -1, 0], [0, 0, -1], gmax=2.0, smax=0.02, kt_radius=0.2,
                     holz=True, outputs=out, executor="serial",
                     potential=PotentialModel("kirkland", "bird_king"))
    grid = TiltGrid.regular((0, 0), (0.02, 0), (0, -0.02), (n, n))
    sim.pattern(grid, [1000.0])
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sim.pattern(grid, [1000.0, 1500.0])
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=41, help="grid side (pixels)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(f"import qcbed: {min(import_time() for _ in range(3)):.3f} s")
    print(f"pattern {a.n}x{a.n}, 2 thicknesses, 2mm symmetry, serial: "
          f"{pattern_time(a.n, a.repeats):.3f} s (best of {a.repeats})")


if __name__ == "__main__":
    main()
