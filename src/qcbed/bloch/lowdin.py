"""Energy-dependent (Löwdin) Bethe potentials: the second order in λ/(2K S_w) and in O/X.

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

**Second orders (session 9).** Two truncations of the expansion above limit how few
strong beams reach a given accuracy (measured on Si [1-10], GaAs, TiNiSn, BaTiO3;
docs/validation.md, "Second order in the weak–weak coupling and in λ"):

* the weak–weak coupling O is taken to second order, (X + O)⁻¹ ≈ X⁻¹ − X⁻¹OX⁻¹ +
  X⁻¹OX⁻¹OX⁻¹ (the Neumann series of the Schur complement; Löwdin 1951), in the
  Bethe terms (elastic −P X⁻¹ P†, P = Y O; absorptive −(Q Y′† + P′X⁻¹P† + h.c.),
  Q = P X⁻¹ O, P′ = Y O′) and in the overlap (Z = (U_Sw − P + Q) X⁻¹);
* the energy dependence is taken to second order, A_eff(λ) ≈ A₀ − λS − λ²T₂ with
  T₂ = Σ_w A_Sw m_w⁴ A_wS/(2K S_w)³ = Z M_w² X⁻¹ M_w² Z† (Å²). The problem stays
  linear: Ã is replaced by Ã − ½(Ã² T̃₂ + T̃₂ Ã²), T̃₂ = F† T₂′ F, whose left and right
  eigenvectors give λ − λ² ⟨T̃₂⟩ to first order in T₂ — the Rayleigh–Schrödinger
  correction of the λ² term (a Brillouin–Wigner step; Löwdin 1951). With the fast
  solver's separate absorptive block, Ã → Ã + iÃ_abs in Ã² (the elastic Ã² − Ã_abs²,
  the absorptive Ã Ã_abs + Ã_abs Ã), which keeps it within 10⁻⁴ of the exact solver.

**The weak beams' own absorption (session 12).** To first order in U′ the absorptive
weak–weak block O′ enters as Y O′ Y† (and −(P′ X⁻¹ P† + h.c.) at second order), the
first-order term of (X + O + iO′)⁻¹ = X⁻¹ − iX⁻¹O′X⁻¹ + …. Its diagonal is each weak
beam's own absorption U′₀ (with the tail, plus the tail's absorptive shift of it): the
term U′₀ Y Y† is the absorption of the weak beams' share Σ_w |C_w|² of each Bloch wave,
which the strong rows alone (normalised with the overlap S) do not carry. It was left
out before session 12 (:data:`WEAK_OWN_ABSORPTION`); on TiNiSn (U′₀ = 0.004 Å⁻², 859
pool beams) keeping it takes the selection error at sgmin 5 from 7.8 × 10⁻⁴ to
4.9 × 10⁻⁴ against every pool beam strong (docs/validation.md).

**The pool's tail on the weak rows.** The beams outside the pool (the *tail*,
:mod:`qcbed.bloch.tail`) turn the pool's problem into (A − W) C = λ (M² + S_t) C on the
whole pool (W = Z_pt (X_t + O_t)⁻¹ Z_tp, S_t its Löwdin overlap; Löwdin 1951, Spence &
Zuo 1992, §3.4). Eliminating the pool's weak beams from *that* matrix, not from A,
replaces in every term above

    A_Sw → A_Sw − W_Sw,   O → O − W_ww (off-diagonal),   X = 2K S_w → 2K S_w − W_ww,

with −W split into its Hermitian part (the elastic U_Sw, O) and anti-Hermitian part/i
(the absorptive U′_Sw, O′); the weak diagonal's absorptive shift joins the weak beams'
own U′₀ on the diagonal of O′ (above). The classic term −A_Sw X⁻¹ A_wS then holds the paths
strong → weak → tail → strong (U_Sw X⁻¹ W_wS) that the tail on the strong block alone
misses, and 1/(2K S_w − W_ww) the tail's shift of each weak beam's own excitation
(second order in the coupling like the weak–weak term). The tail's overlap S_t makes
the weak beams' resolvent (X + O − λ(M_w² + S_t,ww))⁻¹ and their coupling
A_Sw − λ S_t,Sw; to first order in λ the overlap of the elimination gains
Z S_t,ww Z† − S_t,Sw Z† − Z S_t,wS. The first-order terms in Z, −(S_t,Sw Z† + h.c.)
(and with S_t's absorptive part in S_abs), are kept (session 10,
:data:`TAIL_OVERLAP_ON_WEAK_ROWS`): without them the reference (every pool beam strong,
S_t on every row) and the selection treat the tail's λ-dependence differently, which
for a large tail dominated the selection error (BaTiO₃ P6₃/mmc, 6 681 tail beams,
sgmin 3.5: 1.8 × 10⁻² → 1.3 × 10⁻³; Si D-LACBED sgmin 2: 2.8 → 1.7 × 10⁻⁴;
docs/validation.md). Z S_t,ww Z†, second order in Z, is left out. W and S_t are held
constant under the structure factors in the derivatives
(:mod:`qcbed.bloch.lowdin_jacobian`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .tail import fit_on_rows

if TYPE_CHECKING:
    from .tail import TailCorrection

__all__ = ["TailRows", "batch_terms", "bethe_terms", "derivatives_central", "lowdin_factor",
           "single_tables", "tail_rows", "transform"]

#: The pool's tail (:mod:`qcbed.bloch.tail`) acts on the weak rows of the elimination too
#: (:func:`tail_rows`; the module docstring). False: on the strong rows only, as before
#: (kept for the comparison in ``benchmarks/bench_pool_disc.py tail`` and the tests).
TAIL_ON_WEAK_ROWS = True

#: The tail's Löwdin overlap on the strong–weak rows, −(S_t,Sw Z† + Z S_t,wS), enters the
#: overlap of the elimination (the module docstring). False: left out, as before
#: session 10 (kept for the comparisons in the tests and docs/validation.md).
TAIL_OVERLAP_ON_WEAK_ROWS = True

#: The weak–weak coupling to second order ((X + O)⁻¹ ≈ X⁻¹ − X⁻¹OX⁻¹ + X⁻¹OX⁻¹OX⁻¹;
#: the module docstring). False: first order, as before session 9 (kept for the
#: comparisons in ``benchmarks/bench_second_order.py`` and the tests).
WEAK_SECOND_ORDER = True

#: The weak beams' own absorption (U′₀ and the tail's absorptive shift on the weak
#: diagonal) enters the absorptive weak–weak block O′ (the module docstring). False:
#: dropped, as before session 12.
WEAK_OWN_ABSORPTION = True

#: The energy dependence to second order in λ/(2K S_w) (−λ² T₂; the module docstring).
#: False: first order, as before session 9.
ENERGY_SECOND_ORDER = True


@dataclass(frozen=True)
class TailRows:
    """The pool's tail (:mod:`qcbed.bloch.tail`) on the weak rows of one batch.

    Attributes
    ----------
    sw_el, sw_abs : ndarray (n_dir, n, n_w)
        Elastic and absorptive parts of ΔA = −W on the strong–weak block (Å⁻²).
    ww_el, ww_abs : ndarray (n_dir, n_w, n_w)
        The same on the weak–weak block. ``ww_el`` has a zero diagonal (the diagonal
        shifts 2K S_w); ``ww_abs`` keeps the tail's absorptive shift of each weak beam on
        its diagonal (with ``pool`` plus U′₀) when :data:`WEAK_OWN_ABSORPTION`.
    pool : bool
        The blocks hold the pool's own couplings too (U + ΔA on the strong–weak and
        weak–weak blocks, :func:`tail_rows` with ``pool``): :func:`batch_terms` takes
        them as they are instead of gathering U and adding.
    ov_el, ov_abs : ndarray (n_dir, n, n_w) or None
        The tail's Löwdin overlap S_t on the strong–weak block, its Hermitian and
        anti-Hermitian/i parts (dimensionless, not scaled by M): the overlap's
        −(S_t,Sw Z† + Z S_t,wS) (the module docstring); None where left out
        (:data:`TAIL_OVERLAP_ON_WEAK_ROWS`).
    """

    sw_el: np.ndarray
    sw_abs: np.ndarray
    ww_el: np.ndarray
    ww_abs: np.ndarray
    pool: bool = False
    ov_el: np.ndarray | None = None
    ov_abs: np.ndarray | None = None

    def z_sw(self) -> np.ndarray:
        """ΔZ_sw = ΔA_el + iΔA_abs on the strong–weak block (complex, Å⁻²)."""
        return self.sw_el + 1j * self.sw_abs


def tail_rows(tail: TailCorrection, kt: np.ndarray, idx: np.ndarray, wcols: np.ndarray,
              d: np.ndarray, *, exact: bool, real: bool,
              pool: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
              ) -> tuple[tuple, TailRows, np.ndarray]:
    """The tail's terms of a batch on its strong and weak rows.

    Parameters
    ----------
    tail : TailCorrection
    kt : ndarray (n_dir, 2)
        Directions (Å⁻¹).
    idx : ndarray (n_dir, n)
        Strong beams of each direction.
    wcols : ndarray (n_w,)
        Union of the weak beams of the batch.
    d : ndarray (n_dir, n_w)
        1/(2K S_w) (0 where w is not weak).
    exact, real : bool
        Solver mode and real matrices (as :meth:`TailCorrection.blocks`).
    pool : (u, u_abs, index), optional
        The pool's U and U′ tables in the coefficients' precision (:func:`single_tables`)
        and their (N, N) index: the weak-row blocks then hold U + ΔA, the whole coupling
        (``TailRows.pool``), added to the constant term of the fit before the
        per-direction sums — no gather of U per direction and no separate addition.

    Returns
    -------
    strong : tuple
        (ΔA, ΔA_abs, S, S_abs) on the strong rows, as :meth:`TailCorrection.blocks`.
    rows : TailRows
        The weak-row blocks (with ``pool``: the whole couplings).
    d : ndarray (n_dir, n_w)
        1/(2K S_w + ΔA_el,ww) (0 where w is not weak): the weak diagonal shifted.

    Notes
    -----
    Per tile, the coefficients' weak columns ``wcols`` are gathered once per batch. The
    fit's terms are summed by one GEMM of the basis against the coefficients on the rows
    some direction of the tile needs (the union of the strong rows; the weak rows ``wcols``
    are shared), and each direction's strong–strong and strong–weak blocks are then
    gathered once (:func:`qcbed.bloch.tail.fit_on_rows`); the weak–weak block is that
    GEMM alone (evaluating the whole pool's rows and gathering from them took 1.16× as
    long in a line profile of the Si D-LACBED image). Before, each term was gathered,
    scaled and added per direction: the union's GEMM took the Si D-LACBED image to 0.94×
    its time (alternating, 3 rounds, median).
    """
    n_dir, n = idx.shape
    n_w = len(wcols)
    coef = tail.coef
    n_terms = coef.shape[2]
    ar = np.arange(n_w)
    base = None
    if pool is not None:
        # U_{p−w}, U′_{p−w} on every pool row p (N, n_w): the basis's constant term
        # carries them (the fit's first polynomial is 1); U₀ on the weak–weak diagonal
        # is zeroed below with the tail's (2K S_w holds it)
        cols = pool[2][:, wcols]
        base = np.stack([pool[0].take(cols), pool[1].take(cols)])
    dt = coef.dtype if base is None else np.result_type(coef.dtype, base)
    # the elastic and absorptive ΔA, and with the overlap on the weak rows S_t's parts
    n_parts = 4 if TAIL_OVERLAP_ON_WEAK_ROWS else 2
    ss = np.empty((4, n_dir, n * n), coef.dtype)
    sw = np.empty((n_parts, n_dir, n, n_w), dt)
    ww = np.empty((2, n_dir, n_w, n_w), dt)
    shift = np.empty((n_dir, n_w))
    tile = tail.tile_of(kt)
    for k in np.unique(tile):
        rows = np.nonzero(tile == k)[0]
        one = len(rows) == n_dir
        b = tail.basis(kt[rows], int(k))                         # (n_k, n_terms)
        cf = coef[k]                                             # (4, n_terms, N, N)
        ir = idx if one else idx[rows]
        acc = fit_on_rows(b, cf, ir, square=True).reshape(4, len(rows), n * n)
        cw = np.take(cf[:n_parts], wcols, axis=3)                # (n_parts, n_terms, N, n_w)
        # the weak diagonal's shift: the tail's own (not U₀)
        shift[rows] = (b @ cw[0][:, wcols, ar]).real
        if base is not None:
            cw = cw.astype(dt, copy=False)
            cw[:2, 0] += base
        blk_sw = fit_on_rows(b, cw, ir, square=False)
        cww = np.take(cw[:2], wcols, axis=2).reshape(2, n_terms, n_w * n_w)
        blk_ww = (b @ cww).reshape(2, len(rows), n_w, n_w)
        if one:
            ss, sw, ww = acc, blk_sw, blk_ww
        else:
            ss[:, rows], sw[:, rows], ww[:, rows] = acc, blk_sw, blk_ww
    ss = ss.reshape(4, n_dir, n, n)
    if exact:
        strong = (ss[0] + 1j * ss[1].astype(complex), None, *_tail_parts(ss[2], ss[3], real))
    else:
        strong = (*_tail_parts(ss[0], ss[1], real), *_tail_parts(ss[2], ss[3], real))
    d = d / (1.0 + d * shift)
    ww[0][..., ar, ar] = 0.0
    if not WEAK_OWN_ABSORPTION:
        ww[1][..., ar, ar] = 0.0
    sw_el, sw_abs = _tail_parts(sw[0], sw[1], real)
    ww_el, ww_abs = _tail_parts(*ww, real)
    ov = _tail_parts(sw[2], sw[3], real) if n_parts == 4 else (None, None)
    return strong, TailRows(sw_el, sw_abs, ww_el, ww_abs, pool is not None, *ov), d


def _tail_parts(el: np.ndarray, ab: np.ndarray, real: bool) -> tuple[np.ndarray, np.ndarray]:
    """Real parts where the solver's matrices are real; unlike
    :meth:`TailCorrection.blocks` the coefficients' single precision is kept (the weak-row
    blocks enter the single-precision Bethe products of the ``fast`` solver)."""
    if real and np.iscomplexobj(el):
        return el.real, ab.real
    return el, ab


def _trtri(low: np.ndarray) -> np.ndarray:
    """Inverses of a batch of lower-triangular matrices (LAPACK ``?trtri``, n³/3 each:
    an eighth of a general solve against the identity)."""
    from scipy.linalg import get_lapack_funcs

    (trtri,) = get_lapack_funcs(("trtri",), (low[:1],))
    out = np.empty_like(low)
    for i, m in enumerate(low):
        out[i], info = trtri(m, lower=1)
        if info:
            raise np.linalg.LinAlgError("singular Löwdin factor")
    return out


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
    inv = _trtri(np.linalg.cholesky(ov))          # L⁻¹ (lower)
    return np.ascontiguousarray(_adj(inv)[:, ::-1, ::-1])   # P L⁻† P (lower)


def _adj(x: np.ndarray) -> np.ndarray:
    """Batched conjugate transpose (a transposed view for real arrays)."""
    xt = np.swapaxes(x, -1, -2)
    return np.conj(xt) if np.iscomplexobj(xt) else xt


def _off_diagonal(o: np.ndarray) -> np.ndarray:
    """o with a zero diagonal (one matrix or a batch, on the last two axes): ``o`` itself
    when its diagonal is zero already (:func:`batch_terms` clears it in its own blocks),
    else a copy."""
    ar = np.arange(o.shape[-1])
    if not np.any(o[..., ar, ar]):
        return o
    o = o.copy()
    o[..., ar, ar] = 0.0
    return o


#: The ``fast`` solver takes the Bethe products and the transformation's correction in
#: single precision (:func:`bethe_terms`, :func:`transform`): on the Si D-LACBED at
#: converged defaults they change the intensities by ~10⁻⁷ of the maximum to 3000 Å
#: (benchmarks/bench_lowdin.py, tests/test_bloch_lowdin.py). False: double precision.
SINGLE_PRECISION = True

#: Structure factors below this (Å⁻²) are set to zero before single-precision products:
#: their products would be subnormal floats (< 1.2 × 10⁻³⁸), which x86 processors
#: multiply some hundred times slower (the gathered blocks of Si held U ~ 10⁻²² Å⁻²
#: and made the weak–weak product 1.6× slower). 10⁻¹⁵ Å⁻² is 10⁻¹³ of U₁₁₁.
FLUSH_BELOW = 1e-15


def _flush(u: np.ndarray) -> np.ndarray:
    return np.where(np.abs(u) < FLUSH_BELOW, 0.0, u)


def _single(x: np.ndarray) -> np.ndarray:
    return x.astype(np.complex64 if np.iscomplexobj(x) else np.float32, copy=False)


def single_tables(u: np.ndarray, u_abs: np.ndarray, real: bool) -> tuple[np.ndarray, np.ndarray]:
    """The U and U′ tables (Å⁻²) of the single-precision Bethe products: real parts for
    a real problem, values below :data:`FLUSH_BELOW` zeroed, float32 or complex64."""
    if real:
        u, u_abs = u.real, u_abs.real
    return _single(_flush(u)), _single(_flush(u_abs))


def _gram(z: np.ndarray) -> np.ndarray:
    """Z Z† (a real Z times its own transposed view: BLAS ``syrk``, half the work)."""
    return z @ _adj(z)


def bethe_terms(u_sw: np.ndarray, ua_sw: np.ndarray | None, u_ww: np.ndarray,
                ua_ww: np.ndarray | None, d: np.ndarray, m_w2: np.ndarray, *,
                single: bool = False, classic: bool = True, energy2: bool = False,
                ov_el: np.ndarray | None = None, ov_abs: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None,
                           np.ndarray | None]:
    """Every Bethe term of the weak beams at once: classic, weak–weak and overlap, batched.

    With X = diag(2K S_w), O and O′ the off-diagonal weak–weak blocks (U_{w−w′},
    U′_{w−w′}), Y = U_Sw X⁻¹ and Y′ = U′_Sw X⁻¹, eliminating the weak beams with
    (X + O)⁻¹ ≈ X⁻¹ − X⁻¹ O X⁻¹ (Spence & Zuo 1992, §3.4; Bethe 1928) to first order
    in U′ gives the elastic and absorptive additions

        ΔA = −Y (X − O) Y† + Y′ X Y′†,
        ΔA′ = −(T Y′† + Y′ T†) + Y O′ Y†,     T = U_Sw − Y O = Y (X − O),

    and with :data:`WEAK_SECOND_ORDER` the next term X⁻¹OX⁻¹OX⁻¹ too (the module
    docstring): T = U_Sw − P + Q (P = Y O, Q = P X⁻¹ O) in every term above, and
    ΔA′ −= P′ X⁻¹ P† + P X⁻¹ P′† (P′ = Y O′); two more products of (n × n_w)·(n_w × n_w)
    and (n × n_w)·(n_w × n) size.

    (the first terms −U_Sw X⁻¹ U_wS and −(U X⁻¹ U′† + U′ X⁻¹ U†) are the classic
    Bethe potentials, Spence & Zuo 1992, eqs. 3.31–3.32), and the Löwdin overlap
    (the module docstring) S = Z M_w² Z†, Z = U_Sw (X + O)⁻¹ ≈ T X⁻¹, with its
    absorptive part Y M_w² Y′† + Y′ M_w² Y†. U and U′ are Hermitian tables
    (U_{−g} = U_g*), so U_wS = U_Sw†. Written this way the classic and second-order
    terms share their products: (n × n_w)·[O | O′] with the weak–weak blocks and five
    of (n × n_w)·(n_w × n) size (S a Gram matrix, half of one).

    Parameters
    ----------
    u_sw, ua_sw : ndarray (n_dir, n, n_w)
        Elastic U_{g−w} and absorptive U′_{g−w} (Å⁻²); ``ua_sw`` None without absorption.
    u_ww, ua_ww : ndarray (n_w, n_w) or (n_dir, n_w, n_w)
        U_{w−w′} and U′_{w−w′} among the weak beams (Å⁻²); per direction when the pool's
        tail has shifted them (:func:`batch_terms`). The diagonal of ``u_ww`` is ignored
        (``d`` holds 2K S_w); that of ``ua_ww`` is the weak beams' own absorption U′₀
        (used with :data:`WEAK_OWN_ABSORPTION`, else ignored).
    d, m_w2 : ndarray (n_dir, n_w)
        1/(2K S_w) (0 where w is not weak in that direction, Å²) and 1 + g_n,w/K_n.
    single : bool
        Products in single precision. The terms are small corrections (|ΔA| ≲ 10⁻³ Å⁻²
        at sgmin 3 for Si, |S| ≲ 10⁻²), so their rounding error is ~10⁻¹⁰ Å⁻², far below
        what the intensities resolve; the ``fast`` solver uses it (not the ``exact``
        one, whose derivatives are taken by finite differences).
    classic : bool
        Include the classic terms in ΔA and ΔA′; False: only the weak–weak ones
        (Y O Y† − Q Y† and their absorptive parts), for a caller that adds the classic
        terms itself (the derivatives' path).
    energy2 : bool
        Also return T₂ = Z M_w² X⁻¹ M_w² Z†, the second order in λ (the module
        docstring; :func:`transform` uses it).
    ov_el, ov_abs : ndarray (n_dir, n, n_w), optional
        The pool's tail's overlap S_t on the strong–weak block (:class:`TailRows`): S
        gains −(S_t,Sw Z† + Z S_t,wS) and S_abs the same with S_t's absorptive part.

    Returns
    -------
    e_el, e_abs : ndarray (n_dir, n, n)
        ΔA and ΔA′ (Å⁻², double precision; ``e_abs`` None without absorption).
    s, s_abs : ndarray (n_dir, n, n)
        S and its absorptive part (dimensionless, not yet scaled by M; ``s_abs`` None
        without absorption).
    t2 : ndarray (n_dir, n, n) or None
        T₂ (Å², not yet scaled by M), or None without ``energy2``.
    """
    cast = _single if single else (lambda x: x)
    u_sw = cast(u_sw)
    dd = cast(d)[:, None, :]
    y = u_sw * dd
    yh = _adj(y)
    absorbing = ua_sw is not None and ua_ww is not None
    # Y O and Y O′ as two products: with per-direction O (the tail's weak rows) a
    # concatenated [O | O′] would be a copy of both blocks per direction
    o = cast(_off_diagonal(u_ww))
    p = y @ o
    # second order in the weak–weak coupling: T = U_Sw − P + Q, Q = P X⁻¹ O
    q = (p * dd) @ o if WEAK_SECOND_ORDER else None
    t = u_sw - p if q is None else u_sw - p + q
    mw = cast(m_w2)[:, None, :]
    zs = t * (dd * np.sqrt(mw))                                 # Z M_w, Z = T X⁻¹
    s = _gram(zs)
    out = np.complex128 if np.iscomplexobj(u_sw) else np.float64
    zh = None
    if ov_el is not None:
        # the tail's overlap on the strong–weak rows: −(S_t,Sw Z† + Z S_t,wS)
        zh = _adj(t * dd)
        x = cast(ov_el) @ zh
        s -= x
        s -= _adj(x)
    t2 = None
    if energy2:
        # the second order in λ: T₂ = Z M_w² X⁻¹ M_w² Z† = (Z M_w)(M_w² X⁻¹)(Z M_w)† (Å²)
        t2 = ((zs * (mw * dd)) @ _adj(zs)).astype(out)
    # −T Y† (classic and weak–weak), or the weak–weak part alone (Y O Y† − Q Y†)
    if classic:
        e_el = t @ yh
        np.negative(e_el, out=e_el)
    else:
        e_el = (p if q is None else p - q) @ yh
    if not absorbing:
        return e_el.astype(out), None, s.astype(out), None, t2
    tt = t if classic else (-p if q is None else q - p)
    ua_sw = cast(ua_sw)
    ya = ua_sw * dd
    yah = _adj(ya)
    if classic:
        e_el += ya @ _adj(ua_sw)
    x = tt @ yah
    # P′ = Y O′, O′ with the weak beams' own absorption on its diagonal
    pa = y @ cast(ua_ww if WEAK_OWN_ABSORPTION else _off_diagonal(ua_ww))
    e_abs = pa @ yh
    e_abs -= x
    e_abs -= _adj(x)
    if q is not None:
        # −(P′ X⁻¹ P† + P X⁻¹ P′†), the rest of the second order's absorptive part
        x = (pa * dd) @ _adj(p)
        e_abs -= x
        e_abs -= _adj(x)
    x = (y * mw) @ yah
    if zh is not None and ov_abs is not None:
        x -= cast(ov_abs) @ zh
    x += _adj(x)
    return e_el.astype(out), e_abs.astype(out), s.astype(out), x.astype(out), t2


def transform(a: np.ndarray, aabs: np.ndarray | None, s: np.ndarray, s_abs: np.ndarray | None,
              *, single: bool = False, t2: np.ndarray | None = None
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
    single : bool
        For a Hermitian ``a`` and ``aabs`` with ``s_abs`` or neither (the ``fast``
        solver): with F = 1 + E (|E| ~ |S′|/2), Ã = A′ + G + G† + E†G, G = A′E, the
        small correction G + G† + E†G and the absorptive products (≲ 10⁻² Å⁻²) in
        single precision, A′ itself exact.
    t2 : ndarray (n_dir, n, n), optional
        T₂′ = M⁻¹ T₂ M⁻¹ (Å², :func:`bethe_terms`): the second order in λ, applied as
        Ã − ½(Ã² T̃₂ + T̃₂ Ã²) (the module docstring; in single precision with
        ``single``).

    Returns
    -------
    a, aabs : ndarray
        Ã and Ã_abs − ½(Ã S̃′ + S̃′ Ã) (for U + iU′ in ``a``: Ã − ½ i (Ã_el S̃′ + S̃′ Ã_el),
        Ã_el its Hermitian part).
    f : ndarray (n_dir, n, n)
        The lower-triangular factor (:func:`lowdin_factor`).
    """
    f = lowdin_factor(s)
    if single:
        ar = np.arange(f.shape[-1])
        e = f.copy()
        e[:, ar, ar] -= 1.0
        e = _single(e)
        g = _single(a) @ e
        a = a + (g + _adj(g) + _adj(e) @ g)
        f32 = e
        f32[:, ar, ar] += 1.0
        fh = _adj(f32)
        both = aabs is not None and s_abs is not None
        ab = fh @ (_single(aabs) @ f32) if both else None
        if t2 is not None:
            # −½(Ã² T̃₂ + T̃₂ Ã²) with Ã → Ã + iÃ_abs: Ã² − Ã_abs² and Ã Ã_abs + Ã_abs Ã
            a32 = _single(a)
            tt = fh @ (_single(t2) @ f32)
            a2 = a32 @ a32
            if both:
                k = a32 @ ab
                x = (k + _adj(k)) @ tt
                a2 -= ab @ ab
                ab -= 0.5 * (x + _adj(x))
            x = a2 @ tt
            a = a - 0.5 * (x + _adj(x))
        if both:
            sa = fh @ (_single(s_abs) @ f32)
            x = _single(a) @ sa
            aabs = (ab - 0.5 * (x + _adj(x))).astype(aabs.dtype)
        return a, aabs, f
    fh = _adj(f)
    a = fh @ a @ f
    if aabs is not None:
        aabs = fh @ aabs @ f
    if t2 is not None:
        # −½(Ã² T̃₂ + T̃₂ Ã²): its left and right eigenvectors see −λ² T̃₂; with a
        # separate absorptive block Ã → Ã + iÃ_abs: Ã² − Ã_abs² and Ã Ã_abs + Ã_abs Ã
        t2 = fh @ t2 @ f
        a2 = a @ a
        if aabs is not None:
            k = a @ aabs
            x = (k + _adj(k)) @ t2
            a2 = a2 - aabs @ aabs
            aabs = aabs - 0.5 * (x + _adj(x))
        a = a - 0.5 * (a2 @ t2 + t2 @ a2)
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
                with_abs: bool, single: bool = False, classic: bool = True,
                tail: TailRows | None = None, energy2: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None,
                           np.ndarray | None]:
    """:func:`bethe_terms` for one solver batch, gathered from the U tables (host numpy).

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
    single, classic : bool
        As in :func:`bethe_terms`.
    tail : TailRows, optional
        The pool's tail on the weak rows (the module docstring): added to the
        strong–weak and weak–weak blocks (``d`` already holds the shifted 2K S_w).
    """
    if tail is not None and tail.pool:
        # the whole couplings, gathered with the tail (tail_rows with ``pool``)
        return bethe_terms(tail.sw_el, tail.sw_abs if with_abs else None, tail.ww_el,
                           tail.ww_abs if with_abs else None, d, m_w2, single=single,
                           classic=classic, energy2=energy2, ov_el=tail.ov_el,
                           ov_abs=tail.ov_abs)
    ue, ua = single_tables(u, u_abs, real) if single else (
        u.real if real else u, u_abs.real if real else u_abs)
    sw = index[idx[:, :, None], wcols[None, None, :]]
    ww = index[np.ix_(wcols, wcols)]
    u_sw, u_ww = ue.take(sw), ue.take(ww)
    ua_sw, ua_ww = (ua.take(sw), ua.take(ww)) if with_abs else (None, None)
    if tail is not None:
        u_sw, u_ww = u_sw + tail.sw_el, u_ww + tail.ww_el
        if with_abs:
            ua_sw, ua_ww = ua_sw + tail.sw_abs, ua_ww + tail.ww_abs
    ar = np.arange(len(wcols))
    for blk in (u_ww, None if WEAK_OWN_ABSORPTION else ua_ww):
        if blk is not None:
            blk[..., ar, ar] = 0.0      # own copies: bethe_terms need not copy them again
    ov = (None, None) if tail is None else (tail.ov_el, tail.ov_abs)
    return bethe_terms(u_sw, ua_sw, u_ww, ua_ww, d, m_w2, single=single, classic=classic,
                       energy2=energy2, ov_el=ov[0], ov_abs=ov[1])


def derivatives_central(u: np.ndarray, u_abs: np.ndarray, du: np.ndarray, dua: np.ndarray,
                        index: np.ndarray, idx: np.ndarray, wcols: np.ndarray, d: np.ndarray,
                        m_w2: np.ndarray, a_core: np.ndarray, da: np.ndarray, mm: np.ndarray,
                        n_out: int, s_extra: list | None = None, tail: TailRows | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The derivatives of :func:`qcbed.bloch.lowdin_jacobian.derivatives` by central
    differences — the independent reference its tests and ``bench_fastjac`` check it
    against (the engine uses the analytic form).

    Ã(p) = F† (A + ΔA) F / M depends on the structure factors through A (``da``,
    analytic, with the classic Bethe terms) and through the second-order terms ΔA
    (:func:`bethe_terms` with ``classic=False``) and F, differentiated by central
    differences (step 10⁻⁴ of max |U|; the terms are polynomials of degree ≤ 3 in U,
    so the relative error is ~10⁻⁸). Parameters and returns: as there.
    """
    du = np.atleast_2d(np.asarray(du, complex))
    dua = np.atleast_2d(np.asarray(dua, complex))
    s0 = batch_terms(u, u_abs, index, idx, wcols, d, m_w2, real=False, with_abs=False,
                     tail=tail)[2]
    if s_extra:
        s0 = s0 + s_extra[0]
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
            e_el, e_abs, s, s_abs, t2 = batch_terms(
                u + sgn * step * du[p], u_abs + sgn * step * dua[p], index, idx, wcols, d,
                m_w2, real=False, with_abs=True, classic=False, tail=tail,
                energy2=ENERGY_SECOND_ORDER)
            if s_extra:
                s, s_abs = s + s_extra[0], s_abs + s_extra[1]
            ap = (a_core + sgn * step * da[:, p] + e_el + 1j * e_abs) / mm
            at, _, f = transform(ap, None, s / mm, s_abs / mm,
                                 t2=None if t2 is None else t2 / mm)
            res.append((at, f))
        out[:, p] = (res[0][0] - res[1][0]) / (2 * step) * mm
        df = (res[0][1] - res[1][1]) / (2 * step)
        lmat[:, p] = df[:, :n_out, :n_out] @ inv_out
        lmat[:, p] += (df[:, 0, 0] / f0[:, 0, 0])[:, None, None] * np.eye(n_out)
    return out, lmat
