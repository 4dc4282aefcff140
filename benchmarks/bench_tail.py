"""The pool's tail on by default: set-up, accuracy and cost on the Si [1-10] D-LACBED.

Issue 12 item 1 (pool half). Prints, in one run on the same machine:

* the engine's set-up (``Simulation.from_felix`` with the defaults) with the tail
  (``tail=True``, the default) and without it: time, pool, tail, the convergence
  walk's steps (the pool error *with* the tail: tail and pool growths checked with
  the tail computed exactly at the 13 sample directions), selection error;
* the tail's fit over the 0.935 Å⁻¹ disc: one polynomial against 7 tiles, as
  max |ΔI|/I_max against the tail computed exactly at the sample directions;
* the full 152 × 152 image at 1480 Å with and without the tail (2 worker
  processes; ``--serial N``: N directions of the image, one process);
* with ``--gmax`` only: pool and tail g_max raised together (3, 4, 4.5 Å⁻¹);
* with ``--stale`` only: how much the tail, computed once at set-up and kept by
  :meth:`Simulation.with_changes` and structure-factor updates, goes stale when U(111)
  is refined: dW/dU(111) and the intensity error of the set-up's tail against the tail
  recomputed with U(111) × (1 + δ), as a bias of the refined U(111);
* with ``--cost`` only: the set-up's CPU time, peak memory and reported errors, each
  set-up in a fresh process (cold caches, as a user's first run), with and without the
  tail, ``--repeat`` times interleaved; ``--against SRC`` also runs the tail set-up with
  the ``qcbed`` sources at SRC (e.g. a checkout of the previous commit) in turn, so that
  old and new are compared under the same load of the shared machine.

Run: ``QCBED_SHARED=../shared python benchmarks/bench_tail.py [--serial 512] [--no-image]
[--gmax] [--stale] [--cost [--repeat 3] [--against /path/to/old/src]]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.convergence import _arrays, _error, _exact_tail_intensities, _intensities
from qcbed.bloch.potential import PotentialTable
from qcbed.bloch.setup import automatic_pool, tail_source
from qcbed.bloch.simulation import Simulation
from qcbed.parallel import ProcessExecutor

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"


def setup(tail: bool) -> tuple[Simulation, float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim = Simulation.from_felix(FELIX, executor="serial", tail=tail)
    dt = time.perf_counter() - t0
    print(f"tail={tail}: set-up {dt:.1f} s; {sim.convergence.summary()}", flush=True)
    for step in sim.convergence.steps:
        print(f"    {step}")
    for w in caught:
        print(f"    warning: {str(w.message)[:160]}")
    return sim, dt


def tiles(sim: Simulation) -> None:
    """One polynomial vs 7 tiles over the disc (every pool beam strong)."""
    st = sim.pool_settings
    frame = (sim.k_in, sim.frame.normal_frame)
    info = sim.convergence.tail
    src = tail_source(sim._internal, sim.frame, sim.k_in, st, sim.pool, sim._compute_u,
                      smax=info["smax"], gmax=info["gmax"])
    strong = BeamSelection.all_strong()
    t = np.array([500.0, 1500.0, 3000.0])
    kt = sim._check_kt
    exact = _exact_tail_intensities(frame, sim.pool, sim.table, strong, src, kt, t)
    for n in (1, 2):
        t0 = time.perf_counter()
        fit = src.fit(st["kt_center"], st["kt_radius"], tiles=n)
        dt = time.perf_counter() - t0
        err = _error(_intensities(_arrays(frame, sim.pool, sim.table, strong, fit), kt, t)[0],
                     exact)
        print(f"  tail {src.n_beams} beams, {fit.n_tiles} tile(s): fit error {err:.1e} "
              f"(W misfit {fit.fit_error:.1e}), fit {dt:.1f} s, {fit.nbytes / 2**20:.0f} MiB",
              flush=True)


def gmax_series(sim: Simulation) -> None:
    """Pool and tail g_max raised together (the pool takes the near-Bragg beams up to
    the tail's g_max): every pool beam strong, the tail exact at the sample directions."""
    st = dict(sim.pool_settings, smax=0.05)
    frame = (sim.k_in, sim.frame.normal_frame)
    strong = BeamSelection.all_strong()
    t = np.array([1480.0])
    res = {}
    for gp, gt in ((3.0, 3.0), (3.0, 4.0), (4.0, 4.0), (4.5, 4.5)):
        pool = automatic_pool(sim._internal, sim.frame, sim.k_in, st, sim.pool.outputs,
                              gmax=gp, smax=0.05)
        table = PotentialTable.build(pool.hkl, sim._compute_u)
        src = tail_source(sim._internal, sim.frame, sim.k_in, st, pool, sim._compute_u,
                          smax=0.8, gmax=gt)
        res[(gp, gt)] = _exact_tail_intensities(frame, pool, table, strong, src,
                                                sim._check_kt, t)
        print(f"  pool (0.05, {gp}): {len(pool)} beams + tail (0.8, {gt}): {src.n_beams}",
              flush=True)
    for a, b in (((3.0, 3.0), (4.0, 4.0)), ((3.0, 4.0), (4.0, 4.0)), ((4.0, 4.0), (4.5, 4.5))):
        print(f"  {a} vs {b}: {_error(res[a], res[b]):.1e}")


def stale() -> None:
    """The set-up's tail against the tail recomputed after U(111) × (1 + δ) (every pool
    beam strong, the tail exact at the 13 sample directions, 500/1500/3000 Å)."""
    from qcbed.bloch.tail import TailSource

    sim = Simulation.from_felix(FELIX, executor="serial", accuracy=None)
    st, frame = sim.pool_settings, (sim.k_in, sim.frame.normal_frame)
    src0 = tail_source(sim._internal, sim.frame, sim.k_in, st, sim.pool, sim._compute_u,
                       smax=0.8, gmax=3.0)
    strong, t, kt = BeamSelection.all_strong(), np.array([500.0, 1500.0, 3000.0]), sim._check_kt
    u111 = float(np.real(sim._compute_u(np.array([[1, 1, 1]]))[0][0]))
    print(f"pool {len(sim.pool)}, tail {src0.n_beams} beams; U(111) = {u111:.5f} A^-2 "
          "(internal origin)")
    w0 = np.array([src0.exact(k)[0] for k in kt[[0, 12]]])
    i0 = _exact_tail_intensities(frame, sim.pool, sim.table, strong, src0, kt, t)
    for delta in (0.01, 0.025):
        def scaled(hkl: np.ndarray, d: float = delta) -> tuple[np.ndarray, np.ndarray]:
            u, ua = sim._compute_u(hkl)
            fam = np.all(np.abs(hkl) == 1, axis=1)            # the 8 {111} of Si
            u = np.array(u, complex)
            u[fam] *= 1 + d
            return u, ua

        src = TailSource(src0._pool_hkl, src0._tail_hkl, src0.g_tail, scaled, k_in=sim.k_in,
                         normal=src0.normal)
        table = PotentialTable.build(sim.pool.hkl, scaled)
        w = np.array([src.exact(k)[0] for k in kt[[0, 12]]])
        fresh = _exact_tail_intensities(frame, sim.pool, table, strong, src, kt, t)
        old = _exact_tail_intensities(frame, sim.pool, table, strong, src0, kt, t)
        signal, err = fresh - i0, fresh - old
        bias = float(np.sum(err * signal) / np.sum(signal * signal)) * delta
        print(f"  U(111) x (1 + {delta:g}): max|dW| {np.abs(w - w0).max():.2e} A^-2 = "
              f"{np.abs(w - w0).max() / np.abs(w0).max():.1e} of max|W| "
              f"(|dW/dU(111)| up to {np.abs(w - w0).max() / abs(delta * u111):.3f}); "
              f"intensities: U(111) change {_error(i0, fresh):.1e}, stale tail "
              f"{_error(old, fresh):.1e} of I_max; as a U(111) bias {bias * 100:+.1e} %",
              flush=True)


def cost_child(tail: bool) -> None:
    """One cold set-up in this process: prints CPU, wall, peak RSS and the errors (JSON)."""
    c0, w0 = time.process_time(), time.perf_counter()
    sim = Simulation.from_felix(FELIX, executor="serial", tail=tail)
    conv = sim.convergence
    out = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "selection_error": conv.error, "pool_error": conv.pool_error,
           "tail": conv.tail, "sgmin": conv.sgmin}
    print(json.dumps(out))


def cost(repeat: int, against: str | None) -> None:
    """Cold set-ups in fresh processes, interleaved (the machine is shared): medians."""
    here = str(Path(__file__).resolve().parents[1] / "src")
    runs = [("tail", here, True), ("no tail", here, False)]
    if against:
        runs.insert(1, ("tail, " + against, against, True))
    got: dict[str, list[dict]] = {name: [] for name, _, _ in runs}
    for _ in range(repeat):
        for name, src, tail in runs:
            env = dict(os.environ, PYTHONPATH=src, OPENBLAS_NUM_THREADS="1")
            res = subprocess.run([sys.executable, __file__, "--cost-child", str(int(tail))],
                                 env=env, capture_output=True, text=True, check=True)
            got[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = got[name][-1]
            tail_info = r["tail"] or {}
            print(f"  {name}: CPU {r['cpu_s']:.1f} s, wall {r['wall_s']:.1f} s, peak "
                  f"{r['peak_mib']:.0f} MiB; selection {r['selection_error']:.3e}, pool "
                  f"{r['pool_error']:.3e}, tail fit {tail_info.get('fit_error', 0):.3e}, "
                  f"growth {tail_info.get('growth_error', 0):.3e}, sgmin {r['sgmin']:g}",
                  flush=True)
    for name, rs in got.items():
        print(f"{name}: median CPU {np.median([r['cpu_s'] for r in rs]):.1f} s, wall "
              f"{np.median([r['wall_s'] for r in rs]):.1f} s, peak "
              f"{max(r['peak_mib'] for r in rs):.0f} MiB ({len(rs)} runs; load "
              f"{os.getloadavg()[0]:.1f})")


def image(sim: Simulation, serial: int) -> float:
    grid = sim.defaults.grid
    if serial:
        kt = grid.kt[grid.mask]
        kt = kt[:: max(1, len(kt) // serial)][:serial]
        sim.solve(kt[:8])
        t0 = time.perf_counter()
        sim.solve(kt)
        return (time.perf_counter() - t0) / len(kt) * 1e3
    sim.pattern(grid, [1480.0])                      # warm-up (workers, symmetry)
    t0 = time.perf_counter()
    sim.pattern(grid, [1480.0])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serial", type=int, default=0)
    ap.add_argument("--no-image", action="store_true")
    ap.add_argument("--no-tiles", action="store_true")
    ap.add_argument("--gmax", action="store_true", help="only the g_max series")
    ap.add_argument("--cost", action="store_true", help="only the set-up cost")
    ap.add_argument("--stale", action="store_true", help="only the stale-tail check")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", help="qcbed sources (…/src) of the old set-up")
    ap.add_argument("--cost-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.cost_child is not None:
        cost_child(bool(args.cost_child))
        return 0
    if args.cost:
        cost(args.repeat, args.against)
        return 0
    if args.stale:
        stale()
        return 0
    if args.gmax:
        gmax_series(Simulation.from_felix(FELIX, executor="serial", accuracy=None))
        return 0
    with_tail, _ = setup(True)
    without, _ = setup(False)
    if not args.no_tiles:
        tiles(with_tail)
    if not args.no_image:
        ex = None if args.serial else ProcessExecutor(2)
        unit = "ms/direction (serial)" if args.serial else "s (2 workers)"
        for _ in range(2):                           # interleaved: the machine is shared
            for name, sim in (("tail", with_tail), ("no tail", without)):
                if ex is not None:
                    sim.executor = ex
                print(f"  image, {name}: {image(sim, args.serial):.2f} {unit}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
