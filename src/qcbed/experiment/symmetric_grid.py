"""Region grids that the pattern symmetry maps onto themselves.

The dynamical intensities obey I_{gR}(k_t S) = I_g(k_t) for every pattern
operation {R|t} whose rotation fixes the zone axis and the surface normal
(Spence & Zuo 1992, §6; Buxton et al. 1976; :mod:`qcbed.bloch.symmetry`), S
acting on frame vectors about the zone axis k_t = 0. A region's sample points
form a lattice translate, k_t(i, j) = o + i a + j b with a, b the k_t steps along
its two sides. The engine need solve only one point per orbit when the point set
is closed under every S — which it is (up to the region's edges) when

* each S maps the lattice L = {i a + j b} onto itself, (i, j) ↦ (i, j) M with M an
  integer matrix, and
* the offset o satisfies o S − o ∈ L for every S.

A region drawn about the coarse-refined ``tilt0`` is in general a fraction of a
sample off such a position. :func:`symmetric_region` moves it by less than one
sample step to the nearest offset o′ ∈ {0, a/2, b/2, (a + b)/2} + L that every
usable S keeps (o′ = 0 + L, the zone axis on a sample, always qualifies). The
data are sampled by cubic splines at any position (:class:`~qcbed.experiment.ROI`),
so the move costs no information; it changes which data positions are compared
by less than one sample step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .geometry import ExperimentGeometry
from .roi import Region

__all__ = ["lattice_operations", "symmetric_region"]


def _integer(m: np.ndarray, tol: float = 1e-6) -> bool:
    return bool(np.all(np.abs(m - np.rint(m)) <= tol))


def lattice_operations(basis: np.ndarray, ops: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The 2 × 2 frame operations S (k_t ↦ k_t S) that map the lattice with rows
    ``basis`` (2, 2) onto itself."""
    inv = np.linalg.inv(basis)
    return [np.asarray(s, float) for s in ops
            if _integer(basis @ np.asarray(s, float) @ inv)]


def symmetric_region(region: Region, geometry: ExperimentGeometry,
                     ops: Sequence[np.ndarray]) -> tuple[Region, np.ndarray]:
    """The region moved by less than one sample step so that its k_t grid is closed
    under the operations ``ops`` (2 × 2, k_t ↦ k_t S) up to its edges.

    Parameters
    ----------
    region : Region
        In display pixels of ``geometry``.
    geometry : ExperimentGeometry
        Pixel ↔ k_t map (affine, :meth:`ExperimentGeometry.display_to_kt`).
    ops : sequence of (2, 2) arrays
        Pattern operations on frame k_t (identity included or not).

    Returns
    -------
    region : Region
        The moved region (the same one when no non-trivial operation maps its
        sample lattice onto itself).
    shift : (2,) float
        The move in display pixels (row, col).
    """
    s12, s13 = region.steps
    c0 = region.corners[0]
    o = geometry.display_to_kt(c0)
    basis = np.array([geometry.display_to_kt(c0 + s12) - o,
                      geometry.display_to_kt(c0 + s13) - o])
    usable = [s for s in lattice_operations(basis, ops) if not np.allclose(s, np.eye(2))]
    if not usable:
        return region, np.zeros(2)
    inv = np.linalg.inv(basis)
    best: tuple[float, np.ndarray] | None = None
    for frac in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
        cand = np.asarray(frac) @ basis
        if not all(_integer((cand @ s - cand) @ inv) for s in usable):
            continue
        target = cand + np.rint((o - cand) @ inv) @ basis
        dist = float(np.linalg.norm(target - o))
        if best is None or dist < best[0]:
            best = (dist, target)
    assert best is not None  # (0, 0) always qualifies
    shift = geometry.kt_to_display(best[1]) - c0
    moved = Region(region.corners + shift, region.n12, region.n13, region.pad)
    return moved, shift
