"""Jupyter views of experimental data: ``_repr_html_`` and ``plot()`` helpers.

:class:`~qcbed.experiment.LACBEDStack`, :class:`~qcbed.experiment.CBEDPattern` and
:class:`~qcbed.experiment.ROI` render themselves in a notebook through these
functions (HTML with inline PNG thumbnails, no JavaScript), and their ``plot()``
methods return matplotlib figures (:mod:`qcbed.experiment.plots` style: no pyplot
state). :func:`png_bytes` is the one PNG encoder of qcbed's interactive views
(the app in :mod:`qcbed.gui` uses it too). The module imports no other module of
the package (the classes call it), so that it adds no import cycle.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = [
    "figure_data_uri",
    "pattern_html",
    "plot_pattern",
    "plot_roi_display",
    "plot_stack",
    "png_bytes",
    "png_data_uri",
    "robust_range",
    "roi_html",
    "stack_html",
]


def robust_range(values: ArrayLike, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """Percentile range of the finite values ((0, 1) when there are none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not v.size:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (float(a), float(b)) if b > a else (float(a), float(a) + 1.0)


def png_bytes(image: ArrayLike, vmin: float | None = None, vmax: float | None = None,
              cmap: str = "gray") -> bytes:
    """An image (ny, nx) as an RGBA PNG through a matplotlib colormap; NaN transparent.

    ``vmin``/``vmax`` default to the 0.5–99.5 % percentiles of the finite values.
    """
    from matplotlib import colormaps
    from PIL import Image

    a = np.asarray(image, dtype=float)
    lo, hi = robust_range(a)
    vmin = lo if vmin is None else float(vmin)
    vmax = hi if vmax is None else float(vmax)
    span = vmax - vmin if np.isfinite(vmax - vmin) and vmax > vmin else 1.0
    x = np.clip((np.nan_to_num(a, nan=vmin) - vmin) / span, 0.0, 1.0)
    rgba = (colormaps[cmap](x) * 255).astype(np.uint8)
    rgba[~np.isfinite(a), 3] = 0
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_data_uri(image: ArrayLike, **kw: Any) -> str:
    """``data:image/png;base64,…`` of :func:`png_bytes`."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, **kw)).decode()


def figure_data_uri(fig: Figure, dpi: int = 80) -> str:
    """A matplotlib figure as a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _hkl(h: ArrayLike) -> str:
    return "(" + " ".join(str(int(v)) for v in np.asarray(h).reshape(-1)) + ")"


def _thumb(im: np.ndarray, size: int = 96) -> np.ndarray:
    s = max(1, int(np.ceil(max(im.shape) / size)))
    return im[::s, ::s]


_STYLE = ("font-family:system-ui,sans-serif;font-size:12px;border-collapse:collapse;"
          "margin:2px 0")


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th style='text-align:left;padding:1px 8px 1px 0;color:#555'>"
                    f"{html.escape(k)}</th><td style='text-align:left'>{html.escape(v)}</td>"
                    "</tr>" for k, v in rows)
    return f"<table style='{_STYLE}'>{cells}</table>"


def _gallery(images: list[np.ndarray], labels: list[str], limit: int = 24) -> str:
    out = []
    for im, lab in list(zip(images, labels))[:limit]:
        out.append("<figure style='display:inline-block;margin:2px;text-align:center'>"
                   f"<img src='{png_data_uri(_thumb(im))}' style='width:88px;height:88px;"
                   "image-rendering:pixelated;border:1px solid #ddd' alt='" + html.escape(lab)
                   + f"'><figcaption style='font-size:10px;color:#555'>{html.escape(lab)}"
                   "</figcaption></figure>")
    more = len(images) - limit
    tail = f"<div style='font-size:11px;color:#777'>… and {more} more</div>" if more > 0 else ""
    return "<div>" + "".join(out) + "</div>" + tail


def stack_html(stack: Any) -> str:
    """HTML summary of a LACBED stack: shape, source, geometry and image thumbnails."""
    rows = [("images", f"{len(stack)} × {stack.shape[0]} × {stack.shape[1]} px"),
            ("source", str(stack.source or "–")),
            ("voltage", "–" if stack.voltage_kv is None else f"{stack.voltage_kv:g} kV"),
            ("masked pixels", str(int((~np.asarray(stack.mask, bool)).sum())))]
    g = stack.geometry
    if g is not None:
        rows.append(("geometry", f"zone {list(g.frame.zone)}, x {list(g.frame.x_axis)}, "
                                 f"{g.pixel_size:.4g} Å⁻¹/px, rotation {g.rotation:g}°"
                                 f"{', mirrored' if g.mirror else ''}"))
    return ("<div><b>LACBEDStack</b>" + _table(rows)
            + _gallery(list(stack.images), [_hkl(h) for h in stack.hkl]) + "</div>")


def plot_stack(stack: Any, hkl: ArrayLike | None = None, *, ncols: int = 6,
               cmap: str = "gray", size: float = 1.8) -> Figure:
    """A montage of the stack's images (``hkl``: which, default all) with their indices."""
    idx = range(len(stack)) if hkl is None else [
        stack.index(h) for h in np.asarray(hkl, int).reshape(-1, 3)]
    idx = list(idx)
    ncols = max(1, min(ncols, len(idx)))
    nrows = int(np.ceil(len(idx) / ncols))
    fig = Figure(figsize=(size * ncols, size * nrows + 0.2))
    for k, i in enumerate(idx):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        im = stack.images[i]
        lo, hi = robust_range(im)
        ax.imshow(np.where(stack.mask[i], im, np.nan), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(_hkl(stack.hkl[i]), fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def pattern_html(pattern: Any) -> str:
    """HTML summary of a CBED pattern: shape, detector, reflections and the image."""
    rows = [("image", f"{pattern.shape[0]} × {pattern.shape[1]} px"),
            ("source", str(pattern.source or "–")),
            ("reflections", "–" if pattern.hkl is None else
             ", ".join(_hkl(h) for h in np.asarray(pattern.hkl)[:12])),
            ("detector", f"gain {pattern.detector.gain:g}")]
    im = pattern.image
    return ("<div><b>CBEDPattern</b>" + _table(rows)
            + f"<img src='{png_data_uri(_thumb(im, 320))}' style='max-width:320px;"
              "image-rendering:pixelated;border:1px solid #ddd'></div>")


def plot_pattern(pattern: Any, *, cmap: str = "gray", log: bool = True,
                 figsize: tuple[float, float] = (5.0, 5.0)) -> Figure:
    """The pattern (logarithmic intensity by default)."""
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    im = np.asarray(pattern.image, float)
    shown = np.log10(np.clip(im, 1e-3 * max(float(np.nanmax(im)), 1e-30), None)) if log else im
    lo, hi = robust_range(shown)
    ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi)
    ax.set_title(str(pattern.source or "CBED pattern"), fontsize=9)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    fig.tight_layout()
    return fig


def _roi_display(roi: Any, hkl: ArrayLike | None) -> tuple[np.ndarray, Any]:
    """The display image of the ROI's first (or ``hkl``) reflection and its hkl."""
    h = roi.hkl[0] if hkl is None else np.asarray(hkl, int).reshape(3)
    d = roi.data
    img = d.images[d.index(h)] if hasattr(d, "images") else d.image
    return roi.geometry.display_image(img, order=1), h


def roi_html(roi: Any) -> str:
    """HTML summary of an ROI: regions, points, reflections, and the regions with their
    sample points drawn (SVG) over the display image of the first reflection."""
    rows = [("regions", str(len(roi.region_list))),
            ("sample points", str(roi.n_points)),
            ("reflections", f"{len(roi.hkl)}: " + ", ".join(_hkl(h) for h in roi.hkl[:10])
             + (" …" if len(roi.hkl) > 10 else "")),
            ("pixel size", f"{roi.geometry.pixel_size:.4g} Å⁻¹ per display pixel")]
    for k, r in enumerate(roi.region_list[:6]):
        c = np.round(r.corners, 2).tolist()
        rows.append((f"region {k}", f"corners {c}, {r.n12} × {r.n13} samples"))
    img, h = _roi_display(roi, None)
    hh, ww = img.shape
    shapes = []
    for r in roi.region_list:
        o = r.outline()
        pts = " ".join(f"{c:.2f},{rr:.2f}" for rr, c in o)
        shapes.append(f"<polygon points='{pts}' fill='none' stroke='#f59e0b' "
                      "stroke-width='0.6'/>")
        p = r.points().reshape(-1, 2)
        step = max(1, int(np.ceil(len(p) / 1500)))
        shapes.extend(f"<circle cx='{c:.2f}' cy='{rr:.2f}' r='0.35' fill='#f59e0b'/>"
                      for rr, c in p[::step])
    svg = (f"<svg viewBox='-0.5 -0.5 {ww} {hh}' style='width:360px;max-width:100%;"
           "border:1px solid #ddd' xmlns='http://www.w3.org/2000/svg'>"
           f"<image href='{png_data_uri(img)}' x='-0.5' y='-0.5' width='{ww}' height='{hh}' "
           "style='image-rendering:pixelated' preserveAspectRatio='none'/>"
           + "".join(shapes) + "</svg>")
    return (f"<div><b>ROI</b>{_table(rows)}<div style='font-size:11px;color:#555'>"
            f"display frame, reflection {_hkl(h)}</div>{svg}</div>")


def plot_roi_display(roi: Any, hkl: ArrayLike | None = None, *, cmap: str = "gray",
                     figsize: tuple[float, float] = (5.0, 5.0)) -> Figure:
    """The regions and their sample points on the display image of ``hkl`` (default: the
    ROI's first reflection), in display pixels (g_x to the right)."""
    img, h = _roi_display(roi, hkl)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = robust_range(img)
    ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
    for k, r in enumerate(roi.region_list):
        o = r.outline()
        ax.plot(o[:, 1], o[:, 0], "-", color="#f59e0b", lw=1.2)
        p = r.points().reshape(-1, 2)
        step = max(1, int(np.ceil(len(p) / 3000)))
        ax.plot(p[::step, 1], p[::step, 0], ".", color="#f59e0b", ms=1.5)
        ax.text(o[0, 1], o[0, 0], str(k), color="#f59e0b", fontsize=8, va="bottom")
    ax.set_title(f"ROI on {_hkl(h)} (display frame)", fontsize=9)
    ax.set_xlabel("display column (px)")
    ax.set_ylabel("display row (px)")
    fig.tight_layout()
    return fig
