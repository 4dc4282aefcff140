"""Eigen-solutions of a set of incident directions, ready for any thickness.

:meth:`Simulation.solve <qcbed.bloch.simulation.Simulation.solve>` returns a
:class:`Solution`; its intensities and amplitudes at any thickness need no
re-diagonalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import MAX_THICKNESS, check_numbers
from .solver import EigenChunk


def check_thickness(thickness: float | ArrayLike, name: str = "thickness") -> np.ndarray:
    """Thicknesses in Å as a 1-D array: finite, 0 ≤ t ≤ :data:`MAX_THICKNESS`."""
    return np.atleast_1d(check_numbers(thickness, name, low=0.0, high=MAX_THICKNESS,
                                       unit="Å")).reshape(-1)



@dataclass
class Solution:
    """Eigen-solutions for a set of incident directions, ready for any thickness.

    Attributes
    ----------
    kt : ndarray (..., 2)
        Tangential wave vectors (Å⁻¹) in the shape they were given.
    hkl : ndarray (n_out, 3)
        Output reflections (000 first).
    eigen : EigenChunk
        Stored eigenvalues, output rows × excitations, beam counts.
    phase : ndarray (n_out,) complex
        exp(−2πi g·s): converts internal-origin amplitudes to the user's origin.
    """

    kt: np.ndarray
    hkl: np.ndarray
    eigen: EigenChunk
    phase: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.kt.shape[:-1]

    def intensities(self, thickness: float | ArrayLike) -> np.ndarray:
        """Flux-normalised intensities I_g(t) → (n_t, ..., n_out); t in Å."""
        t = check_thickness(thickness)
        i = self.eigen.intensities(t)
        return i.reshape((len(t),) + self.shape + (len(self.hkl),))

    def amplitudes(self, thickness: float | ArrayLike) -> np.ndarray:
        """Exit-surface amplitudes φ_g(t) (user's origin) → (n_t, ..., n_out) complex."""
        t = check_thickness(thickness)
        psi = self.eigen.amplitudes(t) / self.eigen.m_out[None] * self.phase
        return psi.reshape((len(t),) + self.shape + (len(self.hkl),))

    @property
    def n_strong(self) -> np.ndarray:
        """Beams in the eigen-problem of each direction (shape of ``kt[..., 0]``)."""
        return self.eigen.n_strong.reshape(self.shape)

    def beam_counts(self) -> dict[str, float]:
        """Beam counts and what the solver had to do, over the directions.

        ``strong_min``/``strong_mean``/``strong_max`` and ``weak_mean``: beams in the
        eigen-problem and beams included by Bethe potentials; ``exact_fallback``:
        directions re-solved with the general complex solver (strong absorptive
        mixing or a failed physical guard); ``rejected``: directions returned as
        NaN because every solver failed the physical guard; ``clustered``:
        directions where the ``fast`` solver diagonalised near-degenerate
        Bloch-wave clusters exactly.
        """
        ns, nw = self.eigen.n_strong, self.eigen.n_weak
        return {"strong_min": int(ns.min()), "strong_mean": float(ns.mean()),
                "strong_max": int(ns.max()), "weak_mean": float(nw.mean()),
                "exact_fallback": int(self.eigen.n_fallback),
                "rejected": int(self.eigen.n_rejected),
                "clustered": int(self.eigen.n_clustered)}
