"""The pool's tail on the Si [1-10] D-LACBED (1480 Å, 13 sample directions).

Every pool beam strong. The default pool (s_max 0.05, g_max 3) with the tail of
the beams of the (0.4, 3) pool against that pool itself, the tail computed
(a) exactly at each direction (a fit of radius 10⁻³ Å⁻¹ around it) and (b)
fitted over the whole tilt disc (quadratic and cubic).
Run: ``QCBED_SHARED=../shared python benchmarks/proto_tail_felix.py``.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

from qcbed.bloch.beams import BeamPool, BeamSelection
from qcbed.bloch.convergence import _arrays, _error, _intensities
from qcbed.bloch.potential import PotentialTable
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.tail import build_tail

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    warnings.simplefilter("ignore")
    sim = Simulation.from_felix(SHARED / "data" / "si-110-dlacbed", accuracy=None,
                                executor="serial")
    st = sim.pool_settings
    frame = (sim.k_in, sim.frame.normal_frame)
    t = np.array([1480.0])
    kt = sim._check_kt
    kw = dict(kt_center=st["kt_center"], kt_radius=st["kt_radius"], outputs=sim.pool.outputs,
              holz=True)
    pools = [BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=3.0, smax=s, **kw)
             for s in (0.05, 0.4)]
    small, big = pools
    arrays = _arrays(frame, small, PotentialTable.build(small.hkl, sim._compute_u),
                     BeamSelection.all_strong())
    bare, _ = _intensities(arrays, kt, t)
    ref, _ = _intensities(_arrays(frame, big, PotentialTable.build(big.hkl, sim._compute_u),
                                  BeamSelection.all_strong()), kt, t)
    have = {tuple(h) for h in small.hkl}
    out = np.array([tuple(h) not in have for h in big.hkl])
    args = (small.hkl, big.hkl[out], big.g[out], sim._compute_u)
    geo = dict(k_in=sim.k_in, normal=sim.frame.normal_frame)
    print(f"disc radius {st['kt_radius']:.3f} 1/A; pools {len(small)} / {len(big)} beams; "
          f"default vs (0.4, 3), no tail {_error(bare, ref):.1e}", flush=True)
    t0 = time.perf_counter()
    exact = []
    for k in kt:
        arrays.tail = build_tail(*args, **geo, center=k, radius=1e-3, n_terms=1)
        exact.append(_intensities(arrays, k[None, :], t)[0])
    exact = np.concatenate(exact, axis=1)
    print(f"tail exact per direction: {_error(exact, ref):.1e} "
          f"({time.perf_counter() - t0:.1f} s for 13 directions)", flush=True)
    for n_terms in (6, 10):
        t0 = time.perf_counter()
        arrays.tail = build_tail(*args, **geo, center=st["kt_center"], radius=st["kt_radius"],
                                 n_terms=n_terms)
        dt = time.perf_counter() - t0
        try:
            err = f"{_error(_intensities(arrays, kt, t)[0], ref):.1e}"
        except np.linalg.LinAlgError as exc:
            err = f"failed ({exc})"
        print(f"tail fitted over the disc, {n_terms} terms: misfit "
              f"{arrays.tail.fit_error:.1e}, error {err} (set-up {dt:.1f} s)", flush=True)
    if "--far" in os.sys.argv:
        # both pools with the tail up to (0.8, 4), cubic fit over the disc
        far = BeamPool.automatic(sim._internal, sim.frame, sim.k_in, gmax=4.0, smax=0.8, **kw)
        res = []
        for pool in pools:
            arr = _arrays(frame, pool, PotentialTable.build(pool.hkl, sim._compute_u),
                          BeamSelection.all_strong())
            have = {tuple(h) for h in pool.hkl}
            out = np.array([tuple(h) not in have for h in far.hkl])
            t0 = time.perf_counter()
            arr.tail = build_tail(pool.hkl, far.hkl[out], far.g[out], sim._compute_u, **geo,
                                  center=st["kt_center"], radius=st["kt_radius"], n_terms=10)
            print(f"  pool {len(pool)}: tail {arr.tail.n_beams} beams, misfit "
                  f"{arr.tail.fit_error:.1e}, set-up {time.perf_counter() - t0:.1f} s",
                  flush=True)
            try:
                res.append(_intensities(arr, kt, t)[0])
            except np.linalg.LinAlgError as exc:
                print(f"  failed: {exc}")
                return
        print(f"tail to (0.8, 4), cubic fit: default + tail vs (0.4, 3) + tail "
              f"{_error(res[0], res[1]):.1e}; default + tail vs (0.4, 3) bare "
              f"{_error(res[0], ref):.1e}")


if __name__ == "__main__":
    main()
