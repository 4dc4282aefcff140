"""HTML report of a refinement: one self-contained folder, viewable offline.

``report.html`` links PNG figures in ``figures/`` (matplotlib, Agg backend) and
embeds no scripts or remote resources:

* experiment / simulation / difference of every disc (reflection) and region,
  on the same intensity scale (the simulation is the fitted model
  c·I_sim + b), the difference in units of the noise, (I_x − model)/σ;
* parameter traces over the iterations of every fine step, and the GOF;
* the correlation matrix of the refined parameters;
* the coarse-step correlation curves;
* tables: parameters ± esd (and the true values of synthetic data), structure
  factors (IAM beside refined, electron and X-ray), per-reflection ZNCC,
  provenance.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.files import atomic_write
from .._core.hkl import hkl_label

__all__ = ["write_report"]

_CSS = """
body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee}.small{color:#666;font-size:.85em}
code{background:#f6f6f6;padding:0 3px}
"""


def _fmt(v: Any, spec: str = ".6g") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not np.isfinite(v):
        return "–"
    if isinstance(v, (int, float, np.floating)):
        return format(float(v), spec)
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    out = ["<table><tr>" + "".join(
        f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90))


def _disc_figures(run: Any, figdir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    res, roi = run.fine, run.roi
    if res is None or roi is None:
        return []
    vals = {p.name: p.value for p in res.parameters if p.kind == "sampling"}
    _e, var, _v = roi.sample(vals)
    parts = [roi.split(res.extra[k]) for k in ("experiment", "model", "mask")]
    sig = roi.split(np.sqrt(np.where(np.isfinite(var), var, np.nan)))
    out = []
    n = len(roi.hkl)
    per_fig = 4 if n <= 4 else 8            # reflections per figure
    pairs = 1 if n <= 4 else 2              # reflections per figure row
    for k, (exp, mod, msk, sg) in enumerate(zip(*parts, sig)):
        for part, start in enumerate(range(0, n, per_fig)):
            idx = list(range(start, min(start + per_fig, n)))
            nrow = int(np.ceil(len(idx) / pairs))
            fig, axes = plt.subplots(nrow, 3 * pairs, figsize=(3.6 * pairs * 2, 2.3 * nrow + 0.4),
                                     squeeze=False)
            for ax in axes.ravel():
                ax.axis("off")
            for j, i in enumerate(idx):
                row = axes[j // pairs, 3 * (j % pairs):3 * (j % pairs) + 3]
                _disc_row(fig, row, roi.hkl[i], exp[i], mod[i], msk[i], sg[i], j < pairs)
            fig.tight_layout()
            name = f"discs_region{k}.png" if n <= per_fig else f"discs_region{k}_{part + 1}.png"
            _save(fig, figdir / name)
            plt.close(fig)
            what = ", ".join(f"({hkl_label(roi.hkl[i])})" for i in idx)
            out.append((name, f"Region {k + 1}, {what}: experiment, fitted simulation and "
                              "normalised difference"))
    return out


def _disc_row(fig, axes, h, exp, mod, msk, sg, titles: bool) -> None:
    e = np.where(msk, exp, np.nan)
    m = np.where(msk, mod, np.nan)
    if not np.any(np.isfinite(e)):
        return
    lo, hi = np.nanpercentile(np.concatenate([e.ravel(), m.ravel()]), [0.5, 99.5])
    d = (e - m) / sg
    lim = max(float(np.nanpercentile(np.abs(d), 99)), 1e-12)
    for a, img, title, kw in (
            (axes[0], e, "experiment", dict(cmap="gray", vmin=lo, vmax=hi)),
            (axes[1], m, "simulation (fit)", dict(cmap="gray", vmin=lo, vmax=hi)),
            (axes[2], d, "difference / σ", dict(cmap="RdBu_r", vmin=-lim, vmax=lim))):
        a.axis("on")
        im = a.imshow(img, interpolation="nearest", **kw)
        a.set_xticks([])
        a.set_yticks([])
        if titles:
            a.set_title(title, fontsize=9)
        if a is axes[2]:
            fig.colorbar(im, ax=a, fraction=0.046, pad=0.02)
    axes[0].set_ylabel(f"({hkl_label(h)})", fontsize=9)


def _trace_figure(run: Any, figdir: Path, truth: Mapping[str, float]
                  ) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    hist = run.history
    res = run.fine
    if not hist or res is None:
        return []
    names = [n for n in res.free_names if any(n in h for h in hist)]
    # every parameter refined in some step
    refined = sorted({k for h in hist for k in h if k not in ("time_s", "stage", "gof", "step")
                      and _varies(hist, k)}, key=lambda k: (k not in names, k))
    panels = ["gof"] + refined
    ncol = 3
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(9, 2.3 * nrow + 0.3), squeeze=False)
    steps = [h.get("step", "") for h in hist]
    it = np.arange(1, len(hist) + 1)
    bounds = [i for i in range(1, len(steps)) if steps[i] != steps[i - 1]]
    for ax, key in zip(axes.ravel(), panels):
        y = np.array([h.get(key, np.nan) for h in hist], float)
        ax.plot(it, y, ".-", ms=4)
        for b in bounds:
            ax.axvline(b + 0.5, color="0.7", lw=0.8, ls="--")
        if key == "gof" and np.all(y[np.isfinite(y)] > 0):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        if key in truth:
            ax.axhline(truth[key], color="C3", lw=0.8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    fig.tight_layout()
    _save(fig, figdir / "traces.png")
    plt.close(fig)
    return [("traces.png", "Parameter traces and GOF over the iterations (dashed lines: "
                           "fine steps; red: true values of synthetic data)")]


def _varies(hist: Sequence[Mapping[str, Any]], key: str) -> bool:
    v = np.array([h.get(key, np.nan) for h in hist], float)
    v = v[np.isfinite(v)]
    return len(v) > 1 and float(np.ptp(v)) > 0


def _correlation_figure(run: Any, figdir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    res = run.fine
    if res is None or not len(res.free_names):
        return []
    c = np.asarray(res.correlation, float)
    n = len(res.free_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n, 0.9 + 0.5 * n))
    im = ax.imshow(c, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(res.free_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(res.free_names, fontsize=8)
    for i in range(n):
        for j in range(n):
            if np.isfinite(c[i, j]):
                ax.text(j, i, f"{c[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if abs(c[i, j]) > 0.6 else "k")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, figdir / "correlation.png")
    plt.close(fig)
    return [("correlation.png", "Correlation matrix of the refined parameters (last step)")]


def _coarse_figure(run: Any, figdir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    out = []
    for k, c in enumerate(run.coarse):
        hist = c.get("history", [])
        xs = [key for key in ("thickness", "pixel_size", "voltage_kv") if any(
            key in h for h in hist)]
        if not xs:
            continue
        key = xs[0]
        pts = sorted((h[key], h["correlation"]) for h in hist if key in h)
        fig, ax = plt.subplots(figsize=(4.5, 2.8))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-")
        ax.set_xlabel({"thickness": "thickness (Å)", "pixel_size": "pixel size (1/Å)",
                       "voltage_kv": "voltage (kV)"}[key])
        ax.set_ylabel("NCC")
        ax.set_title(f"coarse step {k + 1}: {c['step']}", fontsize=9)
        fig.tight_layout()
        name = f"coarse{k}.png"
        _save(fig, figdir / name)
        plt.close(fig)
        out.append((name, f"Coarse step {k + 1}: normalised cross-correlation"))
    return out


def _accuracy_sections(result: Mapping[str, Any]) -> list[str]:
    """Noise model, error budget and spread over regions (when present)."""
    e = html.escape
    parts: list[str] = []
    nm = result.get("noise_model")
    if nm:
        parts.append("<h2>Noise model</h2>")
        parts.append(f"<p>σ² = g·I + σ₀², estimated from the data ({e(str(nm['method']))}, "
                     f"{nm.get('n_used', 0)} pixels): g = {_fmt(nm['gain'], '.4g')}, "
                     f"σ₀² = {_fmt(nm['floor'], '.4g')}"
                     + ("" if nm.get("white") is not False else
                        f"; the local scatter is not white (lag-1 autocorrelation "
                        f"{_fmt(nm['lag1_rows'], '.2f')}, {_fmt(nm['lag1_cols'], '.2f')}; "
                        "white: −0.67)") + ".</p>")
        rn = nm.get("from_residuals")
        if rn:
            parts.append(f"<p>The same model fitted to the refinement residuals (misfit "
                         f"counts as noise): g = {_fmt(rn['gain'], '.4g')}, σ₀² = "
                         f"{_fmt(rn['floor'], '.4g')}.</p>")
    eb = result.get("error_budget")
    if eb:
        names = list(eb["parameters"])
        parts.append("<h2>Error budget</h2>")
        parts.append("<p class='small'>Shift of every refined parameter when a fixed input "
                     "changes by the stated amount (linearised, docs/refinement.md); "
                     "u<sub>c</sub> = √(esd² + Σ shift²).</p>")
        rows = [["value", ""] + [_fmt(eb["parameters"][n]["value"], ".6g") for n in names],
                ["esd (statistical)", ""] + [_fmt(eb["parameters"][n]["esd"], ".2g")
                                             for n in names]]
        rows += [[e(i["input"]), e(i["delta"])] + [
            _fmt(eb["parameters"][n]["shifts"][i["input"]], ".2g") for n in names]
            for i in eb["inputs"]]
        rows.append(["combined u_c", ""] + [_fmt(eb["parameters"][n]["combined"], ".2g")
                                            for n in names])
        parts.append(_table(["", "change"] + [e(n) for n in names], rows, left=2))
    rg = result.get("regions")
    if rg:
        parts.append(f"<h2>Reproducibility across {rg['n_regions']} regions</h2>")
        parts.append(_table(
            ["parameter", "mean", "std", "rel. std (%)", "mean esd", "std/esd", "χ²_ν"],
            [[e(n), _fmt(s["mean"], ".6g"), _fmt(s["std"], ".2g"),
              _fmt(None if s["rel_std"] is None else 100 * s["rel_std"], ".3f"),
              _fmt(s["mean_esd"], ".2g"),
              _fmt(s["std_over_esd"], ".2f"), _fmt(s["chi2_nu"], ".2f")]
             for n, s in rg["stats"].items()]))
    return parts


def write_report(out_dir: str | os.PathLike, run: Any, result: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]], prov: Mapping[str, Any]) -> Path:
    """Write ``report.html`` and ``figures/*.png`` into ``out_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg", force=False)

    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    truth = dict(result.get("truth", {}))
    figs = _disc_figures(run, figdir) + _trace_figure(run, figdir, truth) + \
        _correlation_figure(run, figdir) + _coarse_figure(run, figdir)
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(result['project'])}"
             f" – qcbed report</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(result['project'])}</h1>",
             f"<p class='small'>qcbed {e(result['qcbed_version'])}, {e(result['created'])}; "
             f"{e(result['crystal']['space_group'])}, a,b,c = "
             f"{', '.join(f'{x:g}' for x in result['crystal']['cell'][:3])} Å; "
             f"{result['voltage_kv']:g} kV</p>"]
    th = result["thickness"]
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["quantity", "value"], [
        ["GOF (" + e(result["gof"]["metric"]) + ")", _fmt(result["gof"]["value"])],
        ["reduced χ²", _fmt(result["chi2"])], ["R factor", _fmt(result["r_factor"], ".4f")],
        ["samples used / dof", f"{result['n_used']} / {result['dof']}"],
        ["thickness (Å)", f"{_fmt(th['value'], '.2f')} ± {_fmt(th['esd'], '.2g')}"],
        ["tilt0 (1/Å)", ", ".join(_fmt(x, ".5f") for x in result["orientation"]["tilt0"])],
        ["message", e(result.get("message", ""))],
        ["run time (s)", _fmt(result.get("elapsed_s"), ".1f")]]))
    if result.get("datasets"):
        parts.append("<h2>Datasets (joint refinement)</h2>")
        parts.append("<p class='small'>Structure parameters are shared; thickness, "
                     "orientation and sampling are per dataset (<code>name[k]</code>). "
                     "χ²_ν per dataset: its samples − its parameters − its scale and "
                     "backgrounds. The figures below show dataset 0.</p>")
        parts.append(_table(
            ["k", "name", "kind", "zone", "kV", "thickness (Å)", "reduced χ²", "R",
             "n / dof", "scale"],
            [[str(d["index"]), e(d["name"]), e(d["kind"]),
              e(str([round(x, 3) for x in d["orientation"]["zone"]])),
              _fmt(d["voltage_kv"], "g"),
              f"{_fmt(d['thickness']['value'], '.2f')} ± {_fmt(d['thickness']['esd'], '.2g')}",
              _fmt(d["chi2"]), _fmt(d["r_factor"], ".4f"), f"{d['n_used']} / {d['dof']}",
              _fmt(d["scale"], ".5g")] for d in result["datasets"]]))
    prm = []
    for p in result["parameters"]:
        if not p["refined"]:
            continue
        t = p.get("true")
        dev = "–" if t is None or not p["esd"] else f"{(p['value'] - t) / p['esd']:+.2f}"
        prm.append([e(p["name"]), _fmt(p["value"], ".7g"), _fmt(p["esd"], ".2g"), e(p["unit"]),
                    _fmt(t, ".7g"), dev])
    parts.append("<h2>Refined parameters</h2>")
    parts.append(_table(["parameter", "value", "esd", "unit", "true", "(value − true)/esd"],
                        prm))
    parts += _accuracy_sections(result)
    if result.get("strong_correlations"):
        parts.append("<p>Strongly correlated (|ρ| &gt; 0.9): " + ", ".join(
            f"{e(c['a'])}/{e(c['b'])} ({c['rho']:+.3f})" for c in
            result["strong_correlations"]) + "</p>")
    if rows:
        parts.append("<h2>Structure factors (IAM beside refined)</h2>")
        parts.append("<p class='small'>U, U′ in Å⁻² (signed amplitudes along φ); F_x in "
                     "electrons per cell (Mott–Bethe). Full table: "
                     "<code>structure_factors.hkl</code>.</p>")
        parts.append(_table(
            ["hkl", "|g| (1/Å)", "φ (°)", "U IAM", "U", "esd", "U′ IAM", "U′", "esd",
             "F_x IAM", "F_x", "esd"],
            [[hkl_label(r["hkl"]), _fmt(r["g"], ".4f"),
              _fmt(r["phase_deg"], ".1f"), _fmt(r["U_iam"], ".6e"), _fmt(r["U"], ".6e"),
              _fmt(r["U_esd"], ".2e"), _fmt(r["U_abs_iam"], ".4e"), _fmt(r["U_abs"], ".4e"),
              _fmt(r["U_abs_esd"], ".2e"), _fmt(r["Fx_iam"], ".4f"), _fmt(r["Fx"], ".4f"),
              _fmt(r.get("Fx_esd"), ".2g")] for r in rows]))
    if result["zncc"]:
        parts.append("<h2>Per-reflection ZNCC (model vs experiment)</h2>")
        parts.append(_table(["hkl", "ZNCC"], [[hkl_label(z["hkl"]),
                                               _fmt(z["zncc"], ".4f")]
                                              for z in result["zncc"]]))
    if result.get("coarse"):
        parts.append("<h2>Coarse steps</h2>")
        parts.append(_table(["step", "result"], [[e(c["step"]), e(c.get("summary", ""))]
                                                 for c in result["coarse"]]))
    parts.append("<h2>Figures</h2>")
    for name, cap in figs:
        parts.append(f"<figure><img src='figures/{e(name)}' alt='{e(cap)}'>"
                     f"<figcaption class='small'>{e(cap)}</figcaption></figure>")
    parts.append("<h2>Provenance</h2><details><summary>versions, inputs, command</summary>")
    rows_p = [[e(k), e(str(v))] for k, v in prov.items() if not isinstance(v, dict)]
    rows_p += [[e(f"{k}: {kk}"), e(str(vv))] for k, v in prov.items() if isinstance(v, dict)
               for kk, vv in v.items()]
    parts.append(_table(["item", "value"], rows_p, left=2))
    parts.append("</details><p class='small'>Files: " + ", ".join(
        f"<a href='{e(v)}'>{e(v)}</a>" for v in result["files"].values()) + "</p>")
    parts.append("</body></html>")
    text = "\n".join(parts)
    return atomic_write(out / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
