"""Independent check of the default engine's pool error on one Felix folder.

The engine measures the growth of its pool and tail (``pool_error``) on its own 13
check directions (:func:`qcbed.bloch.convergence.sample_directions`). This script
repeats the four growths of the walk (docs/engine.md) from the pool and tail the
engine adopted — the pool's g_max + 0.5 Å⁻¹ and s_max × 2 (under the same tail), the
tail's s_max × 2 and g_max + 1 Å⁻¹; ``--growths`` adds the pool's g_max + 1 Å⁻¹, a
further growth the walk does not make — on *other* directions: a random sample of the
image grid (``np.random.default_rng(2)``), at the engine's check thicknesses (felix.inp's
scan). Both sides are solved as the walk's own checks are: every pool beam strong and
the tail computed exactly at each direction (:meth:`qcbed.bloch.tail.TailSource.at`);
``--selection`` uses the engine's chosen selection instead (cheaper on large pools;
its own selection errors then enter the difference). ``--lines K`` adds directions *on*
the Bragg lines (S_h = 0) of the K pool beams h whose lines cross the image and whose
excitation the next g_max shell shifts most (:func:`line_directions`): each of the 13
sample directions moved onto each line (Newton steps on 2K S_h), those inside the tilt
disc kept; their figures are reported apart (``lines_*``). Per growth: max |I − I_grown| / max(I)
over the directions, thicknesses and output beams; over the directions, the 99th
percentile and median of the per-direction maximum and how many exceed 10⁻³. A growth
whose tail exceeds the engine's size limits (:func:`qcbed.bloch.convergence.tail_too_large`)
is skipped and says so. One JSON line on stdout, progress on stderr. One BLAS thread
per set-up thread::

    python benchmarks/check_pool_independent.py FOLDER [--n 96] [--growths G1,G2] [--selection]
        [--lines K]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # before numpy loads OpenBLAS
os.environ.setdefault("QCBED_WORKERS", "1")

import argparse
import json
import sys
import time

import numpy as np

from _independent import default_engine, image_directions

#: The growths (label: pool s_max factor, pool g_max step, tail s_max factor, tail g_max
#: step; Å⁻¹), the walk's four and, as a further growth, the pool's g_max + 1 Å⁻¹.
GROWTHS = {"pool gmax +0.5": (1.0, 0.5, 1.0, 0.0), "pool smax x2": (2.0, 0.0, 1.0, 0.0),
           "tail smax x2": (1.0, 0.0, 2.0, 0.0), "tail gmax +1": (1.0, 0.0, 1.0, 1.0),
           "pool gmax +1": (1.0, 1.0, 1.0, 0.0)}
WALK = ("pool gmax +0.5", "pool smax x2", "tail smax x2", "tail gmax +1")


def _variants(sim, conv, growths):
    """(label, pool, table, tail source) of the engine and of each growth, from the
    adopted pool and tail (a grown pool's tail reaches at least its g_max, as in the
    walk)."""
    from qcbed.bloch.potential import PotentialTable
    from qcbed.bloch.setup import automatic_pool, tail_source

    settings = sim.pool_settings
    tail = conv.tail
    smax, gmax = float(conv.smax), float(conv.gmax)
    ts, tg, near = float(tail["smax"]), float(tail["gmax"]), float(tail["near"])

    def make_pool(s, g):
        pool = automatic_pool(sim._internal, sim.frame, sim.k_in, settings,
                              sim.pool.outputs, gmax=g, smax=s)
        return pool, PotentialTable.build(pool.hkl, sim._compute_u)

    def make_tail(pool, s, g):
        return tail_source(sim._internal, sim.frame, sim.k_in, settings, pool,
                           sim._compute_u, smax=s, gmax=g, near=near)

    yield "engine", sim.pool, sim.table, make_tail(sim.pool, ts, tg)
    for label in growths:
        fs, dg, fts, dtg = GROWTHS[label]
        ps, pg, s = fs * smax, gmax + dg, fts * ts
        g = max(tg + dtg, pg)
        pool, table = ((sim.pool, sim.table) if (ps, pg) == (smax, gmax)
                       else make_pool(ps, pg))
        src = make_tail(pool, s, g)
        yield f"{label}: {len(pool)} + {src.n_beams} beams", pool, table, src


def line_directions(sim, conv, k: int) -> tuple[np.ndarray, list]:
    """Directions (k_t, Å⁻¹) on the Bragg lines of the ``k`` pool beams whose lines cross
    the image and whose excitation the pool's next g_max shell (g_max + 0.5 Å⁻¹) shifts
    most (the Bethe shift Σ_w |U_{h−w}|² / |2K S_w| over the shell's beams w, at the
    disc's centre, Å⁻²), and those beams (hkl, shift, directions on the line).

    On the diamond folder the shell's own beams do not reach the Bragg condition inside
    the disc, so the changes they make concentrate on the lines of the pool beams they
    couple to (on the Si D-LACBED 52 of its 118 do; their own lines are not sampled
    here)."""
    from qcbed.bloch import convergence as cv
    from qcbed.bloch.geometry import excitation_errors
    from qcbed.bloch.setup import automatic_pool

    settings = sim.pool_settings
    grown = automatic_pool(sim._internal, sim.frame, sim.k_in, settings, sim.pool.outputs,
                           gmax=float(conv.gmax) + cv.POOL_GMAX_STEP, smax=float(conv.smax))
    have = {tuple(h) for h in sim.pool.hkl.tolist()}
    new = np.array([i for i, h in enumerate(grown.hkl.tolist()) if tuple(h) not in have])
    pool = sim.pool
    s_grid = excitation_errors(pool.g, sim.defaults.grid.points, sim.k_in)
    crossing = np.flatnonzero((s_grid.min(axis=0) < 0) & (s_grid.max(axis=0) > 0))
    if not len(new) or not len(crossing):
        return np.zeros((0, 2)), []
    center = np.asarray(settings["kt_center"], float)
    radius = float(settings["kt_radius"])
    s_new = np.abs(excitation_errors(grown.g[new], center[None, :], sim.k_in)[0])
    diff = (pool.hkl[crossing][:, None, :] - grown.hkl[new][None, :, :]).reshape(-1, 3)
    u = np.abs(sim._compute_u(diff)[0]).reshape(len(crossing), len(new))
    shift = np.sum(u ** 2 / s_new[None, :], axis=1)
    order = np.argsort(-shift)[:k]
    start = cv.sample_directions(center, radius)
    pts, beams = [], []
    for j in order:
        g = pool.g[crossing[j]:crossing[j] + 1]
        kt = start.copy()
        for _ in range(8):            # Newton steps onto 2K S_g = 0 along its gradient
            f = excitation_errors(g, kt, sim.k_in)[:, 0]
            h = 1e-6
            grad = np.stack([(excitation_errors(g, kt + h * e, sim.k_in)[:, 0] - f) / h
                             for e in np.eye(2)], axis=1)
            kt = kt - (f / np.sum(grad * grad, axis=1))[:, None] * grad
        keep = ((np.linalg.norm(kt - center, axis=1) <= radius)
                & (np.abs(excitation_errors(g, kt, sim.k_in)[:, 0]) < 1e-6))
        pts.append(kt[keep])
        beams.append((pool.hkl[crossing[j]].tolist(), float(shift[j]), int(keep.sum())))
    return np.concatenate(pts), beams


def check(folder: str, n: int, growths: tuple[str, ...] = WALK, *,
          selection: bool = False, lines: int = 0) -> dict:
    """The figures of one folder (see the module docstring)."""
    from qcbed.bloch import convergence as cv
    from qcbed.bloch.beams import BeamSelection

    with default_engine(folder) as (sim, out):
        conv = sim.convergence
        if conv.tail is None:
            raise SystemExit(f"{folder}: the engine chose no tail; this check is for pools "
                             "with a tail")
        thick = np.asarray(conv.thickness, float)
        kt = image_directions(sim, n, seed=2)
        n_random = len(kt)
        if lines:
            on_lines, out["lines"] = line_directions(sim, conv, lines)
            kt = np.concatenate([kt, on_lines])
        frame = (sim.k_in, sim.frame.normal_frame)
        rules = sim.selection if selection else BeamSelection.all_strong()
        out["reference"] = "chosen selection" if selection else "every pool beam strong"
        base = None
        out["growth"] = []
        for label, pool, table, src in _variants(sim, conv, growths):
            why = cv.tail_too_large(len(pool), src.n_beams)
            if why is not None:
                out["growth"].append({"growth": label, "skipped": why})
                print(f"{label}: {why}, skipped", file=sys.stderr, flush=True)
                continue
            t1 = time.perf_counter()
            inten = cv._exact_tail_intensities(frame, pool, table, rules, src, kt, thick)
            src.release()
            if base is None:
                base = inten
                out["engine_s"] = round(time.perf_counter() - t1, 1)
                print(f"{label}: {out['engine_s']} s", file=sys.stderr, flush=True)
                continue
            with np.errstate(invalid="ignore"):
                every = np.nanmax(np.abs(inten - base), axis=(0, 2)) / np.nanmax(base)
            per, on = every[:n_random], every[n_random:]
            row = {"growth": label, "max": float(np.nanmax(per)),
                   "p99": float(np.nanpercentile(per, 99)),
                   "median": float(np.nanmedian(per)),
                   "above_1e-3": int(np.sum(per > 1e-3)),
                   "s": round(time.perf_counter() - t1, 1)}
            if len(on):
                row.update(lines_max=float(np.nanmax(on)), lines_median=float(np.nanmedian(on)),
                           lines_above_1e_3=int(np.sum(on > 1e-3)), lines_n=len(on))
            out["growth"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        out["n_directions"] = n_random
        measured = [r["max"] for r in out["growth"] if "max" in r]
        out["worst"] = max(measured, default=None)
        on_lines = [r["lines_max"] for r in out["growth"] if "lines_max" in r]
        out["lines_worst"] = max(on_lines, default=None)
        out["worst_over_engine"] = (out["worst"] / conv.pool_error
                                    if measured and conv.pool_error else None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--n", type=int, default=96, help="random image directions")
    ap.add_argument("--growths", default=",".join(WALK),
                    help=f"comma-separated, of {', '.join(GROWTHS)} (default: the walk's)")
    ap.add_argument("--lines", type=int, default=0,
                    help="also directions on the Bragg lines of this many new beams")
    ap.add_argument("--selection", action="store_true",
                    help="solve with the engine's chosen selection, not every beam strong")
    args = ap.parse_args(argv)
    growths = tuple(g.strip() for g in args.growths.split(","))
    unknown = [g for g in growths if g not in GROWTHS]
    if unknown:
        ap.error(f"unknown growth(s) {unknown}; known: {', '.join(GROWTHS)}")
    out = check(args.folder, args.n, growths, selection=args.selection, lines=args.lines)
    print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
