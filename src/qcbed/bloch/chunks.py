"""The engine's data between set-up and solver: what a worker needs, and what comes back.

:class:`EngineArrays` is the compact, picklable state every executor ships once
(then only structure-factor deltas); :class:`EigenChunk` holds the eigen-solutions of
a chunk of directions (with intensities and analytic derivatives from them);
:class:`PatternChunk` only the intensities and the solver counts. The kernel that
fills them is :mod:`qcbed.bloch.solver`, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import InputError
from .beams import BeamSelection
from .guard import absorption_floor, flux_guard
from .tail import TailCorrection

#: An absorption model that lets the summed intensity grow by more than this fraction
#: per 1000 Å is unphysical: it is warned about at set-up, and the engine uses the
#: classic Bethe potentials for it (see :attr:`EngineArrays.lowdin`).
UNPHYSICAL_GROWTH_WARN = 0.10

#: The Löwdin terms expand the weak beams' energy dependence to first order in
#: λ/2KS_w; with strong-beam thresholds comparable to |U_g| weakly excited Bloch waves
#: have |λ| ~ |2KS_w| and the expansion fails (Si [1-10] D-LACBED, 441 directions,
#: max|U_g| = 0.050 Å⁻²: 225 rejected at sgmin 0.3, 107 at 0.4, 21 at 0.5, 0 at 0.8
#: and 1.0). They are used only when sgmin ≥ this ratio × max|U_g| (g ≠ 0).
LOWDIN_MIN_SGMIN_RATIO = 20.0

#: Bytes of the (directions, n, n) temporaries of :meth:`EigenChunk.gradients` (Φ and
#: the arrays it is made from) at a time: they were made for all directions at once,
#: ~5 complex numbers per strong beam² and direction beside the stored G_p. (The peak of
#: a LiNbO₃ fine step, 669 strong beams, 81 directions, stayed 7.2 GB: there the stored
#: G_p, joined from the chunks, dominate.)
GRADIENT_BLOCK_BYTES = 2**28


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
    selection_coupling : (N,) float or None
        |U_g| of each pool beam (Å⁻²) used by the Ω criterion of the strong-beam
        selection; it does not change with structure-factor updates, so a
        refinement step never moves a beam between strong and Bethe-weak. A
        :class:`~qcbed.bloch.simulation.Simulation` passes the |U_g| of its set-up
        potential (:attr:`~qcbed.bloch.simulation.Simulation.selection_coupling`);
        None: taken from ``u``.
    tail : TailCorrection or None
        Second-order terms of the beams outside the pool (:mod:`qcbed.bloch.tail`),
        added to every direction's strong-beam matrix; None: none.
    lowdin : bool or None
        Whether the Löwdin (weak–weak, energy-dependent) Bethe terms are used.
        Decided when the state is made and then kept (no switching during a fit):
        ``rules.lowdin`` unless the absorption model is unphysical
        (:meth:`unphysical_absorption`), whose growth bound the Löwdin absorptive
        terms do not respect (a PyExtal ``.dat`` with ``abs 0.0`` had every
        direction rejected), or the strong-beam threshold is too loose for the
        expansion (``rules.sgmin`` < :data:`LOWDIN_MIN_SGMIN_RATIO` × max|U_g|);
        those use the classic Bethe potentials.
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
    selection_coupling: np.ndarray | None = None
    lowdin: bool | None = None
    tail: TailCorrection | None = None

    #: Fields that a structure-factor update changes: executors ship them as row
    #: deltas against the state their workers hold (qcbed.parallel._state).
    delta_fields: ClassVar[tuple[str, ...]] = ("u", "u_abs")
    #: Fields that change with every update and are no part of the state's identity.
    counter_fields: ClassVar[tuple[str, ...]] = ("version",)

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "exact"):
            raise InputError("solver mode must be 'fast' or 'exact'", found=self.mode)
        if self.selection_coupling is None:
            self.selection_coupling = np.abs(self.u[self.index[:, 0]])
        self.refresh()
        if self.lowdin is None:
            loose = self.rules.sgmin < LOWDIN_MIN_SGMIN_RATIO * float(
                np.max(self.selection_coupling[1:], initial=0.0))
            self.lowdin = bool(self.rules.lowdin and not loose
                               and not self.unphysical_absorption())

    def refresh(self) -> None:
        """Recompute derived quantities after ``u``/``u_abs`` changed."""
        scale = max(float(np.abs(self.u).max()), 1e-30)
        self.real = bool(np.all(np.abs(self.u.imag) <= 1e-12 * scale)
                         and np.all(np.abs(self.u_abs.imag) <= 1e-12 * scale))
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

    def unphysical_absorption(self) -> bool:
        """True when the absorptive matrix lets the summed intensity grow by more than
        :data:`UNPHYSICAL_GROWTH_WARN` per 1000 Å."""
        return bool(self.absorption_floor < 0 and np.expm1(
            4 * np.pi * self.max_growth * 1000.0) > UNPHYSICAL_GROWTH_WARN)

    def update_values(self, rows: np.ndarray, u: np.ndarray, u_abs: np.ndarray,
                      version: int) -> None:
        """Apply a structure-factor update (only the changed rows travel)."""
        self.u[rows] = u
        self.u_abs[rows] = u_abs
        self.version = version
        self.refresh()


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
        G_p = C⁻¹ ∂H/∂p C for analytic structure-factor derivatives (either solver
        mode, :mod:`qcbed.bloch.eigen_derivatives`).
    lmat : (n_dir, n_params, n_out, n_out) complex or None
        L_p, the change of the output amplitudes through the Löwdin factor of
        :mod:`qcbed.bloch.lowdin` (∂ψ += L_p ψ; zero without weak beams).
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
    lmat: np.ndarray | None = None

    @property
    def n_dir(self) -> int:
        return len(self.gamma)

    @property
    def n_params(self) -> int:
        """Number of structure-factor parameters with stored derivatives."""
        return 0 if self.gmat is None else self.gmat.shape[1]

    def gradients(self, thickness: float | np.ndarray, structure: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intensities and their derivatives at one thickness per direction.

        With H = V diag(γ) V⁻¹ and G_p = V⁻¹ (∂H/∂p) V (stored), the derivative of
        the propagator is V [G_p ∘ Φ] V⁻¹ with Φ_jk = (e_j − e_k)/(γ_j − γ_k) and
        Φ_jj = 2πi t e_j (e.g. Wilcox 1967; Najfeld & Havel 1995), so

            ∂ψ/∂p = V_out [(G_p ∘ Φ) c],   ∂ψ/∂t = V_out (2πi γ ∘ e ∘ c),
            ∂I/∂x = 2 Re(ψ* ∂ψ/∂x).

        Parameters
        ----------
        thickness : float or ndarray (n_dir,)
            Å; one value for every direction, or each direction's own (a specimen
            whose illuminated thickness changes with the tilt: the formulas hold
            direction by direction).
        structure : bool
            Compute the structure-factor derivatives (False: thickness only).

        Returns
        -------
        I : (n_dir, n_out)
        dI_dp : (n_dir, n_params, n_out)
            Derivatives with respect to the structure-factor parameters.
        dI_dt : (n_dir, n_out)
            Derivative with respect to the direction's thickness (Å⁻¹).
        """
        tt = np.asarray(thickness, dtype=float)
        if tt.ndim and tt.shape != (self.n_dir,):
            raise InputError("one thickness per direction", tag="thickness",
                             expected=f"a float or shape ({self.n_dir},)", found=tt.shape)
        t = tt[:, None] if tt.ndim else float(tt)
        e = np.exp(2j * np.pi * self.gamma * t)
        ec = e * self.c
        psi = np.einsum("dgj,dj->dg", self.bout, ec)
        dpsi_dt = np.einsum("dgj,dj->dg", self.bout, 2j * np.pi * self.gamma * ec)
        inten = psi.real**2 + psi.imag**2
        dI_dt = 2.0 * np.real(np.conj(psi) * dpsi_dt)
        if self.gmat is None or not structure:
            return inten, np.zeros((self.n_dir, 0, psi.shape[1])), dI_dt
        # Φ and its temporaries are (n_dir, n, n): made block by block of directions so
        # that they stay within GRADIENT_BLOCK_BYTES whatever the number of directions
        n = self.gamma.shape[1]
        step = max(1, int(GRADIENT_BLOCK_BYTES // (6 * 16 * max(n, 1) ** 2)))
        v = np.empty((self.n_dir, self.gmat.shape[1], n), dtype=complex)
        for a in range(0, self.n_dir, step):
            b = slice(a, a + step)
            g = self.gamma[b]
            dh = g[:, :, None] - g[:, None, :]
            de = e[b, :, None] - e[b, None, :]
            t3 = tt[b, None, None] if tt.ndim else float(tt)
            small = np.abs(dh) * (2 * np.pi * np.maximum(np.abs(t3), 1.0)) < 1e-7
            with np.errstate(divide="ignore", invalid="ignore"):
                phi = np.where(small, 1j * np.pi * t3 * (e[b, :, None] + e[b, None, :]),
                               de / np.where(small, 1.0, dh))
            v[b] = np.einsum("dpjk,djk,dk->dpj", self.gmat[b], phi, self.c[b])
        dpsi = np.einsum("dgj,dpj->dpg", self.bout, v)
        if self.lmat is not None:
            dpsi += np.einsum("dpgh,dh->dpg", self.lmat, psi)
        dI_dp = 2.0 * np.real(np.conj(psi)[:, None, :] * dpsi)
        return inten, dI_dp, dI_dt

    def intensities_per_direction(self, thickness: np.ndarray) -> np.ndarray:
        """I_g at each direction's own thickness (n_dir,) in Å → (n_dir, n_out).

        Directions whose output intensities sum to more than 1 are NaN
        (:func:`flux_guard`, bounded at the largest thickness).
        """
        t = np.asarray(thickness, dtype=float).reshape(self.n_dir, 1)
        psi = np.einsum("dgj,dj->dg", self.bout, np.exp(2j * np.pi * self.gamma * t) * self.c)
        inten = (psi.real**2 + psi.imag**2)[None]
        return flux_guard(inten, [float(np.max(t, initial=0.0))], self.max_growth)[0]

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
            lmat=None if chunks[0].lmat is None else np.concatenate([c.lmat for c in chunks]),
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
                          lmat=None if self.lmat is None else self.lmat[idx],
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
