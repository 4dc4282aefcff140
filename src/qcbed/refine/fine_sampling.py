"""Where the fine-refinement model is solved: every ROI sample, or a coarser grid.

Dynamical intensities vary smoothly on the scale of the data pixels: their finest
features, thickness fringes and Bloch-wave beats, have periods of order
K/(t·|g_i − g_j|) in k_t (e.g. ≈ 0.04 Å⁻¹ for Si at 200 kV and 1650 Å, eight
0.005 Å⁻¹ pixels). Diagonalising at every sample of a densely sampled region
therefore over-samples the model. With a *model step* k > 1 the engine solves
every k-th sample along each axis of a region grid (and the last one) and the
intensities and their derivatives at all samples follow by cubic-spline
interpolation (not-a-knot end conditions; de Boor 1978, ch. IV and V). The
interpolation is linear, so the Jacobian of the interpolated model is the
interpolated Jacobian; every data sample is still compared.

The step is chosen from the data themselves (:func:`interpolation_shift`): the
Gauss–Newton shift of every free parameter that the interpolation error would
cause, δ = (JᵀJ)⁻¹Jᵀ(r_k − r_1) with J and r the weighted full-density Jacobian and
residuals, must stay below :data:`MODEL_STEP_TOL` of its esd (JᵀJ)⁻¹_ii^½. After
the fit the same shift is measured again at the optimum on the full grid (see
:meth:`qcbed.refine.fine.Refinement.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_interp_spline

#: Largest interpolation-induced shift of any refined parameter, in esds, that a
#: model step may cause (at the start and, measured again, at the optimum).
MODEL_STEP_TOL = 0.1

#: Model steps tried by the automatic choice, largest first.
AUTO_STEPS = (4, 3, 2)


def axis_operator(n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Solved positions along an axis of ``n`` samples and the interpolation matrix.

    Returns (idx (m,), M (n, m)) with values(all) = M @ values(idx). Every
    ``step``-th sample and the last are solved; axes with fewer than four solved
    samples (too few for a cubic) are solved at every sample (M = 1).
    """
    idx = np.unique(np.r_[np.arange(0, n, step), n - 1]) if n else np.arange(0)
    if step <= 1 or len(idx) < 4 or len(idx) == n:
        return np.arange(n), np.eye(n)
    spline = make_interp_spline(idx.astype(float), np.eye(len(idx)), k=3)
    m = spline(np.arange(n, dtype=float))
    m[idx] = np.eye(len(idx))  # exact at the solved samples
    return idx, m


@dataclass
class ModelGrid:
    """The samples the engine solves and how every sample follows from them.

    Attributes
    ----------
    step : int
    solve : (n_solved,) int
        Indices into the data's points that are solved.
    parts : list of (point slice, solved slice, My, Mx) or (points, solved) index pairs
        Region grids are interpolated (rows with My, columns with Mx); points
        outside every region are copied.
    n_points : int
    """

    step: int
    solve: np.ndarray
    parts: list
    n_points: int

    @classmethod
    def build(cls, n_points: int, regions, step: int) -> ModelGrid:
        """Grid for ``n_points`` data points with region grids ``regions``."""
        if step <= 1 or not regions:
            return cls(step=1, solve=np.arange(n_points), parts=[], n_points=n_points)
        solve: list[np.ndarray] = []
        parts: list = []
        covered = np.zeros(n_points, bool)
        n_solved = 0
        for reg in regions or []:
            ny, nx = reg.shape
            iy, my = axis_operator(ny, step)
            ix, mx = axis_operator(nx, step)
            pts = reg.start + (iy[:, None] * nx + ix[None, :]).ravel()
            solve.append(pts)
            parts.append(("grid", slice(reg.start, reg.start + reg.size),
                          slice(n_solved, n_solved + len(pts)), my, mx))
            covered[reg.start:reg.start + reg.size] = True
            n_solved += len(pts)
        rest = np.nonzero(~covered)[0]
        if len(rest):
            solve.append(rest)
            parts.append(("copy", rest, np.arange(n_solved, n_solved + len(rest))))
        solved = np.concatenate(solve) if solve else rest
        if len(solved) == n_points:  # nothing to interpolate: every point, in order
            return cls(step=1, solve=np.arange(n_points), parts=[], n_points=n_points)
        return cls(step=int(step), solve=solved, parts=parts, n_points=n_points)

    @property
    def trivial(self) -> bool:
        """Every point is solved (no interpolation)."""
        return len(self.solve) == self.n_points

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Values at the solved samples (..., n_solved) → every sample (..., n_points).

        A NaN (a direction the engine's guard rejected) makes every sample whose
        interpolation weights it NaN, so that it is left out of the fit.
        """
        lead = values.shape[:-1]
        out = np.empty((*lead, self.n_points), dtype=values.dtype)
        for part in self.parts:
            if part[0] == "copy":
                out[..., part[1]] = values[..., part[2]]
                continue
            _, psl, ssl, my, mx = part
            sub = values[..., ssl].reshape(*lead, my.shape[1], mx.shape[1])
            bad = ~np.isfinite(sub)
            if bad.any():
                hit = (np.abs(my) > 1e-12).astype(float) @ bad.astype(float) @ \
                    (np.abs(mx) > 1e-12).astype(float).T
                sub = np.where(bad, 0.0, sub)
            full = my @ sub @ mx.T
            if bad.any():
                full = np.where(hit > 0, np.nan, full)
            out[..., psl] = full.reshape(*lead, -1)
        return out


def interpolation_shift(j_full: np.ndarray, r_full: np.ndarray, r_step: np.ndarray
                        ) -> np.ndarray:
    """Parameter shifts in esds that replacing r_full by r_step causes (Gauss–Newton).

    δ = (JᵀJ)⁻¹Jᵀ(r_step − r_full), divided by the esds √((JᵀJ)⁻¹)_ii of unit
    χ²_ν (stricter than the χ²_ν-scaled esds whenever χ²_ν ≥ 1). Columns of J that
    are zero are ignored.
    """
    if r_full.shape != r_step.shape:
        return np.array([np.inf])
    keep = np.any(j_full != 0, axis=0)
    j = j_full[:, keep]
    if not j.shape[1]:
        return np.zeros(0)
    jtj = j.T @ j
    try:
        cov = np.linalg.inv(jtj)
    except np.linalg.LinAlgError:
        return np.array([np.inf])
    delta = cov @ (j.T @ (r_step - r_full))
    return np.abs(delta) / np.sqrt(np.clip(np.diag(cov), 1e-300, None))
