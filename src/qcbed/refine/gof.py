"""Goodness-of-fit functions with closed-form scale and backgrounds.

All functions compare a simulation I_t with an experiment I_x, sample by
sample, using the variance σ² of each sample and a boolean mask of the
samples that count. The model is I = c·I_t + b (seed paper eq. 8, with the
detector response already applied to I_t), with the scale c and the
background(s) b from weighted linear least squares in closed form — one
background, one per disc (Zuo 1999, Extal's ``tnorm0``), or none.

χ² per degree of freedom (seed paper eq. 1):

    χ² = Σ (c I_t + b − I_x)² / σ² / (n − p),

where n counts only the samples used and p counts *every* fitted parameter:
the refined ones plus the scale and the backgrounds. Custom metrics subclass
:class:`GOF`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

BACKGROUNDS = ("none", "single", "per_disc")


@dataclass
class LinearFit:
    """Closed-form scale/background and the weighted residuals.

    Attributes
    ----------
    scale : float
    background : ndarray (n_bg,)
        One value, one per disc, or empty.
    residuals : ndarray (n_used,)
        (c I_t + b − I_x)/σ over the used samples.
    design : ndarray (n_used, 1 + n_bg)
        Weighted design matrix [I_t/σ, onehot/σ] (for variable projection).
    n_linear : int
        Number of linear parameters (1 + n_bg).
    """

    scale: float
    background: np.ndarray
    residuals: np.ndarray
    design: np.ndarray
    n_linear: int

    @property
    def chi2_sum(self) -> float:
        return float(np.sum(self.residuals**2))


def linear_fit(sim: np.ndarray, exp: np.ndarray, var: np.ndarray, mask: np.ndarray,
               disc: np.ndarray | None = None, background: str = "single",
               fixed_scale: float | None = None) -> LinearFit:
    """Weighted least-squares scale c and background(s) b for I_x ≈ c·I_t + b.

    Parameters
    ----------
    sim, exp, var, mask : ndarray, same shape
        Simulated and experimental intensities, variances σ² (> 0) and the
        samples to use.
    disc : ndarray of int, same shape, optional
        Disc (reflection) index of every sample, for ``background='per_disc'``.
    background : {'none', 'single', 'per_disc'}
    fixed_scale : float, optional
        Keep c fixed (e.g. an absolute-scale experiment).
    """
    if background not in BACKGROUNDS:
        raise InputError("unknown background model", expected=list(BACKGROUNDS),
                         found=background)
    m = np.asarray(mask, bool)
    if not m.any():
        raise InputError("no valid samples to compare", found=0)
    v = np.asarray(var, float)[m]
    if np.any(v <= 0) or not np.all(np.isfinite(v)):
        raise InputError("variances must be finite and > 0", found=int(np.sum(~(v > 0))))
    w = 1.0 / np.sqrt(v)
    it = np.asarray(sim, float)[m]
    ix = np.asarray(exp, float)[m]
    cols = [it * w] if fixed_scale is None else []
    if background == "single":
        cols.append(w)
    elif background == "per_disc":
        if disc is None:
            raise InputError("per-disc backgrounds need the disc index of every sample")
        d = np.asarray(disc)[m]
        for k in np.unique(d):
            cols.append(np.where(d == k, w, 0.0))
    target = ix * w if fixed_scale is None else (ix - fixed_scale * it) * w
    if cols:
        x = np.stack(cols, axis=1)
        beta, *_ = np.linalg.lstsq(x, target, rcond=None)
        model = x @ beta
    else:
        x = np.zeros((len(it), 0))
        beta = np.zeros(0)
        model = np.zeros_like(target)
    resid = model - target
    if fixed_scale is None:
        scale, bg = float(beta[0]), beta[1:]
    else:
        scale, bg = float(fixed_scale), beta
    return LinearFit(scale=scale, background=np.asarray(bg), residuals=resid, design=x,
                     n_linear=x.shape[1])


def count_copies_once(var: np.ndarray, mask: np.ndarray, copies: np.ndarray | None
                      ) -> tuple[np.ndarray, int]:
    """Variances and sample count with copied images counted once.

    A reflection whose image is one of m copies of the same measurement
    (:func:`qcbed.experiment.copy_groups`) gets its variances multiplied by m, so
    the m copies weigh in χ² as one image does, and contributes 1/m per used
    sample to the number of samples (Press et al. 2007, §15.1: χ² sums over
    independent measurements).

    Parameters
    ----------
    var : ndarray (n_refl, n_pts)
        Variances of the samples (data units squared).
    mask : ndarray (n_refl, n_pts) of bool
        Samples compared.
    copies : ndarray (n_refl,) or None
        Images in each reflection's copy group (1: independent); None: all 1.

    Returns
    -------
    (var, n)
        The weighted variances and the effective number of samples (rounded).

    Examples
    --------
    >>> v, n = count_copies_once(np.ones((3, 4)), np.ones((3, 4), bool), np.array([2, 2, 1]))
    >>> v[:, 0].tolist(), n
    ([2.0, 2.0, 1.0], 8)
    """
    m = np.asarray(mask, bool)
    if copies is None:
        return var, int(m.sum())
    c = np.asarray(copies, float).reshape(-1, 1)
    if c.shape[0] != m.shape[0] or np.any(c < 1):
        raise InputError("copies must give a multiplicity >= 1 per reflection",
                         expected=m.shape[0], found=c.ravel().tolist())
    n = int(round(float(np.sum(m / c))))
    return np.asarray(var, float) * c, n


@dataclass
class GOFValue:
    """A goodness-of-fit evaluation."""

    value: float
    fit: LinearFit
    n_used: int
    dof: int
    extra: dict = field(default_factory=dict)


class GOF:
    """Base class of goodness-of-fit metrics.

    Subclasses implement :meth:`evaluate`; ``least_squares`` is True when the
    metric is a sum of squared residuals (so Gauss–Newton/Levenberg–Marquardt
    applies and the covariance is meaningful).

    Parameters
    ----------
    background : {'none', 'single', 'per_disc'}
    """

    name = "gof"
    least_squares = False

    def __init__(self, background: str = "single") -> None:
        if background not in BACKGROUNDS:
            raise InputError("unknown background model", expected=list(BACKGROUNDS),
                             found=background)
        self.background = background

    def evaluate(self, sim, exp, var, mask, disc, n_params: int,
                 copies: np.ndarray | None = None) -> GOFValue:
        raise NotImplementedError

    def __call__(self, sim, exp, var, mask, disc=None, n_params: int = 0,
                 copies: np.ndarray | None = None) -> GOFValue:
        """Evaluate; ``copies`` (n_refl,): images per copy group (:func:`count_copies_once`).

        A subclass whose ``evaluate`` has no ``copies`` argument (written before it
        existed) gets the copies' weights in ``var`` and counts its own samples.
        """
        if copies is None:
            return self.evaluate(sim, exp, var, mask, disc, n_params)
        if "copies" not in inspect.signature(self.evaluate).parameters:
            return self.evaluate(sim, exp, count_copies_once(var, mask, copies)[0], mask, disc,
                                 n_params)
        return self.evaluate(sim, exp, var, mask, disc, n_params, copies)


class Chi2(GOF):
    """Reduced χ² with the variances supplied by the data.

    The data decide the variance model: Poisson (σ² = I), the detector's DQE
    model (Zuo 2000), or LARBED variance maps (seed paper §2.2).
    """

    name = "chi2"
    least_squares = True

    def evaluate(self, sim, exp, var, mask, disc, n_params, copies=None):
        var, n = count_copies_once(var, mask, copies)
        fit = linear_fit(sim, exp, var, mask, disc, self.background)
        dof = n - n_params - fit.n_linear
        if dof <= 0:
            raise InputError("not enough samples for the fitted parameters",
                             expected=f"> {n_params + fit.n_linear} samples", found=n)
        return GOFValue(fit.chi2_sum / dof, fit, n, dof)


class Chi2Poisson(Chi2):
    """χ² with Poisson variance σ² = max(I_x, 1) regardless of the data's variance."""

    name = "chi2_poisson"

    def evaluate(self, sim, exp, var, mask, disc, n_params, copies=None):
        return super().evaluate(sim, exp, np.maximum(np.asarray(exp, float), 1.0), mask, disc,
                                n_params, copies)


class RFactor(GOF):
    """R = Σ|c I_t + b − I_x| / Σ I_x after the weighted closed-form fit."""

    name = "r_factor"

    def evaluate(self, sim, exp, var, mask, disc, n_params, copies=None):
        var, n = count_copies_once(var, mask, copies)
        fit = linear_fit(sim, exp, var, mask, disc, self.background)
        m = np.asarray(mask, bool)
        w = 1.0 / np.sqrt(np.asarray(var, float)[m])
        diff = np.abs(fit.residuals / w)
        r = float(np.sum(diff) / np.sum(np.abs(np.asarray(exp, float)[m])))
        return GOFValue(r, fit, n, n - n_params - fit.n_linear)


class Correlation(GOF):
    """1 − Pearson correlation of simulation and experiment (scale/background free)."""

    name = "one_minus_correlation"

    def __init__(self) -> None:
        super().__init__("single")

    def evaluate(self, sim, exp, var, mask, disc, n_params, copies=None):
        m = np.asarray(mask, bool)
        a = np.asarray(sim, float)[m]
        b = np.asarray(exp, float)[m]
        a = a - a.mean()
        b = b - b.mean()
        den = np.sqrt(np.sum(a * a) * np.sum(b * b))
        r = float(np.sum(a * b) / den) if den > 0 else 0.0
        fit = linear_fit(sim, exp, var, mask, disc, "single")
        _var, n = count_copies_once(var, mask, copies)
        return GOFValue(1.0 - r, fit, n, n - n_params - 2)


GOF_REGISTRY: dict[str, type[GOF]] = {
    "chi2": Chi2, "chi2_poisson": Chi2Poisson, "r_factor": RFactor,
    "correlation": Correlation,
}


def make_gof(name: str, background: str = "single") -> GOF:
    """A GOF by name: ``chi2``, ``chi2_poisson``, ``r_factor``, ``correlation``."""
    if name not in GOF_REGISTRY:
        raise InputError("unknown goodness-of-fit", expected=sorted(GOF_REGISTRY), found=name)
    cls = GOF_REGISTRY[name]
    return cls() if cls is Correlation else cls(background)


def zncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Zero-normalised cross-correlation of two images (NaNs and ``mask`` excluded)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    m = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        m &= np.asarray(mask, bool)
    x = a[m] - a[m].mean()
    y = b[m] - b[m].mean()
    den = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / den) if den > 0 else 0.0
