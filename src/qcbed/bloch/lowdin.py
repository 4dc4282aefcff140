"""Energy-dependent (Löwdin) Bethe potentials: the first order in λ/(2K S_w).

Eliminating the weak beams w from the Bloch-wave equations exactly gives an
eigenvalue-dependent strong-beam matrix (Löwdin 1951; Bethe 1928; for CBED
Birkeland, Holmestad, Marthinsen & Høier 1996, *Ultramicroscopy* 66, 89)

    A_eff(λ) = A_SS − Σ_w A_Sw A_wS / (2K S_w − λ m_w²),   m_w² = 1 + g_n,w/K_n.

The classic Bethe potential (Spence & Zuo 1992, eqs. 3.31–3.32; Zuo &
Weickenmeier 1995) keeps λ = 0. Its error is of first order in λ/(2K S_w): the
Bloch waves of strongly excited beams away from the Bragg condition have
|λ| of a few Å⁻², and beams with 2K S_w of 10–30 Å⁻² (far zero-layer beams,
the first HOLZ layer near the zone axis) then shift the eigenvalues wrongly by
~10⁻⁵ Å⁻², a phase error of a few 10⁻³ at 1500 Å (measured on Si [1-10],
docs/validation.md). Expanding to first order in λ,

    A_eff(λ) ≈ A₀ − λ S,   S = Σ_w A_Sw m_w² A_wS / (2K S_w)²,

turns the problem into the generalised Hermitian eigen-problem
A₀ C = λ (M² + S) C. In the symmetric form of the solver (φ = M C,
A′ = M⁻¹ A M⁻¹) it reads A′ φ = λ (1 + S′) φ with S′ = M⁻¹ S M⁻¹, which is
solved as an ordinary one by a factor F with F† (1 + S′) F = 1:

    Ã = F† A′ F,   Ã v = λ v,   φ = F v.

1 + S′ is also the norm of the full eigenvector (strong plus weak components,
|C_w|² = |Σ_h A_wh C_h|²/(2K S_w)²), so φ are the strong components of
orthonormal full Bloch waves and the excitations from the entrance condition
over *all* beams are c_j = φ_j(000)* (not a solution of B c = e₀ on the strong
beams only). F is taken lower-triangular (a Cholesky factor in reversed order):
the output rows of φ then need only the output rows of v, and
c_j = F₀₀ v_j(000)*.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batch_terms", "corrections", "derivatives", "lowdin_factor", "overlap",
           "overlap_abs", "transform",
           "weak_coupling"]


def lowdin_factor(s: np.ndarray) -> np.ndarray:
    """Lower-triangular F with F† (1 + S) F = 1, batched.

    Parameters
    ----------
    s : ndarray (n_dir, n, n)
        Hermitian positive semi-definite overlap correction S′ (dimensionless).

    Returns
    -------
    ndarray (n_dir, n, n)
        F = P L⁻† P, where P reverses the beam order and P (1 + S) P = L L†.
    """
    n = s.shape[-1]
    ov = s[:, ::-1, ::-1].copy()
    ar = np.arange(n)
    ov[:, ar, ar] += 1.0
    low = np.linalg.cholesky(ov)
    eye = np.broadcast_to(np.eye(n, dtype=low.dtype), low.shape)
    inv = np.linalg.solve(low, eye)               # L⁻¹ (lower)
    f = np.conj(np.swapaxes(inv, 1, 2))           # L⁻† (upper)
    return np.ascontiguousarray(f[:, ::-1, ::-1])  # P L⁻† P (lower)



def _adj(x: np.ndarray) -> np.ndarray:
    return np.conj(np.swapaxes(x, -1, -2))


def _off_diagonal(o: np.ndarray) -> np.ndarray:
    o = o.copy()
    np.fill_diagonal(o, 0.0)
    return o


def weak_coupling(y_sw: np.ndarray, u_ww: np.ndarray, y_ws: np.ndarray) -> np.ndarray:
    """Second-order Bethe term Y O Y_ws of the weak–weak coupling, batched.

    With X = diag(2K S_w) and O the off-diagonal weak–weak block (U_{w−w′}),
    (X + O)⁻¹ = X⁻¹ − X⁻¹ O X⁻¹ + … (Spence & Zuo 1992, §3.4), so the Bethe
    potentials −A_Sw (X + O)⁻¹ A_wS gain + Y O Y_ws, Y = A_Sw X⁻¹,
    Y_ws = X⁻¹ A_wS.

    Parameters
    ----------
    y_sw : ndarray (n_dir, n, n_w)
        U_{g−w}/(2K S_w) (Å⁻² · Å²; 0 where w is not weak in that direction).
    u_ww : ndarray (n_w, n_w)
        U_{w−w′} among the weak beams (Å⁻²; the diagonal is ignored).
    y_ws : ndarray (n_dir, n_w, n)
        U_{w−h}/(2K S_w).

    Returns
    -------
    ndarray (n_dir, n, n)
        The term to add to the strong-beam matrix (Å⁻²).
    """
    return (y_sw @ _off_diagonal(u_ww)) @ y_ws


def overlap(u_sw: np.ndarray, u_ww: np.ndarray, d: np.ndarray, m_w2: np.ndarray
            ) -> np.ndarray:
    """S = Z M_w² Z†, Z = A_Sw (X + O)⁻¹ ≈ Y − Y O X⁻¹ (elastic U), batched.

    Parameters
    ----------
    u_sw : ndarray (n_dir, n, n_w)
        Elastic U_{g−w} (Å⁻²).
    u_ww : ndarray (n_w, n_w)
        Elastic U_{w−w′} (Å⁻²; the diagonal is ignored).
    d : ndarray (n_dir, n_w)
        1/(2K S_w) for the weak beams of each direction, 0 elsewhere (Å²).
    m_w2 : ndarray (n_dir, n_w)
        1 + g_n,w/K_n.

    Returns
    -------
    ndarray (n_dir, n, n)
        S (dimensionless, Hermitian, positive semi-definite), not yet scaled by M.
    """
    y = u_sw * d[:, None, :]
    z = y - (y @ _off_diagonal(u_ww)) * d[:, None, :]
    return (z * m_w2[:, None, :]) @ _adj(z)


def overlap_abs(u_sw: np.ndarray, y_abs: np.ndarray, d: np.ndarray, m_w2: np.ndarray
                ) -> np.ndarray:
    """Absorptive part S′ of the overlap, first order in U′: Y M_w² Y′† + Y′ M_w² Y†.

    With A_eff(λ) = A₀ + iA₀′ − λ (S + iS′), the transformed problem
    (Ã + iÃ′ − iλ S̃′) v = λ v is, to first order in U′, the Hermitian pair
    Ã and Ã′ − ½(Ã S̃′ + S̃′ Ã) (λ replaced by Ã on either side).

    Parameters
    ----------
    u_sw : ndarray (n_dir, n, n_w)
        Elastic U_{g−w} (Å⁻²).
    y_abs : ndarray (n_dir, n, n_w)
        U′_{g−w}/(2K S_w).
    d, m_w2 : ndarray (n_dir, n_w)
        As in :func:`overlap`.
    """
    y = u_sw * (d * m_w2)[:, None, :]
    x = y @ _adj(y_abs)
    return x + _adj(x)


def corrections(u_sw: np.ndarray, u_ww: np.ndarray, ua_sw: np.ndarray | None,
                ua_ww: np.ndarray | None, d: np.ndarray, m_w2: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Everything the solver adds to the classic Bethe potentials, batched.

    The same approximation in every solver mode: the weak–weak term
    (:func:`weak_coupling`) and the overlap (:func:`overlap`, :func:`overlap_abs`)
    to first order in U′, as Hermitian elastic and absorptive parts. Two products
    with the (n_w × n_w) weak–weak blocks per call, shared by all terms.

    Parameters
    ----------
    u_sw, ua_sw : ndarray (n_dir, n, n_w)
        Elastic U_{g−w} and absorptive U′_{g−w} (Å⁻²); ``ua_sw`` None without absorption.
    u_ww, ua_ww : ndarray (n_w, n_w)
        U_{w−w′} and U′_{w−w′} among the weak beams (Å⁻²).
    d, m_w2 : ndarray (n_dir, n_w)
        1/(2K S_w) (0 where w is not weak in that direction, Å²) and 1 + g_n,w/K_n.

    Returns
    -------
    d_el, d_abs : ndarray (n_dir, n, n)
        Additions to the elastic and absorptive strong-beam matrices (Å⁻²;
        ``d_abs`` None without absorption): Y O Y† and Y O′ Y† + Y O Y′† + Y′ O Y†.
    s, s_abs : ndarray (n_dir, n, n)
        The overlap S = Z M_w² Z† (Z = Y − Y O X⁻¹) and its absorptive part
        Y M_w² Y′† + Y′ M_w² Y† (not yet scaled by M).
    """
    y = u_sw * d[:, None, :]
    yo = y @ _off_diagonal(u_ww)
    yh = _adj(y)
    d_el = yo @ yh
    z = y - yo * d[:, None, :]
    s = (z * m_w2[:, None, :]) @ _adj(z)
    if ua_sw is None or ua_ww is None:
        return d_el, None, s, None
    y_abs = ua_sw * d[:, None, :]
    t_abs = yo @ _adj(y_abs)
    d_abs = (y @ _off_diagonal(ua_ww)) @ yh + t_abs + _adj(t_abs)
    x = (y * m_w2[:, None, :]) @ _adj(y_abs)
    return d_el, d_abs, s, x + _adj(x)


def transform(a: np.ndarray, aabs: np.ndarray | None, s: np.ndarray, s_abs: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The ordinary eigen-problem Ã = F† A′ F of A′ φ = λ (1 + S′ + iS′_abs) φ, batched.

    Parameters
    ----------
    a : ndarray (n_dir, n, n)
        A′ in the symmetric form (Å⁻²): the elastic matrix, or U + iU′ (``aabs`` None).
    aabs : ndarray (n_dir, n, n) or None
        The absorptive matrix A′_abs of the ``fast`` solver.
    s, s_abs : ndarray (n_dir, n, n)
        S′ and S′_abs in the symmetric form (M⁻¹ S M⁻¹).

    Returns
    -------
    a, aabs : ndarray
        Ã and Ã_abs − ½(Ã S̃′ + S̃′ Ã) (for U + iU′ in ``a``: Ã − ½ i (Ã_el S̃′ + S̃′ Ã_el),
        Ã_el its Hermitian part).
    f : ndarray (n_dir, n, n)
        The lower-triangular factor (:func:`lowdin_factor`).
    """
    f = lowdin_factor(s)
    fh = _adj(f)
    a = fh @ a @ f
    if aabs is not None:
        aabs = fh @ aabs @ f
    if s_abs is not None:
        sa = fh @ s_abs @ f
        if aabs is not None:
            x = a @ sa
            aabs = aabs - 0.5 * (x + _adj(x))
        else:
            x = 0.5 * (a + _adj(a)) @ sa
            a = a - 0.5j * (x + _adj(x))
    return a, aabs, f


def batch_terms(u: np.ndarray, u_abs: np.ndarray, index: np.ndarray, idx: np.ndarray,
                wcols: np.ndarray, d: np.ndarray, m_w2: np.ndarray, *, real: bool,
                with_abs: bool
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """:func:`corrections` for one solver batch, gathered from the U tables (host numpy).

    Parameters
    ----------
    u, u_abs : ndarray (M,)
        Elastic U and absorptive U′ tables (Å⁻²).
    index : ndarray (N, N)
        Rows of the tables for g_i − g_j.
    idx : ndarray (n_dir, n)
        Strong beams of each direction.
    wcols : ndarray (n_w,)
        Union of the weak beams of the batch.
    d, m_w2 : ndarray (n_dir, n_w)
        1/(2K S_w) (0 where not weak) and 1 + g_n,w/K_n.
    real : bool
        Centrosymmetric: real tables and products.
    with_abs : bool
        Absorptive parts too.
    """
    ue = u.real if real else u
    ua = u_abs.real if real else u_abs
    sw = index[idx[:, :, None], wcols[None, None, :]]
    ww = index[np.ix_(wcols, wcols)]
    return corrections(ue.take(sw), ue.take(ww), ua.take(sw) if with_abs else None,
                       ua.take(ww) if with_abs else None, d, m_w2)


def derivatives(u: np.ndarray, u_abs: np.ndarray, du: np.ndarray, dua: np.ndarray,
                index: np.ndarray, idx: np.ndarray, wcols: np.ndarray, d: np.ndarray,
                m_w2: np.ndarray, a_core: np.ndarray, da: np.ndarray, mm: np.ndarray,
                n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Structure-factor derivatives of the transformed matrix and of F (``exact`` mode).

    Ã(p) = F† (A + ΔA_Löwdin) F / M depends on the structure factors through A
    (``da``, analytic) and through the Löwdin terms and F, differentiated by
    central differences (step 10⁻⁴ of max |U|; they are polynomials of degree ≤ 4
    in U, so the error is ~10⁻⁸ of these small terms).

    Parameters
    ----------
    u, u_abs : ndarray (M,)
        U and U′ tables (Å⁻²).
    du, dua : ndarray (n_par, M)
        ∂U/∂p and ∂U′/∂p.
    index, idx, wcols, d, m_w2
        As in :func:`batch_terms`.
    a_core : ndarray (n_dir, n, n)
        A (U + iU′ with the classic Bethe terms), not scaled by M.
    da : ndarray (n_dir, n_par, n, n)
        ∂A/∂p.
    mm : ndarray (n_dir, n, n)
        m_g m_h.
    n_out : int
        Output beams.

    Returns
    -------
    dA : ndarray (n_dir, n_par, n, n)
        dÃ/dp × M (the form the caller divides by M).
    L : ndarray (n_dir, n_par, n_out, n_out)
        L_p = (dF/dp)_out F_out⁻¹ + (dF₀₀/dp)/F₀₀: ∂ψ += L_p ψ.
    """
    du = np.atleast_2d(np.asarray(du, complex))
    dua = np.atleast_2d(np.asarray(dua, complex))
    s0 = batch_terms(u, u_abs, index, idx, wcols, d, m_w2, real=False, with_abs=False)[2]
    f0 = lowdin_factor(s0 / mm)
    inv_out = np.linalg.inv(f0[:, :n_out, :n_out])
    out = np.empty_like(da)
    lmat = np.empty((len(a_core), len(du), n_out, n_out), complex)
    scale = float(np.abs(u).max())
    for p in range(len(du)):
        big = max(float(np.abs(du[p]).max()), float(np.abs(dua[p]).max()), 1e-300)
        step = 1e-4 * scale / big
        res = []
        for sgn in (1.0, -1.0):
            d_el, d_abs, s, s_abs = batch_terms(u + sgn * step * du[p],
                                                u_abs + sgn * step * dua[p], index, idx,
                                                wcols, d, m_w2, real=False, with_abs=True)
            ap = (a_core + sgn * step * da[:, p] + d_el + 1j * d_abs) / mm
            at, _, f = transform(ap, None, s / mm, s_abs / mm)
            res.append((at, f))
        out[:, p] = (res[0][0] - res[1][0]) / (2 * step) * mm
        df = (res[0][1] - res[1][1]) / (2 * step)
        lmat[:, p] = df[:, :n_out, :n_out] @ inv_out
        lmat[:, p] += (df[:, 0, 0] / f0[:, 0, 0])[:, None, None] * np.eye(n_out)
    return out, lmat
