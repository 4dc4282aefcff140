"""Export to the microscopy ecosystem: EMD 1.0 (emdfile / py4DSTEM) and HyperSpy (.hspy).

Three kinds of qcbed data are exported, each as a list of named, calibrated arrays
(:class:`ExportItem`):

* a **LACBED stack** (``qcbed extract`` / :func:`qcbed.larbed.save_stack`): ``images``,
  ``variance``, ``mask`` (n_refl, H, W), ``hkl``, and ``kt`` (H, W, 2) when the tilt map
  is known;
* a **simulation** (``qcbed simulate``, :func:`qcbed.output.results.write_simulation`):
  ``intensity`` (n_t, n_out, ny, nx) with the thickness axis, ``hkl``, ``kt``, ``mask``;
* the **refinement residuals** of a results folder (``results.h5`` ``/patterns``): per
  region ``experiment``, ``model``, ``residual`` = experiment − model and, where the
  variances are stored, ``normalised_residual`` = residual/σ.

Axes: the reflection axis is an index (its Miller indices are the ``hkl`` array and the
``hkl`` metadata); tilt axes are calibrated in Å⁻¹ per tilt step (|Δk_t| along the
row and the column of the grid, 0 at the reference tilt); the exact k_t of every
sample is the ``kt`` array (zone-frame k_x, k_y, Å⁻¹, no 2π; docs/conventions.md).

* **EMD 1.0** (:func:`write_emd`): one ``emdfile.Root`` named ``qcbed`` holding one
  ``emdfile.Array`` per item (``dims``, ``dim_units``, ``dim_names``, ``units``: the
  calibrations), with root metadata ``qcbed_calibration`` (py4DSTEM's keys
  ``Q_pixel_size``, ``Q_pixel_units``, ``R_pixel_size``, ``R_pixel_units``) and ``qcbed``
  (program, items). Read it with ``emdfile.read`` or ``py4DSTEM.read`` (checked with
  py4DSTEM 0.14.18).
* **HyperSpy** (:func:`write_hspy`): the ``.hspy`` format of HyperSpy/RosettaSciIO
  (``rsciio.hspy``), one experiment per item, with axes (name, scale, offset, units,
  navigate), ``metadata.General.title``, ``metadata.Signal.quantity`` and the qcbed
  metadata under ``original_metadata.qcbed``. ``hyperspy.api.load`` opens it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InputError

__all__ = ["ExportItem", "export", "read_items", "residual_items", "simulation_items",
           "stack_items", "write_emd", "write_hspy"]

A_INV = "A^-1"


@dataclass
class Axis:
    """A uniform axis: value = offset + scale·index (or explicit ``values``)."""

    name: str
    units: str = ""
    scale: float = 1.0
    offset: float = 0.0
    values: np.ndarray | None = None
    navigate: bool = False


@dataclass
class ExportItem:
    """One named array with its axes, units and metadata."""

    name: str
    data: np.ndarray
    axes: list[Axis]
    units: str = ""
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.axes) != np.ndim(self.data):
            raise InputError("one axis per array dimension", tag=self.name,
                             expected=np.ndim(self.data), found=len(self.axes))


# ------------------------------------------------------------------------- sources
def _grid_axes(kt: np.ndarray | None, shape: tuple[int, int], reference: Sequence[float] | None
               ) -> list[Axis]:
    """Row/column axes in Å⁻¹ per tilt step (0 at the reference), or tilt indices."""
    h, w = shape
    if kt is None or kt.shape[:2] != (h, w) or min(h, w) < 2:
        return [Axis("tilt_row", "tilt step"), Axis("tilt_col", "tilt step")]
    step_r = float(np.linalg.norm(np.mean(np.diff(kt, axis=0), axis=(0, 1))))
    step_c = float(np.linalg.norm(np.mean(np.diff(kt, axis=1), axis=(0, 1))))
    ref = np.asarray(reference if reference is not None else ((h - 1) / 2, (w - 1) / 2), float)
    return [Axis("k_row", A_INV, step_r, -ref[0] * step_r),
            Axis("k_col", A_INV, step_c, -ref[1] * step_c)]


def _hkl_meta(hkl: np.ndarray) -> list[str]:
    return [",".join(str(int(v)) for v in h) for h in np.asarray(hkl).reshape(-1, 3)]


def stack_items(stack: Any) -> list[ExportItem]:
    """Items of a :class:`qcbed.experiment.LACBEDStack` (see the module docstring)."""
    geo = stack.geometry
    kt = stack.metadata.get("arrays", {}).get("kt")
    if kt is None and geo is not None:
        kt = geo.tilt_grid().kt
    kt = None if kt is None else np.asarray(kt, float)
    meta: dict[str, Any] = {"kind": "lacbed_stack", "hkl": _hkl_meta(stack.hkl),
                            "voltage_kv": stack.voltage_kv, "source": str(stack.source or "")}
    if geo is not None:
        meta["geometry"] = {"zone": list(map(float, geo.frame.zone)),
                            "x_axis": list(map(float, geo.frame.x_axis)),
                            "normal": list(map(float, geo.frame.normal)),
                            "cell": list(map(float, geo.frame.lattice.parameters)),
                            "rotation_deg": float(geo.rotation), "mirror": bool(geo.mirror),
                            "gl": float(geo.gl), "tilt0": list(map(float, geo.tilt0)),
                            "reference": list(map(float, geo.reference))}
    ref = None if geo is None else geo.reference
    grid = _grid_axes(kt, stack.shape, ref)
    ax = [Axis("reflection", "", navigate=True), *grid]
    mask = np.asarray(stack.mask, bool)
    items = [ExportItem("images", np.where(mask, stack.images, np.nan), ax, "counts",
                        "LACBED images", meta),
             ExportItem("variance", np.where(mask, stack.variance, np.nan), ax, "counts^2",
                        "LACBED variances", meta),
             ExportItem("mask", mask.astype(np.uint8), ax, "", "valid samples", meta),
             ExportItem("hkl", np.asarray(stack.hkl, np.int64),
                        [Axis("reflection", navigate=True), Axis("hkl")], "Miller index",
                        "reflections", meta)]
    if kt is not None:
        items.append(ExportItem("kt", kt, [*grid, Axis("k_component")], A_INV,
                                "incident k_t (zone-frame k_x, k_y)", meta))
    return items


def simulation_items(path: str | os.PathLike) -> list[ExportItem]:
    """Items of a ``qcbed simulate`` file (format ``qcbed-simulation/1``)."""
    import h5py

    with h5py.File(path, "r") as f:
        inten = f["intensity"][()]
        hkl = f["hkl"][()]
        th = f["thickness"][()]
        kt = f["kt"][()]
        mask = f["mask"][()] if "mask" in f else None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    meta = {"kind": "simulation", "hkl": _hkl_meta(hkl), "thickness_A": th.tolist(),
            "attributes": {k: (v.tolist() if isinstance(v, np.ndarray) else
                               v.item() if isinstance(v, np.generic) else v)
                           for k, v in attrs.items()}}
    grid = _grid_axes(kt, inten.shape[-2:], None)
    if len(th) > 1 and np.allclose(np.diff(th), th[1] - th[0]):
        t_axis = Axis("thickness", "A", float(th[1] - th[0]), float(th[0]), navigate=True)
    elif len(th) == 1:
        t_axis = Axis("thickness", "A", 1.0, float(th[0]), navigate=True)
    else:
        t_axis = Axis("thickness", "A", values=np.asarray(th, float), navigate=True)
    items = [ExportItem("intensity", inten,
                        [t_axis, Axis("reflection", navigate=True), *grid],
                        "fraction of the incident flux", "simulated patterns", meta),
             ExportItem("hkl", np.asarray(hkl, np.int64),
                        [Axis("reflection", navigate=True), Axis("hkl")], "Miller index",
                        "reflections", meta),
             ExportItem("kt", np.asarray(kt, float), [*grid, Axis("k_component")], A_INV,
                        "incident k_t (zone-frame k_x, k_y)", meta)]
    if mask is not None:
        items.append(ExportItem("mask", np.asarray(mask, np.uint8), grid, "",
                                "illuminated samples", meta))
    return items


def residual_items(path: str | os.PathLike) -> list[ExportItem]:
    """Residual items of a refinement results file (``results.h5`` or its folder)."""
    import h5py

    p = Path(path)
    if p.is_dir():
        p = p / "results.h5"
    with h5py.File(p, "r") as f:
        if "patterns" not in f:
            raise InputError("no refinement patterns in the results file", source=p,
                             tag="/patterns", expected="a finished fine refinement",
                             found=sorted(f.keys()))
        pat = f["patterns"]
        hkl = pat["hkl"][()]
        exp_all = pat["experiment"][()]
        var_all = pat["variance"][()] if "variance" in pat else None
        regions = []
        k = 0
        while f"patterns/region{k}" in f:
            g = pat[f"region{k}"]
            regions.append((g["experiment"][()], g["model"][()]))
            k += 1
    meta = {"kind": "refinement_residuals", "hkl": _hkl_meta(hkl), "source": str(p),
            "model": "scale * simulation (probe-convolved) + background"}
    items: list[ExportItem] = []
    offset = 0
    for k, (e, m) in enumerate(regions):
        ax = [Axis("reflection", navigate=True), Axis("sample_12", "sample"),
              Axis("sample_13", "sample")]
        res = e - m
        items += [ExportItem(f"region{k}_experiment", e, ax, "counts",
                             f"region {k}: experiment", meta),
                  ExportItem(f"region{k}_model", m, ax, "counts", f"region {k}: model", meta),
                  ExportItem(f"region{k}_residual", res, ax, "counts",
                             f"region {k}: experiment - model", meta)]
        n = e.shape[1] * e.shape[2]
        if var_all is not None and exp_all.shape == var_all.shape and \
                offset + n <= var_all.shape[1] and \
                np.allclose(exp_all[:, offset:offset + n].reshape(e.shape), e, equal_nan=True):
            var = var_all[:, offset:offset + n].reshape(e.shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(var > 0, res / np.sqrt(var), np.nan)
            items.append(ExportItem(f"region{k}_normalised_residual", z, ax, "sigma",
                                    f"region {k}: (experiment - model)/sigma", meta))
        offset += n
    if not items:
        raise InputError("no ROI regions in the results file", source=p, tag="/patterns")
    return items


def read_items(path: str | os.PathLike) -> list[ExportItem]:
    """The export items of any qcbed file: stack, simulation or results (file or folder)."""
    import h5py

    p = Path(path)
    if p.is_dir():
        return residual_items(p)
    try:
        with h5py.File(p, "r") as f:
            fmt = f.attrs.get("qcbed_format", f.attrs.get("format", ""))
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            has_stack = {"images", "variance", "hkl"} <= set(f.keys())
    except OSError as exc:
        raise InputError(f"not an HDF5 file ({exc})", source=p) from None
    if fmt == "lacbed-stack" or (not fmt and has_stack):
        from ..larbed import load_stack

        return stack_items(load_stack(p))
    if fmt.startswith("qcbed-simulation"):
        return simulation_items(p)
    if fmt.startswith("qcbed-results"):
        return residual_items(p)
    raise InputError("not a qcbed file that can be exported", source=p,
                     expected="a LACBED stack (qcbed extract), a simulation (qcbed simulate) "
                              "or refinement results (results.h5)", found=fmt or "unknown")


# ------------------------------------------------------------------------- writers
def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def write_emd(items: Sequence[ExportItem], path: str | os.PathLike) -> Path:
    """Write the items as an EMD 1.0 file (emdfile): one Array per item under root ``qcbed``."""
    import emdfile

    p = Path(path)
    root = emdfile.Root(name="qcbed")
    step = None
    for it in items:
        dims, dim_units, dim_names = [], [], []
        for i, ax in enumerate(it.axes):
            n = np.shape(it.data)[i]
            vals = ax.values if ax.values is not None else ax.offset + ax.scale * np.arange(n)
            dims.append(np.asarray(vals, float))
            dim_units.append(ax.units or "pixels")
            dim_names.append(ax.name)
            if ax.units == A_INV and step is None:
                step = ax.scale
        arr = emdfile.Array(np.asarray(it.data), name=it.name, units=it.units, dims=dims,
                            dim_units=dim_units, dim_names=dim_names)
        arr.metadata = emdfile.Metadata(name="qcbed", data={
            "title": it.title, "json": json.dumps(_jsonable(it.metadata))})
        root.add_to_tree(arr)
    # py4DSTEM's keys, under a name of its own: py4DSTEM.read turns root metadata called
    # 'calibration' into its Calibration class and fails on a plain emdfile Metadata
    cal = emdfile.Metadata(name="qcbed_calibration")
    cal["Q_pixel_size"] = float(step) if step is not None else 1.0
    cal["Q_pixel_units"] = A_INV if step is not None else "pixels"
    cal["R_pixel_size"] = 1.0
    cal["R_pixel_units"] = "pixels"
    root.metadata = cal
    root.metadata = emdfile.Metadata(name="qcbed", data={
        "program": f"qcbed {__version__}", "items": json.dumps([it.name for it in items])})
    tmp = p.with_name(p.name + ".tmp")
    emdfile.save(str(tmp), root, mode="o")
    tmp.replace(p)
    return p


def write_hspy(items: Sequence[ExportItem], path: str | os.PathLike) -> Path:
    """Write the items as a HyperSpy ``.hspy`` file (rsciio), one experiment per item."""
    import h5py
    from rsciio.hspy import file_writer

    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    for k, it in enumerate(items):
        axes = []
        for i, ax in enumerate(it.axes):
            d: dict[str, Any] = {"name": ax.name, "units": ax.units, "navigate": ax.navigate,
                                 "size": int(np.shape(it.data)[i])}
            if ax.values is not None:
                d["axis"] = np.asarray(ax.values, float)
            else:
                d.update(scale=float(ax.scale), offset=float(ax.offset))
            axes.append(d)
        sig = {"data": np.asarray(it.data), "axes": axes,
               "metadata": {"General": {"title": it.name, "original_filename": p.name},
                            "Signal": {"signal_type": "", "quantity": f"{it.title} ({it.units})"
                                       if it.units else it.title}},
               "original_metadata": {"qcbed": {"json": json.dumps(_jsonable(it.metadata)),
                                               "program": f"qcbed {__version__}"}},
               "attributes": {"_lazy": False}, "tmp_parameters": {}, "package_info": {},
               "learning_results": {}, "models": {}}
        if k == 0:
            file_writer(str(tmp), sig, show_progressbar=False)
        else:  # rsciio writes one signal per file: copy its experiment into the first
            part = p.with_name(f"{p.name}.{k}.tmp")
            file_writer(str(part), sig, show_progressbar=False)
            with h5py.File(part, "r") as src, h5py.File(tmp, "a") as dst:
                src.copy(src[f"Experiments/{it.name}"], dst["Experiments"], name=it.name)
            part.unlink()
    tmp.replace(p)
    return p


def export(source: str | os.PathLike, output: str | os.PathLike, fmt: str | None = None
           ) -> Path:
    """Export a qcbed file (stack, simulation, results) to ``.emd``/``.h5`` or ``.hspy``."""
    out = Path(output)
    kind = fmt or {".emd": "emd", ".h5": "emd", ".hspy": "hspy"}.get(out.suffix.lower())
    if kind not in ("emd", "hspy"):
        raise InputError("unknown export format", source=out, expected="emd or hspy "
                         "(.emd, .h5, .hspy)", found=fmt or out.suffix)
    items = read_items(source)
    return write_emd(items, out) if kind == "emd" else write_hspy(items, out)
