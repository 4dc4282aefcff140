"""Batch refinement: several project files in turn, finished ones skipped, a summary table.

``qcbed refine A.toml B.toml …`` (or a folder, or a glob) runs each project with
:class:`qcbed.project.ProjectRun`:

* **finished** — ``result.json`` exists in its output folder and the run state was
  made from the same project text: skipped (its results enter the summary);
* **interrupted** — a ``run_state.json`` of the same project text but no result:
  resumed from its checkpoints (as ``qcbed resume``);
* otherwise run from the start (also when the project file changed since).

A failing project is recorded (status ``failed`` and the error) and the batch goes on.
The summary (:func:`write_summary`) is a CSV and an HTML table of the key results of
every project: status, thickness ± esd, reduced χ², R, the refined U_g ± esd, time.
"""

from __future__ import annotations

import csv
import glob
import html
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._core.files import atomic_write, atomic_write_text
from .errors import InputError, QcbedError

__all__ = ["BatchEntry", "expand_projects", "run_batch", "write_summary"]


@dataclass
class BatchEntry:
    """One project of a batch and what became of it.

    Attributes
    ----------
    project : Path
    out_dir : Path or None
    status : str
        ``'done'`` (run now), ``'resumed'``, ``'skipped'`` (finished before) or ``'failed'``.
    result : dict
        The project's ``result.json`` (empty when it failed).
    error : str
    elapsed_s : float
    """

    project: Path
    out_dir: Path | None = None
    status: str = "pending"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    elapsed_s: float = 0.0


def expand_projects(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Project files from paths, folders (their ``*.toml``, sorted) and glob patterns.

    Raises
    ------
    InputError
        An item matches no project file, or the list is empty.
    """
    out: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
        elif any(c in s for c in "*?["):
            found = sorted(Path(x) for x in glob.glob(s) if x.endswith(".toml"))
        else:
            found = [p] if p.is_file() else []
        if not found:
            raise InputError("no project file", source=s,
                             expected="a .toml project file, a folder of them or a glob",
                             found="nothing matches")
        out.extend(f for f in found if f.resolve() not in {o.resolve() for o in out})
    if not out:
        raise InputError("no project files given", expected="one or more .toml files")
    return out


def _state(out_dir: Path, text: str) -> str:
    """'finished', 'interrupted', 'changed' (an earlier run of another version of the
    project file) or 'new' for a project's output folder."""
    from .project.schema import RUN_STATE

    rs_path = out_dir / RUN_STATE
    if not rs_path.is_file():
        return "new"
    try:
        rs = json.loads(rs_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "new"
    if rs.get("project_text") != text:
        return "changed"
    return "finished" if (out_dir / "result.json").is_file() else "interrupted"


def run_batch(projects: Sequence[str | os.PathLike], *, out_root: str | os.PathLike | None = None,
              force: bool = False, executor: Any = None, progress: bool = True,
              log: Callable[[str], None] | None = None,
              changes: dict[str, Any] | None = None) -> list[BatchEntry]:
    """Run several projects in turn (see the module docstring).

    Parameters
    ----------
    projects : sequence of path
        Project files (expand folders and globs with :func:`expand_projects`).
    out_root : path, optional
        Put each project's results in ``out_root/<project file stem>`` instead of
        its ``[project] output``.
    force : bool
        Run every project from the start, finished or not.
    executor, progress, log
        As :class:`qcbed.project.ProjectRun`.
    changes : dict, optional
        Project fields replaced in every project (``regions``, ``budget``), as the
        command line's ``--regions``/``--budget``.

    Returns
    -------
    list of BatchEntry
    """
    from .project import ProjectRun, load_project

    say = log or print
    entries = []
    for k, path in enumerate(projects, 1):
        e = BatchEntry(Path(path))
        entries.append(e)
        t0 = time.perf_counter()
        try:
            proj = load_project(path)
            if changes:
                proj = replace(proj, **changes)
            e.out_dir = Path(out_root) / Path(path).stem if out_root else proj.output
            state = "new" if force else _state(e.out_dir, proj.text)
            say(f"[{k}/{len(projects)}] {path}: " + {
                "finished": "finished before, skipped", "interrupted": "resuming",
                "changed": "the project file changed, running again",
                "new": "running"}[state])
            if state != "finished":
                # the batch replaces its own earlier results of a changed project (the
                # folder holds a run state of this project); anything else needs --force
                ProjectRun(proj, out_dir=e.out_dir, executor=executor, progress=progress,
                           log=log, overwrite=(force or state == "changed") or None).run(
                               resume=state == "interrupted")
            e.status = {"finished": "skipped", "interrupted": "resumed", "changed": "done",
                        "new": "done"}[state]
            e.result = json.loads((e.out_dir / "result.json").read_text(encoding="utf-8"))
        except (QcbedError, OSError, ValueError) as exc:
            e.status, e.error = "failed", str(exc)
            say(f"[{k}/{len(projects)}] {path}: failed: {exc}")
        e.elapsed_s = time.perf_counter() - t0
    return entries


def _fmt(v: float | None, esd: float | None = None) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if esd is None else f"{v:.6g} ± {esd:.2g}"


def summary_rows(entries: Sequence[BatchEntry]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of the summary table (one row per project)."""
    ug_names: list[str] = []
    for e in entries:
        for p in e.result.get("parameters", []):
            if p["refined"] and p["name"].startswith(("U(", "Uabs(")) and \
                    p["name"] not in ug_names:
                ug_names.append(p["name"])
    cols = ["project", "status", "out_dir", "thickness_A", "thickness_esd_A", "chi2",
            "r_factor", "n_used", "voltage_kv"]
    for n in ug_names:
        cols += [n, f"{n}_esd"]
    cols += ["elapsed_s", "error"]
    rows = []
    for e in entries:
        r = e.result
        th = r.get("thickness", {})
        row: dict[str, Any] = {
            "project": str(e.project), "status": e.status,
            "out_dir": "" if e.out_dir is None else str(e.out_dir),
            "thickness_A": th.get("value"), "thickness_esd_A": th.get("esd"),
            "chi2": r.get("chi2"), "r_factor": r.get("r_factor"), "n_used": r.get("n_used"),
            "voltage_kv": r.get("voltage_kv"), "elapsed_s": round(e.elapsed_s, 2),
            "error": e.error}
        ps = {p["name"]: p for p in r.get("parameters", [])}
        for n in ug_names:
            row[n] = ps[n]["value"] if n in ps else None
            row[f"{n}_esd"] = ps[n]["esd"] if n in ps else None
        rows.append(row)
    return cols, rows


def write_summary(entries: Sequence[BatchEntry], folder: str | os.PathLike,
                  name: str = "batch_summary") -> tuple[Path, Path]:
    """Write ``<name>.csv`` and ``<name>.html`` (key results of every project) into ``folder``."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    cols, rows = summary_rows(entries)

    def w_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            wr = csv.DictWriter(fh, fieldnames=cols)
            wr.writeheader()
            for r in rows:
                wr.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})

    csv_path = atomic_write(d / f"{name}.csv", w_csv)
    ug = [c for c in cols if c.startswith(("U(", "Uabs(")) and not c.endswith("_esd")]
    head = ["project", "status", "thickness (Å)", "χ²_ν", "R", *[f"{n} (Å⁻²)" for n in ug],
            "time (s)", "error"]
    lines = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             "<title>qcbed batch summary</title><style>body{font-family:sans-serif}"
             "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
             ".failed{background:#fdd}</style></head><body>",
             f"<h1>qcbed batch: {len(rows)} projects</h1>", "<table>",
             "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        proj = html.escape(r["project"])
        link = (f"<a href='{html.escape(os.path.relpath(Path(r['out_dir']) / 'report.html', d))}'>"
                f"{proj}</a>" if r["out_dir"] and r["status"] != "failed" else proj)
        cells = [link, html.escape(r["status"]), _fmt(r["thickness_A"], r["thickness_esd_A"]),
                 _fmt(r["chi2"]), _fmt(r["r_factor"]),
                 *[_fmt(r[n], r[f"{n}_esd"]) for n in ug], f"{r['elapsed_s']:.1f}",
                 html.escape(r["error"])]
        cls = " class='failed'" if r["status"] == "failed" else ""
        lines.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines += ["</table>", "</body></html>"]
    text = "\n".join(lines) + "\n"
    html_path = atomic_write_text(d / f"{name}.html", text)
    return csv_path, html_path
