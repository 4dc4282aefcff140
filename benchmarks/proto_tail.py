"""Prototype: second-order tail correction from beams outside the pool (issue 12 item 1).

Every pool beam strong (no Bethe), small synthetic Si and GaAs [1-10] cases
(200 kV, tilt disc radius 0.25 Å⁻¹, 1200 Å; 13 sample directions). Compares the
default pool (s_max 0.05, g_max 3) with and without the tail correction of the
beams up to (s_max, g_max) = TAIL against larger pools with the same tail.
Run: ``python benchmarks/proto_tail.py``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

from qcbed.bloch import Simulation
from qcbed.bloch.beams import BeamPool, BeamSelection
from qcbed.bloch.convergence import sample_directions
from qcbed.bloch.solver import solve_chunk
from qcbed.bloch.tail import build_tail
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel


def si() -> Crystal:
    a = 5.4307
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125, 0.125, 0.125), b_iso=0.47)],
                   "F d -3 m :2")


def gaas() -> Crystal:
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25, 0.25, 0.25), b_iso=0.5)], 216)


R, T = 0.25, [1200.0]


def run(name, crystal, pools, tail_ext, n_terms=6, mode="fast"):
    kt = sample_directions((0.0, 0.0), R)
    res = {}
    for smax, gmax in pools:
        sim = Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1], smax=smax, gmax=gmax,
                         potential=PotentialModel("kirkland", "bird_king"), kt_radius=R,
                         selection=BeamSelection.all_strong(), executor="serial",
                         accuracy=None, mode=mode)
        arr = sim.arrays
        t0 = time.perf_counter()
        base = solve_chunk(arr, kt).intensities(T)
        t_solve = time.perf_counter() - t0
        big = BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=tail_ext[1],
                                 smax=tail_ext[0], kt_radius=R, holz=True)
        have = {tuple(h) for h in sim.pool.hkl}
        sel = np.array([tuple(h) not in have for h in big.hkl])
        t0 = time.perf_counter()
        tail = build_tail(sim.pool.hkl, big.hkl[sel], big.g[sel], sim._compute_u,
                          k_in=sim.k_in, normal=sim.frame.normal_frame, center=(0, 0),
                          radius=R, n_terms=n_terms)
        t_tail = time.perf_counter() - t0
        arr.tail = tail
        corr = solve_chunk(arr, kt).intensities(T)
        arr.tail = None
        res[(smax, gmax)] = (base, corr)
        print(f"{name} pool {(smax, gmax)}: {len(sim.pool)} beams, tail {tail.n_beams} beams "
              f"built in {t_tail:.1f} s (solve 13 dirs {t_solve:.1f} s), |dA| {tail.size:.1e},"
              f" fit misfit {tail.fit_error:.1e}", flush=True)
    keys = list(res)
    mx = max(np.nanmax(v[1]) for v in res.values())
    for a in keys:
        for b in keys:
            if a >= b:
                continue
            e0 = np.nanmax(np.abs(res[a][0] - res[b][0])) / mx
            e1 = np.nanmax(np.abs(res[a][1] - res[b][1])) / mx
            e2 = np.nanmax(np.abs(res[a][1] - res[b][0])) / mx
            print(f"  {a} vs {b}: no tail {e0:.1e}; both with tail {e1:.1e}; "
                  f"{a}+tail vs {b} bare {e2:.1e}")
    return res


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    which = sys.argv[1] if len(sys.argv) > 1 else "si"
    ext = (float(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 else (0.8, 4.0)
    pools = ((0.05, 3.0), (0.4, 3.0))
    run(which, {"si": si, "gaas": gaas}[which], pools, ext)
