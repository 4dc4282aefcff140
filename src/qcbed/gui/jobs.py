"""Refinements started from the app: a background thread running the project's plan.

A :class:`RefinementJob` runs :class:`qcbed.project.ProjectRun` (exactly what
``qcbed refine`` runs, writing the same checkpoint, ``run_state.json`` and results)
in a daemon thread. Every fine iteration's record (χ², parameter values) is kept
for the page and handed to ``on_record``; :meth:`RefinementJob.stop` ends the run
at the next iteration or step boundary (the checkpoint of the last iteration is on
disk), and :meth:`RefinementJob.resume` continues it with
:func:`qcbed.project.resume_run`, as ``qcbed resume`` does.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RefinementJob"]


class StopRequested(Exception):
    """Raised inside the run (from its callback) when the user pressed Stop."""


class RefinementJob:
    """One refinement run in a background thread.

    Parameters
    ----------
    project : Project
        What to run (its plan; see :meth:`qcbed.gui.session.Session.project_for_run`).
    what : {'coarse', 'fine', 'plan'}
        Label shown in the page.
    out_dir : path
        Output folder (checkpoints, ``run_state.json``, results).
    executor : optional
        Engine executor.
    on_record : callable, optional
        ``on_record(record)`` after every fine iteration (parameter values, ``gof``).
    on_finish : callable, optional
        ``on_finish(run_result)`` when the run completed.
    command_line : list of str, optional
        Recorded in the results' provenance.
    """

    def __init__(self, project: Any, what: str, out_dir: str | Path, *, executor: Any = None,
                 on_record: Callable[[dict], None] | None = None,
                 on_finish: Callable[[Any], None] | None = None,
                 command_line: list[str] | None = None) -> None:
        self.project = project
        self.what = what
        self.out_dir = Path(out_dir)
        self.executor = executor
        self.on_record = on_record
        self.on_finish = on_finish
        self.command_line = command_line or ["qcbed", "gui"]
        self.state = "idle"
        self.records: list[dict] = []
        self.log: list[str] = []
        self.error: str | None = None
        self.summary: str | None = None
        self.result: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t0 = 0.0

    # ------------------------------------------------------------ control
    def start(self) -> None:
        """Start the run from the beginning."""
        self._launch(resume=False)

    def resume(self) -> None:
        """Continue a stopped run from its checkpoint (:func:`qcbed.project.resume_run`)."""
        if self.state not in ("stopped", "failed"):
            raise RuntimeError(f"cannot resume a run that is {self.state}")
        self._launch(resume=True)

    def stop(self) -> None:
        """Ask the run to stop at the next iteration (or step) boundary."""
        if self.state == "running":
            self._stop.set()
            self.state = "stopping"

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.state in ("running", "stopping")

    def _launch(self, resume: bool) -> None:
        if self.running:
            raise RuntimeError("the refinement is already running")
        self._stop.clear()
        self.state = "running"
        self.error = None
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, args=(resume,), daemon=True,
                                        name="qcbed-gui-refine")
        self._thread.start()

    # ------------------------------------------------------------ thread
    def _log(self, text: str) -> None:
        with self._lock:
            self.log.append(text)
        if self._stop.is_set():
            raise StopRequested

    def _callback(self, rec: dict) -> None:
        clean = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
                 for k, v in rec.items() if isinstance(v, (int, float, str, np.floating))}
        with self._lock:
            self.records.append(clean)
        if self.on_record is not None:
            self.on_record(clean)
        if self._stop.is_set():
            raise StopRequested

    def _run(self, resume: bool) -> None:
        from ..project import ProjectRun, resume_run

        kw = dict(executor=self.executor, progress=False, log=self._log,
                  callback=self._callback)
        try:
            if resume:
                self._log("resuming from the checkpoint")
                run = resume_run(self.out_dir, **kw)
            else:
                run = ProjectRun(self.project, out_dir=self.out_dir,
                                 command_line=self.command_line, **kw).run()
        except StopRequested:
            self.state = "stopped"
            with self._lock:
                self.log.append("stopped (resume continues from the last checkpoint)")
            return
        except Exception as exc:  # shown in the page; the run's files stay on disk
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.log.append("failed: " + self.error)
                self.log.extend(traceback.format_exc().splitlines()[-4:])
            return
        self.summary = run.fine.summary() if run.fine is not None else "; ".join(
            c.get("summary", "") for c in run.coarse)
        self.result = {"state": run.state, "files": {k: str(v) for k, v in run.files.items()}}
        with self._lock:
            self.log.append(f"finished in {time.perf_counter() - self._t0:.1f} s; results in "
                            f"{run.out_dir}")
        try:
            if self.on_finish is not None:
                self.on_finish(run)
        finally:
            self.state = "finished"

    # ------------------------------------------------------------ page
    def status(self) -> dict:
        """State, log, per-iteration records (χ² and parameters) and the summary."""
        with self._lock:
            return {"what": self.what, "state": self.state, "records": list(self.records),
                    "log": list(self.log[-50:]), "error": self.error, "summary": self.summary,
                    "out_dir": str(self.out_dir),
                    "elapsed_s": round(time.perf_counter() - self._t0, 2) if self._t0 else 0.0}
