"""Converged defaults on the Si [1-10] D-LACBED: set-up, accuracy and the full image.

Issue 12 items 1 and 8. Prints, in one run on the same machine:

* the engine's set-up (``Simulation.from_felix`` with the defaults): time, chosen
  sgmin, strong beams, selection error and pool-growth error;
* the full 152 × 152 image at 1480 Å with the defaults and with the legacy
  (unconverged) thresholds ``accuracy=None`` (sgmin 0.3, Ω 30, s_max 0.05), on 2
  worker processes — the ratio is item 8's figure;
* with ``--pool``, the pool series: the same selection on growing pools and every
  pool beam strong (what carries the pool error: physics or the Bethe treatment).

Run: ``QCBED_SHARED=../shared python benchmarks/bench_pool.py [--pool]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from qcbed.bloch.beams import BeamPool, BeamSelection
from qcbed.bloch.convergence import _arrays, _error, _intensities
from qcbed.bloch.potential import PotentialTable
from qcbed.bloch.simulation import Simulation
from qcbed.parallel import ProcessExecutor

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
POOLS = ((0.05, 3.0), (0.1, 3.0), (0.2, 3.0), (0.4, 3.0), (0.4, 4.0), (0.8, 4.0), (0.8, 5.0))


def image(sim: Simulation) -> float:
    grid = sim.defaults.grid
    sim.pattern(grid, [1480.0])                      # warm-up (workers, symmetry)
    t0 = time.perf_counter()
    sim.pattern(grid, [1480.0])
    return time.perf_counter() - t0


def pool_series(sim: Simulation, sgmin: float) -> None:
    st = sim.pool_settings
    frame = (sim.k_in, sim.frame.normal_frame)
    t = np.array([1480.0])
    rows: dict[tuple[float, float], dict[str, np.ndarray]] = {}
    for smax, gmax in POOLS:
        pool = BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=gmax, smax=smax,
                                  kt_center=st["kt_center"], kt_radius=st["kt_radius"],
                                  outputs=sim.pool.outputs, holz=True)
        table = PotentialTable.build(pool.hkl, sim._compute_u)
        res = {}
        for name, sel in (("selection", BeamSelection(sgmin, 30.0)),
                          ("classic", BeamSelection(sgmin, 30.0, lowdin=False)),
                          ("all strong", BeamSelection.all_strong())):
            if name == "all strong" and len(pool) > 1100:
                continue
            res[name], _ = _intensities(_arrays(frame, pool, table, sel), sim._check_kt, t)
        rows[(smax, gmax)] = res
        line = ", ".join(f"{k} vs all strong {_error(v, res['all strong']):.1e}"
                         for k, v in res.items() if k != "all strong" and "all strong" in res)
        print(f"  pool s_max {smax:g}, g_max {gmax:g}: {len(pool)} beams  {line}", flush=True)
    keys = list(rows)
    for a, b in itertools.pairwise(keys):
        print(f"  growth {a} -> {b}: " + ", ".join(
            f"{k} {_error(rows[a][k], rows[b][k]):.1e}" for k in rows[a] if k in rows[b]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", action="store_true", help="also the pool series")
    ap.add_argument("--no-image", action="store_true", help="skip the full images")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    ex = ProcessExecutor(2)
    t0 = time.perf_counter()
    sim = Simulation.from_felix(FELIX, executor=ex)
    conv = sim.convergence
    print(f"set-up {time.perf_counter() - t0:.1f} s: {conv.summary()}")
    print("  " + "\n  ".join(conv.steps))
    if not args.no_image:
        # the old default: legacy thresholds and classic Bethe potentials (main before #12)
        legacy = Simulation.from_felix(FELIX, executor=ex, accuracy=None,
                                       selection=BeamSelection(lowdin=False))
        t_new, t_old = image(sim), image(legacy)
        n_px = sim.defaults.grid.points.shape[0]
        print(f"full image, 1480 A, 2 workers: defaults {t_new:.1f} s "
              f"({t_new / n_px * 1e3:.2f} ms/px), old default (sgmin 0.3, classic Bethe) "
              f"{t_old:.1f} s; ratio {t_new / t_old:.1f}")
    if args.pool:
        pool_series(sim, sim.selection.sgmin)
    ex.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
