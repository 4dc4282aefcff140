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
  diag(h) + P S₁ − S₁ P S₁ + O(P⁴), whose diagonal holds the second- and
  third-order eigenvalue shifts and whose off-diagonal part the second step
  removes), give eigenvectors and eigenvalues of the absorbing problem with
  errors of fourth order in U′/ΔΛ. The classic eigenvalue-only method has a first-order error in
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

import numpy as np

from ..errors import InputError
from .beams import BeamSelection, select_strong
from .geometry import excitation_errors, normal_components


@dataclass
class EngineArrays:
    """Everything a worker needs to solve directions (compact and picklable).

    Attributes
    ----------
    g : (N, 3) pool beams in frame components (Å⁻¹)
    index : (N, N) int32 rows of ``u``/``u_abs`` for g_i − g_j
    u, u_abs : (M,) U and U′ (Å⁻², internal origin)
    n_out : number of output beams (pool indices 0..n_out−1; 000 first)
    k_in : K = sqrt(k₀² + U₀) (Å⁻¹)
    normal : unit surface normal towards the source, frame components
    rules : BeamSelection
    mode : ``'fast'`` or ``'exact'``
    """

    g: np.ndarray
    index: np.ndarray
    u: np.ndarray
    u_abs: np.ndarray
    n_out: int
    k_in: float
    normal: np.ndarray
    rules: BeamSelection
    mode: str = "fast"
    version: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "exact"):
            raise InputError("solver mode must be 'fast' or 'exact'", found=self.mode)
        self.refresh()

    def refresh(self) -> None:
        """Recompute derived quantities after ``u``/``u_abs`` changed."""
        scale = max(float(np.abs(self.u).max()), 1e-30)
        self.real = bool(np.all(np.abs(self.u.imag) <= 1e-12 * scale)
                         and np.all(np.abs(self.u_abs.imag) <= 1e-12 * scale))
        self.coupling = np.abs(self.u[self.index[:, 0]])
        self.u_abs0 = float(self.u_abs[self.index[0, 0]].real)
        self.absorption_floor = absorption_floor(self.u_abs, self.index)

    @property
    def max_growth(self) -> float:
        """Largest growth rate of a Bloch wave that the absorption model allows (Å⁻¹).

        0 for a physical model (U′ matrix positive semi-definite). Otherwise
        −λ_min/2K with a 10 % margin for the surface-normal scaling: the bound on
        −Im γ_j from the numerical range of A = H + iK (Im γ_j ≥ λ_min(K)/2K_n).
        """
        return max(0.0, -self.absorption_floor) * 1.1 / (2.0 * self.k_in)

    def update_values(self, rows: np.ndarray, u: np.ndarray, u_abs: np.ndarray,
                      version: int) -> None:
        """Apply a structure-factor update (only the changed rows travel)."""
        self.u[rows] = u
        self.u_abs[rows] = u_abs
        self.version = version
        self.refresh()


def absorption_floor(u_abs: np.ndarray, index: np.ndarray) -> float:
    """min(0, λ_min) of the pool's absorptive matrix U′_{g−h} (Å⁻²).

    An absorptive potential is non-negative, so its matrix is positive
    semi-definite and no Bloch wave can grow with thickness. A negative value
    flags an unphysical model (e.g. U′₀ = 0 with U′_g ≠ 0, as in ``.dat`` files with
    ``abs 0.0``). Pools above 2000 beams use Gershgorin's (cheaper, lower) bound.
    """
    if not np.any(u_abs):
        return 0.0
    k = u_abs[index]
    k = 0.5 * (k + np.conj(k.T))
    if len(k) <= 2000:
        lam = float(np.linalg.eigvalsh(k)[0])
    else:
        off = np.abs(k).sum(axis=1) - np.abs(np.diag(k))
        lam = float(np.min(np.diag(k).real - off))
    return min(0.0, lam)


@dataclass
class EigenChunk:
    """Compact eigen-solutions of a chunk of directions (zero-padded to ``n_max``).

    The exit amplitudes of the output beams are

        ψ_g(t) = Σ_j B_gj c_j exp(2πi γ_j t),

    and the flux-normalised intensities I_g = |ψ_g|².

    Attributes
    ----------
    gamma : (n_dir, n_max) complex
        Bloch-wave eigenvalues γ_j (Å⁻¹); the imaginary part is the absorption.
    bout : (n_dir, n_out, n_max) complex
        Output-beam rows of the (symmetrised) eigenvectors.
    c : (n_dir, n_max) complex
        Bloch-wave excitations from the entrance boundary condition B c = e₀.
    n_strong, n_weak : (n_dir,) int
        Beams in the eigen-problem, and beams included by Bethe potentials.
    m_out : (n_dir, n_out)
        √(1 + g_n/K_n) of the output beams (φ_g = ψ_g / m_g).
    gmat : (n_dir, n_params, n_max, n_max) complex or None
        G_p = B⁻¹ ∂H/∂p B for analytic structure-factor derivatives (``exact`` mode).
    n_fallback : int
        Directions the ``fast`` solver handed to the general complex solver
        (strong absorptive mixing, or the physical guard failed).
    n_rejected : int
        Directions whose general complex solution failed the physical guard too
        (see :func:`physically_invalid`): their values are NaN, never a number.
    n_clustered : int
        Directions where the ``fast`` solver diagonalised clusters of
        near-degenerate Bloch waves exactly inside the perturbative step.
    """

    gamma: np.ndarray
    bout: np.ndarray
    c: np.ndarray
    n_strong: np.ndarray
    n_weak: np.ndarray
    m_out: np.ndarray
    gmat: np.ndarray | None = None
    n_fallback: int = 0
    n_rejected: int = 0
    n_clustered: int = 0
    max_growth: float = 0.0

    @property
    def n_dir(self) -> int:
        return len(self.gamma)

    @property
    def n_params(self) -> int:
        """Number of structure-factor parameters with stored derivatives."""
        return 0 if self.gmat is None else self.gmat.shape[1]

    def gradients(self, thickness: float, structure: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intensities and their derivatives at one thickness (``exact`` mode).

        With H = V diag(γ) V⁻¹ and G_p = V⁻¹ (∂H/∂p) V (stored), the derivative of
        the propagator is V [G_p ∘ Φ] V⁻¹ with Φ_jk = (e_j − e_k)/(γ_j − γ_k) and
        Φ_jj = 2πi t e_j (e.g. Wilcox 1967; Najfeld & Havel 1995), so

            ∂ψ/∂p = V_out [(G_p ∘ Φ) c],   ∂ψ/∂t = V_out (2πi γ ∘ e ∘ c),
            ∂I/∂x = 2 Re(ψ* ∂ψ/∂x).

        Parameters
        ----------
        thickness : float
            Å.
        structure : bool
            Compute the structure-factor derivatives (False: thickness only).

        Returns
        -------
        I : (n_dir, n_out)
        dI_dp : (n_dir, n_params, n_out)
            Derivatives with respect to the structure-factor parameters.
        dI_dt : (n_dir, n_out)
            Derivative with respect to thickness (Å⁻¹).
        """
        t = float(thickness)
        e = np.exp(2j * np.pi * self.gamma * t)
        ec = e * self.c
        psi = np.einsum("dgj,dj->dg", self.bout, ec)
        dpsi_dt = np.einsum("dgj,dj->dg", self.bout, 2j * np.pi * self.gamma * ec)
        inten = psi.real**2 + psi.imag**2
        dI_dt = 2.0 * np.real(np.conj(psi) * dpsi_dt)
        if self.gmat is None or not structure:
            return inten, np.zeros((self.n_dir, 0, psi.shape[1])), dI_dt
        dh = self.gamma[:, :, None] - self.gamma[:, None, :]
        de = e[:, :, None] - e[:, None, :]
        small = np.abs(dh) * (2 * np.pi * max(abs(t), 1.0)) < 1e-7
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.where(small, 1j * np.pi * t * (e[:, :, None] + e[:, None, :]),
                           de / np.where(small, 1.0, dh))
        v = np.einsum("dpjk,djk,dk->dpj", self.gmat, phi, self.c)
        dpsi = np.einsum("dgj,dpj->dpg", self.bout, v)
        dI_dp = 2.0 * np.real(np.conj(psi)[:, None, :] * dpsi)
        return inten, dI_dp, dI_dt

    def amplitudes(self, thickness: np.ndarray) -> np.ndarray:
        """ψ_g(t) for thicknesses (n_t,) in Å → (n_t, n_dir, n_out) complex."""
        t = np.atleast_1d(np.asarray(thickness, dtype=float))
        out = np.empty((len(t), self.n_dir, self.bout.shape[1]), dtype=complex)
        for k, tk in enumerate(t):
            w = np.exp(2j * np.pi * self.gamma * tk) * self.c
            out[k] = np.einsum("dgj,dj->dg", self.bout, w)
        return out

    def intensities(self, thickness: np.ndarray) -> np.ndarray:
        """Flux-normalised I_g(t) = |ψ_g(t)|² → (n_t, n_dir, n_out).

        Directions whose output intensities sum to more than 1 are NaN
        (:func:`flux_guard`).
        """
        a = self.amplitudes(thickness)
        return flux_guard(a.real**2 + a.imag**2, thickness, self.max_growth)

    @staticmethod
    def concatenate(chunks: list[EigenChunk]) -> EigenChunk:
        """Join chunks (re-padding to the largest matrix size)."""
        n_max = max(c.gamma.shape[1] for c in chunks)

        def pad(a: np.ndarray, axes: int = 1) -> np.ndarray:
            w = [(0, 0)] * (a.ndim - axes) + [(0, n_max - a.shape[-1])] * axes
            return np.pad(a, w)

        return EigenChunk(
            gamma=np.concatenate([pad(c.gamma) for c in chunks]),
            bout=np.concatenate([pad(c.bout) for c in chunks]),
            c=np.concatenate([pad(c.c) for c in chunks]),
            n_strong=np.concatenate([c.n_strong for c in chunks]),
            n_weak=np.concatenate([c.n_weak for c in chunks]),
            m_out=np.concatenate([c.m_out for c in chunks]),
            gmat=None if chunks[0].gmat is None else
            np.concatenate([pad(c.gmat, 2) for c in chunks]),
            n_fallback=sum(c.n_fallback for c in chunks),
            n_rejected=sum(c.n_rejected for c in chunks),
            n_clustered=sum(c.n_clustered for c in chunks),
            max_growth=max(c.max_growth for c in chunks),
        )

    def take(self, idx: np.ndarray) -> EigenChunk:
        """A subset of directions."""
        return EigenChunk(self.gamma[idx], self.bout[idx], self.c[idx], self.n_strong[idx],
                          self.n_weak[idx], self.m_out[idx],
                          None if self.gmat is None else self.gmat[idx],
                          max_growth=self.max_growth)


@dataclass
class PatternChunk:
    """Intensities of a chunk of directions, with what the solver had to do for them.

    Attributes
    ----------
    intensities : ndarray (n_t, n_dir, n_out)
        Flux-normalised intensities; NaN for rejected directions.
    n_fallback : int
        Directions re-solved with the general complex solver.
    n_rejected : int
        Directions returned as NaN (the physical guard failed for every solver).
    n_clustered : int
        Directions where near-degenerate Bloch-wave clusters were diagonalised exactly.
    """

    intensities: np.ndarray
    n_fallback: int = 0
    n_rejected: int = 0
    n_clustered: int = 0

    @classmethod
    def from_intensities(cls, inten: np.ndarray, n_fallback: int = 0,
                         n_clustered: int = 0) -> PatternChunk:
        """Count the rejected (non-finite) directions of ``inten`` (n_t, n_dir, n_out)."""
        rejected = int(np.count_nonzero(~np.isfinite(inten).all(axis=(0, 2))))
        return cls(inten, int(n_fallback), rejected, int(n_clustered))

    def counts(self) -> dict[str, int]:
        """The solver counts as a dict (for results files)."""
        return {"directions": int(self.intensities.shape[1]),
                "exact_fallback": self.n_fallback, "rejected": self.n_rejected,
                "clustered": self.n_clustered}

    @staticmethod
    def concatenate(chunks: list[PatternChunk]) -> PatternChunk:
        """Join chunks along the direction axis."""
        return PatternChunk(np.concatenate([c.intensities for c in chunks], axis=1),
                            sum(c.n_fallback for c in chunks),
                            sum(c.n_rejected for c in chunks),
                            sum(c.n_clustered for c in chunks))


def _gather(vec: np.ndarray, index: np.ndarray, rows: np.ndarray, cols: np.ndarray
            ) -> np.ndarray:
    """vec[index[rows_i, cols_j]] for batched index lists (n, a) × (n, b) → (n, a, b)."""
    return vec[index[rows[:, :, None], cols[:, None, :]]]


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

#: Physical guard (always on): in an absorbing crystal no Bloch wave grows with
#: thickness, Im γ_j ≥ 0. Round-off and the Bethe approximation allow this much
#: (Å⁻¹; a growth factor of at most exp(2π·1e-7·t), 1.006 at t = 1 µm).
GROWTH_TOLERANCE = 1e-7

#: Physical guard: the amplitudes of the eigen-solution obey
#: Σ_j |B_gj||c_j| ≤ 1 for a unitary B (Cauchy–Schwarz); a perturbative solution
#: far above that bound relies on cancellations that the perturbation cannot be
#: trusted to deliver, and is re-solved exactly.
AMPLITUDE_LIMIT = 1.5

#: Physical guard: the flux-normalised intensities of the output beams may not sum
#: to more than 1 (beyond round-off); directions that do are NaN, never a number.
FLUX_TOLERANCE = 1e-5


def _inverse_gaps(h: np.ndarray) -> np.ndarray:
    """1/(h_k − h_j) for j ≠ k, and 0 on the diagonal (and for exactly equal h)."""
    dh = h[:, None, :] - h[:, :, None]
    n = h.shape[1]
    ar = np.arange(n)
    dh[:, ar, ar] = np.inf
    dh[dh == 0] = np.inf
    return 1.0 / dh


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


def _jacobi_steps(h: np.ndarray, pim: np.ndarray, wexc: np.ndarray,
                  inv_gaps: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two perturbative similarity steps for H = diag(h) + i·pim (pim zero on the diagonal).

    S₁ = P/(h_k − h_j) with P = i·pim; (1 + S₁)⁻¹ H (1 + S₁) = diag(h) + P S₁ − S₁ P S₁
    + O(P⁴), whose diagonal holds the second- and third-order eigenvalue shifts
    and whose off-diagonal part the second step S₂ removes. Returns the
    eigenvalues, T = S₁ + S₂ + S₁ S₂ (eigenvectors 1 + T) and a flag for
    directions where absorption mixes excited Bloch waves strongly
    (:data:`FAST_MIXING_LIMIT`). A real ``pim`` (centrosymmetric crystals) keeps
    the products real.
    """
    n = h.shape[1]
    ar = np.arange(n)
    s1 = (1j * pim) * (_inverse_gaps(h) if inv_gaps is None else inv_gaps)
    unsafe = (np.abs(s1) * wexc).max(axis=(1, 2)) > FAST_MIXING_LIMIT
    if np.isrealobj(pim):
        ps = 1j * (pim @ s1.real + 1j * (pim @ s1.imag))
    else:
        ps = 1j * (pim @ s1)
    h2mat = ps - s1 @ ps
    h2 = h + h2mat[:, ar, ar]
    h2mat[:, ar, ar] = 0.0
    s2 = h2mat * _inverse_gaps(h2)
    h2 = h2 + np.sum(h2mat * np.swapaxes(s2, 1, 2), axis=2)
    unsafe |= (np.abs(s2) * wexc).max(axis=(1, 2)) > FAST_MIXING_LIMIT
    t = s1 @ s2
    t += s1
    t += s2
    return h2, t, unsafe


def _excitation_weight(c0: np.ndarray) -> np.ndarray:
    """max(|c_j|, |c_k|): mixing matters in proportion to the stronger excitation."""
    w = np.abs(c0)
    return np.maximum(w[:, :, None], w[:, None, :])


def _absorb_perturbatively(lam: np.ndarray, vec: np.ndarray, c0: np.ndarray,
                           aabs: np.ndarray, kn2: np.ndarray, n_out: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
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
    q = np.conj(np.swapaxes(vec, 1, 2)) @ aabs @ vec
    n_g, n = lam.shape
    ar = np.arange(n)
    h = (lam + 1j * q[:, ar, ar].real) / kn2
    q[:, ar, ar] = 0.0
    pim = q / kn2[:, :, None]
    inv = _inverse_gaps(h)
    big = np.abs(pim) * np.abs(inv) > CLUSTER_LIMIT
    clustered = big.any(axis=(1, 2))
    gam = np.empty((n_g, n), complex)
    bout = np.empty((n_g, n_out, n), complex)
    c = np.empty((n_g, n), complex)
    unsafe = np.zeros(n_g, bool)
    for with_clusters in (False, True):
        k = np.nonzero(clustered == with_clusters)[0]
        if not len(k):
            continue
        hk, pk, ck = h[k], pim[k], c0[k].astype(complex)
        vo = vec[k, :n_out, :]
        bad = np.zeros(len(k), bool)
        if with_clusters:
            vo = vo.astype(complex)
            hc = 1j * pk.astype(complex)
            hc[:, ar, ar] = hk
            bigk = big[k]
            for _ in range(CLUSTER_ROUNDS):
                bad |= _diagonalise_clusters(hc, vo, ck, _clusters(bigk))
                hk = hc[:, ar, ar].copy()
                pk = -1j * hc
                pk[:, ar, ar] = 0.0
                bigk = np.abs(pk) * np.abs(_inverse_gaps(hk)) > CLUSTER_LIMIT
                if not bigk.any():
                    break
            bad |= bigk.any(axis=(1, 2))
        h2, t, uns = _jacobi_steps(hk, pk, _excitation_weight(ck),
                                   None if with_clusters else inv[k])
        if np.isrealobj(vo):
            bo = vo + (vo @ t.real + 1j * (vo @ t.imag))
        else:
            bo = vo + vo @ t
        t[:, ar, ar] += 1.0
        gam[k] = h2
        bout[k] = bo
        c[k] = np.linalg.solve(t, ck[..., None])[..., 0]
        unsafe[k] = uns | bad
    return gam, bout, c, unsafe, int(clustered.sum())


def physically_invalid(gamma: np.ndarray, bout: np.ndarray, c: np.ndarray, *,
                       check_amplitude: bool = True, max_growth: float = 0.0) -> np.ndarray:
    """Directions whose eigen-solution breaks the physics (the always-on guard).

    A direction fails when any value is not finite, when a Bloch wave grows with
    thickness (Im γ_j < −:data:`GROWTH_TOLERANCE`; absorption makes every Im γ_j
    ≥ 0), or, with ``check_amplitude``, when Σ_j |B_gj||c_j| exceeds
    :data:`AMPLITUDE_LIMIT` for an output beam (a unitary B gives ≤ 1).

    Parameters
    ----------
    gamma : (n_dir, n) complex
        Eigenvalues γ_j (Å⁻¹).
    bout : (n_dir, n_out, n) complex
        Output rows of the eigenvectors.
    c : (n_dir, n) complex
        Excitations.
    check_amplitude : bool
        Apply the amplitude bound (perturbative solutions).
    max_growth : float
        Growth rate (Å⁻¹) that an unphysical absorption model itself allows
        (:attr:`EngineArrays.max_growth`); 0 for a physical model.

    Returns
    -------
    ndarray (n_dir,) bool
    """
    bad = ~(np.isfinite(gamma).all(axis=1) & np.isfinite(c).all(axis=1)
            & np.isfinite(bout).all(axis=(1, 2)))
    with np.errstate(invalid="ignore"):
        bad |= (gamma.imag < -(GROWTH_TOLERANCE + max_growth)).any(axis=1)
        if check_amplitude:
            amp = np.einsum("dgj,dj->dg", np.abs(bout), np.abs(c))
            bad |= amp.max(axis=1) > AMPLITUDE_LIMIT
    return bad


def flux_guard(intensities: np.ndarray, thickness: np.ndarray,
               max_growth: float = 0.0) -> np.ndarray:
    """NaN for directions whose output intensities sum to more than 1 (in place).

    Parameters
    ----------
    intensities : ndarray (n_t, n_dir, n_out)
        Flux-normalised intensities.
    thickness : array_like (n_t,)
        Thicknesses (Å).
    max_growth : float
        Growth rate (Å⁻¹) an unphysical absorption model allows: the bound is then
        exp(4π·max_growth·t) instead of 1.

    Returns
    -------
    ndarray
        ``intensities``, with failing directions set to NaN.
    """
    t = np.atleast_1d(np.asarray(thickness, float)).reshape(-1, 1)
    limit = (1.0 + FLUX_TOLERANCE) * np.exp(4.0 * np.pi * max_growth * np.abs(t))
    with np.errstate(invalid="ignore"):
        bad = ~(intensities.sum(axis=-1) <= limit)
    intensities[bad] = np.nan
    return intensities


def _solve_exact(a: np.ndarray, kn2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """General complex eigen-problem: (γ, eigenvectors, excitations from B c = e₀).

    A direction whose eigen-problem LAPACK cannot solve (no convergence, singular
    eigenvectors) comes back as NaN; the physical guard then rejects it.
    """
    e0 = np.zeros(a.shape[:2] + (1,), dtype=complex)
    e0[:, 0, 0] = 1.0
    try:
        lam, vec = np.linalg.eig(a)
        c = np.linalg.solve(vec, e0)[..., 0]
    except np.linalg.LinAlgError:
        if len(a) == 1:
            nan = np.full(a.shape[:2], np.nan + 0j)
            return nan, np.full(a.shape, np.nan + 0j), nan
        parts = [_solve_exact(a[i:i + 1], kn2[i:i + 1]) for i in range(len(a))]
        return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]
    return lam / kn2, vec, c


def _exact_with_guard(a: np.ndarray, kn2: np.ndarray, n_out: int, max_growth: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_solve_exact`, then the physical guard: failing directions become NaN.

    Returns γ, the output rows of the eigenvectors, c and the rejected flags.
    """
    gam, vec, c = _solve_exact(a, kn2)
    bout = vec[:, :n_out, :]
    bad = physically_invalid(gam, bout, c, check_amplitude=False, max_growth=max_growth)
    if np.any(bad):
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
    strong, weak = select_strong(two_k_sg, arrays.coupling, arrays.n_out, arrays.rules)
    return kt, two_k_sg, k_n, g_n, strong, weak


def solve_chunk(arrays: EngineArrays, kt: np.ndarray,
                derivatives: tuple[np.ndarray, np.ndarray] | None = None) -> EigenChunk:
    """Eigen-solutions for a chunk of tangential wave vectors ``kt`` (n_dir, 2) in Å⁻¹.

    Parameters
    ----------
    arrays : EngineArrays
    kt : ndarray (n_dir, 2)
    derivatives : (du, dua), optional
        ∂U/∂p and ∂U′/∂p over the rows of the U table, each (n_params, M)
        complex. When given (``exact`` mode only), G_p = V⁻¹ ∂H/∂p V is stored
        for :meth:`EigenChunk.gradients`; Bethe corrections are differentiated
        too.
    """
    kt, two_k_sg, k_n, g_n, strong, weak = prepare_directions(arrays, kt)
    n_dir = len(kt)
    n_s = strong.sum(axis=1)
    n_max = int(n_s.max())
    n_out = arrays.n_out
    gamma = np.zeros((n_dir, n_max), dtype=complex)
    bout = np.zeros((n_dir, n_out, n_max), dtype=complex)
    cc = np.zeros((n_dir, n_max), dtype=complex)
    exact = arrays.mode == "exact"
    absorbing = bool(np.any(arrays.u_abs != 0)) and not exact
    n_exact = n_rejected = n_clustered = 0
    growth = arrays.max_growth
    m_out = np.sqrt(1.0 + g_n[None, :n_out] / k_n[:, None])
    n_weak = weak.sum(axis=1)
    real = arrays.real and not exact
    u = arrays.u.real if real else arrays.u
    ua = arrays.u_abs.real if real else arrays.u_abs
    if exact:
        u = arrays.u + 1j * arrays.u_abs
    gmat = None
    if derivatives is not None:
        if not exact:
            raise InputError("analytic derivatives need the 'exact' solver mode", found="fast")
        dtab = np.asarray(derivatives[0], complex) + 1j * np.asarray(derivatives[1], complex)
        dtab = np.atleast_2d(dtab)
        n_par = len(dtab)
        row0 = arrays.index[0, 0]
        gmat = np.zeros((n_dir, n_par, n_max, n_max), dtype=complex)
    for n in np.unique(n_s):
        rows = np.nonzero(n_s == n)[0]
        idx = np.argsort(~strong[rows], axis=1, kind="stable")[:, :n]
        diag_sg = np.take_along_axis(two_k_sg[rows], idx, axis=1)
        a = _gather(u, arrays.index, idx, idx)
        ar = np.arange(n)
        a[:, ar, ar] = diag_sg + (1j * arrays.u_abs0 if exact else 0.0)
        aabs = _gather(ua, arrays.index, idx, idx) if absorbing else None
        wmask = weak[rows]
        wcols = np.nonzero(wmask.any(axis=0))[0]
        if gmat is not None:
            da = np.stack([_gather(dtab[p], arrays.index, idx, idx) for p in range(n_par)], 1)
            da[:, :, ar, ar] = 1j * np.asarray(derivatives[1], complex).reshape(n_par, -1)[
                :, row0][None, :, None]
        if len(wcols):
            wsel = np.broadcast_to(wcols, (len(rows), len(wcols)))
            sg_w = two_k_sg[rows][:, wcols]
            d = np.where(wmask[:, wcols], 1.0 / np.where(wmask[:, wcols], sg_w, 1.0), 0.0)
            u_sw = _gather(u, arrays.index, idx, wsel) * d[:, None, :]
            u_ws = _gather(u, arrays.index, wsel, idx)
            if gmat is not None:
                for p in range(n_par):
                    du_sw = _gather(dtab[p], arrays.index, idx, wsel) * d[:, None, :]
                    du_ws = _gather(dtab[p], arrays.index, wsel, idx)
                    da[:, p] -= du_sw @ u_ws + u_sw @ du_ws
            a -= u_sw @ u_ws
            if aabs is not None:
                ua_sw = _gather(ua, arrays.index, idx, wsel) * d[:, None, :]
                ua_ws = _gather(ua, arrays.index, wsel, idx)
                # Bethe terms of (U + iU′) D (U + iU′): the absorptive first-order part,
                # and the second-order real part −U′ D U′ (Hermitian) in the elastic block
                aabs -= u_sw @ ua_ws + ua_sw @ u_ws
                a += ua_sw @ ua_ws
        m = np.sqrt(1.0 + g_n[idx] / k_n[rows, None])
        mm = m[:, :, None] * m[:, None, :]
        a /= mm
        kn2 = 2.0 * k_n[rows, None]
        if exact:
            gam, vec, c = _solve_exact(a, kn2)
            rejected = physically_invalid(gam, vec[:, :n_out, :], c, check_amplitude=False,
                                          max_growth=growth)
            if gmat is not None:
                dh = da / (mm[:, None] * kn2[:, :, None, None])
                ok = ~rejected
                gmat[rows[ok], :, :n, :n] = np.linalg.solve(vec[ok, None], dh[ok] @ vec[ok, None])
            if np.any(rejected):
                gam[rejected], vec[rejected], c[rejected] = np.nan, np.nan, np.nan
                n_rejected += int(rejected.sum())
        else:
            if not real:
                # enforce exact Hermiticity against round-off in the gathers
                a = 0.5 * (a + np.conj(np.swapaxes(a, 1, 2)))
            lam, vec = np.linalg.eigh(a)
            c = np.conj(vec[:, 0, :])
            if absorbing:
                aabs /= mm
                gam, vec, c, unsafe, n_cl = _absorb_perturbatively(lam, vec, c, aabs, kn2,
                                                                   n_out)
                n_clustered += n_cl
            else:
                gam = (lam / kn2).astype(complex)
                vec = vec[:, :n_out, :]
                unsafe = np.zeros(len(rows), bool)
            # the physical guard, always on: re-solve failing directions exactly
            unsafe |= physically_invalid(gam, vec, c, max_growth=growth)
            if np.any(unsafe):
                k = np.nonzero(unsafe)[0]
                a_k = a[k] + 1j * aabs[k] if absorbing else a[k].astype(complex)
                g_x, v_x, c_x, rej = _exact_with_guard(a_k, kn2[k], n_out, growth)
                vec, c = vec.astype(complex, copy=False), c.astype(complex, copy=False)
                gam[k], vec[k], c[k] = g_x, v_x, c_x
                n_exact += len(k)
                n_rejected += int(rej.sum())
        gamma[rows, :n] = gam
        bout[rows, :, :n] = vec[:, :n_out, :]
        cc[rows, :n] = c
    return EigenChunk(gamma=gamma, bout=bout, c=cc, n_strong=n_s, n_weak=n_weak,
                      m_out=m_out, gmat=gmat, n_fallback=n_exact, n_rejected=n_rejected,
                      n_clustered=n_clustered, max_growth=growth)


def pattern_chunk(arrays: EngineArrays, kt: np.ndarray, thickness: np.ndarray
                  ) -> PatternChunk:
    """Intensities (n_t, n_dir, n_out) for a chunk of directions, with the solver counts.

    Only these travel back from a worker (no eigen-systems).
    """
    eig = solve_chunk(arrays, kt)
    return PatternChunk.from_intensities(eig.intensities(thickness), eig.n_fallback,
                                         eig.n_clustered)
