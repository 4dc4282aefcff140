"""The real refinement of issue 13 goal 3: the shared Si D-LACBED ``import-felix``
default plan (coarse orientation/thickness, fine step 1, fine step 2, error budget),
timed phase by phase, with the refined values the speed must not change.

Run from the repository root (needs ../shared/data/si-110-dlacbed)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_refine_plan.py [--out DIR] [--no-budget]

Prints one line per phase (the run's own log with its timings), the wall time,
|U(1,1,1)|, t, χ²_ν with esds and the eigen-solves of each fine step. To compare
two trees, run it once with each on ``PYTHONPATH`` (same machine, same load).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FOLDER = SHARED / "data" / "si-110-dlacbed"


def main(argv=None) -> int:
    from qcbed.project import ProjectRun, dumps_toml, load_project
    from qcbed.project.felix import felix_project

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for the project and results")
    ap.add_argument("--no-budget", action="store_true", help="skip the error budget")
    args = ap.parse_args(argv)
    if not FOLDER.exists():
        print(f"{FOLDER} not found; set QCBED_SHARED", file=sys.stderr)
        return 1
    out = Path(args.out or tempfile.mkdtemp(prefix="qcbed-plan-"))
    out.mkdir(parents=True, exist_ok=True)
    proj, comments, _facts = felix_project(FOLDER, output=str(out / "results"))
    if args.no_budget:
        proj["plan"]["budget"] = False
    path = out / "si.toml"
    path.write_text(dumps_toml(proj, comments), encoding="utf-8")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; project {path}", flush=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        first = msg.splitlines()[0]
        tail = re.findall(r"\(([\d.]+ s)\)\s*$", msg)
        print(f"  [{time.perf_counter() - t0:7.1f} s] {first[:110]}"
              + (f" ... ({tail[0]})" if tail and tail[0] not in first else ""), flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = ProjectRun(load_project(path), progress=False, log=log, overwrite=True).run()
    wall = time.perf_counter() - t0
    res = run.fine
    u = res.value("U(1,1,1)")
    print(f"wall {wall:.1f} s (load now {os.getloadavg()[0]:.1f}); fine steps: "
          + "; ".join(f"{s['name']}: {s['n_iterations']} iterations" for s in run.steps))
    print(f"|U(1,1,1)| = {abs(u):.7f} ± {res.esd('U(1,1,1)'):.3g} A^-2, "
          f"t = {res.value('thickness'):.3f} ± {res.esd('thickness'):.3g} A, "
          f"chi2_nu = {res.chi2:.4f}, {res.n_solves} eigen-solves in the last step")
    for n in res.free_names:
        print(f"  {n:12s} {res.value(n):.9g} ± {res.esd(n):.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
