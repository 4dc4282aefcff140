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

__all__ = ["corrections", "lowdin_factor", "overlap", "overlap_abs", "transform",
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
