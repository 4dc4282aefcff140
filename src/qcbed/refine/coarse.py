"""Coarse refinement: orientation by template matching, nested in 1-D searches.

The experimental discs of a rectangular region, sampled one point per pixel
(``templates``, shape (n_disc, h, w)), are matched jointly against a wider
simulated field (n_disc, h + 2m, w + 2m) on the same pixel grid with
normalised cross-correlation of the 3-D stacks (what scikit-image's
``match_template`` computes, Lewis 1995; :func:`joint_ncc` evaluates it faster
and is tested against it), so every disc contributes (seed paper §3.4–3.5).
The peak of the correlation map (refined to sub-pixel by a parabola through
its neighbours) gives the incident direction of the template centre.

Orientation search is nested inside 1-D optimisations:

* thickness — the wide field is diagonalised **once**; each thickness costs
  only the intensities (Spence & Zuo 1992, eq. 2.29): a global scan in ≤ 1 %
  steps over 0.6–1.6 × the start (extended when the maximum is on an edge),
  then Brent;
* pixel size (``gl``) — the simulated field, computed once on a finer grid, is
  resampled (cubic spline) to the trial pixel size: no re-diagonalisation;
* voltage, Debye–Waller factors, cell parameters, coordinates — re-simulate per
  evaluation (Brent for one parameter; Powell or Nelder–Mead for several).

A user preprocessing hook ``preprocess(image, is_simulation)`` (e.g. a ridge
filter, ``skimage.filters.meijering``) is applied to experiment and simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, optimize

from .._core.checks import check_integer, check_number
from ..bloch.grids import TiltGrid
from ..bloch.simulation import Simulation, outputs_index
from ..errors import InputError
from ..experiment.geometry import ExperimentGeometry
from .result import RefinementOutcome

Preprocess = Callable[[np.ndarray, bool], np.ndarray]

#: Default thickness search range, relative to the start thickness.
DEFAULT_THICKNESS_RANGE = (0.6, 1.6)


@dataclass
class CoarseResult(RefinementOutcome):
    """Outcome of a coarse search.

    Attributes
    ----------
    tilt0 : ndarray (2,)
        k_t (Å⁻¹, zone frame) at the template centre.
    thickness : float
        Å.
    pixel_size : float
        Å⁻¹ per template pixel.
    correlation : float
        Peak normalised cross-correlation (1 − correlation distance).
    shift_px : ndarray (2,)
        (dy, dx) of the best match from the start position, template pixels.
    values : dict
        Refined values of other parameters (voltage, B, cell…).
    history : list of dict
        Every evaluation (parameter value, correlation).
    corr_map : ndarray
        Correlation map at the optimum.
    model : ndarray (n, H, W) or None
        Simulated field the templates were matched in, at the optimum.
    experiment : ndarray (n, h, w) or None
        The experimental templates.

    Besides, the fields shared by every refinement result
    (:class:`~qcbed.refine.result.RefinementOutcome`): ``names``/``x`` = tilt0.x,
    tilt0.y (Å⁻¹), thickness (Å), pixel_size (Å⁻¹/px) and ``values``; no esd.
    """

    tilt0: np.ndarray
    thickness: float
    pixel_size: float
    correlation: float
    shift_px: np.ndarray
    values: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    corr_map: np.ndarray | None = None
    model: np.ndarray | None = None
    experiment: np.ndarray | None = None

    # ------------------------------------------------------------ RefinementOutcome
    @property
    def names(self) -> list[str]:  # type: ignore[override]
        return ["tilt0.x", "tilt0.y", "thickness", "pixel_size", *self.values]

    @property
    def x(self) -> np.ndarray:  # type: ignore[override]
        return np.array([*np.asarray(self.tilt0, float), self.thickness, self.pixel_size,
                         *self.values.values()], float)

    @property
    def x_esd(self) -> np.ndarray:  # type: ignore[override]
        """A correlation search gives no esd: NaN."""
        return np.full(len(self.names), np.nan)

    @property
    def success(self) -> bool:  # type: ignore[override]
        """True when a finite correlation peak was found."""
        return bool(np.isfinite(self.correlation))

    @property
    def message(self) -> str:  # type: ignore[override]
        return f"best normalised cross-correlation {self.correlation:.4f}"

    @property
    def nit(self) -> int:  # type: ignore[override]
        return len(self.history)

    @property
    def nfev(self) -> int:  # type: ignore[override]
        """Correlation evaluations (each one a simulated field)."""
        return len(self.history)

    @property
    def correlation_matrix(self) -> np.ndarray:  # type: ignore[override]
        return np.full((len(self.names),) * 2, np.nan)

    def apply_to(self, geometry: ExperimentGeometry, centre: ArrayLike,
                 step: float = 1.0) -> ExperimentGeometry:
        """The experimental geometry updated with this result.

        Parameters
        ----------
        geometry : ExperimentGeometry
            The geometry the templates were sampled in.
        centre : (row, col)
            Display pixel of the template centre.
        step : float
            Template sampling step in display pixels (the search's pixel size is
            ``geometry.pixel_size * step``).

        Returns
        -------
        ExperimentGeometry
            ``gl`` from the refined pixel size (when it changed) and ``tilt0`` such that
            the display pixel ``centre`` has the matched k_t. Thickness, voltage and
            Debye–Waller factors (``thickness``, ``values``) belong to the simulation.
        """
        g = geometry
        start = g.pixel_size * step
        if not np.isclose(self.pixel_size, start, rtol=1e-12, atol=0.0):
            g = g.replace(gl=float(g.g_x_length / (self.pixel_size / step)))
        d = np.asarray(self.tilt0, float) - g.display_to_kt(centre)
        t0 = np.asarray(g.tilt0, float) + d
        return g.replace(tilt0=(float(t0[0]), float(t0[1])))


def joint_ncc(field: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of a stack of templates over a stack of images, jointly.

    For every shift (y, x) of the (n, h, w) templates T over the (n, H, W) images I,

        NCC = Σ (I − Ī_w)(T − T̄) / sqrt(Σ (I − Ī_w)² Σ (T − T̄)²),

    the sums running over all n discs of the window (Lewis 1995; the quantity
    scikit-image's ``match_template`` returns for 3-D arrays whose depth equals the
    template's). Computed with 2-D FFT correlations per disc and integral images,
    without the 3-D padding, so it is several times faster.

    Returns
    -------
    ndarray (H − h + 1, W − w + 1)
    """
    from scipy.signal import fftconvolve

    f = np.asarray(field, dtype=float)
    t = np.asarray(templates, dtype=float)
    n, h, w = t.shape
    t0 = t - t.mean()
    num = sum(fftconvolve(f[k], t0[k, ::-1, ::-1], mode="valid") for k in range(n))

    def window_sum(a: np.ndarray) -> np.ndarray:
        c = np.pad(a.sum(axis=0).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]

    npix = n * h * w
    s1 = window_sum(f)
    s2 = window_sum(f * f)
    var_i = np.maximum(s2 - s1 * s1 / npix, 0.0)
    den = np.sqrt(var_i * np.sum(t0 * t0))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-12 * max(den.max(), 1e-300), num / den, 0.0)
    return out


def _peak_subpixel(cmap: np.ndarray) -> tuple[np.ndarray, float]:
    """Location (y, x) of the maximum with a 1-D parabola refinement per axis."""
    iy, ix = np.unravel_index(int(np.nanargmax(cmap)), cmap.shape)
    best = float(cmap[iy, ix])
    pos = np.array([iy, ix], float)
    for ax, (i, n) in enumerate(((iy, cmap.shape[0]), (ix, cmap.shape[1]))):
        if 0 < i < n - 1:
            if ax == 0:
                a, b, c = cmap[i - 1, ix], cmap[i, ix], cmap[i + 1, ix]
            else:
                a, b, c = cmap[iy, i - 1], cmap[iy, i], cmap[iy, i + 1]
            den = a - 2 * b + c
            if den < 0:
                pos[ax] = i + 0.5 * (a - c) / den
    return pos, best


class CoarseRefinement:
    """Template-matching refinement of orientation with thickness, ``gl`` and more.

    Parameters
    ----------
    simulation : Simulation
        Engine set-up; the template reflections must be output beams.
    templates : ndarray (n_disc, h, w)
        Experimental intensities, one pixel per sample, rows running along −ŷ
        and columns along +x̂ of the zone frame (display orientation; see
        ``docs/conventions.md``). NaN pixels are set to the template mean.
    hkl : array (n_disc, 3)
        Reflection of each template.
    pixel_size : float
        Å⁻¹ of incident tangential wave vector per template pixel.
    tilt0 : array (2,)
        Start k_t (Å⁻¹) at the template centre.
    thickness : float
        Start thickness (Å).
    margin : int
        Search half-width in pixels (the simulated field is the template plus
        ``margin`` on every side).
    preprocess : callable, optional
        ``f(image, is_simulation) -> image`` applied to both sides.
    oversample : int
        Simulation grid refinement used by the ``gl`` search.
    """

    def __init__(self, simulation: Simulation, templates: ArrayLike, hkl: ArrayLike,
                 pixel_size: float, tilt0: ArrayLike, thickness: float, *, margin: int = 20,
                 preprocess: Preprocess | None = None, oversample: int = 1) -> None:
        tpl = np.asarray(templates, dtype=float)
        if tpl.ndim != 3:
            raise InputError("templates must have shape (n_disc, h, w)", found=tpl.shape)
        h = np.asarray(hkl, int).reshape(-1, 3)
        if len(h) != len(tpl):
            raise InputError("one hkl per template", expected=len(tpl), found=len(h))
        pixel_size = check_number(pixel_size, "pixel_size", low=0.0, low_open=True,
                                  unit="Å⁻¹")
        margin = check_integer(margin, "margin", low=1)
        self.sim = simulation
        self.hkl = h
        self.out_idx = outputs_index(simulation, h)
        self.pixel_size = float(pixel_size)
        self.tilt0 = np.asarray(tilt0, float).reshape(2)
        self.thickness = float(thickness)
        self.margin = int(margin)
        self.preprocess = preprocess
        self.oversample = int(oversample)
        t = tpl.copy()
        for k in range(len(t)):
            bad = ~np.isfinite(t[k])
            if bad.all():
                raise InputError("a template has no finite pixels", tag=str(tuple(h[k])))
            t[k][bad] = np.nanmean(t[k])
        self.templates = t
        self._solution = None
        self._grid: TiltGrid | None = None
        self._reduction = None
        self.history: list[dict] = []

    # ------------------------------------------------------------ simulation
    def _field_grid(self, pixel_size: float, oversample: int = 1) -> TiltGrid:
        _, hh, ww = self.templates.shape
        step = pixel_size / oversample
        ny = (hh + 2 * self.margin) * oversample
        nx = (ww + 2 * self.margin) * oversample
        # zone frame: columns along +x̂, rows along −ŷ
        return TiltGrid.regular(self.tilt0, (step, 0.0), (0.0, -step), (ny, nx))

    def _solve_field(self, oversample: int = 1):
        """Eigen-solutions of the field: only its symmetry-irreducible directions
        (exact, :mod:`qcbed.bloch.symmetry`; e.g. a quarter for 2mm about the zone
        axis), expanded by :meth:`_field_intensities`."""
        grid = self._field_grid(self.pixel_size, oversample)
        red = self.sim.symmetry_reduction(grid)
        if red.n_ops > 1 and len(red.representatives) < len(grid.points):
            self._reduction = red
            return grid, self.sim.solve(grid.points[red.representatives])
        self._reduction = None
        return grid, self.sim.solve(grid.points)

    def _field_intensities(self, thickness: np.ndarray) -> np.ndarray:
        """(n_t, n_points, n_disc) intensities of the field at thicknesses (Å)."""
        if self._solution is None or self._grid is None:
            self._grid, self._solution = self._solve_field()
        inten = self._solution.intensities(thickness)
        if getattr(self, "_reduction", None) is not None:
            inten = self._reduction.expand(inten)
        return inten[..., self.out_idx]

    def simulated_field(self, thickness: float | None = None) -> np.ndarray:
        """Simulated wide field (n_disc, h + 2m, w + 2m) at a thickness (Å)."""
        t = self.thickness if thickness is None else float(thickness)
        inten = self._field_intensities(np.array([t]))[0]
        return self._grid.to_image(inten.T)

    def _prep(self, imgs: np.ndarray, is_sim: bool) -> np.ndarray:
        if self.preprocess is None:
            return imgs
        return np.stack([self.preprocess(im, is_sim) for im in imgs])

    def match(self, field: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Joint NCC of the templates in ``field`` (:func:`joint_ncc`).

        Returns (shift (dy, dx) in pixels, peak value, correlation map).
        """
        cmap = joint_ncc(self._prep(field, True), self._prep(self.templates, False))
        pos, best = _peak_subpixel(cmap)
        return pos - self.margin, best, cmap

    # ------------------------------------------------------------ searches
    def _corr_at_thickness(self, t: float) -> float:
        _, best, _ = self.match(self.simulated_field(t))
        self.history.append({"thickness": float(t), "correlation": best})
        return best

    def refine_orientation_thickness(self, t_range: tuple[float, float] | None = None,
                                     n_scan: int = 21, xtol: float = 0.05, *,
                                     step_rel: float = 0.01, max_extend: int = 3
                                     ) -> CoarseResult:
        """Thickness by a global scan, then bounded Brent, with the orientation at each trial.

        The correlation is an oscillating function of thickness (every disc's
        Pendellösung fringes move with t; Spence & Zuo 1992 §2), so a local
        optimiser started from a poor guess finds a side maximum. The search is
        therefore global over a range that does not hinge on the start being good:

        1. scan ``t_range`` with steps of at most ``step_rel`` of its centre (and at
           least ``n_scan`` points) — a fringe moves by a fraction t_step/t of its
           order, so 1 % steps sample every maximum of the curve;
        2. when the best scan point lies on an edge of the range, extend the range
           by its width on that side (at most ``max_extend`` times; t > 0) and
           rescan: a maximum on a boundary is not a maximum;
        3. bounded Brent between the neighbours of the best point.

        The orientation at every trial thickness is the peak of the joint NCC map
        over the whole ±``margin`` field (global in orientation).

        Parameters
        ----------
        t_range : (t_min, t_max) in Å, optional
            Default ``DEFAULT_THICKNESS_RANGE`` times the start thickness
            (0.6–1.6: starts 20 % off either way lie well inside).
        n_scan : int
            Minimum number of scan points.
        xtol : float
            Thickness tolerance (Å).
        step_rel : float
            Largest scan step relative to the range centre.
        max_extend : int
            Range extensions allowed when the maximum is on an edge.
        """
        f_lo, f_hi = DEFAULT_THICKNESS_RANGE
        lo, hi = t_range or (f_lo * self.thickness, f_hi * self.thickness)
        if not 0 < lo < hi:
            raise InputError("thickness range must satisfy 0 < t_min < t_max", found=(lo, hi))
        if not 0 < step_rel < 1 or n_scan < 3:
            raise InputError("need 0 < step_rel < 1 and n_scan >= 3", found=(step_rel, n_scan))
        ts_all: list[float] = []
        cs_all: list[float] = []
        for _ in range(max_extend + 1):
            n = max(int(n_scan), int(np.ceil((hi - lo) / (step_rel * 0.5 * (lo + hi)))) + 1)
            ts = np.linspace(lo, hi, n)
            ts_all += list(ts)
            cs_all += list(self._corr_scan(ts))
            k = int(np.argmax(cs_all))
            width = hi - lo
            t_k = ts_all[k]
            if np.isclose(t_k, max(ts_all)) and t_k >= hi - 1e-9:
                lo, hi = hi, hi + width
            elif np.isclose(t_k, min(ts_all)) and t_k <= lo + 1e-9 and lo > 1.0:
                lo, hi = max(lo - width, 0.5 * lo), lo
            else:
                break
        order = np.argsort(ts_all)
        ts_s = np.asarray(ts_all)[order]
        cs_s = np.asarray(cs_all)[order]
        k = int(np.argmax(cs_s))
        a = ts_s[max(k - 1, 0)]
        b = ts_s[min(k + 1, len(ts_s) - 1)]
        res = optimize.minimize_scalar(lambda t: -self._corr_at_thickness(t), bounds=(a, b),
                                       method="bounded", options={"xatol": xtol})
        t_best = float(res.x) if -res.fun >= cs_s[k] else float(ts_s[k])
        return self._result(t_best)

    def _corr_scan(self, ts: np.ndarray, batch: int = 16) -> np.ndarray:
        """Peak joint NCC at every thickness of ``ts`` (intensities in batches)."""
        out = []
        for i in range(0, len(ts), batch):
            chunk = np.asarray(ts[i:i + batch], float)
            inten = self._field_intensities(chunk)
            for t, it in zip(chunk, inten):
                _, best, _ = self.match(self._grid.to_image(it.T))
                self.history.append({"thickness": float(t), "correlation": best})
                out.append(best)
        return np.asarray(out)

    def _result(self, t_best: float, values: dict | None = None) -> CoarseResult:
        fld = self.simulated_field(t_best)
        shift, best, cmap = self.match(fld)
        dy, dx = shift
        kt = self.tilt0 + np.array([dx * self.pixel_size, -dy * self.pixel_size])
        return CoarseResult(tilt0=kt, thickness=t_best, pixel_size=self.pixel_size,
                            correlation=best, shift_px=shift, values=values or {},
                            history=list(self.history), corr_map=cmap, model=fld,
                            experiment=self.templates)

    def apply(self, result: CoarseResult) -> None:
        """Adopt a result as the new start (tilt0, thickness, pixel size); the field is redone."""
        self.tilt0 = np.asarray(result.tilt0, float)
        self.thickness = float(result.thickness)
        if result.pixel_size != self.pixel_size:
            self.pixel_size = float(result.pixel_size)
        self._solution = None

    def refine_pixel_size(self, rel_range: float = 0.05, xtol: float = 1e-4) -> CoarseResult:
        """Pixel size (Å⁻¹/px, i.e. ``gl``) by bounded Brent, orientation at each trial.

        The wide field is simulated once on a grid ``oversample`` times finer and
        extended by ``rel_range``, then resampled to each trial pixel size.
        """
        ov = max(self.oversample, 2)
        _, hh, ww = self.templates.shape
        ext = 1.0 + rel_range
        step = self.pixel_size / ov
        ny = int(np.ceil((hh + 2 * self.margin) * ext * ov)) | 1
        nx = int(np.ceil((ww + 2 * self.margin) * ext * ov)) | 1
        grid = TiltGrid.regular(self.tilt0, (step, 0.0), (0.0, -step), (ny, nx))
        sol = self.sim.solve(grid.points)
        fine = grid.to_image(sol.intensities([self.thickness])[0][:, self.out_idx].T)
        cy, cx = (ny - 1) / 2, (nx - 1) / 2

        def field_at(p: float) -> np.ndarray:
            yy = (np.arange(hh + 2 * self.margin) - (hh + 2 * self.margin - 1) / 2) * p / step
            xx = (np.arange(ww + 2 * self.margin) - (ww + 2 * self.margin - 1) / 2) * p / step
            gy, gx = np.meshgrid(yy + cy, xx + cx, indexing="ij")
            return np.stack([ndimage.map_coordinates(im, [gy, gx], order=3, mode="nearest")
                             for im in fine])

        def neg(p: float) -> float:
            _, best, _ = self.match(field_at(p))
            self.history.append({"pixel_size": float(p), "correlation": best})
            return -best

        p0 = self.pixel_size
        res = optimize.minimize_scalar(neg, bounds=(p0 / ext, p0 * ext), method="bounded",
                                       options={"xatol": xtol * p0})
        p_best = float(res.x)
        fld = field_at(p_best)
        shift, best, cmap = self.match(fld)
        dy, dx = shift
        kt = self.tilt0 + np.array([dx * p_best, -dy * p_best])
        return CoarseResult(tilt0=kt, thickness=self.thickness, pixel_size=p_best,
                            correlation=best, shift_px=shift, history=list(self.history),
                            corr_map=cmap, model=fld, experiment=self.templates)

    def _resimulate_corr(self, sim: Simulation) -> float:
        old = self.sim
        self.sim = sim
        self._solution = None
        try:
            _, best, _ = self.match(self.simulated_field())
        finally:
            self.sim = old
            self._solution = None
        return best

    def refine_voltage(self, half_range: float = 0.5, xtol: float = 1e-3) -> CoarseResult:
        """Accelerating voltage (kV) by bounded Brent (HOLZ-line positions)."""
        v0 = self.sim.voltage_kv

        def neg(v: float) -> float:
            c = self._resimulate_corr(self.sim.with_changes(voltage_kv=float(v)))
            self.history.append({"voltage_kv": float(v), "correlation": c})
            return -c

        res = optimize.minimize_scalar(neg, bounds=(v0 - half_range, v0 + half_range),
                                       method="bounded", options={"xatol": xtol})
        self.sim = self.sim.with_changes(voltage_kv=float(res.x))
        self._solution = None
        return self._result(self.thickness, {"voltage_kv": float(res.x)})

    def refine_structure(self, make: Callable[[np.ndarray], Simulation], x0: Sequence[float],
                         names: Sequence[str], *, method: str = "Powell",
                         bounds: Sequence[tuple[float, float]] | None = None,
                         maxiter: int = 60) -> CoarseResult:
        """Several structural parameters (B per site, cell, coordinates) by Powell/Nelder–Mead.

        ``make(x)`` returns the simulation for parameter values ``x``; each
        evaluation re-simulates the field at the current thickness.
        """
        def neg(x: np.ndarray) -> float:
            c = self._resimulate_corr(make(np.asarray(x)))
            self.history.append({**dict(zip(names, map(float, x))), "correlation": c})
            return -c

        res = optimize.minimize(neg, np.asarray(x0, float), method=method, bounds=bounds,
                                options={"maxiter": maxiter})
        self.sim = make(res.x)
        self._solution = None
        return self._result(self.thickness, dict(zip(names, map(float, res.x))))

    def refine_b_iso(self, labels: Sequence[str] | None = None,
                     b_range: tuple[float, float] = (0.0, 2.0)) -> CoarseResult:
        """Isotropic Debye–Waller factors (Å²) of sites (Powell, B within ``b_range``)."""
        crystal = self.sim.crystal
        labels = list(labels) if labels else [s.label for s in crystal.sites]
        x0 = [next(s.b_iso for s in crystal.sites if s.label == lab) for lab in labels]

        def make(x):
            return self.sim.with_changes(crystal=crystal.with_b_iso(dict(zip(labels, x))))

        return self.refine_structure(make, x0, [f"B({lab})" for lab in labels],
                                     bounds=[b_range] * len(labels))

    # ------------------------------------------------------------ plots
    def plot(self, result: CoarseResult):
        """Correlation map with a profile through the peak, and matched discs (figure)."""
        import matplotlib.pyplot as plt

        n = len(self.templates)
        fig, axes = plt.subplots(2, max(n, 2), figsize=(3 * max(n, 2), 6), squeeze=False)
        cm = result.corr_map
        ax = axes[0, 0]
        im = ax.imshow(cm, cmap="viridis")
        py, px = result.shift_px + self.margin
        ax.plot([px], [py], "o", mfc="none", mec="r")
        ax.set_title(f"NCC map, peak {result.correlation:.4f}")
        fig.colorbar(im, ax=ax, fraction=0.046)
        axes[0, 1].plot(cm[int(round(py))], "-")
        axes[0, 1].set_title("profile through the peak")
        for k in range(2, axes.shape[1]):
            axes[0, k].axis("off")
        field_img = self.simulated_field(result.thickness)
        iy, ix = int(round(py)), int(round(px))
        _, hh, ww = self.templates.shape
        for k in range(n):
            a = axes[1, k]
            crop = field_img[k, iy:iy + hh, ix:ix + ww]
            a.imshow(np.hstack([self.templates[k] / np.nanmax(self.templates[k]),
                                crop / np.nanmax(crop)]), cmap="gray")
            a.set_title(f"{tuple(self.hkl[k])}: exp | sim")
            a.axis("off")
        fig.tight_layout()
        return fig
