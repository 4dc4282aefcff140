"""Follow the spots through the tilt scan: measured positions → smooth drift model.

Predicted positions (indexing + tilt calibration) are refined against the data:

1. :func:`measure_spots` finds each spot near its prediction at every tilt
   (optionally every ``stride``-th tilt) — centre of mass of the
   background-subtracted disc, iterated twice, or the peak of the
   cross-correlation with a Gaussian probe template — with its signal-to-noise
   ratio;
2. :func:`fit_drift` fits the offsets measured − predicted with a low-order
   polynomial δ(r, c) over the tilt grid common to all reflections (specimen or
   beam drift, residual calibration error) plus, optionally, a constant offset
   per reflection (projector distortions), by weighted least squares with
   weights (S/N)² and iterative rejection of outliers (> ``reject`` robust σ);
3. :func:`refine_positions` does both and returns a predictor with the drift.

Isolated bad measurements (weak spots, neighbours) thus cannot move a spot: the
positions used for integration are smooth functions of the tilt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ._windows import Windows, gather
from .indexing import DriftModel, SpotPredictor, _hkl_array, _monomials
from .readers import FourDData
from .streaming import Block, block_slices, map_blocks


def _com(w: Windows, radius: float, annulus: tuple[float, float]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shift (n, 2) of the centre of mass from the window's reference position, S, noise."""
    a2, b2 = annulus[0] ** 2, annulus[1] ** 2
    ann = w.valid & (w.dist2 > a2) & (w.dist2 <= b2)
    nb = ann.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.sum(w.values * ann, axis=(1, 2)) / nb
        sb2 = np.sum(np.where(ann, w.values - b[:, None, None], 0) ** 2, axis=(1, 2)) / (nb - 1)
    net = w.values - b[:, None, None]
    shift = np.zeros((len(net), 2))
    for _ in range(2):
        dy = w.ry[:, :, None] - shift[:, 0, None, None]
        dx = w.rx[:, None, :] - shift[:, 1, None, None]
        disc = w.valid & (dy**2 + dx**2 <= radius**2)
        wt = np.where(disc, np.clip(net, 0, None), 0.0)
        tot = wt.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            new = np.stack([np.sum(wt * w.ry[:, :, None], axis=(1, 2)) / tot,
                            np.sum(wt * w.rx[:, None, :], axis=(1, 2)) / tot], 1)
        shift = np.where(np.isfinite(new), new, 0.0).clip(-radius, radius)
    disc0 = w.valid & (w.dist2 <= radius**2)
    n_p = disc0.sum(axis=(1, 2))
    signal = np.sum(np.where(disc0, net, 0.0), axis=(1, 2))
    gross = np.sum(np.where(disc0, w.values, 0.0), axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = np.sqrt(np.clip(gross, 0, None) + n_p**2 * sb2 / nb)
    return shift, signal, noise


def _xcorr(w: Windows, radius: float, annulus: tuple[float, float], sigma: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shift from the peak of the cross-correlation with a Gaussian probe template."""
    _, signal, noise = _com(w, radius, annulus)
    n, h, _ = w.values.shape
    c = h // 2
    a2, b2 = annulus[0] ** 2, annulus[1] ** 2
    ann = w.valid & (w.dist2 > a2) & (w.dist2 <= b2)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.sum(w.values * ann, axis=(1, 2)) / ann.sum(axis=(1, 2))
    net = np.where(w.valid, w.values - np.nan_to_num(b)[:, None, None], 0.0)
    off = np.arange(h) - c
    tpl = np.exp(-(off[:, None] ** 2 + off[None, :] ** 2) / (2 * sigma**2))
    # cc[m] = Σ_n t₀[n] net[n + m] with the template centred on index 0: it peaks
    # at the window index of the spot
    cc = np.fft.ifft2(np.fft.fft2(net) * np.conj(np.fft.fft2(np.fft.ifftshift(tpl)))).real
    k = np.argmax(cc.reshape(n, -1), axis=1)
    ky, kx = np.divmod(k, h)
    ky = ky.clip(1, h - 2)
    kx = kx.clip(1, h - 2)
    idx = np.arange(n)

    def vertex(m: np.ndarray, z: np.ndarray, p: np.ndarray) -> np.ndarray:
        den = m - 2 * z + p
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.abs(den) > 0, 0.5 * (m - p) / den, 0.0).clip(-1, 1)

    sy = vertex(cc[idx, ky - 1, kx], cc[idx, ky, kx], cc[idx, ky + 1, kx])
    sx = vertex(cc[idx, ky, kx - 1], cc[idx, ky, kx], cc[idx, ky, kx + 1])
    # pixel (c, c) of the window is the pixel nearest the reference position
    shift = np.stack([ky - c + sy + w.ry[:, c], kx - c + sx + w.rx[:, c]], 1)
    return shift, signal, noise


def measure_spots(data: FourDData, predictor: SpotPredictor, hkl: ArrayLike, *,
                  radius: float = 3.0, annulus: tuple[float, float] = (5.0, 8.0),
                  method: str = "com", sigma: float | None = None, stride: int = 1,
                  search: float = 2.0, progress: bool = False, workers: int = 1
                  ) -> dict[str, np.ndarray]:
    """Measure spot positions near the predictions.

    Parameters
    ----------
    data : FourDData
    predictor : SpotPredictor
        Predictions (its drift, if any, is included).
    hkl : (n_refl, 3)
    radius : float
        Disc radius (px) for the centre of mass and the S/N.
    annulus : (R_in, R_out)
        Local-background annulus (px).
    method : {'com', 'xcorr'}
    sigma : float, optional
        Width (px) of the Gaussian template for ``'xcorr'`` (default radius/2).
    stride : int
        Measure every ``stride``-th tilt row and column (the drift is smooth).
    search : float
        Extra window margin (px) for shifts.

    Returns
    -------
    dict
        ``positions`` (n_refl, ny, nx, 2) measured (y, x) (NaN where not measured),
        ``predicted`` (same, predictions), ``snr`` (n_refl, ny, nx), ``signal``.
    """
    h = _hkl_array(hkl)
    if method not in ("com", "xcorr"):
        raise InputError("spot-measurement method must be 'com' or 'xcorr'", found=method)
    stride = max(1, int(stride))
    sub = data.subset(slice(None, None, stride), slice(None, None, stride))
    half = int(np.ceil(max(annulus[1], radius) + search)) + 1
    sig = radius / 2 if sigma is None else float(sigma)
    ny, nx = data.scan_shape

    def func(b: Block) -> np.ndarray:
        frames = b.data.reshape((-1,) + b.data.shape[2:])
        rr, cc = np.meshgrid(np.arange(b.rows.start, b.rows.stop) * stride,
                             np.arange(b.cols.start, b.cols.stop) * stride, indexing="ij")
        pred = predictor.positions(h, rr, cc).reshape(len(h), -1, 2)
        out = np.empty((len(h), 6, len(frames)))
        for j in range(len(h)):
            w = gather(frames, pred[j], half)
            if method == "com":
                shift, s, n = _com(w, radius, annulus)
            else:
                shift, s, n = _xcorr(w, radius, annulus, sig)
            out[j] = (*(pred[j] + shift).T, *pred[j].T, s, n)
        return out.reshape((len(h), 6) + b.data.shape[:2])

    res = np.full((len(h), 6, ny, nx), np.nan)
    for (rs, cs), part in zip(block_slices(sub), map_blocks(func, sub, progress=progress,
                                                            workers=workers,
                                                            desc="spot tracking")):
        rows = slice(rs.start * stride, rs.stop * stride, stride)
        cols = slice(cs.start * stride, cs.stop * stride, stride)
        res[:, :, rows, cols] = part
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = res[:, 4] / res[:, 5]
    return {"positions": np.moveaxis(res[:, 0:2], 1, -1),
            "predicted": np.moveaxis(res[:, 2:4], 1, -1), "snr": snr, "signal": res[:, 4]}


def fit_drift(measured: np.ndarray, predicted: np.ndarray, hkl: ArrayLike,
              snr: np.ndarray, *, order: int = 2, per_reflection: bool = True,
              snr_min: float = 8.0, reject: float = 4.0, min_sigma: float = 0.02
              ) -> DriftModel:
    """Weighted robust fit of measured − predicted positions: polynomial + offsets.

    Parameters
    ----------
    measured, predicted : ndarray (n_refl, ny, nx, 2)
    hkl : (n_refl, 3)
    snr : ndarray (n_refl, ny, nx)
        Signal-to-noise ratio of each measurement (weights (S/N)²; those below
        ``snr_min`` are not used).
    order : int
        Polynomial order of δ(r, c) (0: a constant shift).
    per_reflection : bool
        Fit a constant offset per reflection (relative to the strongest one).

    Returns
    -------
    DriftModel
    """
    h = _hkl_array(hkl)
    n_refl, ny, nx = snr.shape
    if order < 0:
        raise InputError("drift polynomial order must be ≥ 0", found=order)
    rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    probe = DriftModel(order, np.zeros((len(_monomials(order)), 2)), (ny, nx))
    basis = probe.basis(rr, cc).reshape(-1, len(_monomials(order)))
    d = (measured - predicted).reshape(n_refl, -1, 2)
    s = snr.reshape(n_refl, -1)
    ok = np.isfinite(d).all(-1) & np.isfinite(s) & (s >= snr_min)
    if ok.sum() < basis.shape[1] + 2:
        raise InputError("too few spots measured with enough signal to fit a drift",
                         expected=f"≥ {basis.shape[1] + 2} with S/N ≥ {snr_min}",
                         found=int(ok.sum()))
    wt = np.where(ok, np.clip(s, 0, None) ** 2, 0.0)
    ref = int(np.argmax(wt.sum(1)))
    fitted = [j for j in range(n_refl) if per_reflection and j != ref and ok[j].sum() >= 3]
    n_poly = basis.shape[1]
    x = np.zeros((n_refl, basis.shape[0], n_poly + len(fitted)))
    x[:, :, :n_poly] = basis[None]
    for k, j in enumerate(fitted):
        x[j, :, n_poly + k] = 1.0
    x = x.reshape(-1, x.shape[-1])
    y = d.reshape(-1, 2)
    use = ok.ravel().copy()
    w = wt.ravel()
    for _ in range(20):
        sw = np.sqrt(w[use])
        coef, *_ = np.linalg.lstsq(x[use] * sw[:, None], np.nan_to_num(y[use]) * sw[:, None],
                                   rcond=None)
        res = np.linalg.norm(np.nan_to_num(y) - x @ coef, axis=1)
        # normalised residuals: scatter ∝ 1/(S/N)
        z = res * np.sqrt(w)
        sigma = max(1.4826 * np.median(z[use]), min_sigma)
        new = ok.ravel() & (z <= reject * sigma)
        if np.array_equal(new, use) or new.sum() < x.shape[1] + 2:
            break
        use = new
    rms = float(np.sqrt(np.average(res[use] ** 2, weights=w[use])))
    offsets = coef[n_poly:]
    return DriftModel(order, coef[:n_poly], (ny, nx), h[fitted] if fitted else
                      np.zeros((0, 3), int), offsets if fitted else np.zeros((0, 2)), rms)


def refine_positions(data: FourDData, predictor: SpotPredictor, hkl: ArrayLike, *,
                     order: int = 2, per_reflection: bool = True, radius: float = 3.0,
                     annulus: tuple[float, float] = (5.0, 8.0), method: str = "com",
                     stride: int = 1, snr_min: float = 8.0, progress: bool = False,
                     workers: int = 1) -> tuple[SpotPredictor, dict[str, Any]]:
    """Measure the spots and fit a smooth drift; returns the refined predictor and a report.

    The report holds ``rms`` (px, weighted residual after the fit), ``n_used``
    measurements, the ``drift`` model and the raw ``measurement`` arrays.
    """
    base = predictor.with_drift(None)
    meas = measure_spots(data, base, hkl, radius=radius, annulus=annulus, method=method,
                         stride=stride, progress=progress, workers=workers)
    drift = fit_drift(meas["positions"], meas["predicted"], hkl, meas["snr"], order=order,
                      per_reflection=per_reflection, snr_min=snr_min)
    n_used = int(np.sum(np.isfinite(meas["snr"]) & (meas["snr"] >= snr_min)))
    return base.with_drift(drift), {"rms": drift.rms, "n_used": n_used, "drift": drift,
                                    "measurement": meas}
