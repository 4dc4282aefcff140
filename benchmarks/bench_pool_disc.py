"""The pool on the full Si [1-10] D-LACBED disc: growth, tiles, strength order (issue 12 item 1).

Measures what would converge the pool of the full 0.935 Å⁻¹ disc by default:

* ``series``: the same selection (Löwdin, sgmin 3) on growing automatic pools
  (s_max, g_max) at the 13 sample directions of the disc, 1480 Å, against the last
  pool given (e.g. every beam with |g| ≤ 4 Å⁻¹: ``5,4``). Directions are solved one
  at a time (a 10 777-beam pool takes ~8.5 GB);
* ``strength``: pools that add the beams of a large pool in the order of their
  coupling max_g |U_{g−w}|² / min |2K S_w| (instead of shells of |S_g|);
* ``tiles``: the engine's walk (selection ladder and pool growth) on sub-discs
  (centre, radius) of the disc — one pool per tile;
* ``tail``: pools + the tail of the far beams computed exactly at each sample direction,
  on the strong rows only and on the weak rows too, against a large pool diagonalised;
* ``tailwalk``: the engine's walk with the tail and its cost per direction;
* ``timing``: CPU ms per direction (serial, one BLAS thread) of the pattern on
  image directions for the global pools and tile pools.

Run: ``QCBED_SHARED=../shared python benchmarks/bench_pool_disc.py series 0.1,3 0.4,3 0.8,4 5,4``
(``strength 4 0.8 1e-4 1e-5 3e-6``, ``tiles 0,0,0.467 0.6,0,0.467``, ``timing``,
``tail 0.1,4/0.1,3 0.8,4 0.8,4``, ``tailwalk 4``).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from qcbed.bloch.beams import BeamPool, BeamSelection, min_excitation
from qcbed.bloch.convergence import _arrays, _intensities, sample_directions
from qcbed.bloch.potential import PotentialTable
from qcbed.bloch.setup import automatic_pool
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.solver import pattern_chunk

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
T = np.array([1480.0])
SEL = BeamSelection(sgmin=3.0, omega=30.0, min_strong=20)


def fixed(**kw) -> Simulation:
    """The Felix set-up with a fixed pool and selection (no walk)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Simulation.from_felix(FELIX, smax=0.05, selection=SEL, **kw)


def pool_of(sim: Simulation, smax: float, gmax: float, center=(0.0, 0.0),
            radius: float | None = None) -> tuple[BeamPool, PotentialTable]:
    st = dict(sim.pool_settings, kt_center=center,
              kt_radius=sim.pool_settings["kt_radius"] if radius is None else radius)
    pool = automatic_pool(sim._internal, sim.frame, sim.k_in, st, sim.pool.outputs,
                          gmax=gmax, smax=smax)
    return pool, PotentialTable.build(pool.hkl, sim._compute_u)


def at_samples(sim: Simulation, pool: BeamPool, table: PotentialTable,
               rules: BeamSelection = SEL) -> np.ndarray:
    kt = sample_directions((0.0, 0.0), sim.pool_settings["kt_radius"])
    arrays = _arrays((sim.k_in, sim.frame.normal_frame), pool, table, rules)
    return np.concatenate([_intensities(arrays, k[None], T)[0] for k in kt], axis=1)


def compare(results: dict[str, np.ndarray]) -> None:
    names = list(results)
    ref = results[names[-1]]
    for n in names[:-1]:
        d = np.abs(results[n] - ref)[0] / np.nanmax(ref)
        print(f"{n} vs {names[-1]}: {d.max():.1e}; per direction "
              + " ".join(f"{x:.0e}" for x in d.max(axis=1)))


def series(args: list[str]) -> None:
    sim = fixed()
    results = {}
    for a in args:
        sm, gm = map(float, a.split(","))
        t = time.perf_counter()
        pool, table = pool_of(sim, sm, gm)
        results[a] = at_samples(sim, pool, table)
        print(f"pool ({a}): {len(pool)} beams, {time.perf_counter() - t:.1f} s", flush=True)
    compare(results)


def strength(args: list[str]) -> None:
    sim = fixed()
    base, _ = pool_of(sim, 0.05, 3.0)
    cand, _ = pool_of(sim, float(args[1]), float(args[0]))
    have = {tuple(h) for h in base.hkl.tolist()}
    extra = np.array([tuple(h) not in have for h in cand.hkl.tolist()])
    ch, cg = cand.hkl[extra], cand.g[extra]
    diff = (base.hkl[:, None, :] - ch[None, :, :]).reshape(-1, 3)
    uq, inv = np.unique(diff, axis=0, return_inverse=True)
    u, ua = sim._compute_u(uq)
    z2 = (np.abs(u + 1j * ua)[inv.ravel()].reshape(len(base), len(ch)) ** 2).max(axis=0)
    score = z2 / np.maximum(min_excitation(cg, sim.k_in, (0.0, 0.0),
                                           sim.pool_settings["kt_radius"]), 1.0)
    results = {}
    for tau in args[2:]:
        pool = BeamPool.from_hkl(sim.frame, np.vstack([base.hkl, ch[score >= float(tau)]]),
                                 base.outputs)
        results[f"strength >= {tau} ({len(pool)} beams)"] = at_samples(
            sim, pool, PotentialTable.build(pool.hkl, sim._compute_u))
    pool, table = pool_of(sim, float(args[1]), float(args[0]))
    results[f"pool ({args[1]}, {args[0]}: {len(pool)} beams)"] = at_samples(sim, pool, table)
    compare(results)


def tiles(args: list[str]) -> None:
    for a in args:
        cx, cy, r = map(float, a.split(","))
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Simulation.from_felix(FELIX, check_thickness=[1480.0], kt_center=(cx, cy),
                                      kt_radius=r)
        c = s.convergence
        print(f"tile ({cx:g}, {cy:g}) radius {r:g}: set-up {time.perf_counter() - t:.1f} s; "
              f"{c.summary()}")
        print(*("    " + x for x in c.steps), sep="\n")


#: ``tail`` mode's variants: (label, the tail on the weak rows too)
TAIL_VARIANTS = (("strong rows only", False), ("weak rows", True))


def tail(args: list[str]) -> None:
    """Pools (s_max, g_max) + their tail of every far beam up to (s, g), computed exactly
    at each sample direction, against a large pool: ``tail 0.1,3/0.1,4 0.8,4 0.8,4`` (pools
    separated by ``/``; a fourth argument ``strong``: every pool beam strong instead of
    the sgmin 3 selection; a number: that sgmin; ``fit``: the tail fitted over the disc
    too, linear and cubic). The tail acts on the strong rows only,
    and on the weak rows of the Löwdin elimination too (:data:`TAIL_VARIANTS`). The
    large pool is solved with the same selection and with every beam strong (a Löwdin
    selection on a large pool has its own error: the reference is the large pool
    diagonalised); each pool + tail is also compared with
    itself every pool beam strong (its selection error)."""
    from qcbed.bloch import lowdin
    from qcbed.bloch.setup import tail_source

    sim = fixed()
    opts = args[3:]
    fit = "fit" in opts
    opts = [o for o in opts if o != "fit"]
    if opts == ["strong"]:
        rules = BeamSelection.all_strong()
    elif opts:      # a strong-beam threshold sgmin (Å⁻²)
        rules = BeamSelection(sgmin=float(opts[0]), omega=30.0, min_strong=20)
    else:
        rules = SEL
    ts, tg = map(float, args[1].split(","))
    rs, rg = map(float, args[2].split(","))
    kt = sample_directions((0.0, 0.0), sim.pool_settings["kt_radius"])
    frame = (sim.k_in, sim.frame.normal_frame)
    results = {}
    for name in args[0].split("/"):
        pool, table = pool_of(sim, *map(float, name.split(",")))
        t = time.perf_counter()
        src = tail_source(sim._internal, sim.frame, sim.k_in, sim.pool_settings, pool,
                          sim._compute_u, smax=ts, gmax=tg)
        results[f"pool ({name}) {len(pool)} beams, bare"] = at_samples(sim, pool, table, rules)
        arrays = _arrays(frame, pool, table, rules)
        strong = _arrays(frame, pool, table, BeamSelection.all_strong())
        out: dict[str, list] = {v[0]: [] for v in TAIL_VARIANTS}
        spent = dict.fromkeys(out, 0.0)
        ref_strong = []
        weak_rows = lowdin.TAIL_ON_WEAK_ROWS
        try:
            for k in kt:
                arrays.tail = strong.tail = src.at(k)
                ref_strong.append(_intensities(strong, k[None], T)[0])
                for label, weak in TAIL_VARIANTS:
                    lowdin.TAIL_ON_WEAK_ROWS = weak
                    c = time.process_time()
                    out[label].append(_intensities(arrays, k[None], T)[0])
                    spent[label] += time.process_time() - c
        finally:
            lowdin.TAIL_ON_WEAK_ROWS = weak_rows
        mine = {}
        for label, _ in TAIL_VARIANTS:
            mine[f"pool ({name}) + tail ({args[1]}) {src.n_beams} beams, {label}"] = (
                np.concatenate(out[label], axis=1))
            print(f"{label}: solve {1e3 * spent[label] / len(kt):.1f} ms CPU per direction")
        if fit:
            # the tail fitted over the disc (linear and cubic, one tile), weak rows
            c = time.process_time()
            fits = src.fits((0.0, 0.0), sim.pool_settings["kt_radius"], terms=(3, 10))
            print(f"fits: {time.process_time() - c:.1f} s CPU", flush=True)
            for f in fits:
                arrays.tail = f
                mine[f"pool ({name}) + tail ({args[1]}) fitted, {f.coef.shape[2]} terms, "
                     "weak rows"] = _intensities(arrays, kt, T)[0]
        ref = np.concatenate(ref_strong, 1)
        mine[f"pool ({name}) + tail, every pool beam strong"] = ref
        print(f"tail of {src.n_beams} beams at 13 directions: {time.perf_counter() - t:.1f} s",
              flush=True)
        compare(mine)      # the selection error with the tail
        results.update(mine)
    big, big_table = pool_of(sim, rs, rg)
    ref = {f"pool ({args[2]}) {len(big)} beams": at_samples(sim, big, big_table, rules)}
    if opts != ["strong"]:
        ref[f"pool ({args[2]}) {len(big)} beams, every beam strong"] = at_samples(
            sim, big, big_table, BeamSelection.all_strong())
    for label, r in ref.items():
        compare({**results, label: r})
    if len(ref) == 2:
        compare(ref)


def tailwalk(args: list[str]) -> None:
    """The engine's walk with the tail (``from_felix(..., tail=True)``, optional g_max):
    set-up time, the convergence steps, then CPU ms per direction on 128 image
    directions with the tail on the weak rows, on the strong rows only and without it
    (same pool and selection; min of 3 interleaved runs): ``tailwalk`` or ``tailwalk 4``."""
    from qcbed.bloch import lowdin

    t, c = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = Simulation.from_felix(FELIX, tail=True,
                                    **({"gmax": float(args[0])} if args else {}))
    print(f"set-up {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU")
    print(sim.convergence.summary())
    print(*("    " + x for x in sim.convergence.steps), sep="\n", flush=True)
    pts = sim.defaults.grid.points
    sub = pts[np.random.default_rng(1).choice(len(pts), 128, replace=False)]
    arrays, tail_fit = sim.arrays, sim.arrays.tail
    spent: dict[str, list[float]] = {}
    weak_rows = lowdin.TAIL_ON_WEAK_ROWS
    try:
        for _ in range(3):
            for label in ("weak rows", "strong rows only", "no tail"):
                lowdin.TAIL_ON_WEAK_ROWS = label == "weak rows"
                arrays.tail = None if label == "no tail" else tail_fit
                c = time.process_time()
                for i in range(0, len(sub), 16):
                    pattern_chunk(arrays, sub[i:i + 16], T)
                spent.setdefault(label, []).append(1e3 * (time.process_time() - c) / len(sub))
    finally:
        lowdin.TAIL_ON_WEAK_ROWS = weak_rows
    for label, v in spent.items():
        print(f"{label}: {min(v):.2f} ms CPU per direction (min of 3)")


def timing(args: list[str]) -> None:
    sim = fixed()
    pts = sim.defaults.grid.points
    r = sim.pool_settings["kt_radius"]
    rng = np.random.default_rng(1)
    cases = [("global", (0.0, 0.0), r, 0.1, 3.0), ("global", (0.0, 0.0), r, 0.4, 3.0),
             ("global", (0.0, 0.0), r, 0.8, 4.0), ("tile", (0.0, 0.0), r / 2, 0.1, 3.0),
             ("tile", (0.6, 0.0), r / 2, 0.1, 3.0)]
    for kind, c, rad, sm, gm in cases:
        inside = pts[np.linalg.norm(pts - np.asarray(c), axis=1) <= rad]
        pool, table = pool_of(sim, sm, gm, c, rad)
        arrays = _arrays((sim.k_in, sim.frame.normal_frame), pool, table, SEL)
        n = 32 if len(pool) > 2000 else 128
        sub = inside[rng.choice(len(inside), n, replace=False)]
        t = time.process_time()
        for i in range(0, n, 16):
            pattern_chunk(arrays, sub[i:i + 16], T)
        print(f"{kind} centre {c} radius {rad:.3g}, pool ({sm:g}, {gm:g}) {len(pool)} beams: "
              f"{1e3 * (time.process_time() - t) / n:.2f} ms per direction (CPU)", flush=True)


if __name__ == "__main__":
    {"series": series, "strength": strength, "tiles": tiles, "tail": tail,
     "tailwalk": tailwalk, "timing": timing}[sys.argv[1]](
        sys.argv[2:])
