"""Zone-axis frame, incident wave vectors and exact excitation errors.

Conventions (``docs/conventions.md``): the zone axis [uvw] points from the
specimen to the source; the beam travels along −ẑ; x̂ is the x-axis reciprocal
vector made perpendicular to ẑ; ŷ = ẑ × x̂. The incident wave vector in the
crystal is K = k_t − K_z ẑ with K² = k₀² + U₀ (refraction; Spence & Zuo 1992,
eq. 2.17) and the excitation error is exact:

    2K S_g = K² − |K + g|² = −2 K·g − |g|²        (Å⁻²).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from ..crystal import Lattice
from ..errors import InputError


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n


@dataclass(frozen=True)
class ZoneFrame:
    """Orthonormal zone-axis frame (x̂, ŷ, ẑ) attached to a lattice.

    Parameters
    ----------
    lattice : Lattice
    zone : array_like of 3
        Zone axis [uvw], direct-lattice components, pointing to the source.
    x_axis : array_like of 3
        Reciprocal vector (hkl components) defining x̂ after projection
        perpendicular to ẑ.
    normal : array_like of 3, optional
        Surface normal, direct-lattice components, pointing to the source
        (default: the zone axis).
    """

    lattice: Lattice
    zone: tuple[float, float, float]
    x_axis: tuple[float, float, float]
    normal: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        z = np.asarray(self.zone, dtype=float)
        x = np.asarray(self.x_axis, dtype=float)
        if z.shape != (3,) or not np.any(z):
            raise InputError("zone axis must be three numbers, not all zero", tag="zone",
                             found=self.zone)
        if x.shape != (3,) or not np.any(x):
            raise InputError("x axis must be three numbers, not all zero", tag="xaxis",
                             found=self.x_axis)
        object.__setattr__(self, "zone", tuple(float(v) for v in z))
        object.__setattr__(self, "x_axis", tuple(float(v) for v in x))
        if self.normal is None:
            object.__setattr__(self, "normal", self.zone)
        else:
            n = np.asarray(self.normal, dtype=float)
            if n.shape != (3,) or not np.any(n):
                raise InputError("surface normal must be three numbers, not all zero",
                                 tag="norm", found=self.normal)
            object.__setattr__(self, "normal", tuple(float(v) for v in n))
        zc = self.lattice.cartesian_direct(z)
        xc = self.lattice.cartesian_reciprocal(x)
        xp = xc - np.dot(xc, zc) / np.dot(zc, zc) * zc
        if np.linalg.norm(xp) < 1e-8 * np.linalg.norm(xc):
            raise InputError("x axis is parallel to the zone axis", tag="xaxis",
                             expected="a reciprocal vector not parallel to [uvw]",
                             found=self.x_axis)
        nc = self.lattice.cartesian_direct(np.asarray(self.normal))
        if np.dot(_unit(nc), _unit(zc)) <= 0.0:
            raise InputError("surface normal must point to the same side as the zone axis "
                             "(both towards the source)", tag="norm",
                             found=self.normal)

    # ------------------------------------------------------------ axes
    @cached_property
    def rotation(self) -> np.ndarray:
        """3×3 matrix whose rows are x̂, ŷ, ẑ in the crystal Cartesian frame."""
        zc = _unit(self.lattice.cartesian_direct(self.zone))
        xc = self.lattice.cartesian_reciprocal(self.x_axis)
        xh = _unit(xc - np.dot(xc, zc) * zc)
        yh = np.cross(zc, xh)
        return np.array([xh, yh, zc])

    @property
    def x_hat(self) -> np.ndarray:
        """x̂ (Cartesian crystal frame)."""
        return self.rotation[0]

    @property
    def y_hat(self) -> np.ndarray:
        """ŷ = ẑ × x̂."""
        return self.rotation[1]

    @property
    def z_hat(self) -> np.ndarray:
        """ẑ, the unit zone axis (towards the source)."""
        return self.rotation[2]

    @cached_property
    def normal_frame(self) -> np.ndarray:
        """Unit surface normal n̂ (towards the source) in frame components."""
        return self.rotation @ _unit(self.lattice.cartesian_direct(self.normal))

    # ------------------------------------------------------------ conversions
    def g_frame(self, hkl: ArrayLike) -> np.ndarray:
        """Frame components (g_x, g_y, g_z) in Å⁻¹ of reciprocal vectors hkl (..., 3)."""
        return self.lattice.cartesian_reciprocal(hkl) @ self.rotation.T

    def hkl_from_frame(self, g: ArrayLike) -> np.ndarray:
        """Miller-index components of frame vectors (inverse of :meth:`g_frame`)."""
        return self.lattice.fractional_reciprocal(np.asarray(g, float) @ self.rotation)

    def kt_from_reciprocal(self, kt_hkl: ArrayLike) -> np.ndarray:
        """Tangential wave vector (k_x, k_y) in Å⁻¹ from reciprocal-lattice components.

        The ``.dat`` ``kt`` line gives k_t as h a* + k b* + l c*; its component
        along ẑ (zero for a valid input) is discarded.
        """
        return self.g_frame(kt_hkl)[..., :2]

    def kt_to_reciprocal(self, kt: ArrayLike) -> np.ndarray:
        """Reciprocal-lattice components of a tangential vector (k_x, k_y)."""
        kt = np.asarray(kt, dtype=float)
        full = np.concatenate([kt, np.zeros(kt.shape[:-1] + (1,))], axis=-1)
        return self.hkl_from_frame(full)

    def tilt_angles(self, kt: ArrayLike, k_magnitude: float) -> np.ndarray:
        """Beam tilt from the zone axis (θ_x, θ_y) in mrad for k_t (Å⁻¹) and |K| (Å⁻¹)."""
        return np.arcsin(np.asarray(kt, dtype=float) / k_magnitude) * 1e3

    def replace(self, **changes) -> ZoneFrame:
        """A copy with some fields changed (e.g. a new lattice)."""
        fields = {"lattice": self.lattice, "zone": self.zone, "x_axis": self.x_axis,
                  "normal": self.normal}
        fields.update(changes)
        return ZoneFrame(**fields)


def incident_kz(kt: np.ndarray, k_in: float) -> np.ndarray:
    """K_z = sqrt(K² − |k_t|²) (Å⁻¹) for tangential wave vectors (..., 2)."""
    kt2 = np.sum(np.asarray(kt) ** 2, axis=-1)
    if np.any(kt2 >= k_in**2):
        raise InputError("tangential wave vector longer than K", expected=f"|k_t| < {k_in:g}",
                         found=float(np.sqrt(kt2.max())))
    return np.sqrt(k_in**2 - kt2)


def excitation_errors(g: np.ndarray, kt: np.ndarray, k_in: float) -> np.ndarray:
    """Exact 2K·S_g = K² − |K+g|² in Å⁻² (Spence & Zuo 1992, eq. 2.19).

    Parameters
    ----------
    g : ndarray (n_beams, 3)
        Beams in frame components (Å⁻¹).
    kt : ndarray (n_dir, 2)
        Tangential incident wave vectors (Å⁻¹).
    k_in : float
        K = sqrt(k₀² + U₀) in Å⁻¹.

    Returns
    -------
    ndarray (n_dir, n_beams)
    """
    kz = incident_kz(kt, k_in)
    kdotg = kt @ g[:, :2].T - kz[:, None] * g[None, :, 2]
    return -2.0 * kdotg - np.sum(g * g, axis=1)[None, :]


def normal_components(g: np.ndarray, kt: np.ndarray, k_in: float, normal: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(K_n, g_n) along the inward normal n̂_in = −n̂ (Å⁻¹).

    Returns K_n (n_dir,) > 0 and g_n (n_beams,) used in the factors 1 + g_n/K_n
    of the Bloch-wave equation (Spence & Zuo 1992, eq. 2.21).
    """
    kz = incident_kz(kt, k_in)
    n = np.asarray(normal, dtype=float)
    k_n = -(kt @ n[:2] - kz * n[2])
    g_n = -(g @ n)
    return k_n, g_n
