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
    n_linear : int
        Number of linear parameters (1 + n_bg).

    The weighted design X = [I_t/σ, onehot/σ] (``design``) is never formed for the
    fit itself: its background columns have disjoint supports, so projections onto
    its span take O(n) sums per disc (:meth:`project_out`, ``scale_functional``).
    """

    scale: float
    background: np.ndarray
    residuals: np.ndarray
    n_linear: int
    #: weights 1/σ of the used samples, background group of each (−1: none) and the
    #: orthogonalised scale column ã = w I_t − P_B (w I_t) (None: fixed scale)
    _w: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    _group: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, int))
    _a: np.ndarray | None = field(repr=False, default=None)
    _wt: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    _n_bg: int = field(repr=False, default=0)

    @property
    def chi2_sum(self) -> float:
        return float(np.sum(self.residuals**2))

    @property
    def design(self) -> np.ndarray:
        """The weighted design matrix (n_used, n_linear): [I_t/σ, onehot/σ]."""
        cols = [] if self._a is None else [self._wt]
        for k in range(self._n_bg):
            cols.append(np.where(self._group == k, self._w, 0.0))
        return np.stack(cols, axis=1) if cols else np.zeros((len(self._w), 0))

    def _project_b(self, v: np.ndarray) -> np.ndarray:
        """Orthogonal projection of v (n_used, …) onto the background columns."""
        n_bg = self._n_bg
        if n_bg == 0:
            return np.zeros_like(v)
        g = self._group
        ww = np.bincount(g, self._w * self._w, minlength=n_bg)
        lead = v.reshape(len(g), -1)
        coef = np.stack([np.bincount(g, self._w * lead[:, k], minlength=n_bg)
                         for k in range(lead.shape[1])], axis=1) / ww[:, None]
        return (self._w[:, None] * coef[g]).reshape(v.shape)

    def project_out(self, v: np.ndarray) -> np.ndarray:
        """P⊥ v: v minus its least-squares fit by the design's columns (n_used, …)."""
        out = v - self._project_b(v)
        if self._a is not None:
            aa = float(self._a @ self._a)
            if aa > 0:
                out = out - np.multiply.outer(self._a, np.tensordot(self._a, v, axes=(0, 0))
                                              / aa).reshape(v.shape)
        return out

    @property
    def scale_functional(self) -> np.ndarray:
        """u₀ = X (XᵀX)⁻¹ e₀: u₀·v is the fitted scale of a target v (zero vector
        when the scale is fixed)."""
        if self._a is None:
            return np.zeros(len(self._w))
        aa = float(self._a @ self._a)
        return self._a / aa if aa > 0 else np.zeros_like(self._a)


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

    Notes
    -----
    The background columns (one per disc, or one) have disjoint supports, so the
    normal equations split: with ã = w I_t minus its per-group weighted mean (the
    scale column orthogonalised against the backgrounds), c = ã·y / ã·ã and
    b_k = Σ_k w (y − c w I_t) / Σ_k w², y = w I_x — the least-squares solution in
    O(n) (the same as a dense solve of the design, Björck 1996, §2.7).
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
    if background == "single":
        group = np.zeros(len(w), int)
        n_bg = 1
    elif background == "per_disc":
        if disc is None:
            raise InputError("per-disc backgrounds need the disc index of every sample")
        _ids, group = np.unique(np.asarray(disc)[m], return_inverse=True)
        group = group.ravel()
        n_bg = len(_ids)
    else:
        group = np.full(len(w), -1)
        n_bg = 0
    wt = it * w
    target = ix * w if fixed_scale is None else (ix - fixed_scale * it) * w
    fit = LinearFit(scale=0.0, background=np.zeros(n_bg), residuals=np.zeros(0),
                    n_linear=n_bg + int(fixed_scale is None), _w=w, _group=group, _a=None,
                    _wt=wt, _n_bg=n_bg)
    if fixed_scale is None:
        fit._a = wt - fit._project_b(wt)
        aa = float(fit._a @ fit._a)
        scale = float(fit._a @ target) / aa if aa > 0 else 0.0
        rest = target - scale * wt
    else:
        scale = float(fixed_scale)
        rest = target
    if n_bg:
        ww = np.bincount(group, w * w, minlength=n_bg)
        bg = np.bincount(group, w * rest, minlength=n_bg) / ww
        model_bg = w * bg[group]
    else:
        bg = np.zeros(0)
        model_bg = np.zeros_like(target)
    fit.scale = scale
    fit.background = bg
    fit.residuals = (wt * scale if fixed_scale is None else 0.0) + model_bg - target
    return fit


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
