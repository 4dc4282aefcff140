"""Per-direction cost of the refinement's solve with analytic structure-factor derivatives.

``exact`` (general complex ``zgeev``, G_p = V⁻¹ ∂H V) against ``fast`` (Hermitian
``eigh`` + perturbative absorption, G_p = C⁻¹ ∂H C from the perturbative
eigenvectors; :mod:`qcbed.bloch.eigen_derivatives`), interleaved in one run
(medians of ``--repeat`` rounds; the machine is shared), with the accuracy of the
fast Jacobian against the exact one. Cases:

* ``si``: the shared Si D-LACBED (Felix input ``si-110-dlacbed``) at the engine's
  converged defaults, ``--n`` random directions of its tilt grid;
* ``demo``: the built-in demo's set-up (Si 111 systematic row, 200 kV);
* ``pyextal``: bench_refine's set-up (``Si_systematic.dat``, 493-beam pool).

Parameters: U(111), U′(111), U(220) (U(222) for the systematic rows).

    python benchmarks/bench_fastjac.py [si|demo|pyextal ...] [--n 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from qcbed.bloch import lowdin, lowdin_jacobian, solver
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.solver import solve_chunk

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _case(name: str, n: int, rng):
    """(simulation, k_t (n, 2), [(hkl, absorptive?)]) of a benchmark case."""
    if name == "si":
        sim = Simulation.from_felix(SHARED / "data" / "si-110-dlacbed")
        kt = sim.defaults.grid.kt.reshape(-1, 2)
        params = [((1, 1, 1), False), ((1, 1, 1), True), ((2, 2, 0), False)]
    elif name == "pyextal":
        sim = Simulation.from_dat(SHARED / "data" / "pyextal-dat" / "Si_systematic.dat",
                                  outputs=[[0, 0, 0], [1, -1, -1], [-1, 1, 1], [2, -2, -2]])
        kt = sim.defaults.grid.kt.reshape(-1, 2)
        params = [((1, -1, -1), False), ((1, -1, -1), True), ((2, -2, -2), False)]
    elif name == "demo":
        import tempfile

        from qcbed.demo import make_demo
        from qcbed.project import build_setup, load_project

        folder = Path(tempfile.mkdtemp())
        make_demo(folder, fast=True)
        setup = build_setup(load_project(folder / "project.toml"), executor=1)
        sim = setup.simulation()
        kt = np.concatenate([setup.geometry.display_to_kt(r.points()).reshape(-1, 2)
                             for r in setup.regions])
        params = [((1, 1, 1), False), ((1, 1, 1), True), ((2, 2, 2), False)]
    else:
        raise SystemExit(f"unknown case {name}")
    kt = kt[rng.choice(len(kt), min(n, len(kt)), replace=False)]
    return sim, kt, params


def _tables(sim, params):
    m = len(sim.table.hkl)
    du = np.zeros((len(params), m), complex)
    dua = np.zeros((len(params), m), complex)
    for k, (h, absorptive) in enumerate(params):
        (dua if absorptive else du)[k] = sim.sf_coefficients(h, phase=0.0)
    return du, dua


def run_case(name: str, n: int, repeat: int, thickness: float) -> None:
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim, kt, params = _case(name, n, rng)
    der = _tables(sim, params)
    arrays = {m: sim.with_changes(mode=m).arrays for m in ("exact", "fast")}
    print(f"\n[{name}] pool {len(sim.pool)}, {len(kt)} directions, "
          f"{len(params)} parameters, Löwdin {arrays['fast'].lowdin}")
    times: dict[str, list[float]] = {}
    result = {}
    keys = ["exact+d", "fast+d", "exact", "fast"]
    if arrays["fast"].lowdin:
        # the engine before this benchmark's work: exact only, the Löwdin terms
        # differentiated by central differences of the whole transformation
        keys.insert(0, "exact+d (Löwdin by central differences)")
    for _ in range(repeat):
        for key in keys:
            mode, with_d = key.split("+")[0], "+d" in key
            central = "central" in key
            if central:
                solver.lowdin_derivatives = lowdin.derivatives_central
            t0 = time.perf_counter()
            eig = solve_chunk(arrays[mode], kt, der if with_d else None)
            times.setdefault(key, []).append(time.perf_counter() - t0)
            solver.lowdin_derivatives = lowdin_jacobian.derivatives
            if with_d and not central:
                result[mode] = eig
    for key, v in times.items():
        print(f"  {key:9s} {1e3 * np.median(v) / len(kt):8.2f} ms/direction "
              f"(median of {repeat})")
    ex, fa = result["exact"], result["fast"]
    print(f"  strong {ex.n_strong.mean():.0f}, weak {ex.n_weak.mean():.0f} per direction; "
          f"fast: {fa.n_fallback} fallback, {fa.n_clustered} clustered")
    ie, de, _ = ex.gradients(thickness)
    i_f, df, _ = fa.gradients(thickness)
    ok = np.isfinite(ie).all(1) & np.isfinite(i_f).all(1)
    print(f"  intensity |fast − exact| / max I: "
          f"{np.abs(i_f[ok] - ie[ok]).max() / ie[ok].max():.1e}")
    for k, (h, absorptive) in enumerate(params):
        rel = np.abs(df[ok, k] - de[ok, k]).max() / np.abs(de[ok, k]).max()
        print(f"  d/d{'U′' if absorptive else 'U'}{h}: |fast − exact| / max|exact| {rel:.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["si", "demo", "pyextal"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--thickness", type=float, default=1500.0)
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, OPENBLAS_NUM_THREADS="
          f"{os.environ['OPENBLAS_NUM_THREADS']}, {time.strftime('%Y-%m-%d %H:%M')}")
    for c in args.cases:
        run_case(c, args.n, args.repeat, args.thickness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
