"""Cost and accuracy of the Löwdin Bethe terms at converged defaults (issue 12 item 8).

Per direction, serial, one BLAS thread, CPU time (``time.process_time``: the 2-core VM is
shared, so wall-clock medians drift with the load), medians of interleaved repeats:

* Si [1-10] D-LACBED (``Simulation.from_felix`` defaults, converged): the engine as it
  is, the same with double-precision Bethe products (``lowdin.SINGLE_PRECISION`` off),
  the classic Bethe potentials on the same beams, and the old default (``accuracy=None``,
  classic Bethe: sgmin 0.3, Ω 30);
* GaAs [1-10], 200 kV (non-centrosymmetric, converged defaults) and LiNbO₃ near [1-10]
  (sgmin 4, Ω 30; benchmarks/bench_hard.py's crystal): single vs double precision.

Accuracy: max |ΔI| / max I at 500–3000 Å of each speed path against double precision,
and with ``--baseline DIR`` against the solver of an older tree (old and new timed
interleaved in the same run). Make the baseline with

    git archive BASE src/qcbed | tar -x -C /tmp/base && mv /tmp/base/src/qcbed \\
        /tmp/base/qcbed_base

(the package imports itself relatively, so it loads under the new name); with it the
baseline's whole engine (its own ``from_felix`` set-up and solver) runs beside this one.
The full image on 2 workers (old default vs converged default, and the baseline engine in
the same run): ``--image`` (also benchmarks/bench_pool.py).

Run: ``QCBED_SHARED=../shared python benchmarks/bench_lowdin.py [--baseline /tmp/base]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # before numpy loads OpenBLAS

import argparse
import dataclasses
import importlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from qcbed.bloch import Simulation
from qcbed.bloch import lowdin as lowdin_module
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.solver import solve_chunk
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hard import linbo3

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
T = np.array([500.0, 1000.0, 1480.0, 2000.0, 3000.0])


def gaas() -> Crystal:
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25, 0.25, 0.25), b_iso=0.5)], 216)


def solve(arrays, kt, single: bool = True, fn=solve_chunk):
    lowdin_module.SINGLE_PRECISION = single
    try:
        return fn(arrays, kt)
    finally:
        lowdin_module.SINGLE_PRECISION = True


def error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(b))


def compare(label: str, cases: dict, kt: np.ndarray, repeat: int) -> dict:
    """Interleaved CPU-time medians (ms/direction) and the intensities of each case."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    inten = {}
    for r in range(repeat):
        for name, run in cases.items():
            t0 = time.process_time()
            eig = run(kt)
            times[name].append((time.process_time() - t0) / len(kt) * 1e3)
            if r == 0:
                inten[name] = eig.intensities(T)
                print(f"  {label} {name}: {eig.n_strong.mean():.1f} strong, "
                      f"{eig.n_weak.mean():.1f} weak, fallback {eig.n_fallback}", flush=True)
    for name in cases:
        print(f"  {label} {name}: {np.median(times[name]):.2f} ms/direction")
    return inten


def report_errors(label: str, inten: dict, ref: str) -> None:
    for name, val in inten.items():
        if name != ref and val.shape == inten[ref].shape:
            per_t = ", ".join(f"{error(val[i], inten[ref][i]):.1e}" for i in range(len(T)))
            print(f"  {label} {name} vs {ref}: max|dI|/I_max at {T.tolist()} A: {per_t}")


def image(sim: Simulation, legacy: Simulation, repeat: int, old_pc=None,
          base_sim=None, serial: bool = False) -> None:
    """The full image's irreducible directions on 2 workers, chunk by chunk as
    ``Simulation.pattern`` solves them (wall clock; old default and defaults interleaved;
    with a baseline: its solver on this engine's arrays, and its whole engine —
    its own set-up and solver — ``base_sim``). ``serial``: in this process, CPU time
    (what a loaded machine's wall clock cannot resolve)."""
    from qcbed.bloch.solver import pattern_chunk
    from qcbed.parallel import ProcessExecutor, SerialExecutor

    grid = sim.defaults.grid
    t = np.array([1480.0])
    runs = {"old default": (legacy, pattern_chunk), "defaults": (sim, pattern_chunk)}
    if old_pc is not None:
        runs["defaults, baseline solver"] = (sim, old_pc)
    if base_sim is not None:
        runs["defaults, baseline engine"] = (base_sim, old_pc)
    times: dict[str, list[float]] = {k: [] for k in runs}
    clock = time.process_time if serial else time.perf_counter
    with (SerialExecutor() if serial else ProcessExecutor(2)) as ex:
        for _ in range(repeat):
            for name, (s, fn) in runs.items():
                pts = grid.points[s.symmetry_reduction(grid).representatives]
                chunks = [pts[i:i + s.chunk_size] for i in range(0, len(pts), s.chunk_size)]
                ex.map_chunks(fn, s.arrays, chunks[:4], args=(t,))      # warm workers
                t0 = clock()
                ex.map_chunks(fn, s.arrays, chunks, args=(t,))
                times[name].append(clock() - t0)
                print(f"  image {name}: {len(pts)} directions, {times[name][-1]:.1f} s",
                      flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for name, v in med.items():
        print(f"  image {name}: median {v:.1f} s, {v / med['old default']:.2f} x old default")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="folder holding qcbed_base (old solver)")
    ap.add_argument("--n", type=int, default=256, help="directions per case (Si)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--image", action="store_true",
                    help="only the full image on 2 workers: old default vs defaults")
    ap.add_argument("--gmax", type=float, default=None,
                    help="pool g_max of the Si engine (Å⁻¹; default: the engine's choice)")
    ap.add_argument("--si-only", action="store_true", help="skip GaAs and LiNbO3")
    ap.add_argument("--serial", action="store_true",
                    help="--image in this process, CPU time (one worker)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    old = None
    if args.baseline:
        sys.path.insert(0, str(args.baseline))
        old = importlib.import_module("qcbed_base.bloch.solver").solve_chunk
    rng = np.random.default_rng(1)

    print("== Si [1-10] D-LACBED, from_felix defaults")
    pool = {} if args.gmax is None else {"gmax": args.gmax}
    t0 = time.perf_counter()
    sim = Simulation.from_felix(FELIX, executor="serial", **pool)
    print(f"  set-up {time.perf_counter() - t0:.1f} s, pool {len(sim.pool)}, tail "
          f"{0 if sim.arrays.tail is None else sim.arrays.tail.n_beams} beams", flush=True)
    legacy = Simulation.from_felix(FELIX, executor="serial", accuracy=None,
                                   selection=BeamSelection(lowdin=False))
    grid = sim.defaults.grid
    reps = grid.points[sim.symmetry_reduction(grid).representatives]
    base_sim = None
    if args.baseline:
        base_sim = importlib.import_module("qcbed_base.bloch").Simulation.from_felix(
            FELIX, executor="serial", **pool)
    if args.image:
        old_pc = None if args.baseline is None else importlib.import_module(
            "qcbed_base.bloch.solver").pattern_chunk
        image(sim, legacy, args.repeat, old_pc, base_sim, args.serial)
        return 0
    kt = reps[rng.choice(len(reps), min(args.n, len(reps)), replace=False)]
    arr = sim.arrays
    classic = dataclasses.replace(arr, lowdin=False)
    cases = {"default": lambda k: solve(arr, k),
             "double": lambda k: solve(arr, k, single=False),
             "classic same beams": lambda k: solve(classic, k),
             "old default": lambda k: solve(legacy.arrays, k)}
    if old is not None:
        cases["baseline default"] = lambda k: old(arr, k)
        cases["baseline engine"] = lambda k: old(base_sim.arrays, k)
    inten = compare("Si", cases, kt, args.repeat)
    report_errors("Si", inten, "baseline default" if old is not None else "double")
    if args.si_only:
        return 0

    bk = PotentialModel("kirkland", "bird_king")
    for label, make in (
            ("GaAs [1-10] 200 kV, converged defaults",
             lambda: Simulation(gaas(), 200.0, [1, -1, 0], [0, 0, 1], potential=bk,
                                kt_radius=0.3, executor="serial")),
            ("LiNbO3 near [1-10] 200 kV, sgmin 4",
             lambda: Simulation(linbo3(), 200.0, [1, -1, 0], [0, 0, 1], potential=bk,
                                selection=BeamSelection(sgmin=4.0, omega=30.0), gmax=3.0,
                                smax=0.05, kt_radius=0.5, min_pool=400, executor="serial"))):
        print(f"== {label}")
        t0 = time.perf_counter()
        s = make()
        a = s.arrays
        print(f"  set-up {time.perf_counter() - t0:.1f} s, pool {len(s.pool)}, "
              f"Löwdin {a.lowdin}, real {a.real}")
        k = rng.uniform(-0.25, 0.25, (64, 2))
        cases = {"default": lambda k, a=a: solve(a, k),
                 "double": lambda k, a=a: solve(a, k, single=False)}
        if old is not None:
            cases["baseline"] = lambda k, a=a: old(a, k)
        inten = compare(label.split()[0], cases, k, args.repeat)
        report_errors(label.split()[0], inten, "baseline" if old is not None else "double")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
