"""Batched Bloch-wave eigen-solutions for many incident directions.

For each incident direction the structure matrix of the strong beams is

    A_gg = 2K S_g,   A_gh = U_{g−h} + i U′_{g−h}  (g ≠ h),

corrected by Bethe potentials for the weak beams w (Bethe 1928; Spence & Zuo
1992, eqs. 3.31–3.32; Zuo & Weickenmeier 1995)

    A_gh ← A_gh − Σ_w A_gw A_wh / (2K S_w),

and brought to the symmetric form A′ = M⁻¹ A M⁻¹, M = diag(√(1 + g_n/K_n))
(Spence & Zuo 1992, eq. 2.26). Eigenvalues λ_j = 2K_n γ_j and eigenvectors
B_j give the exit amplitudes

    ψ_g(t) = (M φ)_g = Σ_j B_gj c_j exp(2πi γ_j t),   B c = e₀,

so that the flux-normalised intensity is I_g = |ψ_g|² = (1 + g_n/K_n)|φ_g|².

Two solvers:

* ``exact``: the complex non-Hermitian A′ with U + iU′ (LAPACK ``zgeev`` through
  ``numpy.linalg.eig``, batched); c from ``numpy.linalg.solve`` (no inverse).
* ``fast``: the elastic A′ is real symmetric (centrosymmetric crystal, origin
  at a centre of symmetry) or complex Hermitian (``dsyevd``/``zheevd`` through
  ``numpy.linalg.eigh``, batched). Absorption is a perturbation: in the elastic
  eigenbasis H = diag(h) + P with h_j = (λ_j + i Q_jj)/2K_n — the first-order
  eigenvalue correction of Spence & Zuo (1992, eq. 2.32; Hirsch et al. 1965),
  Q = B† A′_abs B — and P = i Q_offdiag/2K_n. Two steps of a perturbative
  similarity transformation, V = (1 + S₁)(1 + S₂) with (S)_jk = P_jk/(h_k − h_j)
  (Jacobi-like quasi-diagonalisation: the first step leaves
  diag(h) + (1 + S₁)⁻¹ P S₁ = diag(h) + P S₁ − S₁ P S₁ + S₁² P S₁ − …, whose
  diagonal, kept to fourth order, holds the eigenvalue shifts and whose
  off-diagonal part, kept to third, the second step removes), give eigenvectors
  and eigenvalues of the absorbing problem; an a-posteriori bound on the neglected
  terms redoes the second step without truncation where it could move the
  amplitudes by more than ``NEGLECTED_LIMIT`` (:mod:`qcbed.bloch.perturbation`).
  The classic eigenvalue-only method has a first-order error in
  the intensities (about 1 % of the maximum for Si at 1500 Å with Bird–King
  absorption); this one agrees with ``exact`` to a few 10⁻⁴ of the maximum
  intensity even there (see the tests). It costs about two elastic
  diagonalisations — a quarter or less of the general complex solver — and is the
  default. Near-degenerate Bloch waves coupled by absorption
  (|S_jk| > ``CLUSTER_LIMIT`` = 0.1, whatever their excitation) are grouped into
  clusters whose block of H is diagonalised exactly (small complex
  eigen-problems, batched by cluster size) before the perturbative steps
  (degenerate perturbation theory). Without this, weakly excited waves got
  second-order eigenvalue shifts with the wrong sign of absorption and grew
  exponentially with thickness (up to 10⁷² in a Ge₀.₉Sn₀.₁ pattern, issue 17).
  It does not apply when absorption is not small against the spacing of the
  Bloch-wave eigenvalues overall (|U′_g| ≳ 0.1 |U_g|): use ``exact``.

A physical guard is always on, in every solver path: in an absorbing crystal no
Bloch wave may grow with thickness (Im γ_j ≥ 0, the numerical range of
A = H + iK with K ⪰ 0), the perturbative amplitudes must respect
Σ_j |B_gj||c_j| ≲ 1 (a unitary B gives ≤ 1), and the output intensities may not
sum to more than 1. A direction that fails is re-solved with ``exact``; if that
fails too the direction is NaN, never a number; both are counted
(``EigenChunk.n_fallback``/``n_rejected``). An unphysical absorption model
(U′ matrix not positive semi-definite, e.g. U′₀ = 0 with U′_g ≠ 0) is held to
the growth its own matrix allows (:attr:`EngineArrays.max_growth`).

Directions sharing a strong-beam count are stacked and solved in one batched
LAPACK call. Everything here is a pure function of arrays, so chunks of
directions can be sent to any executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.heap import keep_freed_heap
from ..errors import InputError
from . import lowdin as lowdin_module
from .beams import select_strong
from .chunks import EigenChunk, EngineArrays, PatternChunk  # also re-exported here
from .eigen_derivatives import bethe_derivative_terms, eigenbasis_derivatives
from .geometry import excitation_errors, normal_components
from .guard import (  # noqa: F401  (re-exported: the solver's public constants)
    AMPLITUDE_LIMIT,
    FLUX_TOLERANCE,
    GROWTH_TOLERANCE,
    absorption_floor,
    flux_guard,
    physically_invalid,
)
from .lowdin import batch_terms as lowdin_batch_terms
from .lowdin import transform as lowdin_transform
from .lowdin_jacobian import derivatives as lowdin_derivatives
from .perturbation import (  # noqa: F401  (re-exported for the torch port and tests)
    CLUSTER_CONDITION_LIMIT,
    CLUSTER_LIMIT,
    CLUSTER_ROUNDS,
    FAST_MIXING_LIMIT,
    _absorb_perturbatively,
    _adjoint,
    _clusters,
    _inverse_gaps,
    _real_times_complex,
)
from .xp import NUMPY, NumpyOps, namespace


def _solve_exact(a, kn2):
    """General complex eigen-problem: (γ, eigenvectors, excitations from B c = e₀).

    A direction whose eigen-problem LAPACK cannot solve (no convergence, singular
    eigenvectors) comes back as NaN; the physical guard then rejects it. A device
    solver that fails hands the batch to the host (numpy), which finds the
    failing directions one by one.
    """
    xp = namespace(a)
    try:
        lam, vec = xp.eig(a)
        e0 = xp.zeros(a.shape[:2] + (1,), complex)
        e0[:, 0, 0] = 1.0
        c = xp.solve(vec, e0)[..., 0]
    except xp.linalg_errors:
        if xp is not NUMPY:
            return tuple(xp.asarray(x) for x in _solve_exact(xp.to_numpy(a), xp.to_numpy(kn2)))
        if len(a) == 1:
            nan = np.full(a.shape[:2], np.nan + 0j)
            return nan, np.full(a.shape, np.nan + 0j), nan
        parts = [_solve_exact(a[i:i + 1], kn2[i:i + 1]) for i in range(len(a))]
        return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]
    return lam / kn2, vec, c


def _exact_with_guard(a, kn2, n_out: int, max_growth: float) -> tuple:
    """:func:`_solve_exact`, then the physical guard: failing directions become NaN.

    Returns γ, the output rows of the eigenvectors, c and the rejected flags.
    """
    gam, vec, c = _solve_exact(a, kn2)
    bout = vec[:, :n_out, :]
    bad = physically_invalid(gam, bout, c, check_amplitude=False, max_growth=max_growth)
    if bool(bad.any()):
        gam[bad] = np.nan
        bout[bad] = np.nan
        c[bad] = np.nan
    return gam, bout, c, bad


def prepare_directions(arrays: EngineArrays, kt: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-direction geometry and beam selection shared by every solver back-end.

    Returns (kt (n, 2), 2K S_g (n, N), K_n (n,), g_n (N,), strong (n, N), weak (n, N)).
    """
    kt = np.atleast_2d(np.asarray(kt, dtype=float))
    two_k_sg = excitation_errors(arrays.g, kt, arrays.k_in)
    k_n, g_n = normal_components(arrays.g, kt, arrays.k_in, arrays.normal)
    if np.any(k_n <= 0):
        raise InputError("incident beam does not enter through the surface (K_n ≤ 0)",
                         found=float(k_n.min()))
    strong, weak = select_strong(two_k_sg, arrays.selection_coupling, arrays.n_out, arrays.rules)
    return kt, two_k_sg, k_n, g_n, strong, weak


#: Most complex elements (directions × strong beams × max(strong, weak beams)) in one
#: batched step of :func:`solve_chunk` on the host (a torch device sets its own,
#: :mod:`qcbed.bloch.xp`). Directions sharing a matrix size are split into batches
#: this big: the temporaries stay small (below the C allocator's mmap threshold, so
#: they are reused instead of page-faulted anew) and the union of the weak beams of
#: a batch, whose blocks are gathered, stays close to each direction's. 2¹⁸: the
#: n × n temporaries of the absorption step of a batch then fit a core's cache
#: (CPU time per direction against 2²⁰, one BLAS thread, interleaved: YIG 166 strong
#: 16.8 vs 21.2 ms, LiNbO₃ 80 strong 3.52 vs 4.14, YIG 60 strong 2.16 vs 2.38; Si
#: D-LACBED 141 strong 8.5 vs 8.3 and LiNbO₃ 300 strong 102 vs 105: no change).
#: 2¹⁹ since session 11, with the larger automatic chunks (``Simulation(chunk_size=None)``)
#: and the freed heap kept (:mod:`qcbed._core.heap`): on 2 048 directions of the Si
#: D-LACBED image at the default engine (79 strong, ~290 weak beams), 512-direction
#: chunks with 2¹⁹ cost 0.884× and with 2¹⁸ 0.932× of 128-direction chunks with 2¹⁸
#: (medians of 5 alternating rounds; benchmarks/RESULTS.md).
BATCH_ELEMENTS = 1 << 19


def _size_batches(n_s: np.ndarray, n_weak: np.ndarray, elements: int | None = None):
    """(matrix size, direction indices) batches of :func:`solve_chunk`
    (``elements``: per batch, default :data:`BATCH_ELEMENTS`)."""
    elements = elements or BATCH_ELEMENTS
    for n in np.unique(n_s):
        rows = np.nonzero(n_s == n)[0]
        width = max(int(n), int(n_weak[rows].max()))
        per = max(1, elements // (int(n) * width))
        for i in range(0, len(rows), per):
            yield int(n), rows[i:i + per]


@dataclass
class KernelTables:
    """The engine's tables in one array module (numpy on the host, torch on a device).

    Attributes
    ----------
    xp : NumpyOps
        The array operations (:mod:`qcbed.bloch.xp`).
    index : (N, N) int
        Rows of the U table for g_i − g_j.
    u, ua : (M,)
        The tables the structure matrices are gathered from: U and U′ (real for a
        centrosymmetric crystal in ``fast`` mode), U + iU′ and U′ in ``exact`` mode.
    z, zc : optional
        U + iU′ and conj(U − iU′) (M,) for the Bethe products of a complex
        absorbing ``fast`` problem.
    dtab, dua0 : optional
        ∂(U + iU′)/∂p over the table rows (n_params, M), and ∂U′₀/∂p (n_params,).
    zd : optional
        U + iU′ (M,) for the Bethe terms of the derivatives (``fast`` mode; the
        ``exact`` mode's ``u`` is that table).
    exact, real, absorbing : bool
        Solver mode, elastic matrix real, perturbative absorption needed.
    """

    xp: NumpyOps
    index: Any
    u: Any
    ua: Any
    z: Any = None
    zc: Any = None
    dtab: Any = None
    dua0: Any = None
    zd: Any = None
    exact: bool = False
    real: bool = False
    absorbing: bool = False
    derivatives: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def build(cls, xp: NumpyOps, arrays: EngineArrays,
              derivatives: tuple[np.ndarray, np.ndarray] | None = None,
              index: Any = None) -> KernelTables:
        """Tables of ``arrays`` in ``xp`` (``index``: one already there)."""
        exact = arrays.mode == "exact"
        real = arrays.real and not exact
        if exact:
            u, ua = arrays.u + 1j * arrays.u_abs, arrays.u_abs
        elif real:
            u, ua = arrays.u.real, arrays.u_abs.real
        else:
            u, ua = arrays.u, arrays.u_abs
        dtab = dua0 = zd = None
        if derivatives is not None:
            dua = np.asarray(derivatives[1], complex)
            dtab = np.atleast_2d(np.asarray(derivatives[0], complex) + 1j * dua)
            dua0 = xp.asarray(dua.reshape(len(dtab), -1)[:, arrays.index[0, 0]])
            dtab = xp.asarray(dtab)
            zd = None if exact else xp.asarray(arrays.u + 1j * arrays.u_abs)
        absorbing = bool(np.any(arrays.u_abs != 0)) and not exact
        z = zc = None
        if absorbing and not real:
            z, zc = xp.asarray(u + 1j * ua), xp.asarray(np.conj(u - 1j * ua))
        if index is None:
            # 64-bit: np.take converts narrower indices on every gather (~1.6× slower)
            index = xp.asarray(np.asarray(arrays.index, dtype=np.int64))
        u = xp.asarray(u)
        if exact and dtab is not None:
            zd = u  # the exact mode's table is U + iU′
        return cls(xp, index, u, xp.asarray(ua), z, zc, dtab, dua0, zd, exact, real,
                   absorbing, derivatives)


def solve_groups(tb: KernelTables, arrays: EngineArrays, kt: np.ndarray):
    """Solve directions batch by batch (directions sharing a matrix size), in ``tb.xp``.

    First yields a header ``(n_dir, n_max, n_strong, n_weak, m_out)`` (numpy), then
    per batch ``(rows, n, gamma, bout, c, gmat, counts, lmat)`` in the tables' array
    module, with counts = (n_fallback, n_rejected, n_clustered) and lmat the
    Löwdin factor's share of the derivatives (numpy, or None). Directions
    rejected by the physical guard are NaN. This one algorithm serves every
    back-end: :func:`solve_chunk` (numpy) and :mod:`qcbed.parallel.gpu` (torch).
    """
    kt, two_k_sg, k_n, g_n, strong, weak = prepare_directions(arrays, kt)
    n_s = strong.sum(axis=1)
    n_weak = weak.sum(axis=1)
    m_out = np.sqrt(1.0 + g_n[None, :arrays.n_out] / k_n[:, None])
    yield len(kt), int(n_s.max()), n_s, n_weak, m_out
    for n, rows in _size_batches(n_s, n_weak, tb.xp.batch_elements):
        yield (rows, n) + _solve_batch(tb, arrays, n, rows, two_k_sg[rows], k_n[rows], g_n,
                                       strong[rows], weak[rows], kt[rows])


def _solve_batch(tb: KernelTables, arrays: EngineArrays, n: int, rows: np.ndarray,
                 two_k_sg: np.ndarray, k_n: np.ndarray, g_n: np.ndarray, strong: np.ndarray,
                 weak: np.ndarray, kt: np.ndarray | None = None) -> tuple:
    """Eigen-solutions of directions sharing the strong-beam count ``n``.

    Returns (γ, bout, c, gmat or None, (n_fallback, n_rejected, n_clustered), lmat or None).
    """
    xp, exact, absorbing = tb.xp, tb.exact, tb.absorbing
    n_out, growth = arrays.n_out, arrays.max_growth
    n_exact = n_rejected = n_clustered = 0
    idx_h = np.argsort(~strong, axis=1, kind="stable")[:, :n]
    diag_sg = np.take_along_axis(two_k_sg, idx_h, axis=1)
    idx = xp.asarray(idx_h)
    ar = xp.arange(n)
    blk = tb.index[idx[:, :, None], idx[:, None, :]]
    a = xp.take(tb.u, blk)
    a[:, ar, ar] = xp.asarray(diag_sg + 1j * arrays.u_abs0 if exact else diag_sg, a.dtype)
    aabs = xp.take(tb.ua, blk) if absorbing else None
    n_par = 0 if tb.dtab is None else len(tb.dtab)
    if n_par:
        da = xp.stack([xp.take(tb.dtab[p], blk) for p in range(n_par)], 1)
        da[:, :, ar, ar] = (1j * tb.dua0)[None, :, None]
    wcols_h = np.nonzero(weak.any(axis=0))[0]
    if len(wcols_h):
        wm = weak[:, wcols_h]
        d_h = np.where(wm, 1.0 / np.where(wm, two_k_sg[:, wcols_h], 1.0), 0.0)
    tail_strong = tail_w = None
    if arrays.tail is not None and kt is not None:
        # beams outside the pool, to second order (qcbed.bloch.tail): on the strong rows,
        # and with the Löwdin elimination on the weak rows too (qcbed.bloch.lowdin)
        if arrays.lowdin and len(wcols_h) and lowdin_module.TAIL_ON_WEAK_ROWS:
            # the fast solver's single-precision products take U + tail as one block;
            # the derivatives need the tail's own share (held constant under U)
            fused = lowdin_module.SINGLE_PRECISION and not exact and not n_par
            pool = (*lowdin_module.single_tables(arrays.u, arrays.u_abs, tb.real),
                    arrays.index) if fused else None
            tail_strong, tail_w, d_h = lowdin_module.tail_rows(
                arrays.tail, kt, idx_h, wcols_h, d_h, exact=exact, real=tb.real, pool=pool)
        else:
            tail_strong = arrays.tail.blocks(kt, idx_h, exact=exact, real=tb.real)
    # classic Bethe potentials here; with the Löwdin terms _lowdin computes them with
    # the second-order ones (lowdin.bethe_terms), derivatives or not
    classic = bool(len(wcols_h)) and not arrays.lowdin
    if len(wcols_h) and (n_par or classic):
        d = xp.asarray(d_h)[:, None, :]
        wcols = xp.asarray(wcols_h)
        sw = tb.index[idx[:, :, None], wcols[None, None, :]]
        u_sw = xp.take(tb.u, sw) if tb.z is None and classic else None
        if exact or n_par:
            # U + iU′ is not Hermitian: the weak-to-strong block is gathered
            ws = tb.index[wcols[None, :, None], idx[:, None, :]]
        if n_par:
            bethe_derivative_terms(tb.zd, tb.dtab, sw, ws, d, da)
            if tail_w is not None:
                # ∂ of the classic terms' share of the tail: ∂Z_sw D ΔZ_ws + ΔZ_sw D ∂Z_ws
                # (the tail is held constant under the structure factors)
                dz = xp.asarray(tail_w.z_sw()) * d
                dzh = _adjoint(xp.asarray(tail_w.sw_el - 1j * tail_w.sw_abs))   # ΔZ_ws
                for p in range(n_par):
                    da[:, p] -= (xp.take(tb.dtab[p], sw) * d) @ dzh + dz @ xp.take(tb.dtab[p], ws)
        if classic and exact:
            u_ws = xp.take(tb.u, ws)
            u_sw *= d
            a -= u_sw @ u_ws
        elif classic and aabs is not None and not tb.real:
            # complex U, U′: with Z = U + iU′ one complex product
            # W = Z_sw D Z_ws = (U D U − U′ D U′) + i (U D U′ + U′ D U), both brackets
            # Hermitian, holds every Bethe term: the elastic block takes −(W + W†)/2
            # (``a`` is made Hermitian below), the absorptive block −(W − W†)/2i.
            # U and U′ are Hermitian tables (U_{-g} = U_g*), so Z_{w−s} =
            # conj(U_{s−w} − iU′_{s−w}): both blocks come from the one index block
            z_sw = xp.take(tb.z, sw)
            z_sw *= d
            w = z_sw @ xp.take(tb.zc, sw).swapaxes(1, 2)
            a -= w
            w -= _adjoint(w)
            w *= 0.5j
            aabs += w
        elif classic:
            # U and U′ are Hermitian (U_{-g} = U_g*): the weak-to-strong blocks are
            # adjoints of the strong-to-weak ones, no second gather
            u_ws = _adjoint(u_sw)          # a view: scale a copy
            u_sw = u_sw * d
            a -= u_sw @ u_ws
            if aabs is not None:
                ua_sw = xp.take(tb.ua, sw)
                ua_ws = _adjoint(ua_sw)
                # Bethe terms of (U + iU′) D (U + iU′) for real U, U′: the
                # absorptive first-order part U D U′ + U′ D U = X + Xᵀ, and the
                # second-order real part −U′ D U′ in the elastic block
                x = u_sw @ ua_ws
                aabs -= x
                aabs -= _adjoint(x)
                a += (ua_sw * d) @ ua_ws
    tail_s = None
    if tail_strong is not None:
        t_el, t_abs, *tail_s = tail_strong
        a += xp.asarray(t_el, a.dtype)
        if aabs is not None:
            aabs += xp.asarray(t_abs, aabs.dtype)
    m = np.sqrt(1.0 + g_n[idx_h] / k_n[:, None])
    mm_h = m[:, :, None] * m[:, None, :]
    mm = xp.asarray(mm_h)
    fac = lmat = None
    if (len(wcols_h) or tail_s) and arrays.lowdin:
        # weak-weak coupling and energy dependence of the Bethe potentials
        # (qcbed.bloch.lowdin; computed on the host)
        if not len(wcols_h):
            d_h = np.zeros((len(rows), 0))
        a, aabs, da, fac, lmat = _lowdin(tb, arrays, a, aabs, da if n_par else None, idx_h,
                                         wcols_h, d_h, mm_h, k_n, g_n, tail_s, tail_w)
    else:
        a /= mm
    kn2 = xp.asarray(2.0 * k_n[:, None])
    gmat = None
    if exact:
        gam, vec, c = _solve_exact(a, kn2)
        rejected = physically_invalid(gam, vec[:, :n_out, :], c, check_amplitude=False,
                                      max_growth=growth)
        if n_par:
            gmat = eigenbasis_derivatives(vec, da / (mm[:, None] * kn2[:, :, None, None]))
        if bool(rejected.any()):
            gam[rejected], vec[rejected], c[rejected] = np.nan, np.nan, np.nan
            n_rejected += int(rejected.sum())
    else:
        if not tb.real:
            # enforce exact Hermiticity against round-off in the gathers
            a = 0.5 * (a + _adjoint(a))
        lam, vec = xp.eigh(a)
        c = vec[:, 0, :].conj()
        # derivatives need every row of the eigenvectors (G_p = C⁻¹ ∂H C)
        n_rows = n if n_par else n_out
        if absorbing:
            aabs /= mm
            gam, vec, c, unsafe, n_cl = _absorb_perturbatively(lam, vec, c, aabs, kn2, n_rows)
            n_clustered += n_cl
        else:
            gam = xp.to_complex(lam / kn2)
            vec = vec[:, :n_rows, :]
            unsafe = xp.zeros(len(rows), bool)
        # the physical guard, always on: re-solve failing directions exactly
        unsafe |= physically_invalid(gam, vec[:, :n_out], c, max_growth=growth)
        if bool(unsafe.any()):
            k = xp.nonzero(unsafe)
            a_k = a[k] + 1j * aabs[k] if absorbing else xp.to_complex(a[k])
            g_x, v_x, c_x, rej = _exact_with_guard(a_k, kn2[k], n_rows, growth)
            vec, c = xp.to_complex(vec), xp.to_complex(c)
            gam[k], vec[k], c[k] = g_x, v_x, c_x
            n_exact += len(k)
            n_rejected += int(rej.sum())
        if n_par:
            gmat = eigenbasis_derivatives(xp.to_complex(vec),
                                          da / (mm[:, None] * kn2[:, :, None, None]))
    vec = vec[:, :n_out, :]
    if fac is not None:
        # φ = F v (F lower-triangular) and c_j = φ_j(000)* = F₀₀ v_j(000)*
        f = xp.to_complex(xp.asarray(fac))
        vec = f[:, :n_out, :n_out] @ xp.to_complex(vec)
        c = xp.to_complex(c) * f[:, :1, 0]
    return gam, vec, c, gmat, (n_exact, n_rejected, n_clustered), lmat


def _lowdin(tb: KernelTables, arrays: EngineArrays, a: Any, aabs: Any, da: Any,
            idx: np.ndarray, wcols: np.ndarray, d: np.ndarray, mm: np.ndarray,
            k_n: np.ndarray, g_n: np.ndarray, tail_s: list | None = None,
            tail_w: Any = None) -> tuple:
    """Add the Bethe terms (classic and Löwdin) to a batch and transform it
    (:mod:`qcbed.bloch.lowdin`).

    ``a`` and ``aabs`` come unscaled and without Bethe terms, and leave as
    Ã = F† A′ F and Ã_abs × M (the caller scales the absorptive block by M⁻¹ later);
    the values do not depend on whether derivatives are asked for. Returns
    (a, aabs, da, F, L) with da and L (``exact`` derivatives) or None. ``tail_s``: the
    overlap (S, S_abs) of the beams outside the pool (:mod:`qcbed.bloch.tail`), added to
    the weak beams'. ``tail_w``: the tail on the weak rows (:class:`lowdin.TailRows`).
    """
    xp = tb.xp
    m_w2 = 1.0 + g_n[wcols][None, :] / k_n[:, None]
    with_abs = tb.exact or aabs is not None
    single = lowdin_module.SINGLE_PRECISION and not tb.exact   # (lowdin.bethe_terms)
    args = (arrays.u, arrays.u_abs, arrays.index, idx, wcols, d, m_w2)
    e_el, e_abs, s, s_abs, t2 = lowdin_batch_terms(
        *args, real=tb.real, with_abs=with_abs, single=single, tail=tail_w,
        energy2=lowdin_module.ENERGY_SECOND_ORDER)
    if tail_s:
        s = s + tail_s[0]
        if s_abs is not None:
            s_abs = s_abs + tail_s[1]
    a_h = xp.to_numpy(a)
    lmat = None
    if da is not None:
        du, dua = tb.derivatives
        # the derivatives' core matrix is U + iU′ with the classic Bethe terms in every
        # mode: the fused terms less the second-order ones
        lo_el, lo_abs = lowdin_batch_terms(*args, real=tb.real, with_abs=with_abs,
                                           single=single, classic=False, tail=tail_w)[:2]
        a_core = a_h + (e_el - lo_el)
        if e_abs is not None:
            a_core = a_core + 1j * (e_abs - lo_abs)
        if aabs is not None:
            a_core = a_core + 1j * xp.to_numpy(aabs)
        da_h, lmat = lowdin_derivatives(arrays.u, arrays.u_abs, du, dua, arrays.index, idx,
                                        wcols, d, m_w2, a_core, xp.to_numpy(da), mm,
                                        arrays.n_out, tail_s, tail_w)
        da = xp.asarray(da_h)
    a_h = a_h + (e_el + 1j * e_abs if tb.exact else e_el)
    aabs_h = None if aabs is None else (xp.to_numpy(aabs) + e_abs) / mm
    a_h, aabs_h, fac = lowdin_transform(a_h / mm, aabs_h, s / mm,
                                        None if s_abs is None else s_abs / mm, single=single,
                                        t2=None if t2 is None else t2 / mm)
    a = xp.asarray(a_h)
    if aabs is not None:
        aabs = xp.asarray(aabs_h * mm)
    return a, aabs, da, fac, lmat


def solve_chunk(arrays: EngineArrays, kt: np.ndarray,
                derivatives: tuple[np.ndarray, np.ndarray] | None = None) -> EigenChunk:
    """Eigen-solutions for a chunk of tangential wave vectors ``kt`` (n_dir, 2) in Å⁻¹.

    Parameters
    ----------
    arrays : EngineArrays
    kt : ndarray (n_dir, 2)
    derivatives : (du, dua), optional
        ∂U/∂p and ∂U′/∂p over the rows of the U table, each (n_params, M)
        complex. When given, G_p = C⁻¹ ∂H/∂p C is stored for
        :meth:`EigenChunk.gradients` (C: the eigenvectors of either solver mode,
        :mod:`qcbed.bloch.eigen_derivatives`); Bethe and Löwdin corrections are
        differentiated too.
    """
    return eigen_chunk(KernelTables.build(NUMPY, arrays, derivatives), arrays, kt)


def eigen_chunk(tb: KernelTables, arrays: EngineArrays, kt: np.ndarray) -> EigenChunk:
    """:func:`solve_chunk` with the tables of any array module (results in numpy)."""
    # the batches' temporaries reuse freed heap instead of page-faulting it in anew
    # (qcbed._core.heap: a per-process allocator setting, idempotent)
    keep_freed_heap()
    xp = tb.xp
    it = solve_groups(tb, arrays, kt)
    n_dir, n_max, n_s, n_weak, m_out = next(it)
    n_out = arrays.n_out
    gamma = np.zeros((n_dir, n_max), dtype=complex)
    bout = np.zeros((n_dir, n_out, n_max), dtype=complex)
    cc = np.zeros((n_dir, n_max), dtype=complex)
    gmat = None
    if tb.dtab is not None:
        gmat = np.zeros((n_dir, len(tb.dtab), n_max, n_max), dtype=complex)
    counts = np.zeros(3, int)
    lmat = None
    if tb.dtab is not None:
        lmat = np.zeros((n_dir, len(tb.dtab), n_out, n_out), dtype=complex)
    for rows, n, gam, bo, c, gm, nc, lm in it:
        gamma[rows, :n] = xp.to_numpy(gam)
        if lm is not None:
            lmat[rows] = lm
        bout[rows, :, :n] = xp.to_numpy(bo)
        cc[rows, :n] = xp.to_numpy(c)
        if gm is not None:
            gmat[rows, :, :n, :n] = xp.to_numpy(gm)
        counts += nc
    return EigenChunk(gamma=gamma, bout=bout, c=cc, n_strong=n_s, n_weak=n_weak,
                      m_out=m_out, gmat=gmat, n_fallback=int(counts[0]),
                      n_rejected=int(counts[1]), n_clustered=int(counts[2]),
                      max_growth=arrays.max_growth, lmat=lmat)


def pattern_chunk(arrays: EngineArrays, kt: np.ndarray, thickness: np.ndarray
                  ) -> PatternChunk:
    """Intensities (n_t, n_dir, n_out) for a chunk of directions, with the solver counts.

    Only these travel back from a worker (no eigen-systems).
    """
    eig = solve_chunk(arrays, kt)
    return PatternChunk.from_intensities(eig.intensities(thickness), eig.n_fallback,
                                         eig.n_clustered)
