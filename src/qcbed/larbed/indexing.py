"""Indexing: where each reflection's spot falls on the detector at every tilt.

A :class:`SpotMap` maps Miller indices to detector displacements from the
direct beam (000) — linear in hkl:

    d(hkl) = P · hkl          (pixels (y, x); P is 2 × 3),

built either

* from a reference pattern: the zone axis and the detector positions of 000
  and of two non-collinear reflections g₁, g₂ of the zero-order Laue zone
  (every ZOLZ reflection is a g₁ + b g₂, so d = a d₁ + b d₂; no cell needed), or
* from the cell and orientation (:class:`~qcbed.bloch.geometry.ZoneFrame`):
  d = M · g_t with g_t = (g_x, g_y) the frame components (Å⁻¹, reciprocal
  metric of the lattice) and M (2 × 2) the detector pixels per Å⁻¹ — from a
  camera rotation, flip and pixel size, or fitted exactly to g₁, g₂.

With a frame the map also converts beam tilts to tangential wave vectors: a
tilt that moves the direct beam by Δp on the detector changes k_t by M⁻¹ Δp.

A :class:`SpotPredictor` combines the map with the tilt calibration (the
direct beam moves with the tilt when the descan is off) and an optional smooth
drift model fitted by :func:`qcbed.larbed.tracking.refine_positions`:

    p(hkl, r, c) = p₀₀₀(r₀, c₀) + A · (r − r₀, c − c₀) + P · hkl + δ(r, c) + δ_hkl.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..bloch.geometry import ZoneFrame
from ..bloch.grids import TiltGrid
from ..errors import InputError
from .calibration import TiltCalibration, decompose, detector_axes


def _hkl_array(hkl: ArrayLike, name: str = "hkl") -> np.ndarray:
    h = np.asarray(hkl)
    if h.size == 0 or h.shape[-1] != 3:
        raise InputError("reflections must be given as (n, 3) Miller indices", tag=name,
                         found=h.shape)
    if not np.all(np.equal(np.round(h), h)):
        raise InputError("Miller indices must be integers", tag=name, found=h.tolist())
    return np.round(h).astype(int).reshape(-1, 3)


@dataclass(frozen=True)
class SpotMap:
    """Detector displacement of each reflection from the direct beam.

    Attributes
    ----------
    hkl_matrix : ndarray (2, 3)
        Detector pixels (y, x) per unit of h, k, l.
    origin : ndarray (2,)
        Detector position (y, x) of 000 at the reference tilt.
    reference_tilt : ndarray (2,)
        Scan (row, col) at which ``origin`` (and the reference spots) were measured.
    zone : ndarray (3,) or None
        Zone axis [uvw]; when set, reflections off the zero-order Laue zone are
        refused unless a ``frame`` is known.
    kt_matrix : ndarray (2, 2) or None
        Detector pixels (y, x) per Å⁻¹ of frame (k_x, k_y); set when a ZoneFrame is known.
    frame : ZoneFrame or None
    """

    hkl_matrix: np.ndarray
    origin: np.ndarray
    reference_tilt: np.ndarray = field(default_factory=lambda: np.zeros(2))
    zone: np.ndarray | None = None
    kt_matrix: np.ndarray | None = None
    frame: ZoneFrame | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hkl_matrix", np.asarray(self.hkl_matrix, float).reshape(2, 3))
        object.__setattr__(self, "origin", np.asarray(self.origin, float).reshape(2))
        object.__setattr__(self, "reference_tilt",
                           np.asarray(self.reference_tilt, float).reshape(2))
        if self.zone is not None:
            object.__setattr__(self, "zone", np.asarray(self.zone, float).reshape(3))
        if self.kt_matrix is not None:
            object.__setattr__(self, "kt_matrix", np.asarray(self.kt_matrix, float).reshape(2, 2))

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_reference(cls, zone: ArrayLike, origin: ArrayLike, g1: ArrayLike,
                       pos1: ArrayLike, g2: ArrayLike, pos2: ArrayLike, *,
                       frame: ZoneFrame | None = None,
                       reference_tilt: ArrayLike = (0.0, 0.0)) -> SpotMap:
        """From a reference pattern: 000 at ``origin``, g₁ at ``pos1``, g₂ at ``pos2`` (y, x).

        Parameters
        ----------
        zone : [uvw]
            Zone axis; g₁ and g₂ must satisfy g·[uvw] = 0 and not be collinear.
        origin, pos1, pos2 : (y, x)
            Detector positions (pixels) in the reference pattern.
        frame : ZoneFrame, optional
            Cell and orientation: then the detector matrix per Å⁻¹ is fitted
            exactly to g₁, g₂ (enabling k_t grids and HOLZ positions).
        reference_tilt : (row, col)
            Tilt of the reference pattern in the scan.
        """
        z = np.asarray(zone, float).reshape(3)
        g = np.array([_hkl_array(g1, "g1")[0], _hkl_array(g2, "g2")[0]], float)
        if np.any(np.abs(g @ z) > 1e-9):
            raise InputError("reference reflections must lie in the zero-order Laue zone "
                             "(g·[uvw] = 0)", tag="g1/g2", found=(g @ z).tolist())
        if np.linalg.norm(np.cross(g[0], g[1])) < 1e-9:
            raise InputError("reference reflections g1, g2 are collinear", found=g.tolist())
        o = np.asarray(origin, float).reshape(2)
        d = np.column_stack([np.asarray(pos1, float).reshape(2) - o,
                             np.asarray(pos2, float).reshape(2) - o])
        if abs(np.linalg.det(d)) < 1e-9:
            raise InputError("reference spot positions are collinear with 000",
                             found=d.T.tolist())
        if frame is not None:
            if np.linalg.norm(np.cross(frame.lattice.cartesian_direct(frame.zone),
                                       frame.lattice.cartesian_direct(z))) > 1e-6 * \
                    np.linalg.norm(frame.lattice.cartesian_direct(z)):
                raise InputError("frame zone axis differs from the reference zone",
                                 expected=z.tolist(), found=list(frame.zone))
            gt = frame.g_frame(g)[:, :2].T  # (2, 2) columns g1_t, g2_t
            m = d @ np.linalg.inv(gt)
            return cls.from_matrix(frame, m, o, reference_tilt=reference_tilt)
        p = d @ np.linalg.pinv(g.T)  # (2, 3): exact on span(g1, g2)
        return cls(p, o, reference_tilt, z)

    @classmethod
    def from_matrix(cls, frame: ZoneFrame, kt_matrix: ArrayLike, origin: ArrayLike, *,
                    reference_tilt: ArrayLike = (0.0, 0.0)) -> SpotMap:
        """From a detector matrix M (pixels per Å⁻¹ of frame (k_x, k_y)) and a frame."""
        m = np.asarray(kt_matrix, float).reshape(2, 2)
        e = frame.g_frame(np.eye(3))[:, :2].T  # (2, 3): frame (x, y) of a*, b*, c*
        return cls(m @ e, origin, reference_tilt, np.asarray(frame.zone), m, frame)

    @classmethod
    def from_frame(cls, frame: ZoneFrame, origin: ArrayLike, pixel_size: float,
                   rotation_deg: float = 0.0, flip: bool = False, *,
                   reference_tilt: ArrayLike = (0.0, 0.0)) -> SpotMap:
        """From cell + orientation and the camera: pixel size (Å⁻¹/px), rotation, flip.

        The frame x̂ maps onto the detector direction at ``rotation_deg`` from +x
        towards +y, ŷ onto +90° (−90° with ``flip``).
        """
        if not np.isfinite(pixel_size) or pixel_size <= 0:
            raise InputError("pixel size must be > 0 (Å⁻¹ per pixel)", found=pixel_size)
        ex, ey = detector_axes(rotation_deg, flip)
        return cls.from_matrix(frame, np.column_stack([ex, ey]) / pixel_size, origin,
                               reference_tilt=reference_tilt)

    # ------------------------------------------------------------ properties
    @property
    def camera(self) -> dict[str, Any] | None:
        """Rotation (deg), flip, pixel size (Å⁻¹/px) of the frame → detector map."""
        if self.kt_matrix is None:
            return None
        p = decompose(self.kt_matrix[:, 0], self.kt_matrix[:, 1])
        return {"rotation_deg": p["rotation_deg"], "flip": p["flip"],
                "pixel_size": float(1 / np.sqrt(abs(np.linalg.det(self.kt_matrix)))),
                "shear_deg": p["shear_deg"]}

    def offsets(self, hkl: ArrayLike) -> np.ndarray:
        """Detector displacement (y, x) px of reflections from 000 → (n, 2)."""
        h = _hkl_array(hkl)
        if self.frame is None and self.zone is not None:
            off = np.abs(h @ self.zone) > 1e-9
            if np.any(off):
                raise InputError("reflection outside the zero-order Laue zone needs a cell "
                                 "(SpotMap.from_frame / frame=)", found=h[off].tolist())
        return h @ self.hkl_matrix.T

    def positions(self, hkl: ArrayLike) -> np.ndarray:
        """Detector positions (y, x) at the reference tilt → (n, 2)."""
        return self.origin + self.offsets(hkl)

    def with_origin(self, origin: ArrayLike, reference_tilt: ArrayLike | None = None
                    ) -> SpotMap:
        """The same map with 000 at ``origin`` (at ``reference_tilt``)."""
        ref = self.reference_tilt if reference_tilt is None else reference_tilt
        return replace(self, origin=np.asarray(origin, float),
                       reference_tilt=np.asarray(ref, float))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (saved with stacks)."""
        d: dict[str, Any] = {"hkl_matrix": self.hkl_matrix.tolist(),
                             "origin": self.origin.tolist(),
                             "reference_tilt": self.reference_tilt.tolist(),
                             "zone": None if self.zone is None else self.zone.tolist()}
        if self.kt_matrix is not None:
            d["kt_matrix"] = self.kt_matrix.tolist()
            d.update({f"camera_{k}": v for k, v in (self.camera or {}).items()})
        return d


def zolz_reflections(zone: ArrayLike, hmax: int) -> np.ndarray:
    """All hkl with |h|, |k|, |l| ≤ hmax and hkl·[uvw] = 0, 000 first → (n, 3)."""
    z = np.asarray(zone, float).reshape(3)
    r = np.arange(-int(hmax), int(hmax) + 1)
    g = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    g = g[np.abs(g @ z) < 1e-9]
    g = g[np.lexsort((g[:, 2], g[:, 1], g[:, 0], np.sum(g * g, 1)))]
    return g


def net_reflections(g1: ArrayLike, g2: ArrayLike, nmax: int) -> np.ndarray:
    """The 2-D net a·g₁ + b·g₂, |a|, |b| ≤ nmax, 000 first → (n, 3).

    With g₁, g₂ a basis of the reflections seen in the pattern (e.g. 200 and 020
    for an F-centred cubic crystal on [001]) this lists observable reflections
    only, without the cell's systematic absences.
    """
    a = np.arange(-int(nmax), int(nmax) + 1)
    aa, bb = np.meshgrid(a, a, indexing="ij")
    g = aa.reshape(-1, 1) * _hkl_array(g1)[0] + bb.reshape(-1, 1) * _hkl_array(g2)[0]
    g = np.unique(g, axis=0)
    return g[np.lexsort((g[:, 2], g[:, 1], g[:, 0], np.sum(g * g, 1)))]


def select_reflections(spots: SpotMap, calibration: TiltCalibration | None,
                       scan_shape: tuple[int, int], detector_shape: tuple[int, int], *,
                       hkl: ArrayLike | None = None, hmax: int = 6, margin: float = 10.0,
                       crystal: Any = None, net: tuple[ArrayLike, ArrayLike] | None = None
                       ) -> np.ndarray:
    """Reflections whose spot stays ≥ ``margin`` px inside the detector at every tilt.

    Parameters
    ----------
    spots : SpotMap
    calibration : TiltCalibration or None
        Beam motion with the tilt (None: no motion).
    scan_shape, detector_shape : (ny, nx)
    hkl : (n, 3), optional
        Candidates. Default: the net a·g₁ + b·g₂ (|a|, |b| ≤ ``hmax``) when ``net``
        = (g₁, g₂) is given, else all ZOLZ reflections with indices up to ``hmax``.
    margin : float
        Distance (px) to keep from the detector edge (the background annulus radius).
    crystal : Crystal, optional
        Drop systematically absent reflections.
    net : (g₁, g₂), optional
        Basis of the observed reflections (see :func:`net_reflections`).

    Returns
    -------
    ndarray (m, 3), sorted by distance from 000 (000 first when present).
    """
    if hkl is not None:
        cand = _hkl_array(hkl)
    elif net is not None:
        cand = net_reflections(net[0], net[1], hmax)
    else:
        if spots.zone is None:
            raise InputError("give hkl candidates or a SpotMap with a zone axis")
        cand = zolz_reflections(spots.zone, hmax)
    if crystal is not None:
        cand = np.array([h for h in cand if not np.any(h) or
                         not crystal.is_systematically_absent(h)]).reshape(-1, 3)
    ny, nx = scan_shape
    corners = np.array([[0, 0], [0, nx - 1], [ny - 1, 0], [ny - 1, nx - 1]], float)
    cal = calibration or TiltCalibration.static(spots.origin, spots.reference_tilt)
    beam = spots.origin + (corners - spots.reference_tilt) @ cal.matrix.T  # (4, 2)
    pos = beam[None] + spots.offsets(cand)[:, None]  # (n, 4, 2)
    dy, dx = detector_shape
    ok = np.all((pos[..., 0] >= margin) & (pos[..., 0] <= dy - 1 - margin)
                & (pos[..., 1] >= margin) & (pos[..., 1] <= dx - 1 - margin), axis=1)
    sel = cand[ok]
    dist = np.linalg.norm(spots.offsets(sel), axis=1) if len(sel) else np.zeros(0)
    return sel[np.argsort(dist, kind="stable")]


# ============================================================ drift model
def _monomials(order: int) -> list[tuple[int, int]]:
    return [(i, j) for n in range(order + 1) for i in range(n + 1) for j in [n - i]]


@dataclass(frozen=True)
class DriftModel:
    """Smooth detector shift δ(r, c) over the tilt grid plus per-reflection offsets.

    δ(r, c) = Σ_{i+j ≤ order} a_ij u^i v^j with u, v the scan row and column
    mapped to [−1, 1]; the offsets δ_hkl absorb static distortions (projector
    lens aberrations move each reflection a little differently).

    Attributes
    ----------
    order : int
    coef : ndarray (n_terms, 2)
        Polynomial coefficients (pixels) for (y, x).
    scan_shape : (ny, nx)
    hkl : ndarray (m, 3)
        Reflections with a static offset.
    offsets : ndarray (m, 2)
        Their offsets (pixels).
    rms : float
        RMS residual of the fit (pixels).
    """

    order: int
    coef: np.ndarray
    scan_shape: tuple[int, int]
    hkl: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    rms: float = 0.0

    def basis(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Polynomial design matrix (..., n_terms)."""
        ny, nx = self.scan_shape
        u = 2 * np.asarray(rows, float) / max(ny - 1, 1) - 1
        v = 2 * np.asarray(cols, float) / max(nx - 1, 1) - 1
        return np.stack([u**i * v**j for i, j in _monomials(self.order)], -1)

    def shift(self, rows: ArrayLike, cols: ArrayLike) -> np.ndarray:
        """δ(r, c) (..., 2) pixels."""
        return self.basis(np.asarray(rows), np.asarray(cols)) @ self.coef

    def offset(self, hkl: ArrayLike) -> np.ndarray:
        """Static offsets of reflections (n, 2) (zero for those not fitted)."""
        h = _hkl_array(hkl)
        out = np.zeros((len(h), 2))
        for k, row in enumerate(h):
            hit = np.nonzero(np.all(self.hkl == row, axis=1))[0]
            if len(hit):
                out[k] = self.offsets[hit[0]]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "coef": np.asarray(self.coef).tolist(),
                "scan_shape": list(self.scan_shape), "hkl": np.asarray(self.hkl).tolist(),
                "offsets": np.asarray(self.offsets).tolist(), "rms": float(self.rms)}


# ============================================================ predictor
@dataclass(frozen=True)
class SpotPredictor:
    """Spot positions of any reflection at any tilt.

    Attributes
    ----------
    spots : SpotMap
        Reflection offsets and 000 at the reference tilt.
    calibration : TiltCalibration or None
        Beam motion per scan step (its origin is replaced by ``spots.origin``);
        None when the descan is on and nothing moves.
    drift : DriftModel or None
        Smooth drift fitted to measured positions.
    """

    spots: SpotMap
    calibration: TiltCalibration | None = None
    drift: DriftModel | None = None

    @property
    def matrix(self) -> np.ndarray:
        """Detector pixels per scan step (2, 2) (zeros without calibration)."""
        return np.zeros((2, 2)) if self.calibration is None else self.calibration.matrix

    def beam(self, rows: ArrayLike, cols: ArrayLike, *, with_drift: bool = True
             ) -> np.ndarray:
        """Direct-beam (000) position (..., 2) at scan (rows, cols) (broadcast)."""
        r, c = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
        rc = np.stack([r, c], -1) - self.spots.reference_tilt
        out = self.spots.origin + rc @ self.matrix.T
        if with_drift and self.drift is not None:
            out = out + self.drift.shift(r, c)
        return out

    def positions(self, hkl: ArrayLike, rows: ArrayLike, cols: ArrayLike, *,
                  with_drift: bool = True) -> np.ndarray:
        """Spot positions (n_refl, ..., 2) of reflections at scan (rows, cols)."""
        h = _hkl_array(hkl)
        b = self.beam(rows, cols, with_drift=with_drift)
        off = self.spots.offsets(h)
        if with_drift and self.drift is not None:
            off = off + self.drift.offset(h)
        return b[None] + off.reshape((len(h),) + (1,) * (b.ndim - 1) + (2,))

    def grid_positions(self, hkl: ArrayLike, scan_shape: tuple[int, int], **kw: Any
                       ) -> np.ndarray:
        """Spot positions on the whole scan grid (n_refl, scan_y, scan_x, 2)."""
        rr, cc = np.meshgrid(np.arange(scan_shape[0]), np.arange(scan_shape[1]),
                             indexing="ij")
        return self.positions(hkl, rr, cc, **kw)

    def with_drift(self, drift: DriftModel | None) -> SpotPredictor:
        return replace(self, drift=drift)

    def kt_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Change of k_t (Å⁻¹, frame) per scan step: (per column u, per row v).

        Needs a SpotMap with a frame (detector pixels per Å⁻¹) and a calibration.
        """
        if self.spots.kt_matrix is None:
            raise InputError("k_t of the tilts needs the cell and orientation (a SpotMap "
                             "built with a ZoneFrame)")
        minv = np.linalg.inv(self.spots.kt_matrix)
        a = self.matrix
        return minv @ a[:, 1], minv @ a[:, 0]

    def tilt_grid(self, scan_shape: tuple[int, int], kt_reference: ArrayLike = (0.0, 0.0)
                  ) -> TiltGrid:
        """The incident k_t of every tilt as a :class:`~qcbed.bloch.grids.TiltGrid`.

        ``kt_reference`` is k_t (Å⁻¹, frame) at the reference tilt — the
        orientation, refined later; the steps come from the calibration.
        """
        u, v = self.kt_steps()
        ref = self.spots.reference_tilt
        return TiltGrid.regular(kt_reference, u, v, scan_shape, origin=(ref[0], ref[1]),
                                description="larbed tilt scan")
