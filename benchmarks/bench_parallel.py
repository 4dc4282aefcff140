"""Parallel scaling of the Si D-LACBED simulation (issue 8).

The Felix silicon D-LACBED set-up (``../shared/data/si-110-dlacbed``) on its
full 152 × 152 image grid at 1480 Å, with a reduced pool (``gmax=2.5``,
``smax=0.02`` by default: about 10 s serially on one core), through each
executor: serial, 1 and 2 local worker processes, a Dask ``LocalCluster`` with
2 single-threaded workers, MPI (2 spawned workers, or the MPI world under
``mpiexec``), and the torch backend when torch is installed. For each the
first call (workers start, state shipped) and the best of ``--repeat`` warm
calls are timed; speed-up and efficiency are relative to the serial time.
The script also prints what each call shipped (engine state, U-table delta,
task messages, results) before and after a structure-factor update, and
checks that every executor reproduces the serial intensities.

Usage::

    python benchmarks/bench_parallel.py                      # serial, processes, dask, mpi
    python benchmarks/bench_parallel.py --executors serial,processes:2 --repeat 5
    python benchmarks/bench_parallel.py --executors serial,processes:2,dask:2 --interleave 5
    mpiexec -n 3 python -m mpi4py.futures benchmarks/bench_parallel.py --executors mpi

(under ``mpiexec -n N`` rank 0 runs this script and N − 1 ranks are workers).
Timings on a shared machine are noisy: take the best of several repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "si-110-dlacbed"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _stats_line(label: str, st) -> str:
    return (f"  {label:<22} tasks {st.n_tasks:>3}  state {_fmt_bytes(st.state_bytes):>10} "
            f"(×{st.state_copies})  delta {st.delta_rows:>3} rows {_fmt_bytes(st.delta_bytes):>8}"
            f"  task msgs {_fmt_bytes(st.task_bytes):>9}  results "
            f"{_fmt_bytes(st.result_bytes):>9}  inline re-sends {st.resent_inline}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the figures (also printed, and saved with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="Felix folder (default: %(default)s)")
    ap.add_argument("--executors", default="serial,processes:1,processes:2,dask:2,mpi:2,torch",
                    help="comma-separated make_executor specs (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="warm repeats, best taken")
    ap.add_argument("--gmax", type=float, default=2.5)
    ap.add_argument("--smax", type=float, default=0.02)
    ap.add_argument("--thickness", type=float, default=1480.0)
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="directions per chunk (default: the Simulation's)")
    ap.add_argument("--no-symmetry", action="store_true", help="solve every grid point")
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="instead: start every executor once, then time them in turn for "
                         "ROUNDS rounds and report the median of the per-round speed-ups "
                         "(robust against a noisy machine)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.interleave:
        return interleaved(args)

    from qcbed.bloch.simulation import Simulation
    from qcbed.errors import InputError
    from qcbed.parallel import SerialExecutor, make_executor

    if not args.data.is_dir():
        sys.exit(f"data folder not found: {args.data}")
    warnings.simplefilter("ignore", UserWarning)  # Felix holz_flag note
    t0 = time.perf_counter()
    sim = Simulation.from_felix(args.data, gmax=args.gmax, smax=args.smax,
                                executor=SerialExecutor())
    if args.chunk_size:
        sim.chunk_size = args.chunk_size
    grid = sim.defaults.grid
    use_sym = not args.no_symmetry
    n_dirs = (len(sim.symmetry_reduction(grid).representatives) if use_sym
              else len(grid.points))
    n_chunks = -(-n_dirs // sim.chunk_size)
    setup = time.perf_counter() - t0
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                   f"{platform.python_implementation()} {platform.python_version()}",
        "case": f"Si [110] D-LACBED (Felix), {grid.points.shape[0]} px grid, "
                f"{n_dirs} directions solved ({'symmetry-reduced' if use_sym else 'all'}), "
                f"{n_chunks} chunks of ≤{sim.chunk_size}, pool {len(sim.pool)} beams, "
                f"{sim.pool.n_out} outputs, t = {args.thickness:g} Å, gmax {args.gmax}, "
                f"smax {args.smax}",
        "setup_s": setup,
        "results": [],
    }
    print(f"# {info['case']}\n# {info['machine']}; {info['date']}; set-up {setup:.2f} s")
    ref = None
    t_serial = None
    for spec in [s.strip() for s in args.executors.split(",") if s.strip()]:
        try:
            ex = make_executor(spec)
        except InputError as exc:
            print(f"{spec:<14} skipped: {exc}")
            continue
        except Exception as exc:  # e.g. an MPI runtime that does not start
            print(f"{spec:<14} skipped: {type(exc).__name__}: {exc}")
            continue
        label, n_w = ex.describe(), ex.n_workers if ex.name != "torch" else 1
        try:
            # a fresh set-up per executor, so that the first call ships the state
            sim = Simulation.from_felix(args.data, gmax=args.gmax, smax=args.smax, executor=ex)
            if args.chunk_size:
                sim.chunk_size = args.chunk_size
            u111 = sim.structure_factor((1, 1, 1))
            t = time.perf_counter()
            img = sim.pattern(grid, args.thickness, use_symmetry=use_sym)
            first = time.perf_counter() - t
            st_first = ex.last_stats
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                sim.pattern(grid, args.thickness, use_symmetry=use_sym)
                times.append(time.perf_counter() - t)
            st_warm = ex.last_stats
            best = min(times)
            sim.set_structure_factors({(1, 1, 1): (u111[0] * 1.01, u111[1])})
            sim.pattern(grid, args.thickness, use_symmetry=use_sym)
            st_upd = ex.last_stats
        finally:
            ex.close()
        if ref is None:
            ref, t_serial = img, best
        diff = float(np.nanmax(np.abs(img - ref)) / np.nanmax(ref))
        speedup = t_serial / best
        row = {"executor": label, "spec": spec, "workers": n_w, "first_s": first,
               "best_s": best, "times_s": times, "speedup": speedup,
               "efficiency": speedup / n_w, "max_rel_diff_vs_first": diff,
               "bytes_first": st_first.as_dict(), "bytes_warm": st_warm.as_dict(),
               "bytes_after_update": st_upd.as_dict()}
        info["results"].append(row)
        print(f"{label:<16} first {first:6.2f} s  best {best:6.2f} s "
              f"(of {', '.join(f'{x:.2f}' for x in times)})  speed-up {speedup:4.2f}×  "
              f"efficiency {100 * speedup / n_w:3.0f} %  max|ΔI|/max {diff:.1e}")
        print(_stats_line("first call", st_first))
        print(_stats_line("repeat call", st_warm))
        print(_stats_line("after U(111) update", st_upd))
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))
    return info


def interleaved(args: argparse.Namespace) -> dict:
    """Time all executors in turn, ``args.interleave`` rounds; paired speed-ups."""
    import statistics

    from qcbed.bloch.simulation import Simulation
    from qcbed.parallel import make_executor

    warnings.simplefilter("ignore", UserWarning)
    specs = [s.strip() for s in args.executors.split(",") if s.strip()]
    exs, sims = {}, {}
    for spec in specs:
        try:
            exs[spec] = make_executor(spec)
        except Exception as exc:
            print(f"{spec:<14} skipped: {type(exc).__name__}: {exc}")
            continue
        sims[spec] = Simulation.from_felix(args.data, gmax=args.gmax, smax=args.smax,
                                           executor=exs[spec])
        if args.chunk_size:
            sims[spec].chunk_size = args.chunk_size
    specs = list(exs)
    grid = sims[specs[0]].defaults.grid
    use_sym = not args.no_symmetry
    for spec in specs:  # start the workers, ship the state
        sims[spec].pattern(grid, args.thickness, use_symmetry=use_sym)
    times: dict[str, list[float]] = {s: [] for s in specs}
    for _ in range(args.interleave):
        for spec in specs:
            t = time.perf_counter()
            sims[spec].pattern(grid, args.thickness, use_symmetry=use_sym)
            times[spec].append(time.perf_counter() - t)
    base = times[specs[0]]
    out = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "rounds": args.interleave, "results": []}
    print(f"# interleaved, {args.interleave} rounds, speed-ups against {specs[0]}")
    for spec in specs:
        ts = times[spec]
        paired = statistics.median(a / b for a, b in zip(base, ts))
        row = {"spec": spec, "executor": exs[spec].describe(), "times_s": ts,
               "best_s": min(ts), "median_s": statistics.median(ts),
               "speedup_best": min(base) / min(ts), "speedup_paired_median": paired}
        out["results"].append(row)
        print(f"{row['executor']:<16} best {row['best_s']:6.2f} s  median {row['median_s']:6.2f} s"
              f"  speed-up best/best {row['speedup_best']:4.2f}×  median of paired ratios "
              f"{paired:4.2f}×")
    for ex in exs.values():
        ex.close()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
