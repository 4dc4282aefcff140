"""Refinement checkpoints: parameters, optimiser state and history in one HDF5 file.

The file is rewritten completely after every iteration through a temporary
file and an atomic rename (``os.replace``), so a refinement killed at any
moment leaves the previous complete checkpoint behind — nothing is lost and
nothing is half-written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from .._core.files import atomic_write
from .._core.jsonio import dumps
from .._version import __version__
from ..errors import InputError


def write_checkpoint(path: str | os.PathLike, *, params, names: list[str], x0,
                     state: dict | None, history: list[dict], final=None) -> None:
    """Write (atomically) the refinement state to ``path`` (HDF5, group ``refinement``)."""
    atomic_write(path, lambda tmp: _write(tmp, params=params, names=names, x0=x0, state=state,
                                          history=history, final=final))


def _write(tmp: Path, *, params, names: list[str], x0, state: dict | None,
           history: list[dict], final) -> None:
    with h5py.File(tmp, "w") as f:
        g = f.create_group("refinement")
        g.attrs["qcbed_version"] = __version__
        g.attrs["names"] = json.dumps(names)
        g.attrs["x0"] = json.dumps(x0)
        g.attrs["state"] = dumps(state, nan_as_null=False)
        g.attrs["values"] = json.dumps({p.name: p.value for p in params})
        g.attrs["esd"] = json.dumps({p.name: p.esd for p in params})
        g.attrs["units"] = json.dumps({p.name: p.unit for p in params})
        g.attrs["scales"] = json.dumps({p.name: p.scale for p in params})
        g.attrs["free"] = json.dumps([p.name for p in params.free])
        g.attrs["history"] = dumps(history, nan_as_null=False)
        if history:
            keys = sorted({k for h in history for k, v in h.items()
                           if isinstance(v, (int, float))})
            hist = g.create_group("history")
            for k in keys:
                hist.create_dataset(k, data=np.array([h.get(k, np.nan) for h in history],
                                                     dtype=float))
        if final is not None:
            fg = g.create_group("final")
            fg.attrs["gof"] = final.gof
            fg.attrs["chi2"] = final.chi2
            fg.attrs["dof"] = final.dof
            fg.attrs["n_used"] = final.n_used
            fg.attrs["scale"] = final.scale
            fg.attrs["r_factor"] = final.r_factor
            fg.attrs["message"] = final.message
            fg.attrs["free_names"] = json.dumps(final.free_names)
            fg.attrs["zncc"] = json.dumps(final.zncc)
            fg.create_dataset("background", data=np.asarray(final.background, float))
            fg.create_dataset("covariance", data=final.covariance)
            fg.create_dataset("correlation", data=final.correlation)


def save_lm_checkpoint(path: str | os.PathLike | None, *, params, names, x0, state,
                       history: list[dict], final=None) -> None:
    """Checkpoint a Levenberg–Marquardt run (nothing when ``path`` is None).

    ``x0``: the parameter origin of the LM variables (or None); ``state``: an
    :class:`~qcbed.refine.lm.LMState` (or None); ``final``: the result, once known.
    """
    if path is None:
        return
    write_checkpoint(path, params=params, names=list(names),
                     x0=None if x0 is None else list(map(float, x0)),
                     state=None if state is None else state.to_dict(), history=history,
                     final=final)


def restore_checkpoint(path: str | os.PathLike | None, params, names: list[str] | None
                       ) -> dict:
    """Read a checkpoint and put its values and scales into ``params``.

    With ``names``, the checkpoint must have been written for exactly those free
    parameters (checked before anything is changed). Returns what
    :func:`read_checkpoint` returns.
    """
    if path is None or not Path(path).exists():
        raise InputError("no checkpoint to resume from", source=path)
    ck = read_checkpoint(path)
    if names is not None and ck["names"] != list(names):
        raise InputError("checkpoint was written for other parameters", source=path,
                         expected=list(names), found=ck["names"])
    for n, v in ck["values"].items():
        if n in params:
            params[n].value = v
    for n, v in ck["scales"].items():  # x = (value − x0)/scale: the scales of the run
        if n in params:
            params[n].scale = v
    return ck


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read what :func:`write_checkpoint` wrote."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            g = f["refinement"]
            out = {k: json.loads(g.attrs[k]) for k in ("names", "x0", "state", "values", "esd",
                                                       "free", "history")}
            out["scales"] = json.loads(g.attrs["scales"]) if "scales" in g.attrs else {}
            out["final"] = "final" in g
    except (OSError, KeyError) as exc:
        raise InputError(f"not a qcbed checkpoint: {exc}", source=path) from exc
    return out
