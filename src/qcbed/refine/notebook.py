"""Jupyter views of a fine refinement's result (:class:`~qcbed.refine.fine.RefinementResult`).

``result._repr_html_()`` gives the goodness of fit, the parameters with esd, the
per-reflection ZNCC and the correlation matrix as HTML (no JavaScript);
``result.plot()`` the GOF and parameter traces over the iterations beside the
correlation matrix as a matplotlib figure.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_result", "result_html"]

_CELL = "padding:1px 8px;text-align:right;border-bottom:1px solid #eee"


def _fmt(v: Any, spec: str = ".6g") -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _corr_colour(r: float) -> str:
    a = min(1.0, abs(float(r)))
    return f"rgba(37,99,235,{a:.2f})" if r >= 0 else f"rgba(194,65,12,{a:.2f})"


def result_html(res: Any) -> str:
    """HTML of a RefinementResult: GOF, parameters ± esd, ZNCC, correlation matrix."""
    head = (f"<b>RefinementResult</b> — GOF {_fmt(res.gof, '.5g')} (reduced χ² "
            f"{_fmt(res.chi2, '.5g')}, dof {res.dof}, n {res.n_used}), "
            f"R {_fmt(res.r_factor, '.4f')}"
            f"; {html.escape(res.message)} ({res.n_iterations} iterations)")
    rows = "".join(
        f"<tr><td style='{_CELL};text-align:left'>{html.escape(p.name)}</td>"
        f"<td style='{_CELL}'>{_fmt(p.value, '.7g')}</td>"
        f"<td style='{_CELL}'>{_fmt(p.esd, '.2g') if p.refine else 'fixed'}</td>"
        f"<td style='{_CELL};text-align:left'>{html.escape(str(getattr(p, 'unit', '')))}</td></tr>"
        for p in res.parameters)
    params = ("<table style='font:12px system-ui,sans-serif;border-collapse:collapse'>"
              f"<tr><th style='{_CELL};text-align:left'>parameter</th><th style='{_CELL}'>value"
              f"</th><th style='{_CELL}'>esd</th><th style='{_CELL}'>unit</th></tr>{rows}</table>")
    z = ", ".join(f"({html.escape(k)}) {v:.4f}" for k, v in res.zncc.items())
    names = list(res.free_names)
    c = np.asarray(res.correlation, float)
    corr = ""
    if names:
        hdr = "".join(f"<th style='font-weight:400;padding:1px 4px'>{i + 1}</th>"
                      for i in range(len(names)))
        body = "".join(
            f"<tr><th style='text-align:left;font-weight:400;padding:1px 6px'>{i + 1} "
            f"{html.escape(n)}</th>" + "".join(
                f"<td style='background:{_corr_colour(v)};padding:2px 5px;text-align:center;"
                f"color:{'#fff' if abs(v) > 0.55 else '#222'}'>{v:+.2f}</td>" for v in c[i])
            + "</tr>" for i, n in enumerate(names))
        corr = ("<div style='margin-top:6px'><b style='font-size:12px'>correlation</b>"
                "<table style='font:11px system-ui,sans-serif;border-collapse:collapse'>"
                f"<tr><th></th>{hdr}</tr>{body}</table></div>")
    return (f"<div style='font:12px system-ui,sans-serif'>{head}{params}"
            f"<div style='margin-top:4px'>ZNCC: {z or '–'}</div>{corr}</div>")


def plot_result(res: Any, *, figsize: tuple[float, float] = (10.0, 4.0)) -> Figure:
    """GOF and refined-parameter traces over the iterations, and the correlation matrix."""
    fig = Figure(figsize=figsize)
    hist = list(res.history)
    names = list(res.free_names)
    ax = fig.add_subplot(1, 3, 1)
    it = np.arange(1, len(hist) + 1)
    ax.semilogy(it, [h["gof"] for h in hist], "o-", ms=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("GOF")
    ax2 = fig.add_subplot(1, 3, 2)
    for n in names:
        v = np.array([h.get(n, np.nan) for h in hist], float)
        span = np.nanmax(np.abs(v - v[-1])) if len(v) else 0.0
        ax2.plot(it, (v - v[-1]) / (span or 1.0), label=n)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("(value − final) / range")
    if names:
        ax2.legend(fontsize=7)
    ax3 = fig.add_subplot(1, 3, 3)
    if names:
        im = ax3.imshow(np.asarray(res.correlation, float), vmin=-1, vmax=1, cmap="RdBu_r")
        ax3.set_xticks(range(len(names)), names, rotation=60, fontsize=7, ha="right")
        ax3.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(im, ax=ax3, fraction=0.046)
    ax3.set_title("correlation", fontsize=9)
    fig.tight_layout()
    return fig
