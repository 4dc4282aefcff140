"""Fine step of the Si D-LACBED ``import-felix`` plan with and without the pattern symmetry
(issue 13 goal 3; figures in RESULTS.md).

The project is the ``import-felix`` default (``roi_step = 'auto'``), with the known
orientation and thickness (no coarse step, no error budget, no region tiles) and the
second fine step only (thickness, U(111), U(220), U(113), U(222), shifts), on a
central square of HALF*2+1 display px sampled every ``roi_step`` px. Arguments:
``KIND HALF`` pairs (repeat for interleaved runs), KIND = ``full`` (every direction
solved, ``[roi] symmetric = false``) or ``sym`` (the ``import-felix`` default), with
``+coarse`` to run the plan's coarse step first (the fine grid is then a fraction of a
pixel off the zone axis, and ``sym`` moves it), e.g. ``full 10 sym 10 full 10``.
One JSON line per run: wall time of the fine step, solves, directions per solve,
refined values.

    QCBED_SHARED=/work/shared python benchmarks/bench_finegrid.py sym 10 full 10
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings

from qcbed.project import ProjectRun, dumps_toml, parse_project
from qcbed.project.felix import felix_project

warnings.simplefilter("ignore")
D = f"{os.environ.get('QCBED_SHARED', '../shared')}/data/si-110-dlacbed"
OUT = os.environ.get("QCBED_BENCH_OUT", "/tmp/bench_finegrid")


def project(kind: str, half: int) -> tuple[dict, dict]:
    proj, comments, _ = felix_project(D, output=f"{OUT}/run_{kind}_{half}")
    proj["project"]["overwrite"] = True
    proj["plan"]["budget"] = False
    proj["plan"]["fine"] = proj["plan"]["fine"][1:]
    proj["roi"]["symmetric"] = kind.startswith("sym")
    if not kind.endswith("+coarse"):  # the coarse step's result (si_u111_explore)
        proj["plan"]["thickness"] = 1491.4
        proj["geometry"]["shift"] = [-0.163, -0.015]
        proj["plan"].pop("coarse", None)
    reg = proj["roi"]["regions"][0]
    c0 = reg["corners"][0]
    full_half = (reg["corners"][2][0] - c0[0]) / 2
    step = (reg["corners"][2][0] - c0[0]) / (reg["samples"][0] - 1)
    h = min(half, full_half)
    c = (c0[0] + full_half, c0[1] + full_half)
    n = int(2 * h / step) + 1
    reg["corners"] = [[c[0] - h, c[1] - h], [c[0] - h, c[1] + h], [c[0] + h, c[1] - h]]
    reg["samples"] = [n, n]
    return proj, comments


def run_one(kind: str, half: int) -> dict:
    proj, comments = project(kind, half)
    src = f"{OUT}/run_{kind}_{half}.toml"
    with open(src, "w") as fh:
        fh.write(dumps_toml(proj, comments))
    logs: list[tuple[float, str]] = []
    t0 = time.time()
    run = ProjectRun(parse_project(proj, source=src, base_dir=OUT), progress=False,
                     log=lambda s: logs.append((time.time() - t0, s)))
    counts: list[dict] = []
    orig = run._fine
    build = run._build_refinement

    def build_refinement(*a, **k):
        ref, *rest = build(*a, **k)
        ref.use_symmetry = kind.startswith("sym")
        return (ref, *rest)

    run._build_refinement = build_refinement

    def fine(*a, **k):
        out = orig(*a, **k)
        ref = run._last_refinement
        counts.append(dict(ref.symmetry_counts, n_solves=ref.n_solves))
        return out

    run._fine = fine
    res = run.run().fine
    ps = {p.name: (p.value, p.esd) for p in res.parameters}
    def secs(prefix: str) -> float | None:
        v = [re.search(r"\(([0-9.]+) s\)", s) for _, s in logs if s.startswith(prefix)]
        v = [float(m.group(1)) for m in v if m]
        return v[0] if v else None

    return dict(kind=kind, half=half, samples=reg_samples(proj),
                fine_s=secs("fine 1/"), coarse_s=secs("coarse 1/"),
                wall_s=time.time() - t0,
                counts=counts, u111=ps["U(1,1,1)"], thickness=ps["thickness"],
                chi2_nu=res.chi2, n_iterations=res.n_iterations, message=res.message,
                log=[s for _, s in logs if "pattern symmetry" in s])


def main(args: list[str]) -> None:
    os.makedirs(OUT, exist_ok=True)
    for kind, half in zip(args[::2], args[1::2]):
        print(json.dumps(run_one(kind, int(half))), flush=True)


def reg_samples(proj: dict) -> list[int]:
    return proj["roi"]["regions"][0]["samples"]


if __name__ == "__main__":
    main(sys.argv[1:])
