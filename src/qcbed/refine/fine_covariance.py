"""After the fit: covariance (JᵀJ)⁻¹·χ²_ν, esds, correlations, the result, checkpoint I/O."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np

from .._core.hkl import hkl_key
from ..experiment.grids import interior_mask
from .checkpoint import restore_checkpoint, save_lm_checkpoint
from .fine_result import RefinementResult
from .gof import linear_fit, zncc
from .lm import LMState

#: Condition number of the scaled JᵀJ above which the covariance counts as singular.
_SINGULAR_COND = 1e14


def covariance_from_jacobian(r: np.ndarray, j: np.ndarray, n_linear: int,
                             n_samples: int | None = None) -> tuple[np.ndarray, float, int]:
    """(cov, χ²_ν, dof) of weighted residuals ``r`` with Jacobian ``j`` (m, p).

    cov = χ²_ν (JᵀJ)⁻¹ with dof = n − p − ``n_linear`` (Press et al. 2007, §15.5), n =
    ``n_samples`` (default m; fewer when copied images are counted once); NaN
    when JᵀJ is singular (condition number of the scaled matrix above 1e14).
    """
    dof = (len(r) if n_samples is None else int(n_samples)) - j.shape[1] - n_linear
    chi2nu = float(r @ r) / max(dof, 1)
    jtj = j.T @ j
    scale = np.sqrt(np.clip(np.diag(jtj), 1e-300, None))
    singular = not np.all(np.isfinite(jtj)) or \
        np.linalg.cond(jtj / np.outer(scale, scale)) > _SINGULAR_COND
    if singular:  # some parameter combination is not determined by the data
        cov = np.full_like(jtj, np.nan)
    else:
        cov = np.linalg.inv(jtj) * chi2nu
    return cov, chi2nu, dof


#: Largest lag-1 correlation used in the serial-correlation factor (a residual field
#: correlated beyond it is a gross misfit; the factor would grow without bound).
MAX_SERIAL_RHO = 0.95


def serial_correlation(resid: np.ndarray, regions) -> dict:
    """Serial correlation of weighted residuals on the region grids and the variance
    inflation it implies (Bérar & Lelann 1991, J. Appl. Cryst. 24, 1: esds of a
    least-squares fit whose successive residuals are correlated are too small).

    The lag-1 correlations ρ along rows and columns are pooled over every region
    and reflection (Σ r_i r_(i+1) / Σ r_i² over pairs of compared samples); for a
    separable first-order autoregressive field the variance of a fitted value
    grows by f = (1 + ρ_r)/(1 − ρ_r) · (1 + ρ_c)/(1 − ρ_c) (each ρ clipped to
    [0, 0.95]: anti-correlation does not shrink the esds).

    Parameters
    ----------
    resid : ndarray (n_refl, n_pts)
        Weighted residuals (r/σ), NaN where not compared.
    regions : sequence of RegionGrid
        How the points form images.

    Returns
    -------
    dict
        ``rho_rows``, ``rho_cols``, ``factor`` (variance; 1 without region grids or
        pairs), ``n_pairs``.

    Examples
    --------
    >>> from qcbed.refine import RegionGrid
    >>> r = np.tile([1.0, 1.0, -1.0, -1.0], 4)[None, :]     # ++--: two of three pairs agree
    >>> round(serial_correlation(r, [RegionGrid(0, (4, 4))])["rho_cols"], 3)
    0.333
    """
    num = {0: 0.0, 1: 0.0}
    den = {0: 0.0, 1: 0.0}
    pairs = 0
    for reg in regions or []:
        block = resid[:, reg.start:reg.start + reg.size].reshape(
            (resid.shape[0],) + tuple(reg.shape))
        block = np.where(interior_mask(reg.shape, reg.pad)[None], block, np.nan)
        for ax in (0, 1):
            a = block.take(range(block.shape[ax + 1] - 1), axis=ax + 1)
            b = block.take(range(1, block.shape[ax + 1]), axis=ax + 1)
            ok = np.isfinite(a) & np.isfinite(b)
            num[ax] += float(np.sum(a[ok] * b[ok]))
            den[ax] += 0.5 * float(np.sum(a[ok] ** 2 + b[ok] ** 2))
            pairs += int(ok.sum())
    rho = [num[ax] / den[ax] if den[ax] > 0 else 0.0 for ax in (0, 1)]
    rc = [float(np.clip(x, 0.0, MAX_SERIAL_RHO)) for x in rho]
    factor = float(np.prod([(1 + x) / (1 - x) for x in rc]))
    return {"rho_rows": float(rho[0]), "rho_cols": float(rho[1]), "factor": factor,
            "n_pairs": pairs}


class _CovarianceMixin:
    """Part of :class:`~qcbed.refine.fine.Refinement` (see there)."""

    # ------------------------------------------------------------ results
    def covariance(self) -> tuple[list[str], np.ndarray, float, int]:
        """Covariance (values' units) of all free parameters at the current point.

        cov = χ²_ν (JᵀJ)⁻¹ with J the joint weighted Jacobian (linear parameters
        projected out) and χ²_ν the reduced χ² (Press et al. 2007, §15.5).
        The variance is multiplied by the serial-correlation factor of the
        residuals on the region grids (:func:`serial_correlation`; Bérar & Lelann
        1991), 1 for uncorrelated residuals; ``self.serial`` holds it.
        """
        names = [p.name for p in self.params.free]
        r, j, fit, mask = self._residuals(names, None, True)
        cov, chi2nu, dof = covariance_from_jacobian(r, j, fit.n_linear, self._n_samples(mask))
        regions = getattr(getattr(self, "data", None), "regions", None)
        full = np.full(np.shape(mask), np.nan)
        if mask is not None and regions:
            full[mask] = r
        self.serial = serial_correlation(full, regions if mask is not None else None)
        return names, cov * self.serial["factor"], chi2nu, dof

    def _finish(self, message: str, n_iter: int) -> RefinementResult:
        names, cov, chi2nu, dof = self.covariance()
        if not np.all(np.isfinite(cov)):
            message += ("; DEGENERATE: the covariance is singular (a parameter combination "
                        "is not determined by the data), esds are undefined (null)")
            warnings.warn(f"degenerate refinement: singular covariance of {names}; esds are "
                          "undefined", UserWarning, stacklevel=3)
        if not (np.isfinite(chi2nu) and chi2nu > 0):
            message += f"; DEGENERATE: χ²_ν = {chi2nu:g} (a perfect or undefined fit)"
            warnings.warn(f"degenerate refinement: χ²_ν = {chi2nu:g}", UserWarning,
                          stacklevel=3)
        with np.errstate(invalid="ignore"):
            esd = np.sqrt(np.clip(np.diag(cov), 0, None))
        for n, e in zip(names, esd):
            self.params[n].esd = float(e)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(esd, esd)
        strong = []
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                if abs(corr[a, b]) > 0.9:
                    strong.append((names[a], names[b], float(corr[a, b])))
        if strong:
            warnings.warn("strongly correlated parameters: " + ", ".join(
                f"{a}/{b} ρ={r:+.3f}" for a, b, r in strong), UserWarning, stacklevel=3)
        gofv = self.evaluate()
        sim = self.simulate()
        exp, var, valid = self.data.sample(self._sampling_values())
        mask = self._compare_mask(valid, sim)
        if self.solver_counts.get("rejected"):
            warnings.warn(f"{self.solver_counts['rejected']} of "
                          f"{self.solver_counts['directions']} directions were rejected by "
                          "the engine's physical guard (NaN) and left out of the fit",
                          UserWarning, stacklevel=3)
        fit = linear_fit(sim, exp, var, mask, self.disc, self.background)
        model = fit.scale * sim
        bg = np.zeros_like(sim)
        if self.background == "single":
            bg[:] = fit.background[0]
        elif self.background == "per_disc":
            used_discs = np.unique(np.asarray(self.disc)[mask])
            for k, d in enumerate(used_discs):
                bg[np.asarray(self.disc) == d] = fit.background[k]
        model = model + bg
        r_factor = float(np.sum(np.abs(model - exp)[mask]) / np.sum(np.abs(exp[mask])))
        zn = {hkl_key(h): zncc(model[i], exp[i], mask[i])
              for i, h in enumerate(self.data.hkl)}
        res = RefinementResult(
            parameters=self.params.copy(), gof=gofv.value, chi2=chi2nu, dof=dof,
            n_used=int(mask.sum()), scale=fit.scale, background=fit.background,
            correlation=corr, covariance=cov, free_names=names, strong_correlations=strong,
            r_factor=r_factor, zncc=zn, history=list(self.history), message=message,
            n_iterations=n_iter, n_solves=self.n_solves,
            elapsed_s=time.perf_counter() - self._t0,
            extra={"model": model, "experiment": exp, "mask": mask,
                   "solver": dict(self.solver_counts), "serial_correlation": self.serial})
        if self.checkpoint is not None:
            # keep the optimiser state: a resume after the end (e.g. a kill during the
            # final write) continues from it instead of restarting the count
            lm = getattr(self, "_lm_final", None)
            lm = lm if lm is not None and lm[0] == names else None
            self._save_checkpoint(names, None if lm is None else lm[1],
                                  None if lm is None else lm[2], final=res)
        return res

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, names: Sequence[str], x0, st: LMState | None,
                         final: RefinementResult | None = None) -> None:
        save_lm_checkpoint(self.checkpoint, params=self.params, names=names, x0=x0, state=st,
                           history=self.history, final=final)

    def _load_checkpoint(self, names: list[str] | None) -> LMState | None:
        ck = restore_checkpoint(self.checkpoint, self.params, names)
        self.history = list(ck["history"])
        if names is None or ck["state"] is None:
            return None
        self._ckpt_x0 = np.asarray(ck["x0"])
        return LMState.from_dict(ck["state"])

