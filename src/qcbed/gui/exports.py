"""Project export of the app: the session's current state as a project file.

:class:`ProjectExports` is a mix-in of :class:`~qcbed.gui.state.Session`: the
current parameters, regions and plan as a project (TOML dict with absolute paths),
written after reading it back (:meth:`~ProjectExports.export_project`), or parsed
into a :class:`~qcbed.project.Project` that runs part of the plan
(:meth:`~ProjectExports.project_for_run`).
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

from .._core.files import atomic_write_text
from .._core.tomlcompat import tomllib
from ..errors import InputError

__all__ = ["ProjectExports", "slug", "toml_loads"]

#: Project-file keys that hold paths (made absolute on export).
_PATH_KEYS = (("crystal", "source"), ("data", "folder"), ("data", "g_vectors"),
              ("data", "mask"))


def toml_loads(text: str) -> dict:
    """The TOML document ``text`` as a dict."""
    return tomllib.loads(text)


def slug(s: str) -> str:
    """``s`` as a file name: lower case, letters, digits, ``-`` and ``_`` (≤ 60 characters)."""
    out = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in s.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")[:60] or "project"


class ProjectExports:
    """The session as a project file or a runnable project (mix-in of ``Session``)."""

    kind: str
    title: str
    source: str
    project: Any
    workdir: Path
    params: dict[str, Any]
    regions: list[dict]
    ug_iam: dict[str, float]
    last_export: Path | None
    _lock: threading.RLock

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
        out = Path(path) if path else self.workdir / f"{slug(self.title)}.toml"
        text = dumps_toml(raw, comments, header="qcbed project file (TOML). Units: A, 1/A "
                                                "(no 2 pi), 1/A^2, kV, degrees, pixels.")
        out.parent.mkdir(parents=True, exist_ok=True)
        parse_project(toml_loads(text), source=str(out), base_dir=out.parent, text=text)
        atomic_write_text(out, text)
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
