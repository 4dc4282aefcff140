"""Depth dependence of the plasmon-loss electrons in a (D-)LACBED pattern.

qcbed's plasmon model (``qcbed.experiment.plasmon``) convolves the full-thickness
elastic pattern with the plasmon kernel K(q): an electron incident at k − q is
recorded at k with the elastic intensity I_g(k − q), i.e. every loss is taken at
the exit surface (after all diffraction). A loss at depth z instead turns the
whole wavefield at z (each beam's tangential wave vector gains q: the delocalised
plasmon transition potential exp(2πi q·r), Howie 1963, Proc. R. Soc. A 271, 268;
Wang 1995, *Elastic and Inelastic Scattering in Electron Diffraction and Imaging*,
§6) and it propagates the remaining t − z at k. With a uniform event rate per unit
depth (single scattering, Egerton 2011 §3.4) the recorded intensity is

    I_inel(k; q) = (1/t) ∫₀ᵗ |P(k, t − z) P(k − q, z) e₀|²_g dz,
    P(k, d) = C(k) exp(2πi γ(k) d) C(k)⁻¹        (Bloch waves, Spence & Zuo 1992, §2)

Limits: z = t (exit) gives I_g(k − q), the model; z = 0 (entrance) gives I_g(k),
no blur at all. This script evaluates, on a grid of target directions k of the
Si [110] D-LACBED geometry (Felix folder, refined U_g), the single-scattering
plasmon term with the depth average (``depth``), with exit-only losses (``exit``,
the model) and with entrance-only losses (``entrance``), by Monte-Carlo sampling of
q from K (importance sampling, the same q for every target and variant), and how
much of the difference between ``depth`` and ``exit``
is a change of the loss strength (absorbed when ``plasmon.lambda_scale`` is
refined) and what is left.

Zero-order Laue zone beams only (|g| ≤ ``--gmax``), no Bethe potentials: an
estimate of a *relative* effect, not a refinement engine.

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/plasmon_depth.py`` (≈ 5–10 min on
one core). Results: docs/si-u111-bias.md §11.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qcbed.constants import wavenumber
from qcbed.experiment.plasmon import PlasmonLosses
from qcbed.io import read_cif
from qcbed.scattering.structure_factors import PotentialModel, structure_factors

FOLDER = "/work/shared/data/si-110-dlacbed"
#: refined U_g (Å⁻²), default plan with plasmon model (docs/validation.md)
#: (U(222), −0.0007, is left at its IAM value 0: a small term)
REFINED = {(1, 1, 1): 0.047999, (2, 2, 0): 0.041241, (1, 1, 3): 0.023941}
PIXEL = 0.661 / 76  # Å⁻¹ per pixel


def beams(a: float, gmax: float):
    """Zero-layer (h h l) reflections (h, l of one parity: face-centred lattice) of the
    [1-10] zone with |g| ≤ gmax and their
    2-D tangential coordinates (Å⁻¹) in the frame x = [00-1], y = z × x."""
    z = np.array([-1.0, 1.0, 0.0]) / np.sqrt(2)
    x = np.array([0.0, 0.0, -1.0])
    y = np.cross(z, x)
    n = int(gmax * a) + 2
    hkl = [(h, h, l) for h in range(-n, n + 1) for l in range(-2 * n, 2 * n + 1)
           if np.hypot(np.sqrt(2) * h, l) / a <= gmax and (h - l) % 2 == 0]  # F lattice
    hkl = np.array(sorted(hkl, key=lambda v: (abs(v[0]) * 2 + abs(v[2]), v)))
    g3 = hkl / a
    return hkl, np.stack([g3 @ x, g3 @ y], axis=1)


def potential_matrix(crystal, hkl: np.ndarray, voltage: float) -> np.ndarray:
    """U_{g−h} + iU′_{g−h} (Å⁻²), IAM (Kirkland, Bird–King) with the refined low orders."""
    diff = hkl[:, None, :] - hkl[None, :, :]
    uniq, inv = np.unique(diff.reshape(-1, 3), axis=0, return_inverse=True)
    sf = structure_factors(crystal, uniq, voltage, PotentialModel("kirkland", "bird_king"))
    u = sf.u.copy()
    for i, h in enumerate(uniq):
        key = sorted(int(abs(v)) for v in h)
        for ref, val in REFINED.items():
            if key == sorted(ref) and abs(u[i]) > 0:
                u[i] *= abs(val) / abs(u[i])  # the refined modulus, the IAM phase
        if not any(h):
            u[i] = 0.0  # U_0: a common phase
    v = u + 1j * sf.u_abs
    return v[inv.ravel()].reshape(len(hkl), len(hkl))


class Bloch:
    """Eigen-solutions of the structure matrix per tangential direction."""

    def __init__(self, gt: np.ndarray, umat: np.ndarray, k: float):
        self.gt, self.umat, self.k = gt, umat, k

    def solve(self, kt: np.ndarray):
        a = self.umat.copy()
        a[np.diag_indices_from(a)] += -(2 * self.gt @ kt + np.sum(self.gt**2, axis=1))
        lam, c = np.linalg.eig(a)
        return lam / (2 * self.k), c, np.linalg.inv(c)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gmax", type=float, default=1.3)
    ap.add_argument("--thickness", type=float, default=1513.0)
    ap.add_argument("--targets", type=int, default=9, help="targets per side")
    ap.add_argument("--span", type=float, default=56.0, help="half-width of targets (px)")
    ap.add_argument("--nq", type=int, default=256)
    ap.add_argument("--nz", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", default="/tmp/plasmon_depth.npz")
    args = ap.parse_args()
    t0 = time.time()
    crystal = read_cif(f"{FOLDER}/felix.cif")
    voltage = 200.0
    k = float(wavenumber(voltage))
    hkl, gt = beams(5.431, args.gmax)
    bl = Bloch(gt, potential_matrix(crystal, hkl, voltage), k)
    pl = PlasmonLosses(16.6, voltage)
    th_e, th_c = pl.angles_kt()
    # q ~ K: |q|² + θ_E² log-uniform between θ_E² and θ_c² + θ_E², angle uniform
    rng = np.random.default_rng(args.seed)
    s = rng.uniform(np.log(th_e**2), np.log(th_c**2 + th_e**2), args.nq)
    qr = np.sqrt(np.maximum(np.exp(s) - th_e**2, 0.0))
    phi = rng.uniform(0, 2 * np.pi, args.nq)
    qs = np.stack([qr * np.cos(phi), qr * np.sin(phi)], axis=1)
    zs, wz = np.polynomial.legendre.leggauss(args.nz)
    zs, wz = 0.5 * args.thickness * (zs + 1), 0.5 * wz  # mean over z
    t = args.thickness
    out = [0, *[i for i, h in enumerate(hkl) if tuple(h) in
                {(0, 0, 2), (0, 0, -2), (1, 1, 1), (-1, -1, 1), (1, 1, -1), (-1, -1, -1),
                 (2, 2, 0), (-2, -2, 0)}]]
    lin = np.linspace(-args.span, args.span, args.targets) * PIXEL
    targets = [np.array([x, y]) for x in lin for y in lin]
    e0 = np.zeros(len(hkl), complex)
    e0[0] = 1
    print(f"{len(hkl)} beams, {len(targets)} targets, {args.nq} q samples, "
          f"theta_E {th_e:.3g} 1/A ({th_e / PIXEL:.3g} px), theta_c {th_c:.3g} 1/A "
          f"({th_c / PIXEL:.3g} px)", flush=True)

    def pattern(g, c, ci, d):
        return c @ (np.exp(2j * np.pi * g * d) * (ci @ e0))

    el = np.zeros((len(targets), len(out)))
    ex = np.zeros((len(targets), args.nq, len(out)))
    en = np.zeros_like(ex)
    dp = np.zeros_like(ex)
    for it, kt in enumerate(targets):
        g2, c2, ci2 = bl.solve(kt)
        el[it] = np.abs(pattern(g2, c2, ci2, t)[out]) ** 2
        for iq, q in enumerate(qs):
            g1, c1, ci1 = bl.solve(kt - q)
            a1 = ci1 @ e0
            ex[it, iq] = np.abs((c1 @ (np.exp(2j * np.pi * g1 * t) * a1))[out]) ** 2
            en[it, iq] = el[it]
            phi1 = c1 @ (np.exp(2j * np.pi * g1[:, None] * zs[None, :]) * a1[:, None])
            beta = ci2 @ phi1
            psi = c2[out] @ (np.exp(2j * np.pi * g2[:, None] * (t - zs)[None, :]) * beta)
            dp[it, iq] = (np.abs(psi) ** 2) @ wz
        if it % 9 == 8:
            print(f"  {it + 1}/{len(targets)} targets, {time.time() - t0:.0f} s", flush=True)
    np.savez(args.save, el=el, ex=ex, en=en, dp=dp,
             qs=qs, hkl=hkl[out], targets=np.array(targets))
    report(el, ex, en, dp, qs, pl, t)
    print(f"total {time.time() - t0:.0f} s")


def report(el, ex, en, dp, qs, pl, thickness: float = 1513.0) -> None:
    """Print the plasmon terms, exit model against depth average, for several cut-offs."""
    k = float(wavenumber(pl.voltage_kv))
    qabs = np.hypot(qs[:, 0], qs[:, 1]) / k * 1e3  # mrad
    imax = el.max()
    tau = thickness / pl.mfp
    p1 = tau * np.exp(-tau)
    print(f"I_max {imax:.4g}; t/lambda_p {tau:.3f}, P1 {p1:.3f}")
    for cut in (9.83, 4.0, 2.0, 1.0):
        m = qabs <= cut
        frac = m.mean()
        ex_m, en_m, dp_m = (a[:, m].mean(1) for a in (ex, en, dp))
        # the plasmon term (single scattering, kernel normalised within the cut)
        d_model = p1 * (ex_m - el)      # change of the pattern by the losses, model
        d_true = p1 * (dp_m - el)       # depth-averaged
        dev = p1 * (dp_m - ex_m)
        # how much of the deviation is a change of the loss strength (what refining
        # plasmon.lambda_scale absorbs): dev ≈ (a − 1)·d_model + residual, scale and
        # one background per reflection free
        nt, nb = el.shape
        cols = np.column_stack([d_model.ravel(), el.ravel(), np.kron(np.ones((nt, 1)),
                                                                    np.eye(nb))])
        sol, *_ = np.linalg.lstsq(cols, dev.ravel(), rcond=None)
        resid = dev.ravel() - cols @ sol
        rms_model = np.sqrt((d_model**2).mean()) / imax
        print(f"cut {cut:5.2f} mrad (K fraction {frac:.2f}): max|model term| "
              f"{np.abs(d_model).max() / imax:.2e} I_max, rms {rms_model:.2e}; "
              f"depth-averaged term max {np.abs(d_true).max() / imax:.2e}; "
              f"depth - exit: max {np.abs(dev).max() / imax:.2e}, rms "
              f"{np.sqrt((dev**2).mean()) / imax:.2e} I_max; ratio rms(depth term)/rms(model term) "
              f"{np.sqrt((d_true**2).mean() / (d_model**2).mean()):.3f}; "
              f"entrance-limit term rms {np.sqrt(((p1 * (en_m - el))**2).mean()) / imax:.1e}")
        print(f"    depth-averaged = exit model x {1 + sol[0]:.3f} (strength) + residual rms "
              f"{np.sqrt((resid**2).mean()) / imax:.2e} I_max")


if __name__ == "__main__":
    main()
