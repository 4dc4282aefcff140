"""Opening a dataset in the app: :func:`open_session` and the session's public names.

:func:`open_session` turns a path (a Felix folder, a project file, a ``.dat`` set-up,
a LACBED stack, a results folder, or nothing for the demo) into a
:class:`~qcbed.gui.state.Session`. The session itself lives in
:mod:`qcbed.gui.state` (state and parameter updates), :mod:`qcbed.gui.frames`
(images), :mod:`qcbed.gui.exports` (project files) and :mod:`qcbed.gui.runs`
(refinements); :class:`Session`, :class:`Frame`, :data:`VIEW_ACCURACY` and
:data:`FULL_DELAY_S` are re-exported here.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..errors import InputError
from .exports import toml_loads
from .frames import FULL_DELAY_S, Frame
from .state import VIEW_ACCURACY, Session

__all__ = ["FULL_DELAY_S", "VIEW_ACCURACY", "Frame", "Session", "open_session"]


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
            raw = toml_loads(state["project_text"])
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
