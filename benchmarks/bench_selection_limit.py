"""What limits the strong-beam selection error: the orders of the weak-beam elimination.

For one incident direction of a Felix folder's check sample, the intensities of the
strong-beam problem with the weak beams eliminated (Löwdin 1951 partitioning; Bethe
1928; Zuo & Weickenmeier 1995; Spence & Zuo 1992, §3.4) are compared with every pool
beam strong, in exact complex algebra (no fast-solver approximations, no pool tail):

    A_eff(λ) = A_SS − A_Sw (A_ww − λ M_w²)⁻¹ A_wS,   A = 2K S_g δ_gh + U_{g−h} + iU′_{g−h},

solved as A₀ v = λ (M_S² + S) v with A₀ = A_eff(0), S = A_Sw G M_w² G A_wS (first order
in λ), G one of

* ``first-order O``: (X + O)⁻¹ ≈ X⁻¹ − X⁻¹ O X⁻¹ with the weak diagonal X = 2K S_w
  real — the expansion the engine uses (:func:`qcbed.bloch.lowdin.bethe_terms`,
  which also drops the weak beams' own absorption U′₀);
* ``first-order O + U′₀``: the same with the weak diagonal 2K S_w + iU′₀;
* ``exact resolvent``: G = (A_ww)⁻¹ with the weak diagonal real;
* ``exact resolvent + U′₀``: G = (A_ww)⁻¹ (every order in the weak–weak coupling);
* ``second-order O`` (± ``lambda^2``): (X + O)⁻¹ to second order in O/X, and the λ²
  term as a first-order eigenvalue correction — what the engine does since session 9
  (:mod:`qcbed.bloch.lowdin`);

and, last, the Brillouin–Wigner self-consistent λ (the exact energy dependence) for
the Bloch waves with |c_j B_0j| above ``--bw``: what no expansion point can improve.
The excitations are those of the full biorthonormal Bloch waves (strong components
from the reduced problem, weak components −G(λ) A_wS v). The remainder against every
beam strong is then the weak-branch Bloch waves, which no elimination keeps.

Run from the repository root (the pool is the one the default set-up chose, its
tail left out; ``--sgmin`` one or more ladder rungs)::

    python benchmarks/bench_selection_limit.py FOLDER --direction 0 --sgmin 3.5 8

One JSON line per (direction, sgmin): errors max |ΔI|/I_max over the outputs and the
check thicknesses, relative to that direction's largest reference intensity.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.linalg import eig

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _amplitudes(lam, vec, c, kn2, t, n_out):
    return np.array([vec[:n_out] @ (np.exp(2j * np.pi * lam / kn2 * tk) * c) for tk in t])


def _reduced(a, s_idx, w_idx, m2, g, lambda2=False):
    """Eigen-solution of A₀ v = λ (M_S² + S) v and the excitations c_j (first order in λ;
    ``lambda2``: each eigenvalue corrected by −λ² (l T₂ r)/(l (M² + S) r), T₂ = A_Sw G M_w²
    G M_w² G A_wS, the first-order perturbation of the λ² term)."""
    a_sw, a_ws = a[np.ix_(s_idx, w_idx)], a[np.ix_(w_idx, s_idx)]
    mw = m2[w_idx][:, None]
    a0 = a[np.ix_(s_idx, s_idx)] - a_sw @ g @ a_ws
    b = np.diag(m2[s_idx]) + a_sw @ g @ (mw * (g @ a_ws))
    lam, left, right = eig(a0, b, left=True)
    norm = np.einsum("ij,ij->j", left.conj(), b @ right)
    if lambda2:
        t2 = a_sw @ g @ (mw * (g @ (mw * (g @ a_ws))))
        lam = lam - lam ** 2 * np.einsum("ij,ij->j", left.conj(), t2 @ right) / norm
    return lam, right, left.conj()[0] * m2[s_idx][0] / norm


def _brillouin_wigner(a, s_idx, w_idx, m2, lam, right, c, pick, iters=40):
    """Exact λ dependence for the Bloch waves ``pick``: λ = eigenvalue of A_eff(λ)."""
    a_ss = a[np.ix_(s_idx, s_idx)]
    a_sw, a_ws, a_ww = (a[np.ix_(s_idx, w_idx)], a[np.ix_(w_idx, s_idx)],
                        a[np.ix_(w_idx, w_idx)])
    ms, mw = np.diag(m2[s_idx]), np.diag(m2[w_idx])
    lam, right, c = lam.copy(), right.copy(), c.copy()
    for k in pick:
        lk, prev = lam[k], right[:, k] / np.linalg.norm(right[:, k])
        for _ in range(iters):
            gk = np.linalg.inv(a_ww - lk * mw)
            ll, vl, vr = eig(a_ss - a_sw @ gk @ a_ws, ms, left=True)
            # the root that continues this Bloch wave: largest overlap with its vector
            # (nearest λ alone jumps between near-degenerate waves)
            i = int(np.argmax(np.abs(prev.conj() @ vr) / np.linalg.norm(vr, axis=0)))
            done = abs(ll[i] - lk) < 1e-11
            lk, prev = ll[i], vr[:, i] / np.linalg.norm(vr[:, i])
            if done:
                break
        vs, us = vr[:, i], vl[:, i]
        vw = -gk @ (a_ws @ vs)
        uw = -np.linalg.inv(a_ww.conj().T - np.conj(lk) * mw) @ (a_sw.conj().T @ us)
        norm = us.conj() @ (m2[s_idx] * vs) + uw.conj() @ (m2[w_idx] * vw)
        lam[k], right[:, k], c[k] = lk, vs, us.conj()[0] * m2[s_idx][0] / norm
    return lam, right, c


def decompose(folder: Path, directions: list[int], sgmins: list[float], bw: float):
    """Yield one dict of errors per (direction, sgmin)."""
    from qcbed.bloch.beams import BeamSelection, select_strong
    from qcbed.bloch.geometry import excitation_errors, normal_components
    from qcbed.bloch.simulation import Simulation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = Simulation.from_felix(folder)
    arr = sim.arrays
    t = np.asarray(sim.check_thickness, float)
    kt_all = sim._check_kt
    u = arr.u[arr.index]
    ua = arr.u_abs[arr.index]
    n_out = arr.n_out
    for j in directions:
        kt = kt_all[j:j + 1]
        x = excitation_errors(arr.g, kt, arr.k_in)[0]
        k_n, g_n = normal_components(arr.g, kt, arr.k_in, arr.normal)
        m2 = 1.0 + g_n / k_n[0]
        kn2 = 2.0 * k_n[0]
        a = u + 1j * ua
        a[np.diag_indices_from(a)] = x + 1j * np.diag(ua)
        t0 = time.perf_counter()
        lam, vec = eig(a, np.diag(m2))
        e0 = np.zeros(len(x))
        e0[0] = 1.0
        full = np.abs(_amplitudes(lam, vec, np.linalg.solve(vec, e0), kn2, t, n_out)) ** 2
        i_max = float(full.max())
        for sg in sgmins:
            rules = BeamSelection(sgmin=sg, omega=30.0, min_strong=sim.selection.min_strong)
            strong, weak = select_strong(x[None], arr.selection_coupling, n_out, rules)
            s_idx, w_idx = np.nonzero(strong[0])[0], np.nonzero(weak[0])[0]
            a_ww = a[np.ix_(w_idx, w_idx)]
            xw = np.diag(a_ww)
            off = a_ww - np.diag(xw)
            out = {"folder": folder.name, "direction": j, "sgmin": sg,
                   "strong": len(s_idx), "weak": len(w_idx), "pool": len(x)}

            def err(lam_, vec_, c_, kn2=kn2, full=full, i_max=i_max):
                amp = _amplitudes(lam_, vec_, c_, kn2, t, n_out)
                return float(np.abs(np.abs(amp) ** 2 - full).max() / i_max)

            for name, diag in (("first-order O", xw.real), ("first-order O + U'0", xw)):
                inv = np.diag(1.0 / diag)
                out[name] = err(*_reduced(a, s_idx, w_idx, m2, inv - inv @ off @ inv))
            inv = np.diag(1.0 / xw.real)
            out["first-order O + lambda^2"] = err(*_reduced(a, s_idx, w_idx, m2,
                                                           inv - inv @ off @ inv, True))
            # the engine since session 9: O and λ to second order
            inv = np.diag(1.0 / xw.real)
            g2 = inv - inv @ off @ inv + inv @ off @ inv @ off @ inv
            out["second-order O"] = err(*_reduced(a, s_idx, w_idx, m2, g2))
            out["second-order O + lambda^2"] = err(*_reduced(a, s_idx, w_idx, m2, g2, True))
            out["exact resolvent"] = err(*_reduced(
                a, s_idx, w_idx, m2, np.linalg.inv(a_ww - 1j * np.diag(xw.imag))))
            sol = _reduced(a, s_idx, w_idx, m2, np.linalg.inv(a_ww))
            out["exact resolvent + U'0"] = err(*sol)
            out["exact resolvent + U'0 + lambda^2"] = err(*_reduced(
                a, s_idx, w_idx, m2, np.linalg.inv(a_ww), True))
            pick = np.nonzero(np.abs(sol[2] * sol[1][0]) > bw)[0]
            out["+ exact lambda (BW)"] = err(*_brillouin_wigner(a, s_idx, w_idx, m2, *sol,
                                                                pick))
            out["bw_waves"] = len(pick)
            out["s"] = round(time.perf_counter() - t0, 1)
            yield out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--direction", type=int, nargs="+", default=[0],
                    help="indices into the 13 check directions (0: the disc centre)")
    ap.add_argument("--sgmin", type=float, nargs="+", default=[3.5, 8.0])
    ap.add_argument("--bw", type=float, default=3e-3,
                    help="exact λ for Bloch waves with |c B_0| above this")
    args = ap.parse_args()
    for rec in decompose(args.folder, args.direction, args.sgmin, args.bw):
        print(json.dumps({k: (f"{v:.2e}" if isinstance(v, float) and k not in ("sgmin", "s")
                              else v) for k, v in rec.items()}), flush=True)


if __name__ == "__main__":
    main()
