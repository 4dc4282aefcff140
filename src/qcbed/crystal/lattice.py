"""Unit-cell geometry: metric tensors, reciprocal lattice and a Cartesian frame.

Conventions (see ``docs/conventions.md``):

* lengths in Å, angles in degrees at the API;
* reciprocal vectors *without* 2π: a*·a = 1 (International Tables for
  Crystallography Vol. B, §1.1);
* Cartesian frame: **a** along x, **b** in the xy plane, **c** completing a
  right-handed set (the PDB/gemmi orthogonalisation convention).

Direct-lattice vectors (uvw) and reciprocal-lattice vectors (hkl) are always
given as component arrays; their Cartesian forms, lengths and scalar products
use the metric tensors, so non-orthogonal cells are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import check_number
from ..errors import InputError

#: Accepted cell lengths, Å: beyond these the metric over- or underflows long before
#: any real crystal is reached.
MIN_CELL_LENGTH = 0.1
MAX_CELL_LENGTH = 1.0e4


@dataclass(frozen=True)
class Lattice:
    """A crystal lattice given by its six cell parameters.

    Parameters
    ----------
    a, b, c : float
        Cell edge lengths in Å.
    alpha, beta, gamma : float
        Cell angles in degrees.
    """

    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            check_number(getattr(self, name), f"cell length {name}", low=MIN_CELL_LENGTH,
                         high=MAX_CELL_LENGTH, unit="Å", tag=name)
        for name in ("alpha", "beta", "gamma"):
            check_number(getattr(self, name), f"cell angle {name}", low=0.0, high=180.0,
                         low_open=True, high_open=True, unit="degrees", tag=name)
        cos = np.cos(np.radians([self.alpha, self.beta, self.gamma]))
        det = 1 - (cos**2).sum() + 2 * cos.prod()
        if det <= 1e-12:
            raise InputError(
                "cell angles do not form a valid cell (zero or negative volume)",
                expected="alpha+beta+gamma < 360 and each angle < sum of the others",
                found=(self.alpha, self.beta, self.gamma),
            )

    # ------------------------------------------------------------------ basics
    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c, α, β, γ) in Å and degrees."""
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    @cached_property
    def metric(self) -> np.ndarray:
        """Direct metric tensor G_ij = a_i·a_j in Å²."""
        return self.direct_basis @ self.direct_basis.T

    @cached_property
    def reciprocal_metric(self) -> np.ndarray:
        """Reciprocal metric tensor G* = G⁻¹ in Å⁻²."""
        return np.linalg.inv(self.metric)

    @cached_property
    def volume(self) -> float:
        """Cell volume Ω in Å³."""
        return float(abs(np.linalg.det(self.direct_basis)))

    @cached_property
    def direct_basis(self) -> np.ndarray:
        """Rows are **a**, **b**, **c** in the Cartesian frame (Å)."""
        al, be, ga = np.radians([self.alpha, self.beta, self.gamma])
        ca, cb, cg, sg = np.cos(al), np.cos(be), np.cos(ga), np.sin(ga)
        cx = self.c * cb
        cy = self.c * (ca - cb * cg) / sg
        cz = np.sqrt(max(self.c**2 - cx**2 - cy**2, 0.0))
        basis = np.array(
            [[self.a, 0.0, 0.0], [self.b * cg, self.b * sg, 0.0], [cx, cy, cz]]
        )
        basis[np.abs(basis) < 1e-14 * max(self.a, self.b, self.c)] = 0.0
        return basis

    @cached_property
    def reciprocal_basis(self) -> np.ndarray:
        """Rows are **a***, **b***, **c*** in the Cartesian frame (Å⁻¹, no 2π)."""
        return np.linalg.inv(self.direct_basis).T

    @property
    def reciprocal_parameters(self) -> tuple[float, float, float]:
        """(a*, b*, c*) in Å⁻¹."""
        return tuple(float(x) for x in np.sqrt(np.diag(self.reciprocal_metric)))

    # ----------------------------------------------------------- conversions
    def cartesian_reciprocal(self, hkl: ArrayLike) -> np.ndarray:
        """Cartesian components (Å⁻¹) of reciprocal vectors h a* + k b* + l c*.

        Parameters
        ----------
        hkl : array_like, shape (..., 3)
            Miller indices (may be non-integer).
        """
        return np.asarray(hkl, dtype=float) @ self.reciprocal_basis

    def cartesian_direct(self, uvw: ArrayLike) -> np.ndarray:
        """Cartesian components (Å) of direct vectors u a + v b + w c."""
        return np.asarray(uvw, dtype=float) @ self.direct_basis

    def fractional_reciprocal(self, g_cart: ArrayLike) -> np.ndarray:
        """Miller-index components of Cartesian reciprocal vectors (Å⁻¹)."""
        return np.asarray(g_cart, dtype=float) @ self.direct_basis.T

    def g_length(self, hkl: ArrayLike) -> np.ndarray:
        """|g| in Å⁻¹ for reciprocal vectors hkl, using the reciprocal metric."""
        h = np.asarray(hkl, dtype=float)
        return np.sqrt(np.einsum("...i,ij,...j->...", h, self.reciprocal_metric, h))

    def d_spacing(self, hkl: ArrayLike) -> np.ndarray:
        """Interplanar spacing d = 1/|g| in Å."""
        return 1.0 / self.g_length(hkl)

    def reciprocal_dot(self, h1: ArrayLike, h2: ArrayLike) -> np.ndarray:
        """Scalar product g1·g2 in Å⁻² of two reciprocal vectors (metric G*)."""
        return np.einsum("...i,ij,...j->...", np.asarray(h1, float), self.reciprocal_metric,
                         np.asarray(h2, float))

    def direct_dot(self, u1: ArrayLike, u2: ArrayLike) -> np.ndarray:
        """Scalar product r1·r2 in Å² of two direct vectors (metric G)."""
        return np.einsum("...i,ij,...j->...", np.asarray(u1, float), self.metric,
                         np.asarray(u2, float))

    def replace(self, **changes: float) -> Lattice:
        """A copy with some cell parameters changed (same keywords as the constructor)."""
        params = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), self.parameters))
        params.update(changes)
        return Lattice(**params)

    def __repr__(self) -> str:
        return (f"Lattice(a={self.a:g}, b={self.b:g}, c={self.c:g}, "
                f"alpha={self.alpha:g}, beta={self.beta:g}, gamma={self.gamma:g})")
