"""Analytic structure-factor derivatives of the Löwdin terms and factor (:mod:`qcbed.bloch.lowdin`).

The transformed strong-beam matrix of a direction is (symmetric form, M = diag(m_g))

    Ã = a₁ − ½ i (H_el S_a + S_a H_el),   a₁ = F† A′ F,   S_a = F† S′_abs F,
    H_el = ½ (a₁ + a₁†),   A′ = (A + ΔA_el + iΔA_abs)/M,   F† (1 + S′) F = 1,

with the Löwdin additions of :func:`qcbed.bloch.lowdin.bethe_terms` (Y = A_Sw X⁻¹,
O the off-diagonal weak–weak block, O′ the absorptive one with the weak beams' own
absorption on its diagonal, Z = Y − Y O X⁻¹)

    ΔA_el = Y O Y†,   ΔA_abs = Y O′ Y† + Y O Y′† + Y′ O Y†,
    S = Z M_w² Z†,    S_abs = Y M_w² Y′† + Y′ M_w² Y†.

With the second orders of :mod:`qcbed.bloch.lowdin` (its ``WEAK_SECOND_ORDER`` and
``ENERGY_SECOND_ORDER``), Q = Y O X⁻¹ O adds −Q Y† to ΔA_el and
−(Q Y′† + Y O′ X⁻¹ O Y† + h.c.) to ΔA_abs, Z = Y − Y O X⁻¹ + Q X⁻¹, and a₁ becomes
a₁ − ½(a₁² T̃₂ + T̃₂ a₁²) with T̃₂ = F† T₂′ F, T₂ = Z M_w² X⁻¹ M_w² Z†; their
derivatives follow by the same product rule (∂T̃₂ = F† ∂T₂′ F − Λ† T̃₂ − T̃₂ Λ).

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

from . import lowdin
from .lowdin import TailRows, _adj, _off_diagonal, lowdin_factor
from .xp import NUMPY

__all__ = ["derivatives"]

#: Fraction of non-zero elements of a derivative block above which its products
#: are taken dense.
SPARSE_DENSITY = 0.15


class _Blocks:
    """∂Y = ∂A_Sw X⁻¹ of one parameter (n_dir, n, n_w): mostly zero, kept sparse for
    the products with it on the left.

    Parameters
    ----------
    table : (M,)
        ∂U/∂p (or ∂U′/∂p) over the table rows.
    sw : (n_dir, n, n_w) int
        Table rows of the strong-to-weak blocks.
    dw : (n_dir, 1, n_w)
        1/(2K S_w).
    """

    def __init__(self, table: np.ndarray, sw: np.ndarray, dw: np.ndarray) -> None:
        hit = np.zeros(len(table), bool)
        hit[np.flatnonzero(table)] = True
        self.where = k, i, j = np.nonzero(hit[sw])   # a boolean gather: no values yet
        self.values = table[sw[k, i, j]] * dw[k, 0, j]
        self.shape = n_dir, a, b = sw.shape
        self.sparse = len(k) <= SPARSE_DENSITY * sw.size
        if self.sparse:
            v = self.values
            self.flat = csr_matrix((v, (k * a + i, j)), shape=(n_dir * a, b))
            self.diag = csr_matrix((v, (k * a + i, k * b + j)), shape=(n_dir * a, n_dir * b))
        else:
            self.x = self.plus(np.zeros(self.shape, self.values.dtype))

    def plus(self, x: np.ndarray) -> np.ndarray:
        """x + ∂Y, in place."""
        x[self.where] += self.values
        return x

    def shared(self, r: np.ndarray) -> np.ndarray:
        """∂Y @ r for one matrix r (b, c) shared by the directions."""
        if not self.sparse:
            return self.x @ r
        n_dir, a, _ = self.shape
        return np.asarray(self.flat @ r).reshape(n_dir, a, -1)

    def batched(self, r: np.ndarray) -> np.ndarray:
        """∂Y @ r for one matrix r (b, c) per direction (r: (n_dir, b, c))."""
        if not self.sparse:
            return self.x @ r
        n_dir, a, b = self.shape
        return np.asarray(self.diag @ r.reshape(n_dir * b, -1)).reshape(n_dir, a, -1)


def _times_shared_sparse(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """y @ o for a dense batch y (n_dir, a, b) and one mostly-zero o (b, c)."""
    if np.count_nonzero(o) > SPARSE_DENSITY * o.size:
        return y @ o
    n_dir, a, b = y.shape
    # (y o)ᵀ = oᵀ yᵀ: the sparse factor on the left
    yt = np.ascontiguousarray(y.reshape(-1, b).T)
    return np.ascontiguousarray(np.asarray(csr_matrix(o.T) @ yt).T).reshape(n_dir, a, -1)


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, a real factor times a complex one as real products (half the flops)."""
    ca, cb = np.iscomplexobj(a), np.iscomplexobj(b)
    if ca == cb:
        return a @ b
    if cb:
        return NUMPY.real_times_complex(a, b)
    return _adj(NUMPY.real_times_complex(_adj(b), _adj(a)))


def _lower_half(y: np.ndarray) -> np.ndarray:
    """tril(y) with half the diagonal, batched."""
    lam = np.tril(y)
    ar = np.arange(y.shape[-1])
    lam[..., ar, ar] *= 0.5
    return lam


def derivatives(u: np.ndarray, u_abs: np.ndarray, du: np.ndarray, dua: np.ndarray,
                index: np.ndarray, idx: np.ndarray, wcols: np.ndarray, d: np.ndarray,
                m_w2: np.ndarray, a_core: np.ndarray, da: np.ndarray, mm: np.ndarray,
                n_out: int, s_extra: list | None = None, tail: TailRows | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
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
    tail : TailRows, optional
        The tail on the weak rows (:func:`qcbed.bloch.lowdin.tail_rows`; ``d`` holds the
        shifted 2K S_w): fixed additions to A_Sw and O, held constant likewise.

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
    extra = () if tail is None else tuple(
        x for x in (tail.sw_el, tail.sw_abs, tail.ww_el, tail.ww_abs, tail.ov_el, tail.ov_abs)
        if x is not None)
    real = all(np.abs(x.imag).max(initial=0.0) <= 1e-12 * np.abs(x).max(initial=0.0)
               for x in (u, u_abs, du, dua, *map(np.asarray, extra)))
    if real:
        # centrosymmetric, origin at the centre: the weak-beam products are real
        u, u_abs, du, dua = u.real, u_abs.real, du.real, dua.real
    sw = index[idx[:, :, None], wcols[None, None, :]]
    ww = index[np.ix_(wcols, wcols)]
    dw = d[:, None, :]
    mw = m_w2[:, None, :]
    u_sw, ua_sw = u.take(sw), u_abs.take(sw)
    o = _off_diagonal(u.take(ww))
    # O′ with the weak beams' own absorption on its diagonal (lowdin.WEAK_OWN_ABSORPTION)
    own = lowdin.WEAK_OWN_ABSORPTION
    oa = u_abs.take(ww) if own else _off_diagonal(u_abs.take(ww))
    if tail is not None:
        # the tail's fixed additions (per direction: O becomes a batch)
        cast = (lambda x: np.asarray(x).real) if real else (lambda x: np.asarray(x, complex))
        u_sw, ua_sw = u_sw + cast(tail.sw_el), ua_sw + cast(tail.sw_abs)
        o, oa = o + cast(tail.ww_el), oa + cast(tail.ww_abs)
    weak2, energy2 = lowdin.WEAK_SECOND_ORDER, lowdin.ENERGY_SECOND_ORDER
    y = u_sw * dw
    ya = ua_sw * dw
    yo, yoa = y @ o, y @ oa
    yh, yah = _adj(y), _adj(ya)
    yoh, yoah, ymh = _adj(yo), _adj(yoa), _adj(y * mw)
    z = y - yo * dw
    t_abs = yo @ yah
    extra = 0.0
    if weak2:
        # Q = P X⁻¹ O (P = Y O): −Q Y† and −(Q Y′† + P′ X⁻¹ P† + h.c.), Z = (U − P + Q) X⁻¹
        q = (yo * dw) @ o
        qh = _adj(q)
        z = z + q * dw
        w = q @ yah + (yoa * dw) @ yoh
        extra = -(q @ yh) - 1j * (w + _adj(w))
    s = (z * mw) @ _adj(z)
    x = (y * mw) @ yah
    ov_el = ov_abs = None
    if tail is not None and tail.ov_el is not None:
        # the tail's overlap on the strong–weak rows: −(S_t,Sw Z† + h.c.) in S and S_abs
        cast_ov = (lambda v: np.asarray(v).real) if real else (lambda v: np.asarray(v, complex))
        ov_el, ov_abs = cast_ov(tail.ov_el), cast_ov(tail.ov_abs)
        v = ov_el @ _adj(z)
        s = s - v - _adj(v)
        x = x - ov_abs @ _adj(z)
    s_abs = x + _adj(x)
    if s_extra:
        s, s_abs = s + s_extra[0], s_abs + s_extra[1]
    a_full = (a_core + yo @ yh + 1j * (yoa @ yh + t_abs + _adj(t_abs)) + extra) / mm
    f = lowdin_factor(s / mm)
    fh = _adj(f)
    a1 = _mul(_mul(fh, a_full), f)
    if energy2:
        # −½(Ã² T̃₂ + T̃₂ Ã²), T₂ = Z M_w² X⁻¹ M_w² Z† (lowdin.transform)
        zm = z * mw
        t2 = fh @ (((zm * dw) @ _adj(zm)) / mm) @ f
        a2 = a1 @ a1
        ac = a1 - 0.5 * (a2 @ t2 + t2 @ a2)
    else:
        ac = a1
    sa = fh @ (s_abs / mm) @ f
    hel = 0.5 * (ac + _adj(ac))
    f_out = f[:, :n_out, :n_out]
    inv_out = np.linalg.inv(f_out)
    out = np.empty_like(da)
    lmat = np.zeros((len(a_core), len(du), n_out, n_out), complex)
    eye = np.eye(n_out)
    for p in range(len(du)):
        # ∂ of ΔA_el + iΔA_abs (``dd``), of S (``ds``) and of S_abs (``dx`` + h.c.); U
        # and U′ enter different factors, and a parameter often moves only one
        dd = da[:, p].copy()
        ds = dx = dt2 = None
        if np.any(du[p]):
            dy = _Blocks(du[p], sw, dw)
            do = _off_diagonal(du[p].take(ww))
            dyo = (dy.shared(o) if o.ndim == 2 else dy.batched(o)) + _times_shared_sparse(y, do)
            dt = dyo @ yah
            dd += dyo @ yh + _adj(dy.batched(yoh))
            # ∂Y O′ Y† + Y O′ ∂Y†: O′ is Hermitian, so ∂Y O′ Y† = ∂Y (Y O′)† (sparse)
            dyoay = dy.batched(yoah)
            dd += 1j * (dyoay + _adj(dyoay) + dt + _adj(dt))
            dz = -dyo * dw
            if weak2:
                # ∂(−P X⁻¹ P†), ∂Q = ∂P X⁻¹ O + P X⁻¹ ∂O, ∂P′ = ∂Y O′
                dq = (dyo * dw) @ o + _times_shared_sparse(yo * dw, do)
                xq = (dyo * dw) @ yoh
                dpa = dy.shared(oa) if oa.ndim == 2 else dy.batched(oa)
                xa = dq @ yah + (dpa * dw) @ yoh + (yoa * dw) @ _adj(dyo)
                dd -= xq + _adj(xq) + 1j * (xa + _adj(xa))
                dz += dq * dw
            dzz = dy.plus(dz)                         # ∂Z
            dzm = dzz * mw                            # ∂Z M_w²
            ds = dzm @ _adj(z)
            if ov_el is not None:
                ds -= ov_el @ _adj(dzz)
            ds += _adj(ds)
            if energy2:
                dt2 = (dzm * dw) @ _adj(zm)
                dt2 += _adj(dt2)
            dx = dy.batched(_adj(ya * mw))
            if ov_abs is not None:
                dx = dx - ov_abs @ _adj(dzz)
        if np.any(dua[p]):
            dya = _Blocks(dua[p], sw, dw)
            doa = dua[p].take(ww) if own else _off_diagonal(dua[p].take(ww))
            dt = _adj(dya.batched(yoh))
            dd += 1j * (_times_shared_sparse(y, doa) @ yh + dt + _adj(dt))
            if weak2:
                # ∂ of −(Q Y′† + P′ X⁻¹ P† + h.c.) with ∂Y′ and ∂P′ = Y ∂O′
                xa = _adj(dya.batched(qh)) + (_times_shared_sparse(y, doa) * dw) @ yoh
                dd -= 1j * (xa + _adj(xa))
            dxa = _adj(dya.batched(ymh))
            dx = dxa if dx is None else dx + dxa
        da1 = _mul(_mul(fh, dd / mm), f)
        dsa = 0.0 if dx is None else fh @ ((dx + _adj(dx)) / mm) @ f
        if ds is not None:
            lam = _lower_half(fh @ (ds / mm) @ f)
            lamh = _adj(lam)
            da1 -= _mul(lamh, a1) + _mul(a1, lam)
            dsa = dsa - lamh @ sa - sa @ lam
            lmat[:, p] = -(f_out @ lam[:, :n_out, :n_out] @ inv_out)
            lmat[:, p] -= lam[:, 0, 0][:, None, None] * eye
        if energy2:
            # ∂ of −½(Ã² T̃₂ + T̃₂ Ã²), ∂T̃₂ = F† ∂T₂′ F − Λ† T̃₂ − T̃₂ Λ
            da2 = da1 @ a1 + a1 @ da1
            x = da2 @ t2 + t2 @ da2
            if dt2 is not None:
                dtt = fh @ (dt2 / mm) @ f - lamh @ t2 - t2 @ lam
                x = x + a2 @ dtt + dtt @ a2
            da1 = da1 - 0.5 * x
        dxx = _mul(0.5 * (da1 + _adj(da1)), sa)
        if dx is not None or ds is not None:
            dxx += _mul(hel, dsa)
        out[:, p] = (da1 - 0.5j * (dxx + _adj(dxx))) * mm
    return out, lmat
