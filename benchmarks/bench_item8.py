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
``--concurrent`` runs the two images at once instead, one per core: this tree's
``repeat + 1`` times in one process while the filing day's repeats in another beside it
until this tree's are done (the VM's speed drifts by ±20 % over minutes, so images run
minutes apart see different machines; side by side they see the same one). ``--engines
DIR`` keeps the pickled set-ups there and reuses them.
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


def _image(engine: Path, baseline: Path, count: int = 2, until: Path | None = None) -> dict:
    """In a fresh process: load the pickled engine, time its image ``count`` times (CPU
    s), or, with ``until``, again and again until that file exists (at least twice)."""
    sys.path.insert(0, str(baseline))
    warnings.simplefilter("ignore")
    with open(engine, "rb") as f:
        sim = pickle.load(f)
    out = {"cpu": [], "sys": [], "minflt": []}
    while len(out["cpu"]) < count or (until is not None and not until.exists()):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        sim.pattern(sim.defaults.grid, [1480.0])
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu"].append(time.process_time() - t0)
        out["sys"].append(r1.ru_stime - r0.ru_stime)
        out["minflt"].append(r1.ru_minflt - r0.ru_minflt)
    return out


def _child(args: argparse.Namespace, path: Path, *extra: str) -> list[str]:
    return [sys.executable, __file__, "--baseline", str(args.baseline), "--image", str(path),
            *extra]


def _concurrent(args: argparse.Namespace, engines: dict[str, Path], tmp: Path
                ) -> dict[str, list[float]]:
    """Both images at once, one per core: this tree's ``repeat + 1`` times while the
    filing day's runs again and again beside it, so that both see the same machine
    (the shared VM's speed drifts by ±20 % over minutes). Warm runs only."""
    stop = tmp / "stop"
    (old_name, old_path), (new_name, new_path) = engines.items()
    old = subprocess.Popen(_child(args, old_path, "--until", str(stop)),
                           stdout=subprocess.PIPE, text=True)
    new = subprocess.run(_child(args, new_path, "--count", str(args.repeat + 1)),
                         capture_output=True, text=True, check=True)
    stop.touch()
    out_old, _ = old.communicate()
    stop.unlink()
    warm = {}
    for name, text in ((old_name, out_old), (new_name, new.stdout)):
        r = json.loads(text.strip().splitlines()[-1])
        warm[name] = r["cpu"][1:]
        print(f"  {name}: warm images " + ", ".join(f"{x:.2f}" for x in r["cpu"][1:])
              + f" s CPU (cold {r['cpu'][0]:.2f})", flush=True)
    return warm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="folder holding qcbed_base (the filing day's tree)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--concurrent", action="store_true",
                    help="run both images at once, one per core (see _concurrent)")
    ap.add_argument("--engines", type=Path,
                    help="folder for the pickled set-ups: reused when there, else written")
    ap.add_argument("--image", type=Path, help=argparse.SUPPRESS)   # the child process
    ap.add_argument("--count", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--until", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.image is not None:
        print(json.dumps(_image(args.image, args.baseline, args.count, args.until)))
        return 0
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(args.baseline))
    tmp = Path(tempfile.mkdtemp(prefix="bench_item8_"))
    keep = args.engines
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    engines = {}
    for name, mod in TREES:
        if keep is not None and (keep / f"{mod}.pkl").exists():
            engines[name] = keep / f"{mod}.pkl"
            print(f"{name}: set-up reused from {engines[name]}", flush=True)
            continue
        t0 = time.process_time()
        sim = importlib.import_module(mod).Simulation.from_felix(FELIX, executor="serial")
        setup = time.process_time() - t0
        conv = sim.convergence if hasattr(sim, "convergence") else None
        extra = "" if conv is None else (
            f", sgmin {conv.sgmin:g}, {conv.strong_mean:.1f} strong, selection error "
            f"{conv.error:.2e}, pool error {conv.pool_error}")
        print(f"{name}: set-up {setup:.1f} s CPU, pool {len(sim.pool)}{extra}", flush=True)
        engines[name] = (tmp if keep is None else keep) / f"{mod}.pkl"
        with open(engines[name], "wb") as f:
            pickle.dump(sim, f)
    warm: dict[str, list[float]] = {k: [] for k in engines}
    if args.concurrent:
        warm = _concurrent(args, engines, tmp)
    for _ in range(0 if args.concurrent else args.repeat):
        for name, path in engines.items():
            run = subprocess.run(_child(args, path), capture_output=True, text=True, check=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            warm[name].append(r["cpu"][1])
            print(f"  {name}: image {r['cpu'][0]:.2f} (cold), {r['cpu'][1]:.2f} (warm) s CPU; "
                  f"system {r['sys'][1]:.2f} s, {r['minflt'][1]} minor page faults", flush=True)
    med = {k: float(np.median(v)) for k, v in warm.items()}
    old, new = (med[name] for name, _ in TREES)
    print(f"median warm image: filing day {old:.2f} s, this tree {new:.2f} s: {new / old:.2f}x")
    if keep is None:
        for p in engines.values():
            p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
