"""Issue 12 item 8: the full Si D-LACBED image at the converged defaults against the
default of the day the issue was filed (tree cee42a9, its own defaults), timed in one run.

Both engines come from ``Simulation.from_felix(folder, executor="serial")`` with their own
defaults and compute ``sim.pattern(sim.defaults.grid, [1480])`` (152 × 152 directions,
symmetry-reduced as each tree does it), in this process, one BLAS thread, **CPU time**
(the shared VM's wall clock swings with the load); old and new alternate, medians.
The set-up (the converged engine's accuracy walk; the old tree had none) is timed once.

Make the baseline (the package imports itself relatively, so it loads under a new name)::

    git archive cee42a9 src/qcbed | tar -x -C /tmp/base && \\
        mv /tmp/base/src/qcbed /tmp/base/qcbed_base

Run: ``QCBED_SHARED=../shared python benchmarks/bench_item8.py --baseline /tmp/base``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # before numpy loads OpenBLAS

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="folder holding qcbed_base (the filing day's tree)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(args.baseline))
    engines = {}
    for name, mod in (("filing day (cee42a9)", "qcbed_base.bloch"), ("this tree", "qcbed.bloch")):
        t0 = time.process_time()
        sim = importlib.import_module(mod).Simulation.from_felix(FELIX, executor="serial")
        setup = time.process_time() - t0
        conv = sim.convergence if hasattr(sim, "convergence") else None
        extra = "" if conv is None else (
            f", sgmin {conv.sgmin:g}, {conv.strong_mean:.1f} strong, selection error "
            f"{conv.error:.2e}, pool error {conv.pool_error}")
        print(f"{name}: set-up {setup:.1f} s CPU, pool {len(sim.pool)}{extra}", flush=True)
        engines[name] = sim
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(args.repeat):
        for name, sim in engines.items():
            t0 = time.process_time()
            sim.pattern(sim.defaults.grid, [1480.0])
            times[name].append(time.process_time() - t0)
            print(f"  {name}: image {times[name][-1]:.2f} s CPU", flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    old, new = med["filing day (cee42a9)"], med["this tree"]
    print(f"median image: filing day {old:.2f} s, this tree {new:.2f} s: {new / old:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
