"""LACBED stacks extracted from LARBED data: construction and HDF5 files.

The extraction returns the refinement's data object,
:class:`qcbed.experiment.LACBEDStack`: ``images[j, r, c]`` is the intensity of
reflection j at tilt (r, c) (counts, background subtracted), ``variance`` its
σ², ``mask`` the valid samples (spots on the detector, no bad pixel; invalid
samples hold image 0 and variance 1 and are masked), ``geometry`` the
tilt ↔ k_t map when the cell is known, and ``metadata`` the calibration and
extraction record. ``metadata["arrays"]`` holds per-sample extras:
``background`` (n_refl, H, W) mean diffuse background per pixel,
``positions`` (n_refl, H, W, 2) detector (y, x) of the integrated spots and
``kt`` (H, W, 2) the exact k_t of every tilt.

HDF5 layout (:func:`save_stack` / :func:`load_stack`; ``qcbed refine`` reads it)::

    /images      (n_refl, H, W) float64   intensities, NaN where masked
    /variance    (n_refl, H, W) float64   σ², NaN where masked
    /hkl         (n_refl, 3)    int32
    /mask        (n_refl, H, W) bool      valid samples
    /background, /positions, /kt          optional extras (see above)
    attributes:  qcbed_format = "lacbed-stack", format_version = 1,
                 metadata (JSON); flat calibration attributes calibration_matrix,
                 calibration_origin, calibration_rotation_deg, calibration_flip,
                 calibration_step_px, spots_*, detector_*, extraction_*;
                 geometry_* and frame_* (to rebuild the ExperimentGeometry),
                 voltage_kv, source.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..bloch.geometry import ZoneFrame
from ..crystal import Lattice
from ..errors import InputError
from ..experiment import ExperimentGeometry, LACBEDStack

FORMAT_NAME = "lacbed-stack"
FORMAT_VERSION = 1
_ARRAYS = ("background", "positions", "kt")
_J = np.array([[0.0, 1.0], [-1.0, 0.0]])  # xy = J·(row, col) offsets, as experiment.geometry


# ============================================================ geometry
def geometry_from_kt(frame: ZoneFrame, kt: np.ndarray) -> tuple[ExperimentGeometry, float]:
    """The :class:`~qcbed.experiment.ExperimentGeometry` closest to a k_t grid.

    The LARBED tilt grid is affine in the tilt index, k_t = K₀ + L·(rc − centre);
    the experiment geometry is a similarity (rotation, mirror, scale ``gl``
    rocking steps per |g_x⊥|, ``tilt0`` at the centre): L = p·R(θ)·M·J. The
    best similarity is returned with the largest deviation (in tilt steps)
    caused by any shear or aspect ratio of the calibrated scan.

    Parameters
    ----------
    frame : ZoneFrame
    kt : ndarray (H, W, 2)
        k_t (Å⁻¹) of every tilt.

    Returns
    -------
    (ExperimentGeometry, float)
        The geometry (mode ``'lacbed'``) and the worst mismatch in tilt steps.
    """
    h, w = kt.shape[:2]
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    x = np.stack([np.ones(h * w), rr.ravel() - centre[0], cc.ravel() - centre[1]], 1)
    coef, *_ = np.linalg.lstsq(x, kt.reshape(-1, 2), rcond=None)
    k0, lk = coef[0], coef[1:].T  # lk: (2, 2), columns per row / per column step
    n = lk @ _J.T
    mirror = bool(np.linalg.det(n) < 0)
    q = n @ (np.diag([-1.0, 1.0]) if mirror else np.eye(2))
    theta = np.arctan2(q[1, 0] - q[0, 1], q[0, 0] + q[1, 1])
    p = 0.5 * ((q[0, 0] + q[1, 1]) * np.cos(theta) + (q[1, 0] - q[0, 1]) * np.sin(theta))
    if not p > 0:
        raise InputError("k_t grid has no usable scale", found=float(p))
    geo = ExperimentGeometry(frame, (h, w), rotation=float(np.degrees(theta)), mirror=mirror,
                             mode="lacbed")
    geo = geo.replace(gl=geo.g_x_length / p, tilt0=(float(k0[0]), float(k0[1])))
    grid = geo.tilt_grid().kt
    return geo, float(np.max(np.linalg.norm(grid - kt, axis=-1)) / p)


def _frame_attrs(frame: ZoneFrame) -> dict[str, Any]:
    return {"frame_lattice": np.asarray(frame.lattice.parameters, float),
            "frame_zone": np.asarray(frame.zone, float),
            "frame_x_axis": np.asarray(frame.x_axis, float),
            "frame_normal": np.asarray(frame.normal, float)}


def _geometry_attrs(geo: ExperimentGeometry) -> dict[str, Any]:
    out = _frame_attrs(geo.frame)
    out.update({"geometry_rotation": geo.rotation, "geometry_gl": geo.gl,
                "geometry_tilt0": np.asarray(geo.tilt0, float),
                "geometry_reference": np.asarray(geo.reference, float),
                "geometry_mirror": bool(geo.mirror),
                "geometry_shift": np.asarray(geo.shift, float),
                "geometry_image_shape": np.asarray(geo.image_shape, int),
                "geometry_mode": geo.mode})
    return out


def _geometry_from_attrs(attrs: Any) -> ExperimentGeometry | None:
    if "geometry_gl" not in attrs:
        return None
    frame = ZoneFrame(Lattice(*np.asarray(attrs["frame_lattice"], float)),
                      tuple(attrs["frame_zone"]), tuple(attrs["frame_x_axis"]),
                      tuple(attrs["frame_normal"]))
    mode = attrs.get("geometry_mode", "lacbed")
    return ExperimentGeometry(
        frame, tuple(int(v) for v in attrs["geometry_image_shape"]),
        rotation=float(attrs["geometry_rotation"]), gl=float(attrs["geometry_gl"]),
        tilt0=tuple(attrs["geometry_tilt0"]), reference=tuple(attrs["geometry_reference"]),
        mirror=bool(attrs["geometry_mirror"]), shift=tuple(attrs["geometry_shift"]),
        mode=mode.decode() if isinstance(mode, bytes) else str(mode))


# ============================================================ construction
def build_stack(images: np.ndarray, variance: np.ndarray, hkl: np.ndarray, *,
                metadata: dict[str, Any] | None = None,
                arrays: dict[str, np.ndarray] | None = None,
                frame: ZoneFrame | None = None, voltage_kv: float | None = None,
                source: str | None = None) -> LACBEDStack:
    """A :class:`~qcbed.experiment.LACBEDStack` from extraction results with NaNs.

    Samples with a non-finite intensity or a non-positive/non-finite variance
    are masked (image 0, variance 1 there). With a ``frame`` and
    ``arrays["kt"]`` the stack gets an :class:`~qcbed.experiment.ExperimentGeometry`
    (see :func:`geometry_from_kt`; the mismatch is recorded in the metadata).
    """
    img = np.asarray(images, float)
    var = np.asarray(variance, float)
    valid = np.isfinite(img) & np.isfinite(var) & (var > 0)
    meta = dict(metadata or {})
    meta["arrays"] = {k: np.asarray(v) for k, v in (arrays or {}).items() if v is not None}
    geometry = None
    kt = meta["arrays"].get("kt")
    if frame is not None and kt is not None:
        geometry, mismatch = geometry_from_kt(frame, kt)
        meta["geometry_mismatch_steps"] = mismatch
    return LACBEDStack(np.where(valid, img, 0.0), np.asarray(hkl, int),
                       variance=np.where(valid, var, 1.0), mask=valid, geometry=geometry,
                       voltage_kv=voltage_kv, source=source, metadata=meta)


# ============================================================ HDF5
def save_stack(stack: LACBEDStack, path: str | PathLike[str]) -> Path:
    """Write a LACBED stack to HDF5 (layout in the module docstring)."""
    import h5py

    p = Path(path)
    meta = dict(stack.metadata)
    arrays = meta.pop("arrays", {}) or {}
    mask = np.asarray(stack.mask, bool)
    with h5py.File(p, "w") as f:
        f.attrs["qcbed_format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["metadata"] = json.dumps(_jsonable(meta))
        for k, v in _flat_attributes(meta).items():
            f.attrs[k] = v
        if stack.geometry is not None:
            for k, v in _geometry_attrs(stack.geometry).items():
                f.attrs[k] = v
        if stack.voltage_kv is not None:
            f.attrs["voltage_kv"] = float(stack.voltage_kv)
        if stack.source is not None:
            f.attrs["source"] = str(stack.source)
        kw = {"compression": "gzip", "shuffle": True}
        f.create_dataset("images", data=np.where(mask, stack.images, np.nan), **kw)
        f.create_dataset("variance", data=np.where(mask, stack.variance, np.nan), **kw)
        f.create_dataset("hkl", data=np.asarray(stack.hkl, np.int32))
        f.create_dataset("mask", data=mask, **kw)
        f["images"].attrs["units"] = "counts (background subtracted)"
        f["variance"].attrs["units"] = "counts squared"
        f["hkl"].attrs["description"] = "Miller indices of the LACBED images"
        for name in _ARRAYS:
            if name in arrays and arrays[name] is not None:
                f.create_dataset(name, data=np.asarray(arrays[name], float), **kw)
        if "kt" in f:
            f["kt"].attrs["units"] = "1/Angstrom (zone frame k_x, k_y)"
        if "positions" in f:
            f["positions"].attrs["units"] = "detector pixels (y, x)"
    return p


def load_stack(path: str | PathLike[str]) -> LACBEDStack:
    """Read a stack written by :func:`save_stack` as a :class:`~qcbed.experiment.LACBEDStack`.

    Files with only ``images``, ``variance`` and ``hkl`` (NaN = invalid) are accepted.
    """
    import h5py

    p = Path(path)
    if not p.exists():
        raise InputError("stack file not found", source=p)
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"not an HDF5 file ({exc})", source=p) from exc
    with f:
        for name in ("images", "variance", "hkl"):
            if name not in f:
                raise InputError("not a LACBED stack file", source=p, tag=name,
                                 expected="datasets images, variance, hkl",
                                 found=sorted(f.keys()))
        fmt = f.attrs.get("qcbed_format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt not in (None, FORMAT_NAME):
            raise InputError("not a LACBED stack file", source=p, tag="qcbed_format",
                             expected=FORMAT_NAME, found=fmt)
        raw = f.attrs.get("metadata", "{}")
        meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        meta["arrays"] = {k: f[k][()] for k in _ARRAYS if k in f}
        img = f["images"][()]
        var = f["variance"][()]
        if "mask" in f:
            m = f["mask"][()].astype(bool)
            img = np.where(m, img, np.nan)
        geometry = _geometry_from_attrs(f.attrs)
        volt = f.attrs.get("voltage_kv")
        src = f.attrs.get("source")
        hkl = f["hkl"][()]
    stack = build_stack(img, var, hkl, metadata=meta, arrays=meta.pop("arrays"),
                        voltage_kv=None if volt is None else float(volt),
                        source=str(p) if src is None else str(src))
    if geometry is not None:
        stack.geometry = geometry
    return stack


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _flat_attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """Numeric attributes calibration_*, spots_*, detector_*, extraction_* for quick access."""
    out: dict[str, Any] = {}
    for section, prefix in (("calibration", "calibration_"), ("spot_map", "spots_"),
                            ("detector", "detector_"), ("extraction", "extraction_")):
        d = meta.get(section)
        if not isinstance(d, dict):
            continue
        for k, v in d.items():
            if v is None:
                continue
            if isinstance(v, (bool, np.bool_, str)):
                out[prefix + k] = v
            elif isinstance(v, (int, float, np.integer, np.floating)):
                out[prefix + k] = v
            else:
                try:
                    out[prefix + k] = np.asarray(v, float)
                except (TypeError, ValueError):
                    continue
    cal = meta.get("calibration")
    if isinstance(cal, dict) and "step_x" in cal:
        out["calibration_step_px"] = 0.5 * (cal["step_x"] + cal["step_y"])
    return out
