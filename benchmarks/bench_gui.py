"""Latency of the app (issue 16) on the Si D-LACBED folder (152 × 152 images, 39 reflections).

1. Thickness change on the full 152 × 152 grid: ``Session.update({'thickness': t})``
   (intensities from the stored eigen-solutions, symmetry expansion, least-squares
   scale, ZNCC of all 39 reflections) plus the three PNGs of one reflection the page
   then fetches. Target ≤ 0.2 s.
2. Orientation change (tilt k_x): the preview re-simulation on the coarse grid
   (≤ ``--preview-side`` samples per side) plus the same PNGs. Target ≤ 2 s.
3. The full-grid solve that follows in the background (for information).

Run from the repository root (needs ../shared/data/si-110-dlacbed)::

    python benchmarks/bench_gui.py [--workers N] [--preview-side 40] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from qcbed.gui.session import open_session

SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FOLDER = SHARED / "data" / "si-110-dlacbed"


def _pngs(s, i: int) -> None:
    for kind in ("exp", "sim", "diff"):
        s.image_png(i, kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default=None, help="executor spec for the full-grid solve")
    ap.add_argument("--preview-side", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t0 = time.perf_counter()
        s = open_session(FOLDER, workdir=tempfile.mkdtemp(), executor=a.workers,
                         preview_side=a.preview_side)
    print(f"open (read 45 DM3, build set-up, first preview): {time.perf_counter() - t0:.2f} s; "
          f"pool {len(s.sim.pool)} beams, {len(s.hkl)} reflections, preview grid "
          f"{s.frame.grid.shape}")
    t0 = time.perf_counter()
    assert s.wait_full(600)
    print(f"full 152x152 grid solved in the background: {s.timings['full_solve_s']:.2f} s "
          f"(waited {time.perf_counter() - t0:.2f} s)")
    i = 1
    t_base = s.params["thickness"]
    times, cpu = [], []
    for k in range(a.repeat * 2):
        n = s.n_solves
        t0, c0 = time.perf_counter(), time.thread_time()
        s.update({"thickness": t_base + 5.0 * (k + 1)})
        _pngs(s, i)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        assert s.n_solves == n and s.frame.level == "full"
    print(f"thickness update, full {s.frame.grid.shape} grid, no diagonalisation: wall median "
          f"{statistics.median(times) * 1e3:.0f} ms (max {max(times) * 1e3:.0f} ms), "
          f"CPU of the request thread median {statistics.median(cpu) * 1e3:.0f} ms "
          f"({len(times)} updates)")
    tilt = list(s.params["tilt0"])
    p = s.geometry().pixel_size
    times, cpu = [], []
    for k in range(a.repeat):
        t0, c0 = time.perf_counter(), time.thread_time()
        s.update({"tilt0": [tilt[0] + (k + 1) * 2 * p, tilt[1]]})
        _pngs(s, i)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        assert s.frame.level == "preview"
    print(f"orientation preview ({s.frame.grid.shape} grid, serial in the request thread): "
          f"wall median {statistics.median(times):.2f} s (max {max(times):.2f} s), CPU median "
          f"{statistics.median(cpu):.2f} s ({len(times)} updates)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
