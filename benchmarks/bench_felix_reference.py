"""The default engine of any Felix folder against a much larger pool diagonalised.

An independent check of the engine's reported accuracy (issue 12 item 1) on crystals
other than Si: the default simulation of the folder (``Simulation.from_felix``: its
own pool, selection and fitted tail) against a reference pool with **every beam
strong** (no Bethe potentials, no fitted tail), optionally with the exact tail of
the beams beyond it computed at each direction. Prints one JSON line: the engine's
record (pool, tail, reported convergence and pool errors), the reference's beams and
the measured max |ΔI|/I_max over the chosen sample directions and the check
thicknesses, with the CPU time of each reference direction. Run from the repository
root::

    python benchmarks/bench_felix_reference.py FOLDER --ref 0.8,3 [--tail 1.6,4]
        [--directions 0,2,7,12]

``--ref PS,PG``: the reference pool's s_max, g_max (Å⁻¹; it holds the engine's pool
when PS, PG are at least the engine's); ``--tail TS,TG``: the exact tail beyond it to
(s_max, g_max), its near bound the engine's. ``--directions``: indices into the
engine's 13 sample directions (the centre, 4 at half the radius, 8 at 0.85 of it).
Serial, one BLAS thread (the reference eigenproblems cost N³ each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("QCBED_WORKERS", "1")


def pair(text: str) -> tuple[float, float]:
    """``"0.8,3"`` -> (0.8, 3.0)."""
    a, b = map(float, text.split(","))
    return a, b


def measure(folder: Path, ref: tuple[float, float], tail: tuple[float, float] | None,
            picks: list[int]) -> dict:
    """The engine's pattern against the reference (see the module docstring)."""
    from qcbed.bloch.beams import BeamSelection
    from qcbed.bloch.convergence import _arrays, _error, _intensities
    from qcbed.bloch.potential import PotentialTable
    from qcbed.bloch.setup import automatic_pool, tail_source
    from qcbed.bloch.simulation import Simulation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        sim = Simulation.from_felix(folder)
        conv = sim.convergence
        setup = time.perf_counter() - t0
    kt = sim._check_kt[picks]
    thick = np.asarray(sim.check_thickness, float)
    got = sim.solve(kt).intensities(thick)
    settings = sim.pool_settings
    pool = automatic_pool(sim._internal, sim.frame, sim.k_in, settings, sim.pool.outputs,
                          gmax=ref[1], smax=ref[0])
    have = {tuple(h) for h in pool.hkl.tolist()}
    missing = sum(tuple(h) not in have for h in sim.pool.hkl.tolist())
    table = PotentialTable.build(pool.hkl, sim._compute_u)
    src = None
    if tail is not None:
        near = (conv.tail or {}).get("near", conv.smax)
        src = tail_source(sim._internal, sim.frame, sim.k_in, settings, pool,
                          sim._compute_u, smax=tail[0], gmax=tail[1], near=near)
    frame, strong = (sim.k_in, sim.frame.normal_frame), BeamSelection.all_strong()
    rows, cpu = [], []
    for k in kt:
        t1 = time.process_time()
        extra = None if src is None else src.at(k[None])
        rows.append(_intensities(_arrays(frame, pool, table, strong, extra), k[None],
                                 thick)[0])
        cpu.append(round(time.process_time() - t1, 1))
    reference = np.concatenate(rows, axis=1)        # (thickness, direction, beam)
    err = _error(got, reference)
    return {"folder": str(folder), "setup_s": round(setup, 1), "engine_pool": len(sim.pool),
            "engine_tail": None if conv.tail is None else conv.tail["beams"],
            "engine_limits": [conv.smax, conv.gmax,
                              None if conv.tail is None else conv.tail["smax"],
                              None if conv.tail is None else conv.tail["gmax"]],
            "reported_convergence_error": conv.error, "reported_pool_error": conv.pool_error,
            "converged": conv.converged,
            "reference_pool": len(pool), "engine_beams_missing_from_reference": missing,
            "reference_tail": None if src is None else src.n_beams,
            "directions": picks, "thickness": thick.tolist(),
            "max_dI_over_Imax": err, "reference_cpu_s_per_direction": cpu,
            "peak_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--ref", type=pair, required=True, help="reference pool s_max,g_max")
    ap.add_argument("--tail", type=pair, default=None, help="its exact tail s_max,g_max")
    ap.add_argument("--directions", default="0,2,7,12",
                    help="indices of the 13 sample directions (default 0,2,7,12)")
    args = ap.parse_args()
    picks = [int(i) for i in args.directions.split(",")]
    print(json.dumps(measure(args.folder, args.ref, args.tail, picks), default=str),
          flush=True)


if __name__ == "__main__":
    main()
