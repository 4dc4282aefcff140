"""Pattern symmetry: solve only the symmetry-irreducible incident directions.

If {R|t} is a space-group operation whose rotation fixes the zone axis and the
surface normal, the dynamical intensities obey I_{gR}(k_t S) = I_g(k_t), with
S the rotation acting on frame vectors (the translation only changes phases of
U_g; Spence & Zuo 1992, §6; Buxton et al. 1976). On a grid closed under S,
only one direction per orbit needs an eigen-solution.

The relation needs the *potential* to have the symmetry, not only the crystal:
structure factors set without their equivalents (``symmetric=False``) or a
tabulated potential can break it. :func:`pattern_operations` therefore keeps an
operation only when the current U and U′ tables obey U(gR) = exp(2πi g·t) U(g)
(the convention of :meth:`qcbed.crystal.Crystal.equivalent_reflections`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..crystal import Crystal
from .geometry import ZoneFrame


@dataclass
class SymmetryReduction:
    """Orbits of grid points under the usable pattern symmetries.

    Attributes
    ----------
    representatives : (n_rep,) int
        Grid points that are solved.
    source : (n_points,) int
        For every point p, the index into ``representatives`` of its source.
    op : (n_points,) int
        Operation mapping the source to p (0 = identity).
    out_perm : (n_ops, n_out) int
        For op k and output h: index of the output h R_k⁻¹ (I_h(p) = I_{hR⁻¹}(rep)).
    n_ops : int
    """

    representatives: np.ndarray
    source: np.ndarray
    op: np.ndarray
    out_perm: np.ndarray

    @property
    def n_ops(self) -> int:
        return len(self.out_perm)

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-representative values (..., n_rep, n_out) → all points (..., n_points, n_out)."""
        v = values[..., self.source, :]
        perm = self.out_perm[self.op]  # (n_points, n_out)
        return np.take_along_axis(v, np.broadcast_to(perm, v.shape), axis=-1)


def table_is_invariant(r: np.ndarray, t: np.ndarray, hkl: np.ndarray,
                       values: tuple[np.ndarray, ...], rtol: float = 1e-9) -> bool:
    """Whether every table U(g) (rows ``hkl``) obeys U(gR) = exp(2πi g·t) U(g).

    Rows whose image gR is not in the table are not constrained (they never couple
    beams of the pool onto each other under the operation).
    """
    where = {tuple(h): i for i, h in enumerate(np.asarray(hkl, int))}
    mapped = [where.get(tuple(h), -1) for h in np.asarray(hkl, int) @ r]
    img = np.array(mapped, dtype=int)
    ok = img >= 0
    phase = np.exp(2j * np.pi * (np.asarray(hkl, float) @ np.asarray(t, float)))[ok]
    for u in values:
        scale = max(float(np.abs(u).max()), 1e-30)
        if np.any(np.abs(u[img[ok]] - phase * u[ok]) > rtol * scale):
            return False
    return True


def pattern_operations(crystal: Crystal, frame: ZoneFrame, pool_hkl: np.ndarray, n_out: int,
                       table: tuple[np.ndarray, ...] | None = None
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Operations usable for pattern symmetry: [(R (3,3) int, S (2,2) float)], identity first.

    Kept: rotations fixing ẑ and the normal, mapping the pool and the output set
    onto themselves and — with ``table`` = (hkl (M, 3), U (M,), U′ (M,)), internal
    origin, and any further tables over the same rows — leaving the potential
    invariant (:func:`table_is_invariant`).
    """
    rot, tran = crystal.operations
    a_star = crystal.lattice.reciprocal_basis
    to_frame = frame.rotation.T
    pool_set = {tuple(h) for h in pool_hkl}
    out_set = {tuple(h) for h in pool_hkl[:n_out]}
    ops: list[tuple[np.ndarray, np.ndarray]] = []
    seen: list[np.ndarray] = []
    nrm = frame.normal_frame
    for r, tr in zip(rot, tran):
        if any(np.array_equal(r, x) for x in seen):
            continue
        # frame action: q_f -> q_f S3, with q_f = g A* Rot^T (the cheap geometric tests
        # first: the table test is the costly one)
        s3 = np.linalg.inv(a_star @ to_frame) @ r @ a_star @ to_frame
        if not (np.allclose(s3[2], [0, 0, 1], atol=1e-9) and np.allclose(s3[:, 2], [0, 0, 1],
                                                                          atol=1e-9)):
            continue
        if not np.allclose(nrm @ s3, nrm, atol=1e-9):
            continue
        mapped = pool_hkl @ r
        if not all(tuple(h) in pool_set for h in mapped):
            continue
        if not all(tuple(h) in out_set for h in mapped[:n_out]):
            continue
        if table is not None and not table_is_invariant(r, tr, table[0], table[1:]):
            continue
        seen.append(r)
        ops.append((r, s3[:2, :2]))
    ops.sort(key=lambda o: 0 if np.array_equal(o[0], np.eye(3, dtype=int)) else 1)
    return ops


def zone_rotations(crystal: Crystal, frame: ZoneFrame
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Point-group rotations that fix ẑ and the surface normal: [(R (3 × 3 int, g ↦ g R),
    S (2 × 2, k_t ↦ k_t S))].

    These are the candidates for pattern symmetry (:func:`pattern_operations`).
    """
    rot, _ = crystal.operations
    a_star = crystal.lattice.reciprocal_basis
    to_frame = frame.rotation.T
    nrm = frame.normal_frame
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for r in rot:
        if any(np.array_equal(r, x) for x, _ in out):
            continue
        s3 = np.linalg.inv(a_star @ to_frame) @ r @ a_star @ to_frame
        if (np.allclose(s3[2], [0, 0, 1], atol=1e-9) and np.allclose(s3[:, 2], [0, 0, 1],
                                                                      atol=1e-9)
                and np.allclose(nrm @ s3, nrm, atol=1e-9)):
            out.append((np.asarray(r), s3[:2, :2]))
    return out


def close_under_rotations(hkl: np.ndarray, keep: np.ndarray,
                          rotations: list[np.ndarray]) -> np.ndarray:
    """``keep`` (bool over the candidate rows ``hkl``) with every image g R of a kept
    row that is itself a candidate added (a beam pool closed under the pattern
    symmetry, so that :func:`pattern_operations` can use it)."""
    index = {tuple(h): i for i, h in enumerate(np.asarray(hkl, int))}
    out = np.asarray(keep, bool).copy()
    kept = np.asarray(hkl, int)[out]
    for r in rotations:
        for h in kept @ r:
            j = index.get(tuple(h))
            if j is not None:
                out[j] = True
    return out


def reduce_grid(points: np.ndarray, ops: list[tuple[np.ndarray, np.ndarray]],
                out_hkl: np.ndarray, tol: float) -> SymmetryReduction:
    """Orbits of ``points`` (n, 2) under ``ops``; points whose images fall off the grid stay."""
    n = len(points)
    tree = cKDTree(points)
    out_index = {tuple(h): i for i, h in enumerate(out_hkl)}
    perms = []
    images = []
    for r, s2 in ops:
        rinv = np.rint(np.linalg.inv(r)).astype(int)
        perms.append([out_index[tuple(h @ rinv)] for h in out_hkl])
        d, j = tree.query(points @ s2, distance_upper_bound=tol)
        images.append(np.where(np.isfinite(d), j, -1))
    source_pt = np.full(n, -1)
    op_of = np.zeros(n, dtype=int)
    reps = []
    for p in range(n):
        if source_pt[p] >= 0:
            continue
        reps.append(p)
        source_pt[p] = p
        for k in range(1, len(ops)):
            q = images[k][p]
            if q >= 0 and source_pt[q] < 0:
                source_pt[q] = p
                op_of[q] = k
    reps_arr = np.array(reps, dtype=int)
    rep_pos = np.full(n, -1)
    rep_pos[reps_arr] = np.arange(len(reps_arr))
    return SymmetryReduction(representatives=reps_arr, source=rep_pos[source_pt], op=op_of,
                             out_perm=np.array(perms, dtype=int).reshape(len(ops), -1))
