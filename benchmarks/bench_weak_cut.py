"""Can weak (Bethe) beams be cut by an accuracy bound? (issue 13, goals 1–2)

Run from the repository root::

    python benchmarks/bench_weak_cut.py                  # linbo3 yig si
    python benchmarks/bench_weak_cut.py yig --directions 16

The Bethe potentials of the weak beams w (Bethe 1928; Spence & Zuo 1992, eqs.
3.31–3.32; Zuo & Weickenmeier 1995; Birkeland et al. 1996 for their energy
dependence) add to the strong-beam matrix

    E = −Σ_w Z_{S,w} Z_{w,S} / (2K S_w),   Z = U + iU′,

a sum of rank-one terms, so cutting a set C of weak beams changes the matrix by
E_C with ‖E_C‖₂ ≤ Σ_{w∈C} c_w, c_w = ‖Z_{S,w}‖₂ ‖Z_{w,S}‖₂ / |2K S_w| (Å⁻²).
The wave field obeys dφ/dt = 2πi A′φ/2K_n with A′ = M⁻¹AM⁻¹ (Spence & Zuo 1992,
eq. 2.26); for an absorbing crystal both propagators, with and without the cut,
are contractions, and Duhamel's formula gives

    ‖δψ(t)‖ ≤ (max m / min m²) · π t ‖E_C‖ / K_n =: δ,
    |δI_g| ≤ 2|ψ_g| δ + δ² ≤ 2δ + δ².

A cut is safe for a share s of the accuracy target ε (max |ΔI|/I_max) when
2δ + δ² ≤ s ε I_max at the largest thickness T. This script reports, per case:
the c_w distribution, how many beams that bound lets go (s ε = 10⁻⁴, T = 3000 Å),
the measured intensity change when the beams with the smallest c_w (or the
smallest coupling to the output beams, max_g∈out |Z_{g−w}|²/|2K S_w|) are dropped
anyway (per direction), the bound for the same cut, and the CPU time per direction
with all weak beams and with none (one BLAS thread; ``time.process_time``, so that
the load of a shared machine counts less): the most any cut could gain.
For a case with the Löwdin terms (:mod:`qcbed.bloch.lowdin`) the bound covers the
classic term only; the measured change is the check.
Never used by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_hard import BIRD_KING, FELIX, linbo3, yig
from qcbed.bloch import solver as S
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.geometry import normal_components
from qcbed.bloch.simulation import Simulation

THICK = np.array([300.0, 1000.0, 2000.0, 3000.0])
#: Share × target for |ΔI|/I_max the bound is held to (0.1 × the engine's 10⁻³).
SHARE_TARGET = 1e-4
FRACTIONS = (0.05, 0.1, 0.25, 0.5)


def case(name: str, n_dir: int):
    rng = np.random.default_rng(0)
    if name == "linbo3":
        sim = Simulation(linbo3(), 200.0, [1, -1, 0], [0, 0, 1], potential=BIRD_KING,
                         selection=BeamSelection(sgmin=0.3, omega=30.0, min_strong=80),
                         gmax=3.0, smax=0.05, kt_radius=0.5, min_pool=400, executor="serial")
        return "LiNbO3 [1-10] Felix-like", sim.arrays, rng.uniform(-0.3, 0.3, (n_dir, 2))
    if name == "yig":
        center = (0.0, 0.35)
        row = [(0, 0, m) for m in (-12, -8, -4, 4, 8, 12)]
        sim = Simulation(yig(), 300.0, [1, 1, 0], [0, 0, 1], potential=BIRD_KING, outputs=row,
                         selection=BeamSelection(sgmin=1e-3, omega=None, min_strong=166),
                         gmax=2.0, smax=0.03, kt_center=center, kt_radius=0.1, min_pool=676,
                         executor="serial")
        kt = np.asarray(center) + rng.uniform(-0.05, 0.05, (n_dir, 2))
        return "YIG off [110], 166 strong", sim.arrays, kt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = Simulation.from_felix(FELIX, gmax=3.0, smax=0.05, executor="serial",
                                    selection=BeamSelection(sgmin=4.0, omega=30.0,
                                                            min_strong=20))
    pts = sim.defaults.grid.points
    return ("Si D-LACBED near-converged (sgmin 4)", sim.arrays,
            pts[rng.choice(len(pts), n_dir, replace=False)])


def bounds(arrays, kt):
    """Per direction: (weak indices, c_w, output coupling, δ per unit Σc (Å²))."""
    kt, two_k_sg, k_n, g_n, strong, weak = S.prepare_directions(arrays, kt)
    z = np.abs(arrays.u + 1j * arrays.u_abs)
    zc = np.abs(np.conj(arrays.u - 1j * arrays.u_abs))   # |Z_{w−g}| from the g−w row
    out = []
    for i in range(len(kt)):
        s, w = np.nonzero(strong[i])[0], np.nonzero(weak[i])[0]
        blk = arrays.index[np.ix_(s, w)]
        d = 1.0 / np.abs(two_k_sg[i, w])
        c = np.sqrt((z[blk] ** 2).sum(0) * (zc[blk] ** 2).sum(0)) * d
        c_out = (z[blk[s < arrays.n_out]] ** 2).max(0) * d
        m2 = 1.0 + g_n[s] / k_n[i]
        per = np.sqrt(m2.max()) / m2.min() * np.pi * THICK.max() / k_n[i]
        out.append((w, c, c_out, per))
    return out


def drop(arrays, kt, order_key: int | None, frac: float):
    """A copy of :func:`qcbed.bloch.solver.prepare_directions` that drops, per
    direction, the fraction ``frac`` of weak beams with the smallest key (1: c_w,
    2: output coupling). Returns (patched function, bound δ per direction)."""
    info = bounds(arrays, kt)
    cut = {}
    deltas = []
    for i, (w, c, c_out, per) in enumerate(info):
        key = (c, c_out)[order_key - 1] if order_key else c
        o = np.argsort(key)[:int(frac * len(w))]
        cut[i] = w[o]
        deltas.append(per * c[o].sum())
    orig = S.prepare_directions

    def patched(arr, k):
        k, two_k_sg, k_n, g_n, strong, weak = orig(arr, k)
        weak = weak.copy()
        for i, cols in cut.items():
            weak[i, cols] = False
        return k, two_k_sg, k_n, g_n, strong, weak
    return patched, np.asarray(deltas)


def cpu_ms(fn, n_dir: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times)) / n_dir * 1e3


def run(name: str, n_dir: int, repeat: int) -> None:
    label, arrays, kt = case(name, n_dir)
    ref_eig = S.solve_chunk(arrays, kt)
    ref = ref_eig.intensities(THICK)
    imax = float(ref.max())
    info = bounds(arrays, kt)
    call = np.concatenate([c for _, c, _, _ in info])
    allowed = []
    for _, c, _, per in info:
        # largest cut with 2δ + δ² ≤ SHARE_TARGET · I_max
        dmax = np.sqrt(1.0 + SHARE_TARGET * imax) - 1.0
        allowed.append(int(np.sum(np.cumsum(np.sort(c)) * per <= dmax)))
    t_full = cpu_ms(lambda: S.solve_chunk(arrays, kt), n_dir, repeat)
    nob = dataclasses.replace(arrays, rules=dataclasses.replace(arrays.rules, bethe=False),
                              lowdin=arrays.lowdin)
    t_none = cpu_ms(lambda: S.solve_chunk(nob, kt), n_dir, repeat)
    k_n = float(np.mean(normal_components(arrays.g, kt, arrays.k_in, arrays.normal)[0]))
    print(f"\n== {label}: {n_dir} directions, strong {ref_eig.n_strong.mean():.0f}, weak "
          f"{ref_eig.n_weak.mean():.0f}, Löwdin terms {arrays.lowdin}, I_max {imax:.3f}, "
          f"K_n {k_n:.1f} Å⁻¹")
    print("  c_w (Å⁻²) quantiles 0/10/50/90/100 %: "
          + " ".join(f"{q:.1e}" for q in np.quantile(call, [0, 0.1, 0.5, 0.9, 1.0])))
    print(f"  bound (|ΔI|/I_max ≤ {SHARE_TARGET:g} up to {THICK.max():g} Å) allows cutting "
          f"{min(allowed)}–{max(allowed)} weak beams per direction")
    print(f"  CPU ms/direction: all weak beams {t_full:.2f}; no weak beam at all {t_none:.2f} "
          f"(the most any cut can gain: {t_full / t_none:.2f}×)")
    for key, kname in ((1, "smallest c_w"), (2, "smallest output coupling")):
        for frac in FRACTIONS:
            patched, delta = drop(arrays, kt, key, frac)
            orig = S.prepare_directions
            S.prepare_directions = patched
            try:
                eig = S.solve_chunk(arrays, kt)
            finally:
                S.prepare_directions = orig
            err = np.abs(eig.intensities(THICK) - ref).max(axis=(1, 2)) / imax
            bound = float(np.max(2 * delta + delta ** 2)) / imax
            print(f"  drop {frac:4.0%} by {kname:24s}: |ΔI|/I_max at "
                  f"{'/'.join(f'{t:g}' for t in THICK)} Å "
                  + " ".join(f"{x:.1e}" for x in err)
                  + f"; bound {bound:.1e} (holds: {bool(err.max() <= bound)})", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["linbo3", "yig", "si"])
    ap.add_argument("--directions", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    for name in args.cases:
        run(name, args.directions, args.repeat)


if __name__ == "__main__":
    main(sys.argv[1:])
