"""Independent check of the default engine's selection error on one Felix folder.

The engine estimates its selection error (``convergence_error``) on its own 19 check
directions at felix.inp's thickness. This script compares the default engine
(``Simulation.from_felix(folder, executor="serial")``) with the same pool and tail with
every pool beam strong (``BeamSelection.all_strong()``) on *other* directions — a random
sample of the image grid (``np.random.default_rng(1)``) — and at other thicknesses
(multiples of felix.inp's ``initial_thickness``). Error per thickness: max |I − I_ref| /
max(I_ref) over the directions and output beams. One JSON line on stdout, progress on
stderr. Serial, one BLAS thread. Used for docs/validation.md ("The defaults re-checked on
the session-10 engine")::

    python benchmarks/check_selection_independent.py FOLDER [--n 24] [--factors 0.7,1,1.5]
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


def check(folder: str, n: int, factors: tuple[float, ...], batch: int = 4) -> dict:
    """The figures of one folder (see the module docstring)."""
    from qcbed.bloch.beams import BeamSelection

    with default_engine(folder) as (sim, out):
        conv = sim.convergence
        thick = np.array(factors, float) * float(sim.felix.initial_thickness)
        kt = image_directions(sim, n, seed=1)
        ref = sim.with_changes(selection=BeamSelection.all_strong())
        if ref.tail is not sim.tail:
            raise RuntimeError("the all-strong reference lost the pool's tail")
        t1 = time.perf_counter()
        sol = sim.solve(kt)
        inten = sol.intensities(thick)                     # (n_t, n, n_out)
        out["default_s"], out["counts"] = round(time.perf_counter() - t1, 1), sol.beam_counts()
        t2 = time.perf_counter()
        parts = []
        for i in range(0, len(kt), batch):
            parts.append(ref.solve(kt[i:i + batch]).intensities(thick))
            print(f"reference {min(i + batch, len(kt))}/{len(kt)}, "
                  f"{time.perf_counter() - t2:.0f} s", file=sys.stderr, flush=True)
        iref = np.concatenate(parts, axis=1)
        out["reference_s_per_direction"] = round((time.perf_counter() - t2) / len(kt), 2)
        out["nan"] = [int(np.isnan(inten).sum()), int(np.isnan(iref).sum())]
        out["independent"] = [
            {"t": float(t), "max_err": float(np.nanmax(np.abs(inten[j] - iref[j]))
                                             / np.nanmax(iref[j]))}
            for j, t in enumerate(thick)]
        worst = max(e["max_err"] for e in out["independent"])
        out["worst_over_estimate"] = worst / conv.error if conv.error else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--n", type=int, default=24, help="random image directions")
    ap.add_argument("--factors", default="0.7,1,1.5",
                    help="thicknesses as multiples of felix.inp's initial_thickness")
    args = ap.parse_args(argv)
    factors = tuple(float(x) for x in args.factors.split(","))
    print(json.dumps(check(args.folder, args.n, factors), default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
