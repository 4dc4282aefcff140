"""Tilt-scan calibration: how the beam tilt moves the pattern on the detector.

In a LARBED acquisition with the descan off, tilting the beam by one scan step
moves the whole diffraction pattern on the detector by a fixed vector. From a
vacuum scan (no specimen) the direct beam's position per tilt p(r, c) is
measured (centre of mass or peak fit) and an affine map is fitted by least
squares,

    p(r, c) = p₀ + A · (r − r₀, c − c₀)ᵀ          (detector pixels, (y, x)),

with ``A`` (2 × 2) the detector displacement per scan step along rows (first
column) and columns (second column). ``A`` is reported as a rotation, a
handedness flip and step lengths (pixels per scan step):

* the scan-column direction (+c) maps onto the detector direction at angle θ
  from the detector +x axis (columns) towards +y (rows);
* without flip the scan-row direction (+r) maps onto θ + 90° (same handedness
  as the detector: θ = 0, steps 1 is the identity); with flip onto θ − 90°;
* ``steps`` = (|A·ê_r|, |A·ê_c|); ``shear`` is the departure of the two images
  from perpendicular (degrees).

Detector coordinates are (y, x) pixels with pixel (i, j) centred at (i, j).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from .readers import FourDData
from .streaming import Block, per_tilt


# ============================================================ rotation / flip helpers
def detector_axes(rotation_deg: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Unit detector vectors (y, x) of an "x-like" and a "y-like" axis.

    The x-like axis points at ``rotation_deg`` from detector +x towards +y; the
    y-like axis at +90° from it (−90° with ``flip``).
    """
    t = np.radians(rotation_deg)
    ex = np.array([np.sin(t), np.cos(t)])
    ey = np.array([np.cos(t), -np.sin(t)]) * (-1.0 if flip else 1.0)
    return ex, ey


def decompose(ax: np.ndarray, ay: np.ndarray) -> dict[str, Any]:
    """Rotation (deg), flip, step lengths and shear (deg) of the images of x- and y-like axes."""
    ax = np.asarray(ax, float)
    ay = np.asarray(ay, float)
    theta = float(np.degrees(np.arctan2(ax[0], ax[1])))
    det = float(np.linalg.det(np.column_stack([ay, ax])))
    flip = det < 0
    _, ey = detector_axes(theta, flip)
    ny = np.linalg.norm(ay)
    shear = float(np.degrees(np.arctan2(ey[0] * ay[1] - ey[1] * ay[0], ey @ ay))) if ny else 0.0
    return {"rotation_deg": theta, "flip": bool(flip), "step_x": float(np.linalg.norm(ax)),
            "step_y": float(ny), "shear_deg": shear}


# ============================================================ calibration object
@dataclass(frozen=True)
class TiltCalibration:
    """Affine map between scan (tilt) indices and detector positions of the beam.

    Attributes
    ----------
    matrix : ndarray (2, 2)
        Detector displacement (y, x) in pixels per scan step; column 0 per row
        step, column 1 per column step.
    origin : ndarray (2,)
        Detector position (y, x) of the direct beam at the ``reference`` tilt.
    reference : ndarray (2,)
        Scan position (row, col) of ``origin`` (may be fractional).
    rms : float
        RMS residual of the fit (pixels); 0 for a calibration built from parameters.
    n_used : int
        Tilts used in the fit (after outlier rejection).
    """

    matrix: np.ndarray
    origin: np.ndarray
    reference: np.ndarray
    rms: float = 0.0
    n_used: int = 0

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, float)
        if m.shape != (2, 2) or not np.all(np.isfinite(m)):
            raise InputError("calibration matrix must be a finite 2×2 array", found=m.shape)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "origin", np.asarray(self.origin, float).reshape(2))
        object.__setattr__(self, "reference", np.asarray(self.reference, float).reshape(2))

    # ------------------------------------------------------------ parameters
    @classmethod
    def from_parameters(cls, rotation_deg: float, step: float, *, flip: bool = False,
                        step_row: float | None = None, origin: ArrayLike = (0.0, 0.0),
                        reference: ArrayLike = (0.0, 0.0)) -> TiltCalibration:
        """Build from rotation (deg), flip and step (pixels per scan step).

        ``step_row`` is the step along scan rows when it differs from ``step``
        (the step along scan columns).
        """
        ex, ey = detector_axes(rotation_deg, flip)
        sr = step if step_row is None else step_row
        return cls(np.column_stack([sr * ey, step * ex]), origin, reference)

    @classmethod
    def static(cls, origin: ArrayLike, reference: ArrayLike = (0.0, 0.0)) -> TiltCalibration:
        """No beam motion (descan on): every tilt has the beam at ``origin``."""
        return cls(np.zeros((2, 2)), origin, reference)

    @property
    def parameters(self) -> dict[str, Any]:
        """rotation_deg, flip, step_x (per column step), step_y (per row step), shear_deg."""
        return decompose(self.matrix[:, 1], self.matrix[:, 0])

    @property
    def rotation_deg(self) -> float:
        """Angle of the scan-column direction on the detector (deg, from +x towards +y)."""
        return self.parameters["rotation_deg"]

    @property
    def flip(self) -> bool:
        """True when scan and detector have opposite handedness."""
        return self.parameters["flip"]

    @property
    def step(self) -> float:
        """Mean step length (detector pixels per scan step)."""
        p = self.parameters
        return 0.5 * (p["step_x"] + p["step_y"])

    @property
    def steps(self) -> tuple[float, float]:
        """(per row step, per column step) in detector pixels."""
        p = self.parameters
        return p["step_y"], p["step_x"]

    # ------------------------------------------------------------ mapping
    def scan_to_detector(self, rc: ArrayLike) -> np.ndarray:
        """Beam position (y, x) px at scan positions (row, col) (..., 2)."""
        d = np.asarray(rc, float) - self.reference
        return self.origin + d @ self.matrix.T

    def detector_to_scan(self, yx: ArrayLike) -> np.ndarray:
        """Scan position (row, col) (..., 2) at which the beam sits at detector (y, x)."""
        if abs(np.linalg.det(self.matrix)) < 1e-12:
            raise InputError("the calibration has no beam motion; detector_to_scan undefined")
        d = np.asarray(yx, float) - self.origin
        return self.reference + d @ np.linalg.inv(self.matrix).T

    def beam_positions(self, scan_shape: tuple[int, int]) -> np.ndarray:
        """(scan_y, scan_x, 2) beam positions on a whole scan grid."""
        rr, cc = np.meshgrid(np.arange(scan_shape[0]), np.arange(scan_shape[1]), indexing="ij")
        return self.scan_to_detector(np.stack([rr, cc], -1))

    def with_origin(self, origin: ArrayLike, reference: ArrayLike | None = None
                    ) -> TiltCalibration:
        """The same scan map with the beam at ``origin`` at tilt ``reference``.

        Use it to transfer a vacuum calibration to a specimen scan whose direct
        beam was located at one tilt (the specimen shifts nothing but the origin).
        """
        ref = self.reference if reference is None else reference
        return TiltCalibration(self.matrix, origin, ref, self.rms, self.n_used)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (also the HDF5 attributes of a saved stack)."""
        d = {"matrix": self.matrix.tolist(), "origin": self.origin.tolist(),
             "reference": self.reference.tolist(), "rms": float(self.rms),
             "n_used": int(self.n_used)}
        d.update(self.parameters)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TiltCalibration:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(np.asarray(d["matrix"], float), d["origin"], d["reference"],
                       float(d.get("rms", 0.0)), int(d.get("n_used", 0)))
        except KeyError as exc:
            raise InputError("calibration record lacks a field", tag=str(exc),
                             expected="matrix, origin, reference") from exc

    def __repr__(self) -> str:
        p = self.parameters
        return (f"TiltCalibration(rotation={p['rotation_deg']:.3f}°, flip={p['flip']}, "
                f"steps=({p['step_y']:.4f}, {p['step_x']:.4f}) px/step, "
                f"shear={p['shear_deg']:.3f}°, origin=({self.origin[0]:.2f}, "
                f"{self.origin[1]:.2f}) at tilt ({self.reference[0]:g}, {self.reference[1]:g}), "
                f"rms={self.rms:.3f} px)")


# ============================================================ beam finding
def _frame_positions(frames: np.ndarray, method: str, window: int, threshold: float,
                     near: np.ndarray | None, search: float) -> tuple[np.ndarray, np.ndarray]:
    """Beam (y, x) and integrated intensity of each frame of (n, dy, dx)."""
    n, dy, dx = frames.shape
    fr = frames.reshape(n, -1)
    if near is None:
        idx = np.argmax(fr, axis=1)
        py, px = np.divmod(idx, dx)
    else:
        s = int(np.ceil(search))
        off = np.arange(-s, s + 1)
        cy = np.rint(near[:, 0]).astype(int)
        cx = np.rint(near[:, 1]).astype(int)
        iy = np.clip(cy[:, None] + off, 0, dy - 1)
        ix = np.clip(cx[:, None] + off, 0, dx - 1)
        win = frames[np.arange(n)[:, None, None], iy[:, :, None], ix[:, None, :]]
        k = np.argmax(win.reshape(n, -1), axis=1)
        ky, kx = np.divmod(k, len(off))
        py, px = iy[np.arange(n), ky], ix[np.arange(n), kx]
    off = np.arange(-window, window + 1)
    iy = py[:, None] + off
    ix = px[:, None] + off
    inside = ((iy >= 0) & (iy < dy))[:, :, None] & ((ix >= 0) & (ix < dx))[:, None, :]
    win = frames[np.arange(n)[:, None, None], np.clip(iy, 0, dy - 1)[:, :, None],
                 np.clip(ix, 0, dx - 1)[:, None, :]].astype(float)
    win = np.where(inside, win, np.nan)
    bkg = np.nanmedian(np.where(_ring(window)[None], win, np.nan).reshape(n, -1), axis=1)
    net = np.nan_to_num(win - bkg[:, None, None])
    peak = net[:, window, window]
    if method == "com":
        w = np.where(net >= threshold * peak[:, None, None], net, 0.0)
        tot = w.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            y = py + (w.sum(axis=2) @ off) / tot
            x = px + (w.sum(axis=1) @ off) / tot
        return np.stack([y, x], -1), net.clip(0).sum(axis=(1, 2))
    if method == "peak":
        c = window
        with np.errstate(invalid="ignore", divide="ignore"):
            lg = np.log(np.clip(net, 1e-12, None))
            def vertex(a: np.ndarray, b: np.ndarray, cc: np.ndarray) -> np.ndarray:
                den = a - 2 * b + cc
                return np.where(np.abs(den) > 1e-12, 0.5 * (a - cc) / den, 0.0).clip(-1, 1)
            y = py + vertex(lg[:, c - 1, c], lg[:, c, c], lg[:, c + 1, c])
            x = px + vertex(lg[:, c, c - 1], lg[:, c, c], lg[:, c, c + 1])
        return np.stack([y, x], -1), net.clip(0).sum(axis=(1, 2))
    raise InputError("beam-finding method must be 'com' or 'peak'", found=method)


def _ring(window: int) -> np.ndarray:
    off = np.arange(-window, window + 1)
    d = np.maximum(np.abs(off)[:, None], np.abs(off)[None, :])
    return d == window


def beam_positions(data: FourDData, *, method: str = "com", window: int = 6,
                   threshold: float = 0.2, near: np.ndarray | None = None,
                   search: float = 6.0, progress: bool = False, workers: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Position of the brightest spot (the direct beam in vacuum) in every frame.

    Parameters
    ----------
    data : FourDData
    method : {'com', 'peak'}
        ``'com'``: centre of mass of the background-subtracted pixels above
        ``threshold`` × the peak within ``window`` px of the brightest pixel;
        ``'peak'``: Gaussian (log-parabola) vertex through the brightest pixel and
        its four neighbours.
    window : int
        Half-width (px) of the box around the maximum; its border gives the
        local background (median).
    threshold : float
        Fraction of the peak below which pixels are ignored ('com').
    near : ndarray (scan_y, scan_x, 2), optional
        Search only within ``search`` px of these positions (tracking a beam when
        it is not the brightest spot everywhere).

    Returns
    -------
    positions : ndarray (scan_y, scan_x, 2)
        Beam (y, x) in detector pixels.
    intensity : ndarray (scan_y, scan_x)
        Background-subtracted integral in the window (for weighting fits).
    """
    if method not in ("com", "peak"):
        raise InputError("beam-finding method must be 'com' or 'peak'", found=method)
    window = int(window)

    def func(b: Block) -> np.ndarray:
        fr = b.data.reshape((-1,) + b.data.shape[2:])
        nr = None if near is None else near[b.rows, b.cols].reshape(-1, 2)
        pos, inten = _frame_positions(fr, method, window, threshold, nr, search)
        return np.concatenate([pos, inten[:, None]], 1).reshape(b.data.shape[:2] + (3,))

    out = per_tilt(func, data, (3,), progress=progress, workers=workers, desc="beam positions")
    return out[..., :2], out[..., 2]


def locate_spot(frame: np.ndarray, near: ArrayLike | None = None, *, search: float = 5.0,
                window: int = 6, threshold: float = 0.2) -> np.ndarray:
    """Centre of mass (y, x) of the brightest spot of one pattern (within ``search`` of ``near``).

    Use it to refine hand-picked positions of 000, g₁, g₂ in a reference pattern.
    """
    fr = np.asarray(frame)
    if fr.ndim != 2:
        raise InputError("locate_spot needs one 2-D pattern", found=fr.shape)
    nr = None if near is None else np.asarray(near, float).reshape(1, 2)
    pos, _ = _frame_positions(fr[None], "com", int(window), threshold, nr, search)
    if not np.all(np.isfinite(pos)):
        raise InputError("no spot found near the given position", found=near)
    return pos[0]


# ============================================================ fitting
def fit_tilt_calibration(positions: ArrayLike, *, weights: ArrayLike | None = None,
                         reference: ArrayLike | None = None, robust: bool = True,
                         reject: float = 4.0, min_sigma: float = 0.05) -> TiltCalibration:
    """Least-squares affine scan → detector map from beam positions per tilt.

    Parameters
    ----------
    positions : ndarray (scan_y, scan_x, 2)
        Beam (y, x) per tilt (NaN where not measured).
    weights : ndarray (scan_y, scan_x), optional
        Relative weights (e.g. beam intensity); default equal.
    reference : (row, col), optional
        Tilt at which ``origin`` is reported (default the grid centre).
    robust : bool
        Iteratively reject tilts whose residual exceeds ``reject`` × the robust
        (MAD) scatter — tilts where another spot was brighter than the beam.

    Returns
    -------
    TiltCalibration
    """
    pos = np.asarray(positions, float)
    if pos.ndim != 3 or pos.shape[-1] != 2:
        raise InputError("positions must have shape (scan_y, scan_x, 2)", found=pos.shape)
    ny, nx = pos.shape[:2]
    ref = np.array([(ny - 1) / 2, (nx - 1) / 2]) if reference is None else \
        np.asarray(reference, float)
    rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    x = np.stack([np.ones(ny * nx), (rr - ref[0]).ravel(), (cc - ref[1]).ravel()], 1)
    y = pos.reshape(-1, 2)
    w = np.ones(ny * nx) if weights is None else np.asarray(weights, float).ravel().copy()
    ok = np.all(np.isfinite(y), axis=1) & np.isfinite(w) & (w > 0)
    if ok.sum() < 3:
        raise InputError("too few measured beam positions to fit a tilt calibration",
                         expected="≥ 3", found=int(ok.sum()))
    for _ in range(20):
        sw = np.sqrt(w[ok])
        coef, *_ = np.linalg.lstsq(x[ok] * sw[:, None], y[ok] * sw[:, None], rcond=None)
        res = np.linalg.norm(y - x @ coef, axis=1)
        if not robust:
            break
        sigma = max(1.4826 * np.median(res[ok]), min_sigma)
        new = np.all(np.isfinite(y), axis=1) & np.isfinite(w) & (w > 0) & \
            (res <= reject * sigma)
        if new.sum() < 3 or np.array_equal(new, ok):
            break
        ok = new
    rms = float(np.sqrt(np.mean(res[ok] ** 2)))
    return TiltCalibration(coef[1:].T, coef[0], ref, rms, int(ok.sum()))


def calibrate_from_vacuum(data: FourDData, *, method: str = "com", window: int = 6,
                          threshold: float = 0.2, reference: ArrayLike | None = None,
                          robust: bool = True, progress: bool = False, workers: int = 1
                          ) -> TiltCalibration:
    """Fit the tilt calibration of a vacuum scan (beam position per tilt → affine map).

    Also usable on a specimen scan whose direct beam is the brightest spot at
    most tilts (the robust fit rejects the others).
    """
    pos, _ = beam_positions(data, method=method, window=window, threshold=threshold,
                                progress=progress, workers=workers)
    return fit_tilt_calibration(pos, weights=None, reference=reference, robust=robust)
