"""The state behind the app: data, engine set-up, tunable parameters, ROI, images.

A :class:`Session` holds one dataset (a project, a Felix folder, the demo, a
``.dat`` set-up, a LACBED stack or a results folder) and computes, for every
compared reflection, the experimental image, the simulation at the current
parameters (scaled to the experiment by least squares), their difference and the
ZNCC, on a grid of display pixels (:class:`~qcbed.gui.views.ViewGrid`).

Speed (the app's contract):

* a thickness change recomputes the images from the stored eigen-solutions
  (:meth:`qcbed.bloch.simulation.Solution.intensities`), without diagonalising;
* an orientation (tilt, pixel size) or U_g change diagonalises on a coarse
  *preview* grid (at most ``preview_side`` samples per side) at once, then on the
  full grid in a background thread (cancelled when the parameters change again);
  the pattern symmetry halves or quarters the work
  (:meth:`~qcbed.bloch.simulation.Simulation.symmetry_reduction`);
* rotation and shifts only move the experimental sampling (no simulation).

Every method is thread-safe (the HTTP server calls them from several threads).
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .views import (
    ViewGrid,
    disc_mask,
    linear_fit,
    moments,
    parallelogram_mask,
    png_bytes,
    profile,
    robust_range,
)
from .views import zncc as zncc_of

__all__ = ["Frame", "Session", "open_session"]

#: Accuracy (max. intensity error the engine's beam selection aims at, see
#: ``[engine] accuracy``) of the views; refinements use the project's own setting.
VIEW_ACCURACY = 1e-2

#: Seconds the orientation must rest before the full-grid solve starts.
FULL_DELAY_S = 0.4

_PATH_KEYS = (("crystal", "source"), ("data", "folder"), ("data", "g_vectors"),
              ("data", "mask"))


def _hkl_name(h: Any) -> str:
    return ",".join(str(int(v)) for v in h)


@dataclass
class Frame:
    """The images of one parameter state on one grid.

    Attributes
    ----------
    level : {'preview', 'full'}
    grid : ViewGrid
    experiment : ndarray (n_refl, ny, nx) or None
    simulation : ndarray (n_refl, ny, nx) or None
        Scaled to the experiment (a·I + b per reflection) when there is one.
    difference : ndarray or None
        experiment − simulation.
    zncc, zncc_roi : ndarray (n_refl,)
    scale, background : ndarray (n_refl,)
    version : int
    experiment_full : ndarray or None
        The experiment on the full grid (shown at full resolution while the
        simulation is a preview).
    """

    level: str
    grid: ViewGrid
    experiment: np.ndarray | None
    simulation: np.ndarray | None
    difference: np.ndarray | None
    zncc: np.ndarray
    zncc_roi: np.ndarray
    scale: np.ndarray
    background: np.ndarray
    version: int
    experiment_full: np.ndarray | None = None


class _Cancelled(Exception):
    pass


class _Latest:
    """Runs the most recently submitted function in one daemon thread (older ones dropped)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="qcbed-gui-bg")
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> None:
        with self._cv:
            self._job = fn
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._job is None:
                    self._cv.wait()
                fn, self._job = self._job, None
            try:
                fn()
            except _Cancelled:
                pass
            except Exception as exc:
                warnings.warn(f"background computation failed: {exc}", RuntimeWarning,
                              stacklevel=1)


class Session:
    """One dataset opened in the app (see the module docstring).

    Parameters
    ----------
    title : str
        Shown in the page.
    kind : {'project', 'simulation', 'stack'}
        A project (experiment and simulation), a simulation without data (``.dat``),
        or data without a simulation (a LACBED stack file).
    project : Project, optional
        The project (kind 'project').
    simulation : Simulation, optional
        The engine set-up (kind 'simulation'; built from the project otherwise).
    stack : LACBEDStack, optional
        The data (kind 'stack').
    workdir : path
        Folder for exported project files.
    executor : optional
        Engine executor for the full-resolution solves (default: the engine's choice).
    preview_side : int
        Samples along the longer side of the preview grid.
    accuracy : float or None
        Intensity accuracy of the views' engine set-up (``[engine] accuracy``; the
        engine chooses its beam thresholds for it unless the project fixes them);
        None: the project's. Refinements always use the project's setting.
    full_resolution : bool
        Compute the full-resolution grid in the background after a preview.
    results_dir : path, optional
        A finished results folder to show.
    """

    def __init__(self, *, title: str, kind: str, project: Any = None, simulation: Any = None,
                 stack: Any = None, workdir: str | os.PathLike = ".", executor: Any = None,
                 preview_side: int = 40, full_resolution: bool = True,
                 results_dir: str | os.PathLike | None = None,
                 source: str | os.PathLike | None = None,
                 accuracy: float | None = VIEW_ACCURACY) -> None:
        self.title = title
        self.kind = kind
        self.project = project
        self.workdir = Path(workdir)
        self.executor = executor
        self.preview_side = int(preview_side)
        self.full_resolution = bool(full_resolution)
        self.results_dir = Path(results_dir) if results_dir else None
        self.source = str(source) if source is not None else title
        self.accuracy = accuracy
        self._lock = threading.RLock()
        self._bg = _Latest()
        self.version = 0
        self.n_solves = 0
        self.timings: dict[str, float] = {}
        self.setup = None
        self.sim = simulation
        self.stack = stack
        self.regions: list[dict] = []
        self._sol: dict[str, tuple] = {}
        self._exp_cache: dict[str, tuple] = {}
        self._frames: dict[str, Frame] = {}
        self._token = 0
        self.job = None
        self.last_export: Path | None = None
        if kind == "project":
            self._init_project()
        elif kind == "simulation":
            self._init_simulation()
        elif kind == "stack":
            self._init_stack()
        else:
            raise InputError("unknown session kind", expected="project, simulation, stack",
                             found=kind)
        self._compute()

    # ================================================================ set-up
    def _init_project(self) -> None:
        from ..experiment import CBEDPattern
        from ..project import build_setup

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.setup = build_setup(self.project, executor=self.executor)
        s = self.setup
        g = s.geometry
        self.hkl = np.asarray(s.hkl, int)
        self.data = s.data
        self.is_cbed = isinstance(s.data, CBEDPattern)
        self.params: dict[str, Any] = {
            "thickness": float(self.project.thickness), "tilt0": list(g.tilt0),
            "rotation": float(g.rotation), "gl": float(g.gl), "shift": list(g.shift)}
        self.regions = [{"corners": [list(map(float, c)) for c in r["corners"]],
                         "samples": [int(v) for v in r["samples"]]}
                        for r in self.project.roi["regions"]]
        self.full_grid = self._cbed_window() if self.is_cbed else ViewGrid(
            (-0.5, g.display_shape[0] - 0.5, -0.5, g.display_shape[1] - 0.5),
            tuple(g.display_shape))
        self._build_sim()
        self.ug_names = self._ug_candidates()
        self.params["ug"] = {n: self._ug_value(n) for n in self.ug_names}
        self.ug_iam = dict(self.params["ug"])

    def _init_simulation(self) -> None:
        sim = self.sim
        self.setup = None
        self.data = None
        self.is_cbed = True
        self.hkl = np.asarray(sim.outputs, int)
        grid = sim.defaults.grid
        self._dat_grid = grid
        ny, nx = grid.shape
        self.full_grid = ViewGrid((-0.5, ny - 0.5, -0.5, nx - 0.5), (ny, nx))
        self.params = {"thickness": float(sim.defaults.thickness[0]), "tilt0": [0.0, 0.0],
                       "rotation": 0.0, "gl": 1.0, "shift": [0.0, 0.0]}
        self._base_sim = sim
        self.ug_names = self._ug_candidates()
        self.params["ug"] = {n: self._ug_value(n) for n in self.ug_names}
        self.ug_iam = dict(self.params["ug"])

    def _init_stack(self) -> None:
        st = self.stack
        self.setup = None
        self.data = st
        self.is_cbed = False
        self.hkl = np.asarray(st.hkl, int)
        self.ug_names = []
        g = st.geometry
        shape = tuple(g.display_shape) if g is not None else tuple(st.shape)
        self.full_grid = ViewGrid((-0.5, shape[0] - 0.5, -0.5, shape[1] - 0.5), shape)
        self.params = {"thickness": 0.0, "tilt0": list(g.tilt0) if g else [0.0, 0.0],
                       "rotation": float(g.rotation) if g else 0.0,
                       "gl": float(g.gl) if g else 1.0,
                       "shift": list(g.shift) if g else [0.0, 0.0], "ug": {}}
        self.ug_iam = {}

    def _cbed_window(self) -> ViewGrid:
        """A square of display pixels around the 000 disc, half the closest disc spacing."""
        g = self.setup.geometry
        offs = np.array([g.disc_offset(h) for h in self.hkl])
        d = [np.linalg.norm(a - b) for i, a in enumerate(offs) for b in offs[i + 1:]]
        half = int(max(4, np.floor(0.5 * min(d)))) if d else int(min(g.display_shape) // 4)
        r0, c0 = g.reference
        return ViewGrid((r0 - half - 0.5, r0 + half + 0.5, c0 - half - 0.5, c0 + half + 0.5),
                        (2 * half + 1, 2 * half + 1))

    def _ug_candidates(self) -> list[str]:
        """U_g offered for tuning: those the plan refines, else the 3 lowest-order families."""
        names: list[str] = []
        if self.project is not None:
            names = [n for n in self.project.refined_names if n.startswith("U(")]
        if names:
            return names
        cr = self._sim_for_values().crystal
        out: list[str] = []
        seen: set = set()
        for h in sorted((tuple(int(v) for v in h) for h in self.hkl if np.any(h)),
                        key=lambda h: (round(float(cr.lattice.g_length(h)), 9), h)):
            if h in seen or cr.is_systematically_absent(h):
                continue
            seen.update(tuple(int(v) for v in e)
                        for e in cr.equivalent_reflections(h, friedel=True).hkl)
            out.append(f"U({_hkl_name(h)})")
            if len(out) == 3:
                break
        return out

    def _sim_for_values(self):
        return self.sim if self.sim is not None else self._base_sim

    def _ug_value(self, name: str) -> float:
        """Signed amplitude a of U_g = a·exp(iφ) along the refinement's reference phase."""
        from ..project import parse_parameter_name

        _k, h, _c = parse_parameter_name(name)
        sim = self._sim_for_values()
        u, _ua = sim.structure_factor(h)
        return float((u * np.exp(-1j * sim.default_phase(h))).real)

    def geometry(self):
        """The experiment geometry at the current parameters (None without data)."""
        if self.setup is None:
            return self.stack.geometry if self.stack is not None else None
        p = self.params
        return self.setup.geometry.replace(rotation=p["rotation"], gl=p["gl"],
                                           tilt0=tuple(p["tilt0"]), shift=tuple(p["shift"]))

    def _kt(self, grid: ViewGrid) -> np.ndarray:
        """Incident k_t (Å⁻¹) of the grid's samples, (ny, nx, 2)."""
        if self.kind == "simulation":
            from scipy import ndimage

            g = self._dat_grid
            ij = self.full_grid.to_index(grid.points())
            kt = np.stack([ndimage.map_coordinates(g.kt[..., k], ij.reshape(-1, 2).T, order=1,
                                                   mode="nearest").reshape(grid.shape)
                           for k in range(2)], axis=-1)
            return kt + np.asarray(self.params["tilt0"])
        return self.geometry().display_to_kt(grid.points())

    def _mask(self, grid: ViewGrid) -> np.ndarray:
        if self.kind == "simulation":
            from scipy import ndimage

            ij = self.full_grid.to_index(grid.points()).reshape(-1, 2).T
            return ndimage.map_coordinates(self._dat_grid.mask.astype(float), ij, order=0,
                                           mode="constant").reshape(grid.shape) > 0.5
        return np.ones(grid.shape, bool)

    def _build_sim(self) -> None:
        """Engine set-up (coarse mode) whose beam pool covers the view with room to tilt."""
        from dataclasses import replace

        kt = self._kt(self.full_grid).reshape(-1, 2)
        centre = 0.5 * (kt.min(axis=0) + kt.max(axis=0))
        radius = float(np.max(np.linalg.norm(kt - centre, axis=1)))
        self._pool = (centre, 1.1 * radius + 1e-6)
        proj = self.project
        if self.accuracy is not None:      # the view's accuracy, not the refinement's
            proj = replace(proj, engine=replace(proj.engine, accuracy=float(self.accuracy)))
        setup = replace(self.setup, project=proj, _pool_kt=self._pool)
        sim = setup.simulation(mode=self.project.engine["coarse_mode"])
        if self.sim is not None:       # keep tuned structure factors
            ug = self.params.get("ug", {})
            self.sim = sim
            self._apply_ug(ug)
        else:
            self.sim = sim

    def _apply_ug(self, ug: Mapping[str, float]) -> None:
        from ..project import parse_parameter_name

        vals = {}
        base = self._base_sim if self.kind == "simulation" else self.sim
        for n, a in ug.items():
            _k, h, _c = parse_parameter_name(n)
            vals[h] = complex(a * np.exp(1j * base.default_phase(h)))
        new = base.with_changes()
        if vals:
            new.set_structure_factors(vals)
        self.sim = new

    # ================================================================ computing
    def _key(self) -> tuple:
        p = self.params
        return (tuple(p["tilt0"]), p["gl"], id(self.sim))

    def _grid(self, level: str) -> ViewGrid:
        return self.full_grid if level == "full" else self.full_grid.coarsened(
            self.preview_side)

    def _solve(self, sim, kt: np.ndarray, mask: np.ndarray, token: int | None) -> tuple:
        """(points kept, symmetry reduction, solutions) for k_t (ny, nx, 2)."""
        from ..bloch.grids import TiltGrid

        grid = TiltGrid(kt, mask)
        red = sim.symmetry_reduction(grid)
        pts = grid.points[red.representatives] if red.n_ops > 1 else grid.points
        sols = []
        chunk = 1024
        for i in range(0, len(pts), chunk):
            if token is not None and token != self._token:
                raise _Cancelled
            sols.append(sim.solve(pts[i:i + chunk]))
        with self._lock:
            self.n_solves += 1
        return mask, red if red.n_ops > 1 else None, sols

    def _intensities(self, level: str) -> np.ndarray:
        """Simulated intensities (n_refl, ny, nx) at the current thickness (NaN outside)."""
        from ..bloch.simulation import outputs_index

        mask, red, sols = self._sol[level][1]
        t = self.params["thickness"]
        vals = np.concatenate([s.intensities(t)[0] for s in sols], axis=0)  # (n_rep, n_out)
        if red is not None:
            vals = red.expand(vals)
        cols = outputs_index(self.sim, self.hkl)
        grid = self._grid(level)
        out = np.full((len(self.hkl),) + grid.shape, np.nan)
        out[:, mask] = vals[:, cols].T
        return out

    def _experiment(self, level: str) -> np.ndarray | None:
        """Experimental images (n_refl, ny, nx) sampled at the view's display pixels."""
        if self.data is None:
            return None
        from scipy import ndimage

        geom = self.geometry()
        key = (level, tuple(self.params["tilt0"]), self.params["gl"], self.params["rotation"],
               tuple(self.params["shift"]))
        hit = self._exp_cache.get(level)
        if hit is not None and hit[0] == key:
            return hit[1]
        grid = self._grid(level)
        pts = grid.points()
        images = self.data.images if hasattr(self.data, "images") else self.data.image[None]
        out = np.full((len(self.hkl),) + grid.shape, np.nan)
        h_img, w_img = images.shape[1:]
        if geom is None:
            kt = pts
        else:
            kt = geom.display_to_kt(pts)
        for k, h in enumerate(self.hkl):
            rc = geom.kt_to_pixel(kt, h) if geom is not None else kt
            idx = self.data.index(h) if hasattr(self.data, "index") else 0
            r, c = rc[..., 0], rc[..., 1]
            inside = (r >= -0.5) & (r <= h_img - 0.5) & (c >= -0.5) & (c <= w_img - 0.5)
            v = ndimage.map_coordinates(images[idx], [np.clip(r, 0, h_img - 1),
                                                      np.clip(c, 0, w_img - 1)],
                                        order=1, mode="nearest")
            out[k] = np.where(inside, v, np.nan)
        self._exp_cache[level] = (key, out)
        return out

    def _disc_mask(self, level: str, exp: np.ndarray) -> np.ndarray:
        """CBED disc masks of the experiment on a level's grid (cached per experiment)."""
        hit = self._exp_cache.get("disc:" + level)
        if hit is not None and hit[0] is exp:
            return hit[1]
        m = disc_mask(exp)
        self._exp_cache["disc:" + level] = (exp, m)
        return m

    def _roi_mask(self, grid: ViewGrid) -> np.ndarray:
        pts = grid.points()
        m = np.zeros(grid.shape, bool)
        for r in self.regions:
            m |= parallelogram_mask(pts, r["corners"])
        return m

    def _level(self) -> str:
        full = self._sol.get("full")
        return "full" if full is not None and full[0] == self._key() else "preview"

    def _compute(self) -> Frame:
        """Recompute the current frame (solving the preview when the key changed)."""
        with self._lock:
            t0 = time.perf_counter()
            has_sim = self.kind != "stack"
            if has_sim:
                level = self._level()
                if level == "preview" and (self._sol.get("preview") is None
                                           or self._sol["preview"][0] != self._key()):
                    grid = self._grid("preview")
                    self._sol["preview"] = (self._key(), self._solve(
                        self.sim, self._kt(grid), self._mask(grid), None))
                    self.timings["preview_solve_s"] = time.perf_counter() - t0
                    if self.full_resolution:
                        self._start_full()
            else:
                level = "full"
            t1 = time.perf_counter()
            frame = self._frame(level)
            self.timings["frame_s"] = time.perf_counter() - t1
            self.timings["update_s"] = time.perf_counter() - t0
            return frame

    def _frame(self, level: str) -> Frame:
        grid = self._grid(level)
        exp = self._experiment(level)
        sim = self._intensities(level) if self.kind != "stack" else None
        n = len(self.hkl)
        nan = np.full(n, np.nan)
        a, b = np.ones(n), np.zeros(n)
        diff = None
        zv, zr = nan, nan
        if exp is not None and sim is not None:
            roi = np.broadcast_to(self._roi_mask(grid), exp.shape)
            if self.is_cbed:            # only inside the discs (the window has background)
                sim = np.where(self._disc_mask(level, exp), sim, np.nan)
            # the ZNCC is invariant to the (positive) scale: computed on the raw simulation
            m_view = moments(sim, exp)
            m_roi = moments(sim, exp, roi) if roi.any() else None
            zv = zncc_of(sim, exp, mom=m_view)
            zr = zncc_of(sim, exp, mom=m_roi) if m_roi is not None else nan
            # CBED: the window holds background around the disc, so the scale is fitted
            # in the ROI; LACBED images are valid everywhere
            a, b = linear_fit(sim, exp, mom=m_roi if self.is_cbed and m_roi is not None
                              else m_view)
            sim = a[:, None, None] * sim + b[:, None, None]
            diff = exp - sim
        self.version += 1
        f = Frame(level, grid, exp, sim, diff, zv, zr, a, b, self.version,
                  exp if level == "full" else self._experiment("full"))
        self._frames["current"] = f
        return f

    def _start_full(self) -> None:
        """Solve the full grid in the background for the current key (cancels older ones).

        Not while a refinement runs (the view follows it on the preview grid)."""
        if self.job is not None and self.job.running:
            return
        self._token += 1
        token, key, sim = self._token, self._key(), self.sim
        grid = self._grid("full")
        if grid.shape == self._grid("preview").shape:
            self._sol["full"] = (key, self._sol["preview"][1])
            return
        kt, mask = self._kt(grid), self._mask(grid)

        def work() -> None:
            # start only when the orientation has rested (slider drags make many
            # previews; a full solve for each would compete with the next preview)
            t_rest = time.monotonic() + FULL_DELAY_S
            while time.monotonic() < t_rest:
                if token != self._token:
                    raise _Cancelled
                time.sleep(0.05)
            t0 = time.perf_counter()
            res = self._solve(sim, kt, mask, token)
            with self._lock:
                if token != self._token or key != self._key():
                    return
                self._sol["full"] = (key, res)
                self.timings["full_solve_s"] = time.perf_counter() - t0
                self._frame("full")

        self._bg.submit(work)

    # ================================================================ public API
    @property
    def frame(self) -> Frame:
        """The current images (full resolution when ready, else the preview)."""
        with self._lock:
            return self._frames["current"]

    def update(self, changes: Mapping[str, Any]) -> dict:
        """Change parameters and recompute; returns the new state summary.

        Parameters
        ----------
        changes : mapping
            Any of ``thickness`` (Å), ``tilt0`` ([k_x, k_y] Å⁻¹), ``rotation`` (deg),
            ``gl`` (pixels per |g_x⊥|), ``pixel_size`` (Å⁻¹ per pixel; sets gl),
            ``shift`` ([Δrow, Δcol] px), ``ug`` ({'U(h,k,l)': a in Å⁻²}).
        """
        with self._lock:
            t0 = time.perf_counter()
            p = self.params
            new = dict(changes)
            if "pixel_size" in new:
                ps = _positive(new.pop("pixel_size"), "pixel_size")
                new["gl"] = self._gx() / ps
            orient = False
            ug_changed = False
            for k, v in new.items():
                if k == "thickness":
                    p["thickness"] = _positive(v, k)
                elif k in ("tilt0", "shift"):
                    vv = [float(x) for x in v]
                    if len(vv) != 2 or not all(math.isfinite(x) for x in vv):
                        raise InputError("expected two finite numbers", tag=k, found=v)
                    orient |= k == "tilt0" and vv != p[k]
                    p[k] = vv
                elif k == "gl":
                    g = _positive(v, k)
                    orient |= g != p["gl"]
                    p["gl"] = g
                elif k == "rotation":
                    p["rotation"] = _finite(v, k)
                elif k == "ug":
                    for n, a in dict(v).items():
                        if n not in p["ug"]:
                            raise InputError("structure factor not offered for tuning", tag="ug",
                                             expected=list(p["ug"]), found=n)
                        val = _finite(a, n)
                        ug_changed |= val != p["ug"][n]
                        p["ug"][n] = val
                else:
                    raise InputError("unknown parameter", tag=k,
                                     expected="thickness, tilt0, rotation, gl, pixel_size, "
                                              "shift, ug", found=k)
            if orient or ug_changed:
                self._token += 1        # cancels a running full-grid solve now
            if self.kind != "stack":
                if ug_changed:
                    self._apply_ug(p["ug"])
                elif orient and self.kind == "project" and not self._pool_covers():
                    self._build_sim()
            self._compute()
            self.timings["request_s"] = time.perf_counter() - t0
            return self.state()

    def _pool_covers(self) -> bool:
        kt = self._kt(self.full_grid).reshape(-1, 2)
        c, r = self._pool
        return bool(np.all(np.linalg.norm(kt - c, axis=1) <= r))

    def _gx(self) -> float:
        g = self.geometry()
        return float(g.g_x_length) if g is not None else 1.0

    def set_regions(self, regions: list[Mapping[str, Any]]) -> dict:
        """Replace the regions of interest (display pixels; see ``[[roi.regions]]``).

        Each region is ``{'corners': [[r1, c1], [r2, c2], [r3, c3]], 'samples': [n12, n13]}``.
        Returns the sample counts from :class:`qcbed.experiment.ROI`.
        """
        from ..experiment import ROI, Region

        if self.kind != "project":
            raise InputError("regions of interest need a project (data and geometry)",
                             found=self.kind)
        regs, out = [], []
        for i, r in enumerate(regions):
            try:
                c = np.asarray(r["corners"], float)
                n12, n13 = (int(v) for v in r["samples"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError("a region needs corners [[r,c]×3] and samples [n12, n13]",
                                 tag=f"regions[{i}]", found=r) from exc
            regs.append(Region(c, n12, n13))
            out.append({"corners": c.tolist(), "samples": [n12, n13]})
        if not regs:
            raise InputError("at least one region of interest is needed", found=0)
        with self._lock:
            roi = ROI(self.data, regs, self.geometry(), hkl=self.hkl, refine=())
            s = roi.sample_details()
            self.regions = out
            self._frame(self._frames["current"].level)
            return {"regions": out, "n_points": int(roi.n_points),
                    "n_valid": int(s.valid.sum()), "n_outside": int(s.n_outside.sum())}

    # ---------------------------------------------------------------- images
    def image_png(self, index: int, kind: str, cmap: str = "gray") -> bytes:
        """PNG of reflection ``index``: kind 'exp', 'sim' or 'diff' (current frame)."""
        f = self.frame
        arr = {"exp": f.experiment_full, "sim": f.simulation, "diff": f.difference}.get(kind)
        if kind not in ("exp", "sim", "diff"):
            raise InputError("unknown image kind", expected="exp, sim, diff", found=kind)
        if not 0 <= index < len(self.hkl):
            raise InputError("reflection index out of range", expected=f"0…{len(self.hkl) - 1}",
                             found=index)
        if arr is None:
            arr = np.full(f.grid.shape, np.nan)[None].repeat(len(self.hkl), 0)
        im = arr[index]
        if kind == "diff":
            lim = max(abs(x) for x in robust_range(im, 1, 99)) or 1.0
            return png_bytes(im, -lim, lim, "RdBu_r")
        ref = f.experiment_full[index] if f.experiment_full is not None else im
        lo, hi = robust_range(ref)
        return png_bytes(im, lo, hi, cmap)

    def thumb_png(self, index: int, cmap: str = "gray") -> bytes:
        """Small PNG of reflection ``index`` (experiment, else simulation) for the gallery."""
        f = self.frame
        arr = f.experiment_full if f.experiment_full is not None else f.simulation
        im = arr[index]
        if max(im.shape) > 64:
            s = int(np.ceil(max(im.shape) / 64))
            im = im[::s, ::s]
        lo, hi = robust_range(im)
        return png_bytes(im, lo, hi, cmap)

    def line_profile(self, index: int, start: Any, stop: Any) -> dict:
        """Experiment and simulation along a line of display pixels (current frame)."""
        f = self.frame
        ims = [x[index] for x in (f.experiment, f.simulation) if x is not None]
        s, v = profile(np.array(ims), f.grid, start, stop)
        names = [n for n, x in (("experiment", f.experiment), ("simulation", f.simulation))
                 if x is not None]
        return {"s": _clean(s), **{n: _clean(v[k]) for k, n in enumerate(names)}}

    # ---------------------------------------------------------------- state
    def info(self) -> dict:
        """What the page needs once: kind, reflections, grid extent, ranges."""
        with self._lock:
            g = self.geometry()
            gx = self._gx()
            ps = gx / self.params["gl"]
            half = 0.5 * max(self.full_grid.shape) * (ps if self.kind != "simulation" else
                                                    self._dat_step())
            return {
                "title": self.title, "kind": self.kind, "source": self.source,
                "hkl": [[int(v) for v in h] for h in self.hkl],
                "extent": list(self.full_grid.extent), "shape": list(self.full_grid.shape),
                "preview_shape": list(self._grid("preview").shape),
                "has_experiment": self.data is not None,
                "has_simulation": self.kind != "stack",
                "can_roi": self.kind == "project", "can_refine": self.kind == "project",
                "mode": "cbed" if self.is_cbed else "lacbed",
                "g_x_length": gx, "tilt_range": half,
                "ug_iam": self.ug_iam,
                "plan": self._plan_summary(),
                "voltage_kv": float(self.sim.voltage_kv) if self.sim is not None else None,
                "mirror": bool(g.mirror) if g is not None else False,
                "results_dir": str(self.results_dir) if self.results_dir else None,
                "workdir": str(self.workdir),
            }

    def _dat_step(self) -> float:
        k = self._dat_grid.kt
        return float(np.linalg.norm(k[0, 1] - k[0, 0]))

    def _plan_summary(self) -> dict:
        if self.project is None:
            return {"coarse": [], "fine": []}
        return {"coarse": [c.step for c in self.project.coarse],
                "fine": [{"name": s.name, "refine": list(s.refine), "max_iter": s.max_iter}
                         for s in self.project.fine]}

    def state(self) -> dict:
        """Parameters, the current frame's level and ZNCC, timings, job status."""
        with self._lock:
            f = self._frames["current"]
            p = self.params
            return {
                "version": f.version, "level": f.level, "shape": list(f.grid.shape),
                "params": {"thickness": p["thickness"], "tilt0": list(p["tilt0"]),
                           "rotation": p["rotation"], "gl": p["gl"],
                           "pixel_size": self._gx() / p["gl"], "shift": list(p["shift"]),
                           "ug": dict(p["ug"])},
                "zncc": _clean(f.zncc), "zncc_roi": _clean(f.zncc_roi),
                "scale": _clean(f.scale), "regions": copy.deepcopy(self.regions),
                "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "full_pending": self.full_resolution and f.level != "full"
                and self.kind != "stack" and not (self.job is not None and self.job.running),
                "n_solves": self.n_solves,
                "job": self.job.status() if self.job is not None else None,
                "results_dir": str(self.results_dir) if self.results_dir else None,
                "last_export": str(self.last_export) if self.last_export else None,
            }

    # ---------------------------------------------------------------- project export
    def project_dict(self) -> tuple[dict, dict]:
        """The current state as a project (TOML dict) and its comments.

        Paths of the original project are made absolute so that the file works from
        any folder. Tuned U_g values have no project-file key (the plan starts from
        the independent-atom model); they are written as a comment.
        """
        if self.kind != "project":
            raise InputError("only a project (data + geometry) can be exported",
                             found=self.kind)
        with self._lock:
            proj = self.project
            raw = copy.deepcopy(proj.raw)
            for sec, key in _PATH_KEYS:
                v = raw.get(sec, {}).get(key)
                if isinstance(v, str):
                    raw[sec][key] = str(proj.path(v).resolve())
            d = raw.get("data", {})
            if isinstance(d.get("files"), list):
                d["files"] = [str(proj.path(f).resolve()) for f in d["files"]]
            if isinstance(d.get("variance"), str) and d["variance"] not in ("poisson",
                                                                            "detector"):
                d["variance"] = str(proj.path(d["variance"]).resolve())
            pj = raw.setdefault("project", {})
            pj["output"] = str(proj.output.resolve())
            p = self.params
            ge = raw.setdefault("geometry", {})
            ge.update({"tilt0": [float(x) for x in p["tilt0"]], "rotation": float(p["rotation"]),
                       "gl": float(p["gl"]), "shift": [float(x) for x in p["shift"]]})
            ro = raw.setdefault("roi", {})
            ro["regions"] = [{"corners": r["corners"], "samples": r["samples"]}
                             for r in self.regions]
            pl = raw.setdefault("plan", {})
            pl["thickness"] = float(p["thickness"])
            tuned = {n: v for n, v in p["ug"].items() if v != self.ug_iam.get(n)}
            comments = {"project": "exported by 'qcbed gui' from " + self.source}
            if tuned:
                comments["plan"] = ("U_g tuned by eye in the app (no project key; the plan "
                                    "starts from the IAM): " + ", ".join(
                                        f"{n} = {v:.6g} 1/A^2" for n, v in tuned.items()))
            return raw, comments

    def export_project(self, path: str | os.PathLike | None = None) -> Path:
        """Write the current state as a project file (checked by reading it back)."""
        from ..project import dumps_toml, parse_project

        raw, comments = self.project_dict()
        out = Path(path) if path else self.workdir / f"{_slug(self.title)}.toml"
        text = dumps_toml(raw, comments, header="qcbed project file (TOML). Units: A, 1/A "
                                                "(no 2 pi), 1/A^2, kV, degrees, pixels.")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        try:
            parse_project(_toml_loads(text), source=str(out), base_dir=out.parent, text=text)
        except InputError:
            tmp.unlink()
            raise
        os.replace(tmp, out)
        with self._lock:
            self.last_export = out
        return out

    def project_for_run(self, what: str, max_iter: int | None = None) -> Any:
        """The current state as a :class:`~qcbed.project.Project` running part of the plan.

        ``what``: 'coarse' (the coarse steps), 'fine' (the fine steps) or 'plan' (all);
        ``max_iter`` caps the iterations of every fine step (written into the project,
        so that a resumed run keeps it).
        """
        from ..project import dumps_toml, parse_project

        raw, _c = self.project_dict()
        pl = raw["plan"]
        if max_iter is not None:
            fine = pl.get("fine", [])
            for st in [fine] if isinstance(fine, dict) else fine:
                st["max_iter"] = min(int(max_iter), int(st.get("max_iter", max_iter)))
        if what == "coarse":
            pl.pop("fine", None)
        elif what == "fine":
            pl.pop("coarse", None)
        elif what != "plan":
            raise InputError("unknown refinement", expected="coarse, fine, plan", found=what)
        if not pl.get("coarse") and not pl.get("fine"):
            raise InputError(f"the plan has no {what} steps", tag="plan", found=None)
        return parse_project(raw, source=self.project.source, base_dir=self.project.base_dir,
                             text=dumps_toml(raw))

    def adopt(self, values: Mapping[str, float]) -> None:
        """Apply refinement parameter values (names as in the plan) to the view.

        ``thickness``, ``U(h,k,l)`` (offered ones), ``shift.row``/``.col``, ``rotation``,
        ``gl`` and ``tilt0`` ([k_x, k_y]) are taken; other names are ignored.
        """
        ch: dict[str, Any] = {}
        with self._lock:
            if "thickness" in values:
                ch["thickness"] = float(values["thickness"])
            ug = {n: float(values[n]) for n in self.params["ug"] if n in values}
            if ug:
                ch["ug"] = ug
            for n in ("rotation", "gl"):
                if n in values:
                    ch[n] = float(values[n])
            if "shift.row" in values or "shift.col" in values:
                ch["shift"] = [float(values.get("shift.row", self.params["shift"][0])),
                               float(values.get("shift.col", self.params["shift"][1]))]
            if "tilt0" in values:
                ch["tilt0"] = [float(x) for x in values["tilt0"]]
        if ch:
            self.update(ch)

    def adopt_run_state(self, state: Mapping[str, Any]) -> None:
        """Apply a finished run's final state (``run_state.json`` ``state``)."""
        vals: dict[str, Any] = {"thickness": state["thickness"]}
        g = state.get("geometry", {})
        for k in ("rotation", "gl"):
            if k in g:
                vals[k] = g[k]
        if "shift" in g:
            vals["shift.row"], vals["shift.col"] = g["shift"]
        if "tilt0" in g:
            vals["tilt0"] = g["tilt0"]
        sim = self.sim
        for k, v in state.get("structure_factors", {}).items():
            name = f"U({k})"
            if name in self.params["ug"]:
                h = tuple(int(x) for x in k.split(","))
                vals[name] = float((complex(v[0], v[1]) * np.exp(
                    -1j * sim.default_phase(h))).real)
        self.adopt(vals)

    # ---------------------------------------------------------------- refinement
    def start_refinement(self, what: str = "plan", *, max_iter: int | None = None) -> dict:
        """Run the coarse steps, the fine steps or the whole plan in the background.

        The run writes what ``qcbed refine`` writes into the project's output folder;
        every fine iteration updates the view (preview grid) with its parameters.
        ``max_iter`` caps the iterations of every fine step.
        """
        from .jobs import RefinementJob

        if self.kind != "project":
            raise InputError("refinement needs a project (data and geometry)", found=self.kind)
        with self._lock:
            if self.job is not None and self.job.running:
                raise InputError("a refinement is already running", found=self.job.state)
            proj = self.project_for_run(what, max_iter)
            self.job = RefinementJob(proj, what, proj.output, executor=self.executor,
                                     on_record=self._follow, on_finish=self._finished,
                                     command_line=["qcbed", "gui", self.source])
            self.job.start()
            return self.job.status()

    def stop_refinement(self) -> dict:
        """Stop the running refinement at the next iteration."""
        with self._lock:
            if self.job is None:
                raise InputError("no refinement to stop", found=None)
            self.job.stop()
            return self.job.status()

    def resume_refinement(self) -> dict:
        """Continue a stopped refinement from its checkpoint."""
        with self._lock:
            if self.job is None or self.job.state not in ("stopped", "failed"):
                raise InputError("no stopped refinement to resume",
                                 found=None if self.job is None else self.job.state)
            self.job.resume()
            return self.job.status()

    def _follow(self, rec: dict) -> None:
        """A fine iteration's values → the view (in the background, newest wins)."""
        vals = dict(rec)
        self._bg.submit(lambda: self.adopt(vals))

    def _finished(self, run: Any) -> None:
        with self._lock:
            self.results_dir = Path(run.out_dir)
        job, state = self.job, run.state

        def later() -> None:
            job.join(10.0)          # the job thread ends right after this callback
            self.adopt_run_state(state)

        self._bg.submit(later)

    def wait_full(self, timeout: float = 60.0) -> bool:
        """Block until the full-resolution frame of the current state is ready."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.frame.level == "full" or not self.full_resolution:
                return True
            time.sleep(0.05)
        return False


def _toml_loads(text: str) -> dict:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


def _slug(s: str) -> str:
    out = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in s.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")[:60] or "project"


def _positive(v: Any, name: str) -> float:
    x = _finite(v, name)
    if x <= 0:
        raise InputError("must be > 0", tag=name, expected="> 0", found=v)
    return x


def _finite(v: Any, name: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError("must be a number", tag=name, found=v) from None
    if not math.isfinite(x):
        raise InputError("must be finite", tag=name, found=v)
    return x


def _clean(a: Any) -> list:
    """An array as a JSON list with NaN → None."""
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float).ravel()]


def open_session(path: str | os.PathLike | None = None, *,
                 workdir: str | os.PathLike | None = None, executor: Any = None,
                 preview_side: int = 40, full_resolution: bool = True,
                 accuracy: float | None = VIEW_ACCURACY) -> Session:
    """Open a dataset in a :class:`Session`.

    Parameters
    ----------
    path : path, optional
        A Felix folder (``felix.inp``), a project file (``.toml``), a PyExtal ``.dat``
        file (simulation only), a LACBED stack (``.h5`` from ``qcbed extract``; data
        only) or a results folder (``result.json``; its project is opened from
        ``run_state.json`` when present). None: the built-in demo (written to
        ``workdir``).
    workdir : path, optional
        Folder for the demo, exported project files and the results of runs started
        from the app (default: a new temporary folder for the demo, else the current
        folder).
    executor : optional
        Engine executor for full-resolution solves and refinements.
    preview_side, full_resolution, accuracy
        As :class:`Session`.
    """
    from ..project import load_project, parse_project

    kw = dict(executor=executor, preview_side=preview_side, full_resolution=full_resolution,
              accuracy=accuracy)
    if path is None:
        from ..demo import make_demo

        wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="qcbed-gui-demo-"))
        proj_path, _truth = make_demo(wd / "demo", fast=True, executor="serial")
        proj = load_project(proj_path)
        return Session(title="qcbed demo: Si 111 systematic-row CBED", kind="project",
                       project=proj, workdir=wd, source=proj_path, **kw)
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", source=p,
                         expected="a Felix folder, project .toml, .dat, .h5 stack or results "
                                  "folder", found="missing")
    wd = Path(workdir) if workdir else Path.cwd()
    if p.is_dir() and (p / "felix.inp").is_file():
        from ..project.felix import felix_project

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            raw, _c, _f = felix_project(p, output=str(wd / f"{p.resolve().name}-results"))
        from ..project import dumps_toml

        proj = parse_project(raw, source=f"{p.resolve()} (Felix folder)", base_dir=wd,
                             text=dumps_toml(raw))
        return Session(title=f"Felix D-LACBED {p.resolve().name}", kind="project",
                       project=proj, workdir=wd, source=p.resolve(), **kw)
    if p.is_dir() and ((p / "result.json").is_file() or (p / "run_state.json").is_file()):
        rs = p / "run_state.json"
        if rs.is_file():
            state = json.loads(rs.read_text(encoding="utf-8"))
            raw = _toml_loads(state["project_text"])
            proj = parse_project(raw, source=state["project_file"],
                                 base_dir=state["project_base"], text=state["project_text"])
            s = Session(title=f"results {p.resolve().name}: {proj.name}", kind="project",
                        project=proj, workdir=wd, results_dir=p, source=p.resolve(), **kw)
            s.adopt_run_state(state["state"])
            return s
        raise InputError("a results folder without run_state.json cannot be explored",
                         source=p, expected="run_state.json next to result.json",
                         found="missing")
    suf = p.suffix.lower()
    if suf == ".toml":
        proj = load_project(p)
        return Session(title=proj.name, kind="project", project=proj,
                       workdir=workdir or p.resolve().parent, source=p.resolve(), **kw)
    if suf == ".dat":
        from ..bloch.simulation import Simulation

        sim = Simulation.from_dat(p)
        return Session(title=f"{p.name} (simulation)", kind="simulation", simulation=sim,
                       workdir=wd, source=p.resolve(), **kw)
    if suf in (".h5", ".hdf5"):
        from ..larbed.stack import load_stack

        st = load_stack(p)
        return Session(title=f"{p.name} (LACBED stack)", kind="stack", stack=st, workdir=wd,
                       source=p.resolve(), **kw)
    raise InputError("cannot open this file in the app", source=p,
                     expected="a Felix folder, .toml project, .dat, .h5 stack or results folder",
                     found=p.suffix or "a folder")
