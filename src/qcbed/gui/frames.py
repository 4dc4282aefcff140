"""View building of the app: the images of one parameter state on one grid.

:class:`FrameBuilder` is a mix-in of :class:`~qcbed.gui.state.Session`: it solves the
engine on the preview grid at once and on the full grid in a background thread
(newest request wins, cancelled when the parameters change), keeps the
eigen-solutions so that a thickness change needs no diagonalisation, samples the
experiment at the view's display pixels, fits the simulation to it (scale and
background per reflection), computes the ZNCC in the view and in the ROI, and renders
PNG images and line profiles of the current :class:`Frame`.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .views import (
    ViewGrid,
    disc_mask,
    json_list,
    linear_fit,
    moments,
    parallelogram_mask,
    png_bytes,
    profile,
    robust_range,
)
from .views import zncc as zncc_of

__all__ = ["FULL_DELAY_S", "Cancelled", "Frame", "FrameBuilder", "Latest"]

#: Seconds the orientation must rest before the full-grid solve starts.
FULL_DELAY_S = 0.4


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


class Cancelled(Exception):
    """A background solve overtaken by newer parameters."""


class Latest:
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
            except Cancelled:
                pass
            except Exception as exc:
                warnings.warn(f"background computation failed: {exc}", RuntimeWarning,
                              stacklevel=1)


class FrameBuilder:
    """Frames, background solves and images of a session (mix-in of ``Session``)."""

    kind: str
    params: dict[str, Any]
    hkl: np.ndarray
    data: Any
    sim: Any
    is_cbed: bool
    regions: list[dict]
    full_grid: ViewGrid
    preview_side: int
    full_resolution: bool
    job: Any
    version: int
    n_solves: int
    timings: dict[str, float]
    _lock: threading.RLock
    _bg: Latest
    _sol: dict[str, tuple]
    _exp_cache: dict[str, tuple]
    _frames: dict[str, Frame]
    _token: int
    #: The session's view geometry and its incident directions (``Session``).
    geometry: Callable[[], Any]
    _kt: Callable[[ViewGrid], np.ndarray]
    _mask: Callable[[ViewGrid], np.ndarray]

    @property
    def frame(self) -> Frame:
        """The current images (full resolution when ready, else the preview)."""
        with self._lock:
            return self._frames["current"]

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
                raise Cancelled
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
                    raise Cancelled
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
        return {"s": json_list(s), **{n: json_list(v[k]) for k, n in enumerate(names)}}

    def wait_full(self, timeout: float = 60.0) -> bool:
        """Block until the full-resolution frame of the current state is ready."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.frame.level == "full" or not self.full_resolution:
                return True
            time.sleep(0.05)
        return False
