"""Spot integration with local background subtraction: 4-D LARBED → LACBED stack.

For every tilt (r, c) and reflection g the spot at p_g(r, c) is integrated
over a disc of radius R (pixel centres within R of the sub-pixel position) and
the diffuse background is estimated from the annulus R_in < ρ ≤ R_out:

    I_g(r, c) = Σ_disc x − B,      B = N_p · b̂   ('mean' / 'median')
                                   B = Σ_disc (a₀ + a₁Δy + a₂Δx)   ('plane')

with the variance of :mod:`qcbed.larbed.variance` (seed paper §2.2, eq. 3 form).
Spots whose disc leaves the detector or touches a bad pixel, or whose annulus
keeps fewer than ``min_background_fraction`` of its pixels, are marked invalid
(NaN). The data are read block by block (:mod:`qcbed.larbed.streaming`).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._version import __version__
from ..errors import InputError
from ..experiment import DetectorModel, LACBEDStack
from ._windows import Windows, gather
from .indexing import SpotPredictor, _hkl_array
from .readers import FourDData
from .stack import build_stack
from .streaming import Block, block_slices, map_blocks
from .variance import ESTIMATOR_EFFICIENCY, spot_variance


@dataclass(frozen=True)
class ExtractionSettings:
    """Spot-integration geometry.

    Parameters
    ----------
    disc_radius : float
        R, radius (pixels) of the integration disc.
    annulus : (float, float)
        (R_in, R_out) of the background annulus (pixels), R ≤ R_in < R_out.
    background : {'mean', 'median', 'plane'}
        Background estimator.
    min_background_fraction : float
        Fewest annulus pixels (fraction of the nominal count) for a valid spot.
    detector : DetectorModel
        Noise model of the integrated-intensity term (:mod:`qcbed.experiment.detector`).
    """

    disc_radius: float = 3.0
    annulus: tuple[float, float] = (5.0, 8.0)
    background: str = "mean"
    min_background_fraction: float = 0.5
    detector: DetectorModel = field(default_factory=DetectorModel)

    def __post_init__(self) -> None:
        r = float(self.disc_radius)
        a, b = (float(v) for v in self.annulus)
        if not (np.isfinite(r) and r > 0):
            raise InputError("disc radius must be > 0 (pixels)", tag="disc_radius", found=r)
        if not (np.isfinite(a) and np.isfinite(b) and r <= a < b):
            raise InputError("annulus must satisfy disc_radius ≤ inner < outer (pixels)",
                             tag="annulus", found=(a, b))
        if self.background not in ESTIMATOR_EFFICIENCY:
            raise InputError("unknown background estimator", tag="background",
                             expected=list(ESTIMATOR_EFFICIENCY), found=self.background)
        if not 0 < self.min_background_fraction <= 1:
            raise InputError("min_background_fraction must be in (0, 1]",
                             found=self.min_background_fraction)
        object.__setattr__(self, "disc_radius", r)
        object.__setattr__(self, "annulus", (a, b))

    @property
    def half_window(self) -> int:
        return int(np.ceil(self.annulus[1])) + 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("detector")
        d["annulus"] = list(self.annulus)
        return d


@dataclass
class SpotMeasurement:
    """Per-window results of :func:`integrate_windows` (arrays of length n)."""

    intensity: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    n_peak: np.ndarray
    n_bkg: np.ndarray
    valid: np.ndarray


def integrate_windows(w: Windows, s: ExtractionSettings) -> SpotMeasurement:
    """Disc integral, background and variance for gathered windows.

    The annulus pixels are fitted with a plane a₀ + a₁Δy + a₂Δx (least squares,
    from row/column marginals); its residual variance s_b² (N_b − 3 degrees of
    freedom) is the background scatter used in the variance for every estimator,
    so that a smooth gradient across the annulus is not counted as noise.
    """
    r2 = s.disc_radius**2
    a2, b2 = s.annulus[0] ** 2, s.annulus[1] ** 2
    disc_nom = w.dist2 <= r2
    ann_nom = (w.dist2 > a2) & (w.dist2 <= b2)
    disc = disc_nom & w.valid
    ann = ann_nom & w.valid
    n_p = disc.sum(axis=(1, 2)).astype(float)
    n_b = ann.sum(axis=(1, 2)).astype(float)
    ok = (n_p == disc_nom.sum(axis=(1, 2))) & (n_p > 0) & \
        (n_b >= s.min_background_fraction * ann_nom.sum(axis=(1, 2))) & (n_b > 4)
    v = w.values
    gross = np.sum(v * disc, axis=(1, 2))
    coef, inv, var_b = _annulus_plane(w, ann, n_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        leverage = None
        if s.background == "mean":
            level = coef[:, 3]
            bkg = n_p * level
        elif s.background == "median":
            level = np.nanmedian(np.where(ann, v, np.nan).reshape(len(v), -1), axis=1)
            bkg = n_p * level
        else:
            z = np.stack([n_p, np.sum(disc * w.ry[:, :, None], axis=(1, 2)),
                          np.sum(disc * w.rx[:, None, :], axis=(1, 2))], 1)
            bkg = np.einsum("ni,ni->n", z, coef[:, :3])
            leverage = np.einsum("ni,nij,nj->n", z, inv, z)
            level = bkg / n_p
    intensity = gross - bkg
    ok &= np.isfinite(intensity) & np.isfinite(var_b) & np.isfinite(level)
    if leverage is not None:
        ok &= np.isfinite(leverage) & (leverage > 0)
    var = np.full(len(v), np.nan)
    if ok.any():
        var[ok] = spot_variance(intensity[ok], n_p[ok], n_b[ok], level[ok], var_b[ok],
                                s.detector, estimator=s.background,
                                leverage=None if leverage is None else leverage[ok])
    ok &= np.isfinite(var) & (var > 0)
    nan = np.full(len(v), np.nan)
    return SpotMeasurement(np.where(ok, intensity, nan), np.where(ok, var, nan),
                           np.where(ok, level, nan), n_p, n_b, ok)


def _annulus_plane(w: Windows, ann: np.ndarray, n_b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plane a₀ + a₁Δy + a₂Δx fitted to the annulus pixels of every window.

    Returns
    -------
    coef : (n, 4)
        a₀, a₁, a₂ and the plain mean of the annulus pixels.
    inv : (n, 3, 3)
        (XᵀX)⁻¹ of the fit.
    var_r : (n,)
        Residual variance Σ r²/(N_b − 3).
    """
    am = ann.astype(float)
    av = np.where(ann, w.values, 0.0)
    ry, rx = w.ry, w.rx
    am_r, am_c = am.sum(axis=2), am.sum(axis=1)      # (n, w): marginals over x, over y
    av_r, av_c = av.sum(axis=2), av.sum(axis=1)
    xtx = np.empty((len(am), 3, 3))
    xtx[:, 0, 0] = n_b
    xtx[:, 0, 1] = xtx[:, 1, 0] = np.sum(am_r * ry, axis=1)
    xtx[:, 0, 2] = xtx[:, 2, 0] = np.sum(am_c * rx, axis=1)
    xtx[:, 1, 1] = np.sum(am_r * ry * ry, axis=1)
    xtx[:, 2, 2] = np.sum(am_c * rx * rx, axis=1)
    xtx[:, 1, 2] = xtx[:, 2, 1] = np.einsum("nij,ni,nj->n", am, ry, rx)
    xty = np.stack([av_r.sum(axis=1), np.sum(av_r * ry, axis=1), np.sum(av_c * rx, axis=1)], 1)
    bad = n_b < 4
    xtx[bad] = np.eye(3)
    inv = np.linalg.inv(xtx)
    beta = np.einsum("nij,nj->ni", inv, xty)
    rss = np.sum(av * w.values, axis=(1, 2)) - np.einsum("ni,ni->n", beta, xty)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_r = np.where(bad, np.nan, np.clip(rss, 0.0, None) / (n_b - 3))
        mean = xty[:, 0] / n_b
    return np.concatenate([beta, mean[:, None]], 1), inv, var_r


def _positions_for_block(source: SpotPredictor | np.ndarray, hkl: np.ndarray, b: Block
                         ) -> np.ndarray:
    """(n_refl, n_frames, 2) spot positions of the block's tilts."""
    if isinstance(source, SpotPredictor):
        t = b.tilt_index
        pos = source.positions(hkl, t[..., 0], t[..., 1])
    else:
        pos = source[:, b.rows, b.cols]
    return pos.reshape(len(hkl), -1, 2)


def extract_lacbed(data: FourDData, positions: SpotPredictor | ArrayLike,
                   hkl: ArrayLike | None = None, *, disc_radius: float = 3.0,
                   annulus: tuple[float, float] = (5.0, 8.0), background: str = "mean",
                   detector: DetectorModel | None = None,
                   bad_pixels: np.ndarray | None = None, min_background_fraction: float = 0.5,
                   kt_reference: ArrayLike | None = None, progress: bool = True,
                   workers: int = 1, metadata: dict[str, Any] | None = None,
                   voltage_kv: float | None = None) -> LACBEDStack:
    """Integrate every reflection at every tilt: the LACBED stack with variances.

    Parameters
    ----------
    data : FourDData
        The LARBED dataset (tilt_y, tilt_x, det_y, det_x), read block by block.
    positions : SpotPredictor or ndarray (n_refl, tilt_y, tilt_x, 2)
        Spot positions (y, x) in detector pixels: a predictor (indexing +
        calibration + drift) or explicit positions.
    hkl : (n_refl, 3)
        Reflections (required with a predictor; labels otherwise, default 000…).
    disc_radius : float
        Integration radius R (pixels).
    annulus : (R_in, R_out)
        Background annulus (pixels).
    background : {'mean', 'median', 'plane'}
        Background estimator (see :mod:`qcbed.larbed.variance`).
    detector : DetectorModel, optional
        Gain, mixing factor, DQE (``excess_noise`` = 1/DQE), read variance
        (default: Poisson counts); see :func:`qcbed.larbed.variance.detector_from_dqe`.
    bad_pixels : ndarray (det_y, det_x) bool, optional
        True for dead/hot pixels (excluded; a spot whose disc touches one is invalid).
    min_background_fraction : float
        Fewest usable annulus pixels, as a fraction of the nominal number.
    kt_reference : (k_x, k_y), optional
        k_t (Å⁻¹) at the reference tilt; with a predictor whose SpotMap has a
        frame, the stack gets the k_t grid (default (0, 0)).
    progress : bool
        tqdm progress bar.
    workers : int
        Blocks processed concurrently (threads).
    metadata : dict, optional
        Extra metadata stored with the stack.
    voltage_kv : float, optional
        Accelerating voltage recorded in the stack.

    Returns
    -------
    qcbed.experiment.LACBEDStack
        ``images``/``variance`` (n_refl, tilt_y, tilt_x) in counts, ``hkl``,
        ``mask`` (valid samples), ``geometry`` (when the SpotMap has a frame),
        ``metadata`` (calibration, spot map, drift, settings; per-sample
        ``background``, ``positions`` and ``kt`` under ``metadata["arrays"]``).
        Save it with :func:`qcbed.larbed.save_stack`.
    """
    settings = ExtractionSettings(disc_radius, tuple(annulus), background,
                                  min_background_fraction, detector or DetectorModel())
    ny, nx = data.scan_shape
    if isinstance(positions, SpotPredictor):
        if hkl is None:
            raise InputError("hkl is required with a SpotPredictor", tag="hkl")
        h = _hkl_array(hkl)
        src: SpotPredictor | np.ndarray = positions
    else:
        src = np.asarray(positions, float)
        if src.ndim != 4 or src.shape[1:] != (ny, nx, 2):
            raise InputError("positions must be (n_refl, tilt_y, tilt_x, 2)",
                             expected=f"(n, {ny}, {nx}, 2)", found=src.shape)
        h = np.zeros((len(src), 3), int) if hkl is None else _hkl_array(hkl)
        if len(h) != len(src):
            raise InputError("one hkl per position set", expected=len(src), found=len(h))
    good = None
    if bad_pixels is not None:
        bp = np.asarray(bad_pixels, bool)
        if bp.shape != data.detector_shape:
            raise InputError("bad-pixel mask shape differs from the detector",
                             expected=data.detector_shape, found=bp.shape)
        good = ~bp
    n_refl = len(h)
    half = settings.half_window

    def func(b: Block) -> np.ndarray:
        frames = b.data.reshape((-1,) + b.data.shape[2:])
        pos = _positions_for_block(src, h, b)
        out = np.empty((n_refl, 5, len(frames)))
        for j in range(n_refl):
            m = integrate_windows(gather(frames, pos[j], half, good), settings)
            out[j] = (m.intensity, m.variance, m.background, pos[j, :, 0], pos[j, :, 1])
        return out.reshape((n_refl, 5) + b.data.shape[:2])

    res = np.full((n_refl, 5, ny, nx), np.nan)
    for (rs, cs), part in zip(block_slices(data),
                              map_blocks(func, data, progress=progress, workers=workers,
                                         desc="LARBED extraction")):
        res[:, :, rs, cs] = part

    meta: dict[str, Any] = {
        "source": {"path": data.path, "format": data.format, "shape": list(data.shape),
                   "axes": data.axes},
        "extraction": settings.to_dict(),
        "detector": asdict(settings.detector),
        "variance_model": "m g (A I + delta I^2 + varB) + N_p s_b^2 (1 + kappa N_p/N_b)",
        "qcbed_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    kt = None
    frame = None
    if isinstance(src, SpotPredictor):
        frame = src.spots.frame
        if src.calibration is not None:
            meta["calibration"] = src.calibration.with_origin(
                src.spots.origin, src.spots.reference_tilt).to_dict()
        meta["spot_map"] = src.spots.to_dict()
        if src.drift is not None:
            meta["drift"] = src.drift.to_dict()
        if src.spots.kt_matrix is not None and src.calibration is not None:
            ref = (0.0, 0.0) if kt_reference is None else kt_reference
            kt = src.tilt_grid((ny, nx), ref).kt
            meta["kt_reference"] = list(np.asarray(ref, float))
    if metadata:
        meta.update(metadata)
    arrays = {"background": res[:, 2], "positions": np.moveaxis(res[:, 3:5], 1, -1),
              "kt": kt}
    return build_stack(res[:, 0], res[:, 1], h, metadata=meta, arrays=arrays,
                       frame=frame if kt is not None else None, voltage_kv=voltage_kv,
                       source=data.path)
