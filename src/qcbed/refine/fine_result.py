"""The outcome of a fine refinement (:class:`RefinementResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .parameters import (
    ParameterSet,
)
from .result import RefinementOutcome


@dataclass
class RefinementResult(RefinementOutcome):
    """Outcome of a fine refinement.

    Attributes
    ----------
    parameters : ParameterSet
        Final values with ``esd`` set.
    gof : float
        Final goodness of fit (reduced χ² for the χ² metrics).
    chi2 : float
        Reduced χ² with the data's variances (whatever the metric).
    dof : int
        Degrees of freedom: used samples − refined parameters − linear parameters.
    n_used : int
        Samples compared.
    scale, background : float, ndarray
        Closed-form scale and background(s).
    correlation : ndarray (p, p)
        Correlation matrix of the free parameters (order of ``free_names``).
    covariance : ndarray (p, p)
    free_names : list of str
    strong_correlations : list of (str, str, float)
        Pairs with |ρ| > 0.9.
    r_factor : float
        Σ|model − I_x| / Σ I_x.
    zncc : dict
        Per-reflection zero-normalised cross-correlation of model and experiment.
    history : list of dict
        Every iteration's parameters and GOF.
    message : str
    n_iterations, n_solves : int
    elapsed_s : float
    """

    parameters: ParameterSet
    gof: float
    chi2: float
    dof: int
    n_used: int
    scale: float
    background: np.ndarray
    correlation: np.ndarray
    covariance: np.ndarray
    free_names: list[str]
    strong_correlations: list[tuple[str, str, float]]
    r_factor: float
    zncc: dict[str, float]
    history: list[dict]
    message: str
    n_iterations: int
    n_solves: int
    elapsed_s: float
    extra: dict = field(default_factory=dict)

    def value(self, name: str) -> float:
        return self.parameters[name].value

    # ------------------------------------------------------------ RefinementOutcome
    @property
    def names(self) -> list[str]:  # type: ignore[override]
        """The refined (free) parameters, in the order of ``x``."""
        return list(self.free_names)

    @property
    def x(self) -> np.ndarray:  # type: ignore[override]
        return np.array([self.parameters[n].value for n in self.free_names], float)

    @property
    def x_esd(self) -> np.ndarray:  # type: ignore[override]
        return np.array([np.nan if self.parameters[n].esd is None else self.parameters[n].esd
                         for n in self.free_names], float)

    @property
    def success(self) -> bool:  # type: ignore[override]
        """False when the optimiser stopped at its iteration limit or the fit is not finite."""
        m = self.message.lower()
        return bool(np.isfinite(self.gof)) and not (
            m.startswith("stopped after max_iter") or "maximum number" in m)

    @property
    def nit(self) -> int:  # type: ignore[override]
        return int(self.n_iterations)

    @property
    def nfev(self) -> int:  # type: ignore[override]
        return int(self.n_solves)

    @property
    def correlation_matrix(self) -> np.ndarray:  # type: ignore[override]
        return self.correlation

    @property
    def model(self) -> np.ndarray | None:  # type: ignore[override]
        """Model intensities (n_refl, n_pts) at the solution (scale and background applied)."""
        return self.extra.get("model")

    @property
    def experiment(self) -> np.ndarray | None:  # type: ignore[override]
        """Experimental intensities (n_refl, n_pts) compared."""
        return self.extra.get("experiment")

    def esd(self, name: str) -> float | None:
        return self.parameters[name].esd

    def _repr_html_(self) -> str:
        """Jupyter view (:func:`qcbed.refine.notebook.result_html`)."""
        from .notebook import result_html

        return result_html(self)

    def plot(self, **kw):
        """χ² and parameter traces with the correlation matrix
        (:func:`qcbed.refine.notebook.plot_result`)."""
        from .notebook import plot_result

        return plot_result(self, **kw)

    def summary(self) -> str:
        """Printable summary: parameters ± esd, χ², correlations."""
        lines = [f"GOF = {self.gof:.5g}  (reduced chi2 = {self.chi2:.5g}, dof = {self.dof}, "
                 f"n = {self.n_used}, R = {self.r_factor:.4f})",
                 f"scale = {self.scale:.6g}, background = "
                 f"{np.array2string(np.asarray(self.background), precision=4)}",
                 self.parameters.table()]
        if self.strong_correlations:
            lines.append("strongly correlated: " + ", ".join(
                f"{a}/{b} ({r:+.3f})" for a, b, r in self.strong_correlations))
        lines.append(f"{self.message} ({self.n_iterations} iterations, {self.n_solves} "
                     f"eigen-solves, {self.elapsed_s:.1f} s)")
        return "\n".join(lines)
