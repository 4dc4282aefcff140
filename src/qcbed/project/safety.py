"""Safety of project runs: resources estimated before any work, results never destroyed,
resumes that notice finished runs and changed inputs.

Used by :mod:`qcbed.project` (``validate``, ``refine``, ``resume``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core.guard import check_memory, format_bytes, memory_limit
from ..errors import InputError

__all__ = ["RESULT_FILES", "ResourceItem", "changed_inputs", "check_output_folder",
           "check_resources", "estimate_resources", "file_hashes", "fine_step_bytes",
           "read_run_state", "run_is_finished"]

#: Files a finished run writes into its output folder.
RESULT_FILES = ("results.h5", "result.json", "structure_factors.hkl", "report.html")
#: Most thickness points of one coarse scan.
MAX_N_SCAN = 10_000
#: Bytes per incident direction and strong beam² while eigen-systems are kept
#: (eigenvectors, their inverse/derivative products, complex128).
_EIGEN_BYTES = 16 * 3
#: Bytes per sample of a region of interest and reflection (coordinates, data,
#: variance, model, Jacobian column of a few parameters).
_SAMPLE_BYTES = 8 * 12


@dataclass(frozen=True)
class ResourceItem:
    """One estimated allocation of a run.

    Attributes
    ----------
    what : str
        The part of the run (``'fine: ROI'``, ``'coarse[0] field'``, ``'beam pool'``).
    tag : str
        The project key(s) that set its size.
    directions : int
        Incident directions solved at once (0 when not an engine job).
    nbytes : float
        Estimated peak memory in bytes.
    """

    what: str
    tag: str
    directions: int
    nbytes: float

    def text(self) -> str:
        d = f"{self.directions} directions, " if self.directions else ""
        return f"{self.what} ({self.tag}): {d}≈ {format_bytes(self.nbytes)}"


def estimate_resources(project: Any, n_refl: int, *, n_strong: int | None = None,
                       n_pool: int | None = None) -> list[ResourceItem]:
    """Memory (and direction counts) the project's settings imply, before any allocation.

    Parameters
    ----------
    project : Project
        The parsed project (ROI samples and pads, coarse templates and margins).
    n_refl : int
        Reflections compared.
    n_strong, n_pool : int, optional
        Strong beams per direction and pool size when known (``validate`` knows
        them after building the pool); otherwise a modest 60 strong beams is
        assumed and the pool is not estimated.
    """
    ns = 60 if n_strong is None else max(int(n_strong), 1)
    items: list[ResourceItem] = []
    n_dirs = 0
    n_samples = 0.0
    for reg in project.roi["regions"]:
        n12, n13 = reg["samples"]
        pad = reg["pad"]
        n = float(n12 + 2 * pad) * float(n13 + 2 * pad)
        n_samples += n * n_refl
        n_dirs += int(min(n, 2**62))
    items.append(ResourceItem("fine: regions of interest", "roi.regions[].samples",
                              n_dirs, n_samples * _SAMPLE_BYTES
                              + float(n_dirs) * ns * ns * _EIGEN_BYTES))
    for i, st in enumerate(project.coarse):
        if st.template_size is not None:
            h, w = st.template_size
        else:
            reg = project.roi["regions"][0]
            h, w = reg["samples"][1], reg["samples"][0]
        m = st.margin
        f = float(h + 2 * m) * float(w + 2 * m)
        if st.step == "pixel_size":
            f *= 4 * (1 + st.rel_range) ** 2  # oversampled, extended field
        items.append(ResourceItem(f"coarse[{i}] {st.step}: template field",
                                  f"plan.coarse[{i}].margin/template_size", int(min(f, 2**62)),
                                  f * ns * ns * _EIGEN_BYTES + f * n_refl * 8 * 4))
    if n_pool is not None:
        items.append(ResourceItem("beam pool (coupling table)", "engine.gmax/smax", 0,
                                  float(n_pool) ** 2 * 64))
    return items


def fine_step_bytes(n_dirs: int, n_strong: float, n_sf_derivatives: int) -> float:
    """Peak bytes of a fine step with structure-factor derivatives, measured.

    The step holds, for every ROI direction, n_s² complex numbers per eigen-system and
    per structure-factor derivative (the stored G_p of
    :class:`~qcbed.bloch.chunks.EigenChunk`, held twice while chunks are joined):
    16 × (5 + n_derivatives) bytes per n_s² and direction. Measured on a LiNbO₃ fine
    step (669 strong beams, 3 complex U_g = 6 derivatives; 81 and 289 directions:
    peak RSS 7.3 and 23.6 GB, 176 B per n_s² and direction), where
    :func:`estimate_resources`' 48 B undercounts 3.6×.
    """
    return float(n_dirs) * float(n_strong) ** 2 * 16.0 * (5 + int(n_sf_derivatives))


def check_resources(items: Sequence[ResourceItem], *, source: str | None = None,
                    limit: Any = None) -> float:
    """InputError naming the key when one item exceeds the memory limit; else the peak."""
    for it in items:
        check_memory(it.nbytes, it.what, tag=it.tag, source=source, limit=limit,
                     hint="reduce it (fewer samples, a smaller margin or template, lower "
                          "gmax/smax)")
    return max((it.nbytes for it in items), default=0.0)


def resource_summary(items: Sequence[ResourceItem], limit: Any = None) -> str:
    """One line for ``validate``: the largest items and the limit."""
    peak = max((it.nbytes for it in items), default=0.0)
    parts = "; ".join(it.text() for it in items)
    return f"peak ≈ {format_bytes(peak)} of the {format_bytes(memory_limit(limit))} limit ({parts})"


# ====================================================================== output folder
def check_output_folder(out_dir: Path, *, source: str, overwrite: bool,
                        inputs: Iterable[Path] = ()) -> None:
    """Before a run: the output folder may be created and written.

    Raises
    ------
    InputError
        ``out_dir`` is an existing file (for instance the project's own CIF), an
        input file, or holds the results of an earlier run while ``overwrite``
        (``[project] overwrite = true`` / ``--force``) is not set.
    """
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise InputError("the output folder is an existing file", source=source,
                         tag="project.output", expected="a folder (new or existing)",
                         found=str(p))
    for q in inputs:
        try:
            if Path(q).resolve() == p.resolve():
                raise InputError("the output folder is an input", source=source,
                                 tag="project.output", expected="a separate folder",
                                 found=str(p))
        except OSError:  # pragma: no cover - unresolvable path
            continue
    if p.is_dir() and not overwrite:
        there = [n for n in RESULT_FILES if (p / n).exists()]
        if there:
            raise InputError("the output folder holds the results of an earlier run; set "
                             "overwrite = true in [project] (or pass --force) to replace "
                             "them, or choose another project.output", source=source,
                             tag="project.output", expected="a folder without results",
                             found=f"{p}: {', '.join(there)}")


# ====================================================================== run state
def read_run_state(path: Path) -> dict:
    """The ``run_state.json`` of a run, checked (InputError when unreadable or damaged)."""
    try:
        rs = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the run state: {exc.strerror or exc}",
                         source=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the run state is damaged (not JSON: {exc})", source=path,
                         expected="run_state.json as written by qcbed refine",
                         found="unreadable text") from None
    need = {"format": str, "project_file": str, "project_base": str, "project_text": str,
            "done": list, "state": dict, "coarse": list, "fine": list, "history": list}
    if not isinstance(rs, dict):
        raise InputError("the run state is damaged", source=path, expected="a JSON object",
                         found=type(rs).__name__)
    for key, typ in need.items():
        if not isinstance(rs.get(key), typ):
            raise InputError("the run state is damaged", source=path, tag=key,
                             expected=f"a {typ.__name__}", found=rs.get(key))
    if not rs["format"].startswith("qcbed-run-state/"):
        raise InputError("not a qcbed run state", source=path, tag="format",
                         expected="qcbed-run-state/1", found=rs["format"])
    return rs


def run_is_finished(rs: Mapping[str, Any], n_coarse: int, n_fine: int, out_dir: Path) -> bool:
    """True when every step is done and the result files were written."""
    steps = {f"coarse:{i}" for i in range(n_coarse)} | {f"fine:{i}" for i in range(n_fine)}
    return (steps <= set(rs.get("done", [])) and bool(rs.get("results_written"))
            and all((Path(out_dir) / n).exists() for n in ("results.h5", "result.json")))


def file_hashes(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """{absolute path: SHA-256} of the files (missing files map to ``'missing'``)."""
    import hashlib

    out = {}
    for p in paths:
        q = Path(p).resolve()
        try:
            h = hashlib.sha256()
            with open(q, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[str(q)] = h.hexdigest()
        except OSError:
            out[str(q)] = "missing"
    return out


def changed_inputs(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Lines naming each input whose SHA-256 differs between two :func:`file_hashes`."""
    lines = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a != b:
            lines.append(f"{path}: sha256 {(a or 'none')[:12]}… → {(b or 'none')[:12]}…")
    return lines
