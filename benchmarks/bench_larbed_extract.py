"""Benchmark: streaming LARBED extraction of a ≥ 2 GB synthetic 4-D file.

Writes a synthetic LARBED dataset (n × n tilts of 128 × 128 float32 frames,
EMPAD-sized; Gaussian probe spots with smooth analytic LACBED intensities on a
diffuse background, Poisson noise) to a temporary directory, row by row (no
memory map), drops it from the page cache (``posix_fadvise``, unless
``--warm``), then runs, in a fresh Python process, the whole pipeline — open
lazily, track the spots and fit the drift (every 4th tilt), integrate every
reflection at every tilt, save the HDF5 stack — and prints the wall times and
the peak resident memory (``resource.getrusage(...).ru_maxrss``) of that
process. The file is deleted afterwards (unless ``--keep``).

Usage::

    python benchmarks/bench_larbed_extract.py                 # 2.2 GB .npy in /tmp
    python benchmarks/bench_larbed_extract.py --size-gb 0.3 --format empad --workers 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DET = (128, 128)
DOSE = 2.0e4


def geometry(n: int):
    """Spot map, tilt calibration and reflections of an n × n scan."""
    from qcbed.larbed import SpotMap, SpotPredictor, TiltCalibration, select_reflections

    ref = ((n - 1) / 2, (n - 1) / 2)
    t = np.radians(12.0)
    g1 = 18.0 * np.array([np.sin(t), np.cos(t)])
    g2 = 18.0 * np.array([np.cos(t), -np.sin(t)])
    o = np.array([63.5, 64.5])
    spots = SpotMap.from_reference([0, 0, 1], o, [1, 0, 0], o + g1, [0, 1, 0], o + g2,
                                   reference_tilt=ref)
    cal = TiltCalibration.from_parameters(12.0, 36.0 / max(n - 1, 1), origin=o, reference=ref)
    hkl = select_reflections(spots, cal, (n, n), DET, hmax=3, margin=10.0)
    return SpotPredictor(spots, cal), hkl


def intensities(hkl: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Smooth analytic 'LACBED' intensities (n_refl, len(rows), n), deterministic."""
    cols = np.arange(n)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = []
    for h in hkl:
        a, b = 1.0 + abs(h[0]), 1.0 + abs(h[1])
        w = 0.3 if not np.any(h) else 0.05 / (1 + h[0] ** 2 + h[1] ** 2)
        out.append(w * (0.55 + 0.45 * np.cos(2 * np.pi * (a * rr + b * cc) / n + h[0] - h[1])))
    return np.array(out)


def write_file(path: Path, fmt: str, n: int, seed: int = 7) -> Path:
    from qcbed.larbed.synthetic import SpotRenderer, write_empad, write_npy_stream

    pred, hkl = geometry(n)
    renderer = SpotRenderer(DET, probe_sigma=1.0, dose=DOSE, background=4.0, halo=8.0,
                            halo_width=60.0)
    rng = np.random.default_rng(seed)
    cols = np.arange(n)

    def rows():
        for r in range(n):
            pos = pred.positions(hkl, np.full(n, r), cols)
            yield renderer.frames(pos, intensities(hkl, np.array([r]), n)[:, 0], pos[0], rng)

    if fmt == "npy":
        return write_npy_stream(path.with_suffix(".npy"), (n, n) + DET, np.float32, rows())
    return write_empad(path.with_suffix(".xml"), (n, n), rows())


def drop_cache(path: Path) -> None:
    """Evict a file from the page cache (so the extraction reads from disk)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def run_extraction(path: Path, n: int, workers: int, chunk_mb: float, out: Path) -> dict:
    """The timed pipeline (runs in a fresh process)."""
    t0 = time.perf_counter()
    from qcbed.larbed import extract_lacbed, open_4d, refine_positions, save_stack

    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pred, hkl = geometry(n)
    data = open_4d(path, chunk_mb=chunk_mb)
    t1 = time.perf_counter()
    pred, report = refine_positions(data, pred, hkl, stride=4, radius=3.0, annulus=(5.0, 8.0),
                                    workers=workers, progress=False)
    t2 = time.perf_counter()
    stack = extract_lacbed(data, pred, hkl, disc_radius=4.0, annulus=(6.0, 9.0),
                           workers=workers, progress=False)
    t3 = time.perf_counter()
    save_stack(stack, out)
    t4 = time.perf_counter()
    truth = intensities(hkl, np.arange(n), n)
    ok = stack.mask
    i, v, t = stack.images[ok], stack.variance[ok], truth[ok]
    c = np.sum(i * t / v) / np.sum(t * t / v)
    z = (i - c * t) / np.sqrt(v)
    return {"file_bytes": path.stat().st_size if path.suffix == ".npy"
            else sum(p.stat().st_size for p in path.parent.glob("*.raw")),
            "scan": [n, n], "detector": list(DET), "n_reflections": len(hkl),
            "blocks": len(data.data.chunks[0]) * len(data.data.chunks[1]),
            "chunk_mb": chunk_mb, "workers": workers,
            "time_open_s": t1 - t0, "time_tracking_s": t2 - t1,
            "time_extraction_s": t3 - t2, "time_save_s": t4 - t3, "time_total_s": t4 - t0,
            "rss_after_import_mb": rss_import,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "drift_rms_px": report["rms"], "reduced_chi2": float(np.sum(z**2) / (z.size - 1)),
            "residual_std": float(np.std(z)), "scale_over_dose": float(c / DOSE),
            "valid_fraction": float(ok.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.2, help="file size (GB, 1e9 bytes)")
    ap.add_argument("--format", choices=["npy", "empad"], default="npy")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-mb", type=float, default=32.0)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir())
    ap.add_argument("--warm", action="store_true", help="keep the file in the page cache")
    ap.add_argument("--keep", action="store_true", help="do not delete the file")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.run:  # child process: the measured part
        res = run_extraction(Path(args.run), args.n, args.workers, args.chunk_mb,
                             Path(args.out))
        print(json.dumps(res))
        return

    frame_bytes = DET[0] * DET[1] * 4 + (2 * DET[1] * 4 if args.format == "empad" else 0)
    n = math.ceil(math.sqrt(args.size_gb * 1e9 / frame_bytes))
    work = Path(tempfile.mkdtemp(prefix="qcbed-larbed-bench-", dir=args.tmpdir))
    try:
        t0 = time.perf_counter()
        path = write_file(work / "larbed", args.format, n)
        t_write = time.perf_counter() - t0
        data_file = path if args.format == "npy" else next(work.glob("*.raw"))
        if not args.warm:
            drop_cache(data_file)
        cmd = [sys.executable, __file__, "--run", str(path), "--n", str(n), "--workers",
               str(args.workers), "--chunk-mb", str(args.chunk_mb), "--out",
               str(work / "stack.h5")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"extraction failed:\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res.update({"format": args.format, "time_write_s": t_write, "cache": "warm" if args.warm
                else "dropped (posix_fadvise)", "cpus": os.cpu_count(),
                "machine": platform.platform(), "python": platform.python_version(),
                "date": time.strftime("%Y-%m-%d")})
    print(f"LARBED extraction benchmark ({res['date']}, {res['cpus']} CPUs, {res['machine']})")
    print(f"  file            {res['file_bytes'] / 1e9:.2f} GB {args.format}, "
          f"{n}×{n} tilts × {DET[0]}×{DET[1]} float32, {res['n_reflections']} reflections")
    print(f"  blocks          {res['blocks']} of ≤ {args.chunk_mb:g} MiB, "
          f"{args.workers} worker thread(s), page cache {res['cache']}")
    print(f"  write           {t_write:.1f} s")
    print(f"  tracking        {res['time_tracking_s']:.1f} s (every 4th tilt)")
    print(f"  extraction      {res['time_extraction_s']:.1f} s "
          f"({res['file_bytes'] / 1e6 / res['time_extraction_s']:.0f} MB/s)")
    print(f"  total           {res['time_total_s']:.1f} s (open + tracking + extraction + save)")
    print(f"  peak RSS        {res['peak_rss_mb']:.0f} MB "
          f"(after imports {res['rss_after_import_mb']:.0f} MB)")
    print(f"  accuracy        reduced χ² {res['reduced_chi2']:.3f}, residual std "
          f"{res['residual_std']:.3f}, drift rms {res['drift_rms_px']:.3f} px")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
