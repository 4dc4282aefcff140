"""A finished results folder (``result.json``, ``figures/``, ``report.html``) for the page."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["figure_path", "load_results"]

_FIGURE_SUFFIXES = (".png", ".svg")


def load_results(folder: str | os.PathLike) -> dict[str, Any]:
    """The results of a run as JSON-ready data for the results view.

    Parameters
    ----------
    folder : path
        Output folder of ``qcbed refine`` (or of a run started in the app).

    Returns
    -------
    dict
        ``result`` (the checked content of ``result.json``: parameters with esd,
        structure factors, χ², R, ZNCC, correlation matrix), ``figures`` (file
        names under ``figures/``), ``report`` (path of ``report.html`` or None) and
        ``folder``.

    Raises
    ------
    InputError
        No ``result.json`` in the folder, or one that does not follow the schema.
    """
    from ..results import validate_result_json

    d = Path(folder)
    path = d / "result.json"
    if not path.is_file():
        raise InputError("no result.json in the results folder", source=d,
                         expected="a folder written by 'qcbed refine'", found="missing")
    result = validate_result_json(path)
    figdir = d / "figures"
    figures = sorted(p.name for p in figdir.iterdir() if p.suffix in _FIGURE_SUFFIXES) \
        if figdir.is_dir() else []
    report = d / "report.html"
    return {"folder": str(d.resolve()), "result": json.loads(json.dumps(result)),
            "figures": figures, "report": str(report) if report.is_file() else None}


def figure_path(folder: str | os.PathLike, name: str) -> Path:
    """The file of a figure in ``folder/figures`` (no path separators allowed in ``name``)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or \
            Path(name).suffix not in _FIGURE_SUFFIXES:
        raise InputError("bad figure name", expected="a .png/.svg file name in figures/",
                         found=name)
    p = Path(folder) / "figures" / name
    if not p.is_file():
        raise InputError("no such figure", source=p, found="missing")
    return p
