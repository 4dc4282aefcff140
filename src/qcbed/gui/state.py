"""The state behind the app: data, engine set-up, tunable parameters, ROI.

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

This module holds the session's state and its parameter updates; the jobs around it
are mix-ins beside it: :mod:`~qcbed.gui.frames` (solving and building the images),
:mod:`~qcbed.gui.exports` (project files) and :mod:`~qcbed.gui.runs` (refinements
started from the app). :func:`~qcbed.gui.session.open_session` opens a dataset.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.hkl import hkl_name
from ..errors import InputError
from .exports import ProjectExports
from .frames import Frame, FrameBuilder, Latest
from .runs import RefinementRuns
from .views import ViewGrid, json_list

__all__ = ["VIEW_ACCURACY", "Session"]

#: Accuracy (max. intensity error the engine's beam selection aims at, see
#: ``[engine] accuracy``) of the views; refinements use the project's own setting.
VIEW_ACCURACY = 1e-2


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


class Session(FrameBuilder, ProjectExports, RefinementRuns):
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
        self._bg = Latest()
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
            out.append(hkl_name("U", h))
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

    # ================================================================ public API
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
                "zncc": json_list(f.zncc), "zncc_roi": json_list(f.zncc_roi),
                "scale": json_list(f.scale), "regions": copy.deepcopy(self.regions),
                "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "full_pending": self.full_resolution and f.level != "full"
                and self.kind != "stack" and not (self.job is not None and self.job.running),
                "n_solves": self.n_solves,
                "job": self.job.status() if self.job is not None else None,
                "results_dir": str(self.results_dir) if self.results_dir else None,
                "last_export": str(self.last_export) if self.last_export else None,
            }
