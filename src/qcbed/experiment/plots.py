"""Figures for experimental data: the ROI on the pattern, and experiment/simulation/difference.

Every function builds and returns a :class:`matplotlib.figure.Figure` (created
directly, without :mod:`matplotlib.pyplot`, so no global state and no window);
nothing is shown. Save with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from .._core.hkl import hkl_label
from ..errors import InputError
from .patterns import CBEDPattern, LACBEDStack
from .roi import ROI

__all__ = ["plot_comparison", "plot_roi"]


def _fmt_hkl(h: ArrayLike) -> str:
    return hkl_label(np.asarray(h).reshape(-1))


def plot_roi(roi: ROI, hkl: ArrayLike | None = None, values: Mapping[str, float] | None = None,
             *, display: bool = False, log: bool = True, figsize=(6.0, 6.0)) -> Figure:
    """The regions of an ROI drawn on the pattern.

    Parameters
    ----------
    roi : ROI
    hkl : array_like of 3, optional
        Image to show for a LACBED stack (default: the first reflection of the ROI).
        For a CBED pattern every disc's regions are drawn.
    values : mapping, optional
        Sampling-parameter values (default: the ROI geometry).
    display : bool
        Show the display frame (rotated so g_x points right) instead of raw pixels.
    log : bool
        Logarithmic intensity scale.

    Returns
    -------
    matplotlib.figure.Figure
    """
    geom = roi.geometry_at(values)
    data = roi.data
    if isinstance(data, LACBEDStack):
        h0 = roi.hkl[0] if hkl is None else np.asarray(hkl, int)
        img = data.image(h0)
        discs = [h0]
    elif isinstance(data, CBEDPattern):
        img = data.image
        discs = list(roi.hkl)
    else:  # pragma: no cover - ROI validates its data
        raise InputError("unsupported data", found=type(data).__name__)
    shown = geom.display_image(img) if display else img
    if log:
        shown = np.log10(np.maximum(shown, np.nanmax(shown) * 1e-4))
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(shown, cmap="gray", origin="upper", interpolation="nearest")
    colors = ["tab:orange", "tab:cyan", "tab:green", "tab:red", "tab:purple", "tab:olive"]
    for k, reg in enumerate(roi.region_list):
        col = colors[k % len(colors)]
        # the region's corners are fixed in k_t (the ROI was built with roi.geometry)
        kt = roi.geometry.display_to_kt(reg.outline())
        for h in discs:
            hit = np.flatnonzero(np.all(roi.hkl == np.asarray(h), axis=1))
            if len(hit) and not roi.masks[k, int(hit[0])]:
                continue
            pix = geom.kt_to_pixel(kt, h)
            if display:
                pix = geom.experiment_to_display(pix)
            ax.plot(pix[:, 1], pix[:, 0], "-", color=col, lw=1.2)
            if isinstance(data, CBEDPattern):
                ax.text(pix[0, 1], pix[0, 0], _fmt_hkl(h), color=col, fontsize=7,
                        clip_on=True)
    ax.set_xlim(-0.5, shown.shape[1] - 0.5)
    ax.set_ylim(shown.shape[0] - 0.5, -0.5)
    title = "display frame" if display else "experimental pixels"
    if isinstance(data, LACBEDStack):
        title += f", image {_fmt_hkl(discs[0])}"
    ax.set_title(title)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    return fig


def _linear_fit(sim: np.ndarray, exp: np.ndarray, var: np.ndarray, m: np.ndarray
                ) -> tuple[float, float]:
    if m.sum() < 2:
        return 1.0, 0.0
    w = 1.0 / var[m]
    a = np.array([[np.sum(w * sim[m] ** 2), np.sum(w * sim[m])], [np.sum(w * sim[m]), w.sum()]])
    y = np.array([np.sum(w * sim[m] * exp[m]), np.sum(w * exp[m])])
    c, b = np.linalg.lstsq(a, y, rcond=None)[0]
    return float(c), float(b)


def plot_comparison(roi: ROI, simulated: ArrayLike, values: Mapping[str, float] | None = None,
                    *, region: int = 0, hkl: ArrayLike | None = None,
                    scale: ArrayLike | None = None, background: ArrayLike | None = None,
                    profile_row: int | None = None, figsize_per_row=(11.0, 2.6)) -> Figure:
    """Experiment, simulation, normalised difference and a line profile per disc.

    Parameters
    ----------
    roi : ROI
    simulated : array_like (n_refl, n_pts)
        Simulation at ``roi.kt`` for ``roi.hkl`` (probe-convolved if any).
    values : mapping, optional
        Sampling-parameter values for the experiment.
    region : int
        Which region to show (padding is cropped).
    hkl : array_like (n, 3), optional
        Discs to show (default: all of the ROI).
    scale, background : array_like (n_refl,), optional
        Scale c and background b applied to the simulation (c·I + b); default: the
        weighted least-squares values per disc.
    profile_row : int, optional
        Row of the region image for the profile (default: the middle).

    Returns
    -------
    matplotlib.figure.Figure
        One row per disc: experiment, scaled simulation, (exp − sim)/σ, and the
        profile along the chosen row (experiment with ±σ, simulation). The R factor
        Σ|exp − sim|/Σ|exp| of each disc is in the titles.
    """
    sim = np.asarray(simulated, dtype=float)
    if sim.shape != (len(roi.hkl), roi.n_points):
        raise InputError("simulated intensities must be (n_refl, n_pts)",
                         expected=(len(roi.hkl), roi.n_points), found=sim.shape)
    if not 0 <= region < len(roi.region_list):
        raise InputError("no such region", expected=f"0..{len(roi.region_list) - 1}",
                         found=region)
    exp, var, valid = roi.sample(values)
    rows = range(len(roi.hkl)) if hkl is None else [
        int(np.flatnonzero(np.all(roi.hkl == h, axis=1))[0])
        for h in np.asarray(hkl, int).reshape(-1, 3)]
    rows = [k for k in rows if roi.masks[region, k]]
    if not rows:
        raise InputError("the region uses none of the requested discs", found=region)
    e_img, s_img, v_img, m_img = (roi.split(a)[region] for a in (exp, sim, var, valid))
    fig = Figure(figsize=(figsize_per_row[0], figsize_per_row[1] * len(rows)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for i, k in enumerate(rows):
        m = m_img[k] & np.isfinite(s_img[k])
        if scale is None or background is None:
            c, b = _linear_fit(s_img[k], e_img[k], v_img[k], m)
        else:
            c, b = float(np.asarray(scale)[k]), float(np.asarray(background)[k])
        model = c * s_img[k] + b
        e = np.where(m, e_img[k], np.nan)
        diff = np.where(m, (e_img[k] - model) / np.sqrt(v_img[k]), np.nan)
        rf = (np.nansum(np.abs(e - model)) / np.nansum(np.abs(e))) if m.any() else np.nan
        lo, hi = np.nanmin(e) if m.any() else 0, np.nanmax(e) if m.any() else 1
        ax = axes[i]
        ax[0].imshow(e, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax[0].set_title(f"{_fmt_hkl(roi.hkl[k])} experiment", fontsize=9)
        ax[1].imshow(np.where(m, model, np.nan), cmap="gray", vmin=lo, vmax=hi,
                     interpolation="nearest")
        ax[1].set_title(f"simulation (R = {rf:.3f})", fontsize=9)
        lim = np.nanmax(np.abs(diff)) if m.any() else 1.0
        im = ax[2].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax[2].set_title("(exp − sim)/σ", fontsize=9)
        fig.colorbar(im, ax=ax[2], fraction=0.046)
        r = e.shape[0] // 2 if profile_row is None else int(profile_row)
        x = np.arange(e.shape[1])
        ax[0].axhline(r, color="tab:orange", lw=0.8)
        ax[3].errorbar(x, e[r], yerr=np.sqrt(v_img[k][r]), fmt=".", ms=3, lw=0.6,
                       label="experiment")
        ax[3].plot(x, model[r], "-", lw=1.0, label="simulation")
        ax[3].set_title(f"profile, row {r}", fontsize=9)
        ax[3].legend(fontsize=7)
        for a in ax[:3]:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    return fig
