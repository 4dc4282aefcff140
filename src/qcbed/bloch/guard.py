"""The physical guard of every solver path (numpy and torch; see docs/engine.md).

In an absorbing crystal no Bloch wave may grow with thickness: for A = H + iK with
K positive semi-definite every eigenvalue has Im γ ≥ λ_min(K)/2K_n ≥ 0 (the
numerical range of A). The checks here are cheap, per direction, and always on.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .xp import namespace

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
    if not np.any(k.imag):  # centrosymmetric, origin at the centre: a real matrix
        k = k.real
    if len(k) <= 2000:
        # only the lowest eigenvalue (LAPACK ?syevr/?heevr with an index range)
        lam = float(scipy.linalg.eigh(k, eigvals_only=True, subset_by_index=[0, 0],
                                      driver="evr")[0])
    else:
        off = np.abs(k).sum(axis=1) - np.abs(np.diag(k))
        lam = float(np.min(np.diag(k).real - off))
    return min(0.0, lam)


def physically_invalid(gamma, bout, c, *, check_amplitude: bool = True,
                       max_growth: float = 0.0):
    """Directions whose eigen-solution breaks the physics (the always-on guard).

    A direction fails when any value is not finite, when a Bloch wave grows with
    thickness (Im γ_j < −:data:`GROWTH_TOLERANCE`; absorption makes every Im γ_j
    ≥ 0), or, with ``check_amplitude``, when Σ_j |B_gj||c_j| exceeds
    :data:`AMPLITUDE_LIMIT` for an output beam (a unitary B gives ≤ 1).

    The arrays are numpy arrays or torch tensors (:mod:`qcbed.bloch.xp`).

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
    array (n_dir,) bool
    """
    xp = namespace(gamma)
    bad = ~(xp.isfinite(gamma).all(axis=1) & xp.isfinite(c).all(axis=1)
            & xp.isfinite(bout).all(axis=(1, 2)))
    with xp.errstate():
        bad |= (gamma.imag < -(GROWTH_TOLERANCE + max_growth)).any(axis=1)
        if check_amplitude:
            amp = xp.einsum("dgj,dj->dg", abs(bout), abs(c))
            bad |= xp.amax(amp, (1,)) > AMPLITUDE_LIMIT
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
