"""Second-order correction from the beams outside the pool (the pool's *tail*).

Beams w outside the pool are far from the Bragg condition in every direction of
the tilt disc (|2K S_w| ≫ |U|). Eliminating them to second order shifts the
pool's structure matrix by the Bethe terms (Bethe 1928; Spence & Zuo 1992,
§3.4 and eqs. 3.31–3.32; Zuo & Weickenmeier 1995), with the energy dependence
of Löwdin (1951) to first order in λ/(2K S_w) (m² = 1 + g_n/K_n):

    A_eff(λ) = A − W − λ S,   W_gh = Σ_w Z_{g−w} Z_{w−h} / (2K S_w),
                              S_gh = Σ_w Z_{g−w} m_w² Z_{w−h} / (2K S_w)²,

Z = U + iU′ (absorption included). −W is added to the strong-beam matrix (its
Hermitian part to the elastic block, its anti-Hermitian part /i to the
absorptive one) and S to the Löwdin overlap of :mod:`qcbed.bloch.lowdin`, which
solves A′ φ = λ (1 + S′) φ exactly as for the pool's own weak beams. (Van
Vleck's symmetric form with λ_g ≈ 2K S_g fails here: the pool's edge beams have
2K S_g as large as the nearest tail beams' 2K S_w, and the Bloch waves that carry
the intensity have λ near 0; measured in docs/validation.md.) W and S vary
slowly and smoothly over the small tilt range of a pattern (2K S_w of a far beam
changes by 2 g_t·δk_t), so they are computed exactly at a few directions of the
disc and fitted by a cubic polynomial in k_t; per direction only the fitted
N × N matrices are evaluated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .geometry import excitation_errors, normal_components

__all__ = ["TailCorrection", "build_tail", "fit_points"]

#: Exponents (i, j) of the fit polynomial x^i y^j in the reduced tilt (k_t − c)/r.
_POWERS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))


def _basis(kt: np.ndarray, center: np.ndarray, radius: float, n_terms: int) -> np.ndarray:
    x = (np.atleast_2d(kt) - center[None, :]) / radius
    return np.stack([x[:, 0] ** i * x[:, 1] ** j for i, j in _POWERS[:n_terms]], axis=1)


def fit_points(center: ArrayLike, radius: float) -> np.ndarray:
    """Directions (k_t, Å⁻¹) at which the tail is computed exactly: the centre,
    6 at half the radius and 12 on the rim (19 points)."""
    c = np.asarray(center, float).reshape(2)
    pts = [c]
    for frac, n in ((0.5, 6), (1.0, 12)):
        ang = 2 * np.pi * (np.arange(n) + 0.25) / n
        pts.extend(c + frac * radius * np.stack([np.cos(ang), np.sin(ang)], 1))
    return np.asarray(pts)


@dataclass(frozen=True, repr=False)
class TailCorrection:
    """Fitted second-order terms of the beams outside the pool.

    Attributes
    ----------
    center : ndarray (2,)
        Centre of the tilt disc (Å⁻¹).
    radius : float
        Radius of the disc (Å⁻¹) used to reduce k_t.
    w, s : ndarray (n_terms, N, N) complex
        Polynomial coefficients of W = Σ_w Z_{g−w} Z_{w−h}/(2K S_w) (Å⁻²) and
        S = Σ_w Z_{g−w} m_w² Z_{w−h}/(2K S_w)² (dimensionless).
    n_beams : int
        Number of tail beams eliminated.
    fit_error : float
        Largest |ΔA| misfit of the polynomial at check directions between the
        fit points (Å⁻²), against max |ΔA|.
    size : float
        max |ΔA| over the fit points (Å⁻²).
    """

    center: np.ndarray
    radius: float
    w: np.ndarray
    s: np.ndarray
    n_beams: int
    fit_error: float
    size: float

    def __repr__(self) -> str:
        # the executors fingerprint the engine state by repr: it must cover every value
        h = hashlib.blake2b(digest_size=16)
        for a in (self.center, np.float64(self.radius), self.w, self.s):
            h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
        return f"TailCorrection(n_beams={self.n_beams}, digest={h.hexdigest()})"

    def terms(self, kt: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W and S (n_dir, n, n) at directions ``kt`` on the pool rows ``idx`` (n_dir, n)."""
        b = _basis(kt, self.center, self.radius, len(self.w))
        rows, cols = idx[:, :, None], idx[:, None, :]
        w = np.einsum("dk,kdij->dij", b, self.w[:, rows, cols])
        s = np.einsum("dk,kdij->dij", b, self.s[:, rows, cols])
        return w, s

    def blocks(self, kt: np.ndarray, idx: np.ndarray, *, exact: bool, real: bool
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """The solver's additions on the strong rows ``idx`` (n_dir, n) at ``kt``.

        Returns (ΔA, ΔA_abs, S, S_abs): ΔA = −W as elastic and absorptive blocks
        (:func:`split`; in ``exact`` mode the full −W and None), and the Löwdin
        overlap S, S_abs (Hermitian and anti-Hermitian/i parts, not scaled by M).
        """
        w, s = self.terms(kt, idx)
        d_el, d_abs = split(-w, exact, real)
        s_el, s_abs = split(s, False, real)
        return d_el, d_abs, s_el, s_abs


def _exact_terms(z_sw: np.ndarray, z_ws: np.ndarray, o_ww: np.ndarray, g_tail: np.ndarray,
                 kt: np.ndarray, k_in: float, normal: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """W and S at one direction, with the tail's own coupling O to first order:
    (X + O)⁻¹ ≈ X⁻¹ − X⁻¹ O X⁻¹ (Spence & Zuo 1992, §3.4), as for the pool's weak
    beams (:func:`qcbed.bloch.lowdin.bethe_terms`)."""
    x = excitation_errors(g_tail, kt[None, :], k_in)[0]
    k_n, g_n = normal_components(g_tail, kt[None, :], k_in, normal)
    m2 = 1.0 + g_n / k_n[0]
    left = z_sw / x[None, :]                       # Z_sw X⁻¹
    right = z_ws / x[:, None]                      # X⁻¹ Z_ws
    lo = left @ o_ww
    w = left @ z_ws - lo @ right
    s = ((left - lo / x[None, :]) * m2[None, :]) @ (right - (o_ww @ right) / x[:, None])
    return w, s


def _z_block(compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
             rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Z = U + iU′ of g_i − g_j for hkl ``rows`` × ``cols`` (one call on the unique list)."""
    diff = (rows[:, None, :] - cols[None, :, :]).reshape(-1, 3)
    uniq, inv = np.unique(diff, axis=0, return_inverse=True)
    u, ua = compute(uniq)
    z = np.asarray(u, complex) + 1j * np.asarray(ua, complex)
    return z[inv.reshape(-1)].reshape(len(rows), len(cols))


def build_tail(pool_hkl: np.ndarray, tail_hkl: np.ndarray, g_tail: np.ndarray,
               compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *,
               k_in: float, normal: np.ndarray, center: ArrayLike, radius: float,
               n_terms: int = 10) -> TailCorrection:
    """Compute and fit the tail terms of the beams ``tail_hkl`` for the pool ``pool_hkl``.

    Parameters
    ----------
    pool_hkl : ndarray (N, 3) int
    tail_hkl : ndarray (M, 3) int
        Beams outside the pool (none of them in it).
    g_tail : ndarray (M, 3)
        Their frame components (Å⁻¹).
    compute : callable
        ``compute(hkl) -> (U, U′)`` in Å⁻² (the engine's internal origin).
    k_in : float
        K (Å⁻¹).
    normal : ndarray (3,)
        Unit surface normal (frame components).
    center, radius
        The tilt disc (Å⁻¹); radius 0 is treated as 10⁻³ Å⁻¹.
    n_terms : int
        Polynomial terms: 1 (constant), 3 (linear), 6 (quadratic) or 10 (cubic).
    """
    c = np.asarray(center, float).reshape(2)
    r = max(float(radius), 1e-3)
    ph = np.asarray(pool_hkl, np.int64)
    th = np.asarray(tail_hkl, np.int64)
    z_sw = _z_block(compute, ph, th)
    z_ws = _z_block(compute, th, ph)
    o_ww = _z_block(compute, th, th)
    np.fill_diagonal(o_ww, 0.0)
    pts = fit_points(c, r)
    ws, ss = zip(*(_exact_terms(z_sw, z_ws, o_ww, g_tail, p, k_in, normal) for p in pts))
    ws, ss = np.asarray(ws), np.asarray(ss)
    b = _basis(pts, c, r, n_terms)
    pinv = np.linalg.pinv(b)
    w_coef = np.einsum("kp,pij->kij", pinv, ws)
    s_coef = np.einsum("kp,pij->kij", pinv, ss)
    # misfit at directions between the fit points (W only: S is ≲ 10 % of it)
    chk = fit_points(c, 0.75 * r)[1:7:2]
    bc = _basis(chk, c, r, n_terms)
    misfit = 0.0
    for p, bp in zip(chk, bc):
        w_ex, _ = _exact_terms(z_sw, z_ws, o_ww, g_tail, p, k_in, normal)
        misfit = max(misfit, float(np.abs(np.einsum("k,kij->ij", bp, w_coef) - w_ex).max()))
    size = float(np.abs(ws).max())
    return TailCorrection(c, r, w_coef, s_coef, len(th), misfit / max(size, 1e-30), size)


def split(delta: np.ndarray, exact: bool, real: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """ΔA as the solver's blocks: (elastic, absorptive), or (ΔA, None) in ``exact`` mode.

    The elastic block takes the Hermitian part (Δ + Δ†)/2 (its real part when the
    elastic matrix is real), the absorptive block (Δ − Δ†)/2i.
    """
    if exact:
        return delta, None
    adj = np.conj(np.swapaxes(delta, -1, -2))
    el, ab = 0.5 * (delta + adj), -0.5j * (delta - adj)
    if real:
        return el.real, ab.real
    return el, ab
