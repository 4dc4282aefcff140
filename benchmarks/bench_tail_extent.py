"""Pool + tail extents on the Si [1-10] D-LACBED against a diagonalised reference (issue 12 item 1).

Every pattern every beam strong, the tail computed exactly at each of the 13 sample
directions of the disc (1480 Å). Each argument ``PS,PG/TS,TG`` is a pool (s_max,
g_max) with its tail to (s_max, g_max) (Å⁻¹); ``--ref PS,PG/TS,TG`` is the reference:
that pool diagonalised (directions one at a time: a 3371-beam pool takes ~30–70 s
each) with the exact tail beyond it. Prints the table of max |ΔI|/I_max between all
of them and the cost of the exact tails per direction. Run::

    QCBED_SHARED=../shared python benchmarks/bench_tail_extent.py \\
        --ref 0.8,4/1.6,4 0.05,3/0.8,3 0.05,3.5/1.6,4 0.05,4/1.6,4

(docs/validation.md, "The pool converged with its tail"). The near bound of the
tails is the smallest pool's s_max (0.05 Å⁻¹), as in the engine's walk.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.convergence import _arrays, _error, _intensities
from qcbed.bloch.potential import PotentialTable
from qcbed.bloch.setup import automatic_pool, tail_source
from qcbed.bloch.simulation import Simulation

SHARED = Path(os.environ.get("QCBED_SHARED", "../shared"))
FELIX = SHARED / "data" / "si-110-dlacbed"
T = np.array([1480.0])
NEAR = 0.05


def parse(arg: str) -> tuple[float, float, float, float]:
    pool, tail = arg.split("/")
    ps, pg = map(float, pool.split(","))
    ts, tg = map(float, tail.split(","))
    return ps, pg, ts, tg


def pattern(sim: Simulation, limits, one_by_one: bool) -> np.ndarray:
    ps, pg, ts, tg = limits
    settings = sim.pool_settings
    pool = automatic_pool(sim._internal, sim.frame, sim.k_in, settings, sim.pool.outputs,
                          gmax=pg, smax=ps)
    table = PotentialTable.build(pool.hkl, sim._compute_u)
    src = tail_source(sim._internal, sim.frame, sim.k_in, settings, pool, sim._compute_u,
                      smax=ts, gmax=tg, near=NEAR)
    frame, kt = (sim.k_in, sim.frame.normal_frame), sim._check_kt
    strong = BeamSelection.all_strong()
    t = time.process_time()
    if one_by_one:
        out = [_intensities(_arrays(frame, pool, table, strong, src.at(k[None])), k[None],
                            T)[0] for k in kt]
        inten = np.concatenate(out, axis=1)
    else:
        inten = _intensities(_arrays(frame, pool, table, strong, src.at(kt)), kt, T)[0]
    print(f"pool ({ps:g}, {pg:g}) {len(pool)} + tail ({ts:g}, {tg:g}) {src.n_beams}: "
          f"{(time.process_time() - t) / len(kt):.2f} s CPU per direction", flush=True)
    return inten


def main(argv: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = Simulation.from_felix(FELIX, check_thickness=tuple(T))
    res: dict[str, np.ndarray] = {}
    args = list(argv)
    if "--ref" in args:
        i = args.index("--ref")
        ref = args.pop(i + 1)
        args.pop(i)
        res[f"ref {ref}"] = pattern(sim, parse(ref), one_by_one=True)
    for a in args:
        res[a] = pattern(sim, parse(a), one_by_one=False)
    keys = list(res)
    print("max |ΔI|/I_max between the patterns:")
    for a in keys:
        print(f"{a:>20}", " ".join(f"{_error(res[a], res[b]):.1e}" for b in keys))


if __name__ == "__main__":
    main(sys.argv[1:])
