"""Refinements started from the app, and their values carried into the view.

:class:`RefinementRuns` is a mix-in of :class:`~qcbed.gui.state.Session`: it starts,
stops and resumes a :class:`~qcbed.gui.jobs.RefinementJob` on the session's project
(:meth:`~qcbed.gui.exports.ProjectExports.project_for_run`), follows every fine
iteration in the view, and adopts a finished run's final state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.hkl import key_hkl
from ..errors import InputError
from .frames import Latest

__all__ = ["RefinementRuns"]


class RefinementRuns:
    """Background refinements of a session and their results (mix-in of ``Session``)."""

    kind: str
    source: str
    sim: Any
    executor: Any
    job: Any
    params: dict[str, Any]
    results_dir: Path | None
    _lock: threading.RLock
    _bg: Latest
    #: The session's own (``Session.update``, ``ProjectExports.project_for_run``).
    update: Callable[[Mapping[str, Any]], dict]
    project_for_run: Callable[..., Any]

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
                h = key_hkl(k)
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
