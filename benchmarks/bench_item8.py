"""Issue 12 item 8: the full Si D-LACBED image at the converged defaults against the
default of the day the issue was filed (tree cee42a9, its own defaults), timed in one run.

Both engines come from ``Simulation.from_felix(folder, executor="serial")`` with their own
defaults and compute ``sim.pattern(sim.defaults.grid, [1480])`` (152 × 152 directions,
symmetry-reduced as each tree does it), one BLAS thread, **CPU time** (user + system;
the shared VM's wall clock swings with the load). Each image runs in a fresh process
that loads the pickled engine, as a user's run would (since session 11 this tree sets
a per-process allocator option, ``qcbed._core.heap``, which must not leak into the
baseline's timing); old and new alternate, each process computes the image twice
(cold, warm), medians of the warm ones. The set-up (the converged engine's accuracy
walk; the old tree had none) is timed once, in this process.

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
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
TREES = (("filing day (cee42a9)", "qcbed_base.bloch"), ("this tree", "qcbed.bloch"))


def _image(engine: Path, baseline: Path) -> dict:
    """In a fresh process: load the pickled engine, time its image twice (CPU s)."""
    sys.path.insert(0, str(baseline))
    warnings.simplefilter("ignore")
    with open(engine, "rb") as f:
        sim = pickle.load(f)
    out = {"cpu": [], "sys": [], "minflt": []}
    for _ in range(2):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        sim.pattern(sim.defaults.grid, [1480.0])
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu"].append(time.process_time() - t0)
        out["sys"].append(r1.ru_stime - r0.ru_stime)
        out["minflt"].append(r1.ru_minflt - r0.ru_minflt)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="folder holding qcbed_base (the filing day's tree)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--image", type=Path, help=argparse.SUPPRESS)   # the child process
    args = ap.parse_args(argv)
    if args.image is not None:
        print(json.dumps(_image(args.image, args.baseline)))
        return 0
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(args.baseline))
    tmp = Path(tempfile.mkdtemp(prefix="bench_item8_"))
    engines = {}
    for name, mod in TREES:
        t0 = time.process_time()
        sim = importlib.import_module(mod).Simulation.from_felix(FELIX, executor="serial")
        setup = time.process_time() - t0
        conv = sim.convergence if hasattr(sim, "convergence") else None
        extra = "" if conv is None else (
            f", sgmin {conv.sgmin:g}, {conv.strong_mean:.1f} strong, selection error "
            f"{conv.error:.2e}, pool error {conv.pool_error}")
        print(f"{name}: set-up {setup:.1f} s CPU, pool {len(sim.pool)}{extra}", flush=True)
        engines[name] = tmp / f"{mod}.pkl"
        with open(engines[name], "wb") as f:
            pickle.dump(sim, f)
    warm: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(args.repeat):
        for name, path in engines.items():
            run = subprocess.run([sys.executable, __file__, "--baseline", str(args.baseline),
                                  "--image", str(path)], capture_output=True, text=True,
                                 check=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            warm[name].append(r["cpu"][1])
            print(f"  {name}: image {r['cpu'][0]:.2f} (cold), {r['cpu'][1]:.2f} (warm) s CPU; "
                  f"system {r['sys'][1]:.2f} s, {r['minflt'][1]} minor page faults", flush=True)
    med = {k: float(np.median(v)) for k, v in warm.items()}
    old, new = (med[name] for name, _ in TREES)
    print(f"median warm image: filing day {old:.2f} s, this tree {new:.2f} s: {new / old:.2f}x")
    for p in engines.values():
        p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
