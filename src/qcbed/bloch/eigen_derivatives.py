"""Structure-factor derivatives of the Bloch-wave solution, for every solver mode.

With the eigen-decomposition H = C diag(γ) C⁻¹ of the structure matrix
(H = A′/2K_n), the derivative of the propagator exp(2πi H t) with respect to a
parameter p is C (G_p ∘ Φ) C⁻¹ with G_p = C⁻¹ (∂H/∂p) C and Φ the divided
differences of exp(2πiγt) (Wilcox 1967; Najfeld & Havel 1995; applied in
:meth:`qcbed.bloch.chunks.EigenChunk.gradients`).

The ``exact`` solver has C from the general complex eigen-problem (LAPACK
``zgeev``). The ``fast`` solver has C = B (1 + S₁) W (1 + S₂): the elastic
eigenvectors B (Hermitian ``eigh``) times the perturbative similarity
transformation of the absorption step (:mod:`qcbed.bloch.perturbation`), which
diagonalises H up to terms that change the amplitudes by less than its
a-posteriori bound. The same formula then holds with the fast C and γ: its error is
the perturbative error of C, of the same relative size as the intensities' (see
``tests/test_bloch_fast_derivatives.py``: a few 10⁻⁴ of the largest derivative).

∂H/∂p is the same in both modes: the structure-factor derivatives of U + iU′
gathered into the strong-beam block, the classic Bethe terms differentiated
analytically (:func:`bethe_derivative_terms`), and the Löwdin terms and factor
(:func:`qcbed.bloch.lowdin_jacobian.derivatives`).
"""

from __future__ import annotations

from typing import Any

from .xp import namespace

__all__ = ["bethe_derivative_terms", "eigenbasis_derivatives"]


def bethe_derivative_terms(ztab: Any, dtab: Any, sw: Any, ws: Any, d: Any, da: Any) -> None:
    """Subtract ∂/∂p of the classic Bethe terms Σ_w Z_sw Z_ws/(2K S_w) from ``da``, in place.

    With Z = U + iU′ (Spence & Zuo 1992, eqs. 3.31–3.32 for the complex potential),
    ∂(Z_sw D Z_ws) = ∂Z_sw D Z_ws + Z_sw D ∂Z_ws, D = diag(1/2K S_w).

    Parameters
    ----------
    ztab : (M,) complex
        The U + iU′ table (Å⁻²).
    dtab : (n_par, M) complex
        ∂(U + iU′)/∂p over the table rows.
    sw, ws : int arrays (n_dir, n, n_w) and (n_dir or 1, n_w, n)
        Table rows of the strong-to-weak and weak-to-strong blocks.
    d : (n_dir, 1, n_w)
        1/(2K S_w) (Å²; 0 where w is not weak in that direction).
    da : (n_dir, n_par, n, n) complex
        ∂A/∂p of the strong-beam matrix (Å⁻² per unit of p), updated.
    """
    xp = namespace(da)
    z_sw = xp.take(ztab, sw) * d
    z_ws = xp.take(ztab, ws)
    for p in range(da.shape[1]):
        da[:, p] -= (xp.take(dtab[p], sw) * d) @ z_ws + z_sw @ xp.take(dtab[p], ws)


def eigenbasis_derivatives(vec: Any, dh: Any) -> Any:
    """G_p = C⁻¹ (∂H/∂p) C for each direction and parameter.

    Parameters
    ----------
    vec : (n_dir, n, n) complex
        Eigenvectors C (all rows) of H; directions the physical guard rejected are
        NaN and get G = 0.
    dh : (n_dir, n_par, n, n) complex
        ∂H/∂p (Å⁻¹ per unit of p).

    Returns
    -------
    (n_dir, n_par, n, n) complex
    """
    xp = namespace(vec)
    gmat = xp.zeros(dh.shape, complex)
    ok = xp.nonzero(xp.isfinite(vec).all(axis=(1, 2)))
    if len(ok):
        v = vec[ok]
        # one LU factorisation per direction (C⁻¹), then two products per parameter
        gmat[ok] = xp.inv(v)[:, None] @ (dh[ok] @ v[:, None])
    return gmat
