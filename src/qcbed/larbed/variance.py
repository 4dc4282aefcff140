r"""Variance of background-subtracted integrated spot intensities (LARBED).

A LARBED intensity is the sum S of the N_p detector pixels inside a disc on the
Bragg spot minus the diffuse background under it, estimated from N_b pixels of
a surrounding annulus (Ni, Busch & Zuo, PyExtal, §2.2; Busch et al. 2024):

    I = S − B,        B = N_p · b̂      (b̂ = mean or median of the annulus pixels).

**Derivation.** S = (Bragg counts) + (background counts in the disc); the
three contributions and b̂ come from independent counts (b̂ from disjoint
pixels), so

    σ²(I) = σ²(Bragg part of S) + σ²(background part of S) + N_p² σ²(b̂).

* Bragg part: the detector noise of an integrated signal I, the CBED form of
  the seed paper's eq. 2 (Zuo 2000), σ²_det(I) = m·g·I/DQE(I) =
  m·g·(A·I + δ·I² + varB), with g the gain, m the mixing factor and
  DQE = 1/A for a direct electron detector (EMPAD at 300 kV: 0.94; Tate et al.
  2016) — :meth:`qcbed.experiment.DetectorModel.variance`;
* background in the disc: N_p independent pixels of the background, each with
  the variance s_b² measured from the annulus pixels themselves (this includes
  shot noise at Ī_b, read noise, mixing and unresolved structure): N_p·s_b².
  qcbed takes s_b² as the scatter about a plane fitted to the annulus,
  s_b² = Σ (x_i − a₀ − a₁Δy_i − a₂Δx_i)²/(N_b − 3): a smooth gradient of the
  diffuse background across the annulus is not noise (the plain sample variance
  Σ (x_i − Ī_b)²/(N_b − 1) would count it, over-estimating σ on sloping
  backgrounds; with a flat background the two agree);
* the subtracted estimate: the mean of N_b pixels has variance s_b²/N_b, so
  σ²(N_p b̂) = κ·N_p²·s_b²/N_b, with κ = 1 for the mean and κ = π/2 for the
  median (asymptotic variance πσ²/(2N) of the sample median of normal values;
  e.g. Kendall & Stuart, *The Advanced Theory of Statistics*, vol. 1, §10.10).

Altogether

    σ²(I) = m·g·(A·I + δ·I² + varB) + N_p·s_b²·(1 + κ·N_p/N_b),

the form of the paper's eq. 3 (its text was lost: an integrated-intensity term
plus a background-subtraction term from the background standard deviation,
N_b and Ī_b). It is evaluated by :func:`qcbed.experiment.larbed_variance`
(one noise model for all of qcbed) with N_b replaced by N_b/κ.

With the **plane** itself as the background estimate (``'plane'``, for a
sloping diffuse background when the disc is not centred in its annulus),
B = zᵀa with z = (N_p, Σ_disc Δy, Σ_disc Δx) and Cov(a) = s_b²(XᵀX)⁻¹ (X the
annulus design matrix), so σ²(B) = s_b² zᵀ(XᵀX)⁻¹z — the same formula with
N_b → N_p²/(zᵀ(XᵀX)⁻¹z) (≈ N_b for a symmetric annulus).

Caveats: the median of integer counts is quantised (biased when Ī_b is a few
counts): use it for robustness against outliers at higher background levels.
The integrated-intensity term uses the measured I (clipped at 0), a noisy
estimate of its expectation; at very low counts χ² tests read slightly high.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ..experiment.detector import DetectorModel, larbed_variance

#: κ: variance of the background estimator relative to the mean of N_b pixels.
ESTIMATOR_EFFICIENCY = {"mean": 1.0, "median": np.pi / 2, "plane": 1.0}


def detector_from_dqe(gain: float = 1.0, dqe: float = 1.0, mixing: float = 1.0,
                      read_variance: float = 0.0) -> DetectorModel:
    """A :class:`~qcbed.experiment.DetectorModel` with a constant DQE (A = 1/DQE).

    Parameters
    ----------
    gain : float
        Counts per primary electron.
    dqe : float
        Detective quantum efficiency in (0, 1].
    mixing : float
        Mixing factor m (Zuo 2000).
    read_variance : float
        varB (counts): a pixel without signal has variance m·g·varB.
    """
    if not (np.isfinite(dqe) and 0 < dqe <= 1):
        raise InputError("DQE must be in (0, 1]", tag="dqe", found=dqe)
    return DetectorModel(gain=gain, mixing=mixing, read_variance=read_variance,
                         excess_noise=1.0 / dqe)


def spot_variance(integrated: ArrayLike, n_peak: ArrayLike, n_bkg: ArrayLike,
                  bkg_mean: ArrayLike, bkg_var: ArrayLike,
                  detector: DetectorModel | None = None, *, estimator: str = "mean",
                  leverage: ArrayLike | None = None) -> np.ndarray:
    """σ²(I) of background-subtracted spot integrals (counts²), valid entries only.

    Parameters
    ----------
    integrated : array
        I = S − B (counts).
    n_peak, n_bkg : array
        N_p disc pixels, N_b annulus pixels (≥ 1).
    bkg_mean : array
        Ī_b, mean background per pixel (counts).
    bkg_var : array
        s_b², variance of the annulus pixels (about a fitted plane in qcbed's extraction).
    detector : DetectorModel, optional
        Default: Poisson counts.
    estimator : {'mean', 'median', 'plane'}
    leverage : array, optional
        zᵀ(XᵀX)⁻¹z of the plane fit (replaces N_p²/N_b).

    Returns
    -------
    ndarray
        m·g·(A·I + δ·I² + varB) + N_p·s_b² + κ·s_b²·(N_p²/N_b or leverage).
    """
    if estimator not in ESTIMATOR_EFFICIENCY:
        raise InputError("unknown background estimator", tag="background",
                         expected=list(ESTIMATOR_EFFICIENCY), found=estimator)
    n_p = np.asarray(n_peak, float)
    n_b = np.asarray(n_bkg, float)
    if leverage is not None:
        n_b = n_p**2 / np.asarray(leverage, float)
    n_b_eff = n_b / ESTIMATOR_EFFICIENCY[estimator]
    std = np.sqrt(np.clip(np.asarray(bkg_var, float), 0.0, None))
    return larbed_variance(integrated, n_p, n_b_eff, bkg_mean, std,
                           detector or DetectorModel())
