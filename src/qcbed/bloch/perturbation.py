"""The perturbative absorption step of the ``fast`` solver (see :mod:`qcbed.bloch.solver`).

In the elastic eigenbasis H = diag(h) + P with h_j = (λ_j + i Q_jj)/2K_n (the
first-order eigenvalue correction of Spence & Zuo 1992, eq. 2.32) and
P = i Q_offdiag/2K_n, Q = B† A′_abs B. Clusters of near-degenerate Bloch waves
coupled by P are diagonalised exactly (degenerate perturbation theory, e.g.
Messiah 1961, ch. XVI §2); the rest of P is removed by two Jacobi-like
perturbative similarity steps (eigenvalue shifts to fourth order, eigenvectors to
third). An a-posteriori bound on the terms they neglect (:func:`_neglected_bound`)
picks the directions whose second step is redone without truncation, plus a third.

The functions take numpy arrays or torch tensors (:mod:`qcbed.bloch.xp`); the
cluster search and the small cluster eigen-problems run on the host.
"""

from __future__ import annotations

import numpy as np

from .xp import namespace


def _adjoint(x):
    """Batched conjugate transpose (a transposed view for real arrays)."""
    xt = x.swapaxes(1, 2)
    return xt.conj() if namespace(x).is_complex(x) else xt


def _real_times_complex(a, b):
    """a @ b for a real ``a`` and a complex ``b`` (one real product, half the flops)."""
    return namespace(a).real_times_complex(a, b)


#: Pairs of Bloch waves whose absorptive coupling is not small against their
#: eigenvalue gap, |S_jk| = |P_jk/(h_k − h_j)| > CLUSTER_LIMIT, are grouped into
#: clusters (connected components of such pairs) whose block of the absorbing
#: problem is diagonalised exactly before the perturbative steps (degenerate
#: perturbation theory, e.g. Messiah 1961, ch. XVI §2). Without this, weakly
#: excited near-degenerate Bloch waves got second-order "absorption" of the wrong
#: sign and grew exponentially with thickness (issue 17).
CLUSTER_LIMIT = 0.1

#: Directions where, after the clusters, absorption still mixes two Bloch waves
#: by more than this (|S_jk| weighted by the larger excitation |c|), are solved
#: with the general complex solver instead.
FAST_MIXING_LIMIT = 0.1

#: Rounds of cluster detection (eigenvalues shifted by one round can bring new
#: waves within reach); directions with strongly mixed pairs left after the last
#: round are solved exactly.
CLUSTER_ROUNDS = 3

#: Eigenvector condition estimate max|W|·max|W⁻¹|·m of a cluster above which the
#: direction is solved exactly (near an exceptional point of the absorbing block).
CLUSTER_CONDITION_LIMIT = 1e3

#: A-posteriori bound on the terms the two cheap similarity steps neglect
#: (:func:`_neglected_bound`: the mixing amplitude they could move) above which a
#: direction's second step is redone without truncation, plus a third
#: (:func:`_exact_second_step`).
NEGLECTED_LIMIT = 3e-3

#: Thickness (Å) up to which :func:`_neglected_bound` bounds the dephasing of mixed
#: Bloch waves: the largest thickness the accuracy of ``fast`` is held for.
ESTIMATE_THICKNESS = 3000.0

#: Fixed-point iterations x ← b − S x for (1 + S) x = b (:func:`_solve_one_plus`) before
#: the directions not yet converged to :data:`ONE_PLUS_TOLERANCE` take an LU solve.
ONE_PLUS_ITERATIONS = 16
#: Relative change of the last iteration at which :func:`_solve_one_plus` stops.
ONE_PLUS_TOLERANCE = 1e-13
#: :func:`_solve_one_plus` tests convergence every this many iterations (a test costs
#: about as much as an iteration: Si D-LACBED, 8 iterations on average).
ONE_PLUS_CHECK_EVERY = 2


def _solve_one_plus(s, b):
    """x with (1 + S) x = b for the small S of a similarity step, batched.

    The iteration x ← b − S x converges like ‖S‖ᵏ (the Neumann series of (1 + S)⁻¹);
    with |S_jk| ≲ 0.1 a few products of n² reach round-off, against the n³ of an LU
    factorisation. Directions that have not converged to :data:`ONE_PLUS_TOLERANCE`
    after :data:`ONE_PLUS_ITERATIONS` (‖S‖ near or above 1) are solved by LU.
    """
    xp = namespace(s)
    x = b
    for i in range(1, ONE_PLUS_ITERATIONS + 1):
        nxt = b - (s @ x[..., None])[..., 0]
        if i % ONE_PLUS_CHECK_EVERY:
            x = nxt
            continue
        late = xp.amax(abs(nxt - x), (1,)) > ONE_PLUS_TOLERANCE * xp.amax(abs(nxt), (1,))
        x = nxt
        if not bool(late.any()):
            return x
    k = xp.nonzero(late)
    x[k] = xp.solve(_plus_one(s[k]), b[k][..., None])[..., 0]
    return x


def _inverse_gaps(h, modulus: bool = False):
    """1/(h_k − h_j) for j ≠ k, and 0 on the diagonal (and for exactly equal h).

    Complex h: conj(Δh)/|Δh|² with one real reciprocal (numpy's complex division
    costs ~14 ns per element here, 1.6× the whole of this form on n = 166; gaps below
    ~10⁻¹⁵⁴, whose square underflows, count as equal), formed from the real and
    imaginary differences in real arithmetic and assembled once (the same numbers as
    conj(Δh) × (1/|Δh|²) in complex arithmetic, in a third less time: no complex
    temporaries). ``modulus``: also return |1/(h_k − h_j)| = 1/|Δh| (real).
    """
    xp = namespace(h)
    if not xp.is_complex(h):
        dh = h[:, None, :] - h[:, :, None]
        dh[dh == 0] = np.inf       # the diagonal, and exactly equal h
        inv = 1.0 / dh
        return (inv, abs(inv)) if modulus else inv
    hr, hi = h.real, h.imag
    dr = hr[:, None, :] - hr[:, :, None]
    di = hi[:, :, None] - hi[:, None, :]       # Im conj(h_k − h_j)
    m = dr * dr
    m += di * di
    m[m == 0] = np.inf             # the diagonal, and exactly equal h
    m = 1.0 / m
    dr *= m
    di *= m
    inv = xp.complex_from(dr, di)
    return (inv, m ** 0.5) if modulus else inv


def _gap_ratio(h, pim):
    """pim_jk/(h_k − h_j) (= −i S₁) and its modulus, computed once per round
    (a real pim: |pim|·|1/Δh|, no complex modulus)."""
    r, mod = _inverse_gaps(h, modulus=True)
    r *= pim
    if namespace(pim).is_complex(pim):
        return r, abs(r)
    mod *= abs(pim)
    return r, mod


def _clusters(big: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Connected components (size ≥ 2) of a batched symmetric adjacency (n_g, n, n).

    Returns a list of ``(dirs (k,), members (k, m))``, one entry per cluster size m.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_g, n, _ = big.shape
    d, j, k = np.nonzero(big)
    graph = coo_matrix((np.ones(len(d), np.int8), (d * n + j, d * n + k)),
                       shape=(n_g * n, n_g * n))
    _, lab = connected_components(graph, directed=False)
    counts = np.bincount(lab)
    order = np.argsort(lab, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = []
    for m in np.unique(counts[counts >= 2]):
        nodes = order[starts[counts == m][:, None] + np.arange(m)]
        out.append((nodes[:, 0] // n, nodes % n))
    return out


def _diagonalise_clusters(hc: np.ndarray, vo: np.ndarray, c0: np.ndarray,
                          clusters: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Diagonalise each cluster block of H = ``hc`` exactly, in place.

    With W block-diagonal (the eigenvectors of each cluster block, identity
    elsewhere) H ← W⁻¹ H W, the output rows of the eigenvectors vo ← vo W and the
    excitations c₀ ← W⁻¹ c₀. Returns a flag (n_g,) for directions whose cluster
    eigenvectors are ill-conditioned (near an exceptional point).
    """
    bad = np.zeros(len(hc), bool)
    for dirs, mem in clusters:
        rows, cols = mem[:, :, None], mem[:, None, :]
        blk = hc[dirs[:, None, None], rows, cols]
        ev, w = np.linalg.eig(blk)
        winv = np.linalg.inv(w)
        m = mem.shape[1]
        cond = np.abs(w).max(axis=(1, 2)) * np.abs(winv).max(axis=(1, 2)) * m
        np.logical_or.at(bad, dirs, ~np.isfinite(cond) | (cond > CLUSTER_CONDITION_LIMIT))
        d1 = dirs[:, None]
        hc[d1, :, mem] = np.einsum("kar,kab->kbr", hc[d1, :, mem], w)
        hc[d1, mem, :] = np.einsum("kba,kar->kbr", winv, hc[d1, mem, :])
        hc[dirs[:, None, None], rows, cols] = 0.0
        hc[d1, mem, mem] = ev
        vo[d1, :, mem] = np.einsum("kao,kab->kbo", vo[d1, :, mem], w)
        c0[d1, mem] = np.einsum("kba,ka->kb", winv, c0[d1, mem])
    return bad


def _first_step(h, pim, ratio):
    """The first similarity step: S₁ and H₁ = (1 + S₁)⁻¹ H (1 + S₁) for H = diag(h) + i·pim.

    With S₁ = P/(h_k − h_j), P = i·pim, the transformed matrix is exactly
    H₁ = diag(h) + (1 + S₁)⁻¹ P S₁ = diag(h) + P S₁ − S₁ P S₁ + S₁² P S₁ − …
    (the commutator [diag(h), S₁] = −P cancels P). The off-diagonal part is kept
    to third order; the diagonal (the eigenvalue shifts) to fourth order, whose term
    diag(S₁ · S₁PS₁) costs no product beyond the two of the third order. ``ratio``
    is pim/(h_k − h_j) (:func:`_gap_ratio`). Returns S₁, S₁ P S₁ and H₁.
    """
    xp = namespace(h)
    ar = xp.arange(h.shape[1])
    s1 = 1j * ratio
    # P S₁ = i·pim · i·ratio = −pim·ratio
    ps = pim @ ratio if xp.is_complex(pim) else xp.real_times_complex(pim, ratio)
    ps *= -1
    s1ps = s1 @ ps
    h1 = ps - s1ps
    h1[:, ar, ar] += h + xp.einsum("gjk,gkj->gj", s1, s1ps)
    return s1, s1ps, h1


def _remove_offdiagonal(h1):
    """One perturbative step on H₁, in place: H₁ keeps only its off-diagonal part e.

    S = e/(d_k − d_j) with d = diag(H₁); eigenvalues d + diag(e S). Returns the
    eigenvalues, S, d and |1/(d_k − d_j)| (:func:`_inverse_gaps`).
    """
    ar = namespace(h1).arange(h1.shape[1])
    hd = h1[:, ar, ar]                 # advanced indexing: a copy (numpy and torch)
    h1[:, ar, ar] = 0.0
    s, inv_abs = _inverse_gaps(hd, modulus=True)
    s *= h1
    return hd + namespace(h1).einsum("gjk,gkj->gj", h1, s), s, hd, inv_abs


def _plus_one(s):
    """1 + S for a batch of matrices (a new array)."""
    ar = namespace(s).arange(s.shape[1])
    out = s + 0.0
    out[:, ar, ar] += 1.0
    return out


def _neglected_bound(s1, s1ps, e, s2, inv_abs, wexc):
    """A-posteriori bound (n_g,) on the amplitude error of the two cheap steps.

    Off the diagonal, step 1 drops S₁²PS₁ (fourth order) and step 2 leaves
    (1 + S₂)⁻¹ e S₂ ≈ e S₂ (a residual R). Bloch waves j and k mixed by R_jk/Δγ_jk
    change the amplitudes at thickness t by R_jk (e^{2πiγ_k t} − e^{2πiγ_j t})/Δγ_jk,
    at most |R_jk| min(2/|Δγ_jk|, 2πt) — near-degenerate pairs dephase slowly. Without
    forming the products, |(A B)_jk| ≤ ‖A_j,:‖ ‖B_:,k‖ (Cauchy–Schwarz). The bound is
    max_jk (‖S₁_j,:‖ ‖(S₁PS₁)_:,k‖ + ‖e_j,:‖ ‖S₂_:,k‖) min(2/|Δγ_jk|, 2πT)
    weighted by the larger excitation, T = :data:`ESTIMATE_THICKNESS`: O(n²) per
    direction, against the O(n³) products of the steps. ``inv_abs`` is |1/Δγ|
    (:func:`_inverse_gaps` of the diagonal of H₁).
    """
    xp = namespace(inv_abs)

    def norms(x, axis):
        return xp.sq_norms(x, axis) ** 0.5

    num = norms(s1, 2)[:, :, None] * norms(s1ps, 1)[:, None, :]
    num += norms(e, 2)[:, :, None] * norms(s2, 1)[:, None, :]
    dephase = (2.0 * inv_abs).clip(max=2.0 * np.pi * ESTIMATE_THICKNESS)
    num *= dephase
    num *= wexc
    return xp.amax(num, (1, 2))


def _exact_second_step(e, hd, s2):
    """The second similarity step without truncation, for directions the bound flags.

    H₂ = (1 + S₂)⁻¹ H₁ (1 + S₂) for H₁ = diag(hd) + e (e off-diagonal), then a third
    step S₃ from the off-diagonal part of H₂. As in :func:`_first_step`, the
    commutator [diag(hd), S₂] = −e cancels e, so H₂ = diag(hd) + (1 + S₂)⁻¹ R with
    R = e S₂ (plus the entries of e between exactly equal hd, which S₂ cannot
    remove); (1 + S₂)⁻¹ R is taken as R − S₂ R, whose error S₂² R is of eighth order
    in the absorption and measured not to change the intensities (YIG 166 strong, 64
    directions: 7.45 → 7.49·10⁻⁵ of the maximum against ``exact``; R alone:
    1.9·10⁻⁴). Two products instead of one product and an LU solve with n
    right-hand sides. Returns the eigenvalues and S₂ + S₃ (1 + S₂ + S₃ =
    (1 + S₂)(1 + S₃) up to S₂S₃, of sixth order).
    """
    gam, s3, _, _ = _remove_offdiagonal(_second_transform(e, hd, s2))
    return gam, s2 + s3


def _second_transform(e, hd, s2):
    """H₂ = diag(hd) + R − S₂ R, R = e S₂ + e|_{S₂ = 0} (:func:`_exact_second_step`)."""
    ar = namespace(e).arange(e.shape[1])
    r = e @ s2
    r += e * (s2 == 0)
    h2 = r - s2 @ r
    h2[:, ar, ar] += hd
    return h2


def _jacobi_steps(h, pim, wexc, ratio=None):
    """Perturbative similarity steps for H = diag(h) + i·pim (pim zero on the diagonal).

    :func:`_first_step` (S₁; off-diagonal to third order, eigenvalue shifts to
    fourth), then a second step S₂ on its off-diagonal part e (eigenvalues
    + diag(e S₂)). Directions where the a-posteriori bound on the neglected terms
    (:func:`_neglected_bound`) exceeds :data:`NEGLECTED_LIMIT` get the second step
    without truncation and a third (:func:`_exact_second_step`). Returns the eigenvalues, S₁ and S₂
    (eigenvectors (1 + S₁)(1 + S₂)), a flag for directions where absorption mixes
    excited Bloch waves strongly (:data:`FAST_MIXING_LIMIT`) and a flag for the
    directions that were redone. A real ``pim`` (centrosymmetric crystals) keeps the
    first product real. ``ratio``, when the caller has it, is (pim/(h_k − h_j), its
    modulus) from :func:`_gap_ratio`.
    """
    xp = namespace(h)
    r, r_abs = _gap_ratio(h, pim) if ratio is None else ratio
    unsafe = xp.amax(r_abs * wexc, (1, 2)) > FAST_MIXING_LIMIT
    s1, s1ps, e = _first_step(h, pim, r)
    gam, s2, hd, inv_abs = _remove_offdiagonal(e)
    redo = _neglected_bound(s1, s1ps, e, s2, inv_abs, wexc) > NEGLECTED_LIMIT
    k = xp.nonzero(redo)
    if len(k):
        gam[k], s2[k] = _exact_second_step(e[k], hd[k], s2[k])
    unsafe |= xp.amax(abs(s2) * wexc, (1, 2)) > FAST_MIXING_LIMIT
    return gam, s1, s2, unsafe, redo


def _excitation_weight(c0):
    """max(|c_j|, |c_k|): mixing matters in proportion to the stronger excitation."""
    w = abs(c0)
    return namespace(c0).maximum(w[:, :, None], w[:, None, :])


def _absorb_perturbatively(lam, vec, c0, aabs, kn2, n_out: int):
    """Eigen-solution of (A′ + i A′_abs)/2K_n from the elastic one (see module docstring).

    In the elastic eigenbasis H = diag(h) + P, h_j = (λ_j + i Q_jj)/2K_n,
    P = i Q_offdiag/2K_n, Q = B† A′_abs B. Clusters of Bloch waves coupled by P
    more strongly than :data:`CLUSTER_LIMIT` of their gap are diagonalised exactly
    (small complex eigen-problems, batched by cluster size); the rest of P is
    removed by two perturbative similarity steps.

    Returns γ (n_g, n), the output rows of the eigenvectors (n_g, n_out, n), the
    excitations c (n_g, n), a flag (n_g,) marking directions the caller must
    solve exactly, and the number of directions that needed clusters.
    """
    xp = namespace(lam)
    q = _adjoint(vec) @ aabs @ vec
    n_g, n = lam.shape
    ar = xp.arange(n)
    h = (lam + 1j * q[:, ar, ar].real) / kn2
    q[:, ar, ar] = 0.0
    q /= kn2[:, :, None]
    pim = q
    ratio, ratio_abs = _gap_ratio(h, pim)
    big = ratio_abs > CLUSTER_LIMIT
    clustered = big.any(axis=(1, 2))
    gam = xp.empty((n_g, n), complex)
    bout = xp.empty((n_g, n_out, n), complex)
    c = xp.empty((n_g, n), complex)
    unsafe = xp.zeros(n_g, bool)
    for with_clusters in (False, True):
        k = xp.nonzero(clustered == with_clusters)
        if not len(k):
            continue
        # one group holding every direction (the usual case) takes the arrays
        # themselves, not copies (the steps below do not write to them)
        whole = len(k) == n_g

        def pick(x, k=k, whole=whole):
            return x if whole else x[k]

        hk, pk, ck = pick(h), pick(pim), xp.to_complex(c0[k])
        vo = vec[:, :n_out, :] if whole else vec[k, :n_out, :]
        rk = (pick(ratio), pick(ratio_abs))
        if with_clusters:
            # the cluster search and the small eigen-problems run on the host (the
            # ratios in place: a group's own, not used again)
            hk, pk, ck, vo, r, r_abs, bad = (xp.asarray(x) for x in _cluster_rounds(
                *(xp.to_numpy(x) for x in (hk, pk, ck, vo, *rk))))
            rk = (r, r_abs)
        else:
            bad = xp.zeros(len(k), bool)
        h2, s1, s2, uns, _ = _jacobi_steps(hk, pk, _excitation_weight(ck), rk)
        # eigenvectors V = (1 + S₁)(1 + S₂), applied factor by factor: the output
        # rows are few, and two LU solves cost less than the product S₁S₂
        if xp.is_complex(vo):
            bo = vo + vo @ s1
        else:
            bo = vo + xp.real_times_complex(vo, s1)
        bo += bo @ s2
        c_k = _solve_one_plus(s2, _solve_one_plus(s1, ck))
        redo = xp.nonzero(uns & ~bad)
        if len(redo):
            # strong coupling at second order (through third waves): quasi-degenerate
            # clusters of the once-transformed problem, on the host
            fixed = _quasi_degenerate(*(xp.to_numpy(x[redo]) for x in (
                hk, pk, ck, vo, rk[0])))
            h2[redo], bo[redo], c_k[redo], uns[redo] = (xp.asarray(x) for x in fixed)
        gam[k] = h2
        bout[k] = bo
        c[k] = c_k
        unsafe[k] = uns | bad
    return gam, bout, c, unsafe, int(clustered.sum())


def _quasi_degenerate(h: np.ndarray, pim: np.ndarray, c0: np.ndarray, vo: np.ndarray,
                      ratio: np.ndarray) -> tuple[np.ndarray, ...]:
    """The two similarity steps with exact clusters between them (host, numpy).

    For directions where the second step of :func:`_jacobi_steps` mixes Bloch waves
    strongly — waves coupled weakly to each other but both to a third wave, so
    that their effective coupling at second order is not small against their gap
    — the once-transformed problem H₁ = (1 + S₁)⁻¹ H (1 + S₁) = diag(h) + P S₁ −
    S₁ P S₁ is searched for clusters with |(H₁)_jk/(h₁k − h₁j)| > :data:`CLUSTER_LIMIT`,
    which are diagonalised exactly (quasi-degenerate perturbation theory: the far
    waves are folded in first, the near-degenerate block is solved exactly; e.g.
    Löwdin 1951, Messiah 1961, ch. XVI §2), before the second step removes the
    rest. The eigenvectors are then (1 + S₁) W (1 + S₂).

    Returns γ (n_g, n), the output rows (n_g, n_out, n), the excitations c (n_g, n)
    and a flag (n_g,) for directions still strongly mixed (solved exactly).
    """
    s1, _, h1 = _first_step(h, pim, ratio)
    bo = vo + vo @ s1
    c = _solve_one_plus(s1, c0)
    _, s, _, _ = _remove_offdiagonal(h1 + 0.0)
    bad = _diagonalise_clusters(h1, bo, c, _clusters(np.abs(s) > CLUSTER_LIMIT))
    gam, s2, _, _ = _remove_offdiagonal(h1)
    bad |= (np.abs(s2) * _excitation_weight(c)).max(axis=(1, 2)) > FAST_MIXING_LIMIT
    bo = bo + bo @ s2
    c = _solve_one_plus(s2, c)
    return gam, bo, c, bad


def _cluster_rounds(h: np.ndarray, pim: np.ndarray, c0: np.ndarray, vo: np.ndarray,
                    ratio: np.ndarray, ratio_abs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Diagonalise clusters of strongly coupled Bloch waves, up to :data:`CLUSTER_ROUNDS`.

    Parameters are the directions that have clusters (numpy, host): h (n_g, n), pim
    (n_g, n, n), c₀ (n_g, n), the output rows vo (n_g, n_out, n) and the gap ratios
    pim/(h_k − h_j) with their moduli (n_g, n, n), updated in place. Returns the new h,
    pim, c₀ and vo, the gap ratios of the last round and their moduli, and a flag for
    directions that are still strongly mixed or whose cluster eigenvectors are
    ill-conditioned. A round changes only the rows and columns of the waves in its
    clusters, so only those gap ratios are recomputed.
    """
    n = h.shape[1]
    ar = np.arange(n)
    vo = vo.astype(complex)
    pim = pim.astype(complex)
    ratio = ratio.astype(complex, copy=False)
    h = h.copy()
    hc = 1j * pim
    hc[:, ar, ar] = h
    bad = np.zeros(len(h), bool)
    big = ratio_abs > CLUSTER_LIMIT
    for _ in range(CLUSTER_ROUNDS):
        clusters = _clusters(big)
        bad |= _diagonalise_clusters(hc, vo, c0, clusters)
        d = np.concatenate([np.repeat(dirs, m.shape[1]) for dirs, m in clusters])
        j = np.concatenate([m.ravel() for _, m in clusters])
        h[d, j] = hc[d, j, j]
        for rows in (True, False):
            # row j (pairs j→k) or column j (pairs k→j) of the touched waves
            sel = (d, j, slice(None)) if rows else (d, slice(None), j)
            p = -1j * hc[sel]
            p[np.arange(len(d)), j] = 0.0
            pim[sel] = p
            gap = h[d] - h[d, j][:, None] if rows else h[d, j][:, None] - h[d]
            gap[np.arange(len(d)), j] = np.inf
            gap[gap == 0] = np.inf
            r = p / gap
            ratio[sel] = r
            r_abs = np.abs(r)
            ratio_abs[sel] = r_abs
            big[sel] = r_abs > CLUSTER_LIMIT
        if not big.any():
            break
    bad |= big.any(axis=(1, 2))
    return h, pim, c0, vo, ratio, ratio_abs, bad
