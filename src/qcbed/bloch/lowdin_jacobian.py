"""Analytic structure-factor derivatives of the Löwdin terms and factor (:mod:`qcbed.bloch.lowdin`).

The transformed strong-beam matrix of a direction is (symmetric form, M = diag(m_g))

    Ã = a₁ − ½ i (H_el S_a + S_a H_el),   a₁ = F† A′ F,   S_a = F† S′_abs F,
    H_el = ½ (a₁ + a₁†),   A′ = (A + ΔA_el + iΔA_abs)/M,   F† (1 + S′) F = 1,

with the Löwdin additions of :func:`qcbed.bloch.lowdin.corrections` (Y = A_Sw X⁻¹,
O the off-diagonal weak–weak block, Z = Y − Y O X⁻¹)

    ΔA_el = Y O Y†,   ΔA_abs = Y O′ Y† + Y O Y′† + Y′ O Y†,
    S = Z M_w² Z†,    S_abs = Y M_w² Y′† + Y′ M_w² Y†.

Each is a polynomial in the structure factors; its derivative follows from the
product rule with ∂Y = ∂A_Sw X⁻¹ and ∂O (both sparse: a structure factor enters
only the table rows of its symmetry equivalents, a few per cent of the blocks, so
those products are taken sparse). The derivative of the factor: with
Y_F = F† ∂S′ F and Λ = tril(Y_F) with half its diagonal, ∂F = −F Λ (F is
lower-triangular; F†(1 + S′)F = 1 to first order needs Λ + Λ† = Y_F). Then

    ∂a₁ = F† ∂A′ F − Λ† a₁ − a₁ Λ,   ∂S_a = F† ∂S′_abs F − Λ† S_a − S_a Λ,

and the output amplitudes φ = F v change by L_p = (∂F)_out F_out⁻¹ + ∂F₀₀/F₀₀
= −F_out Λ_out F_out⁻¹ − Λ₀₀ (the excitations are c_j = F₀₀ v_j(000)*).

This replaces central differences of the whole transformation (two evaluations
of every Löwdin product per parameter); ``tests/test_bloch_lowdin_jacobian.py``
compares the two.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from .lowdin import lowdin_factor

__all__ = ["derivatives"]

#: Fraction of non-zero elements of a derivative block above which its products
#: are taken dense.
SPARSE_DENSITY = 0.15


def _adj(x: np.ndarray) -> np.ndarray:
    return np.conj(np.swapaxes(x, -1, -2))


def _off_diagonal(o: np.ndarray) -> np.ndarray:
    o = o.copy()
    np.fill_diagonal(o, 0.0)
    return o


class _Blocks:
    """A batch of (n_dir, a, b) blocks that is mostly zero, for products with it on the left."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.shape = x.shape
        k, i, j = np.nonzero(x)
        n_dir, a, b = x.shape
        self.sparse = len(k) <= SPARSE_DENSITY * x.size
        if self.sparse:
            v = x[k, i, j]
            self.flat = csr_matrix((v, (k * a + i, j)), shape=(n_dir * a, b))
            self.diag = csr_matrix((v, (k * a + i, k * b + j)), shape=(n_dir * a, n_dir * b))

    def shared(self, r: np.ndarray) -> np.ndarray:
        """x @ r for one matrix r (b, c) shared by the directions."""
        if not self.sparse:
            return self.x @ r
        n_dir, a, _ = self.shape
        return np.asarray(self.flat @ r).reshape(n_dir, a, -1)

    def batched(self, r: np.ndarray) -> np.ndarray:
        """x @ r for one matrix r (b, c) per direction (r: (n_dir, b, c))."""
        if not self.sparse:
            return self.x @ r
        n_dir, a, b = self.shape
        return np.asarray(self.diag @ r.reshape(n_dir * b, -1)).reshape(n_dir, a, -1)


def _times_shared_sparse(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """y @ o for a dense batch y (n_dir, a, b) and one mostly-zero o (b, c)."""
    if np.count_nonzero(o) > SPARSE_DENSITY * o.size:
        return y @ o
    n_dir, a, b = y.shape
    os_t = csr_matrix(o.T)
    return np.asarray(os_t @ y.reshape(-1, b).T).T.reshape(n_dir, a, -1)


def _lower_half(y: np.ndarray) -> np.ndarray:
    """tril(y) with half the diagonal, batched."""
    lam = np.tril(y)
    ar = np.arange(y.shape[-1])
    lam[..., ar, ar] *= 0.5
    return lam


def derivatives(u: np.ndarray, u_abs: np.ndarray, du: np.ndarray, dua: np.ndarray,
                index: np.ndarray, idx: np.ndarray, wcols: np.ndarray, d: np.ndarray,
                m_w2: np.ndarray, a_core: np.ndarray, da: np.ndarray, mm: np.ndarray,
                n_out: int, s_extra: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Structure-factor derivatives of the transformed matrix and of F, analytically.

    Parameters
    ----------
    u, u_abs : ndarray (M,)
        U and U′ tables (Å⁻²).
    du, dua : ndarray (n_par, M)
        ∂U/∂p and ∂U′/∂p.
    index : ndarray (N, N)
        Rows of the tables for g_i − g_j.
    idx : ndarray (n_dir, n)
        Strong beams of each direction.
    wcols : ndarray (n_w,)
        Union of the weak beams of the batch.
    d, m_w2 : ndarray (n_dir, n_w)
        1/(2K S_w) (Å²; 0 where w is not weak in that direction) and 1 + g_n,w/K_n.
    a_core : ndarray (n_dir, n, n)
        A: U + iU′ with the classic Bethe terms (and the tail), not scaled by M.
    da : ndarray (n_dir, n_par, n, n)
        ∂A/∂p.
    mm : ndarray (n_dir, n, n)
        m_g m_h.
    n_out : int
        Output beams.
    s_extra : (S, S_abs), optional
        A fixed overlap added to the weak beams' (the pool's tail,
        :mod:`qcbed.bloch.tail`; held constant under the structure factors).

    Returns
    -------
    dA : ndarray (n_dir, n_par, n, n)
        dÃ/dp × M (the form the caller divides by M).
    L : ndarray (n_dir, n_par, n_out, n_out)
        L_p = (dF/dp)_out F_out⁻¹ + (dF₀₀/dp)/F₀₀: ∂ψ += L_p ψ.
    """
    du = np.atleast_2d(np.asarray(du, complex))
    dua = np.atleast_2d(np.asarray(dua, complex))
    u = np.asarray(u, complex)
    u_abs = np.asarray(u_abs, complex)
    sw = index[idx[:, :, None], wcols[None, None, :]]
    ww = index[np.ix_(wcols, wcols)]
    dw = d[:, None, :]
    mw = m_w2[:, None, :]
    y = u.take(sw) * dw
    ya = u_abs.take(sw) * dw
    o = _off_diagonal(u.take(ww))
    oa = _off_diagonal(u_abs.take(ww))
    yo, yoa = y @ o, y @ oa
    yh, yah = _adj(y), _adj(ya)
    z = y - yo * dw
    t_abs = yo @ yah
    s = (z * mw) @ _adj(z)
    x = (y * mw) @ yah
    s_abs = x + _adj(x)
    if s_extra:
        s, s_abs = s + s_extra[0], s_abs + s_extra[1]
    a_full = (a_core + yo @ yh + 1j * (yoa @ yh + t_abs + _adj(t_abs))) / mm
    f = lowdin_factor(s / mm)
    fh = _adj(f)
    a1 = fh @ a_full @ f
    sa = fh @ (s_abs / mm) @ f
    hel = 0.5 * (a1 + _adj(a1))
    f_out = f[:, :n_out, :n_out]
    inv_out = np.linalg.inv(f_out)
    out = np.empty_like(da)
    lmat = np.empty((len(a_core), len(du), n_out, n_out), complex)
    eye = np.eye(n_out)
    for p in range(len(du)):
        dy = _Blocks(du[p].take(sw) * dw)
        dya = _Blocks(dua[p].take(sw) * dw)
        do = _off_diagonal(du[p].take(ww))
        doa = _off_diagonal(dua[p].take(ww))
        dyo = dy.shared(o) + _times_shared_sparse(y, do)
        dyoa = dy.shared(oa) + _times_shared_sparse(y, doa)
        dz = dy.x - dyo * dw
        dt = dyo @ yah + _adj(dya.batched(_adj(yo)))
        dd_el = dyo @ yh + _adj(dy.batched(_adj(yo)))
        dd_abs = dyoa @ yh + _adj(dy.batched(_adj(yoa))) + dt + _adj(dt)
        ds = (dz * mw) @ _adj(z)
        dx = dy.batched(_adj(ya * mw)) + _adj(dya.batched(_adj(y * mw)))
        yf = fh @ ((ds + _adj(ds)) / mm) @ f
        lam = _lower_half(yf)
        lamh = _adj(lam)
        da1 = fh @ ((da[:, p] + dd_el + 1j * dd_abs) / mm) @ f - lamh @ a1 - a1 @ lam
        dsa = fh @ ((dx + _adj(dx)) / mm) @ f - lamh @ sa - sa @ lam
        dxx = 0.5 * (da1 + _adj(da1)) @ sa + hel @ dsa
        out[:, p] = (da1 - 0.5j * (dxx + _adj(dxx))) * mm
        lmat[:, p] = -(f_out @ lam[:, :n_out, :n_out] @ inv_out)
        lmat[:, p] -= lam[:, 0, 0][:, None, None] * eye
    return out, lmat
