"""The three coordinate systems of a QCBED experiment and the exact maps between them.

Seed paper (Ni, Busch & Zuo, PyExtal) §3.3; conventions in ``docs/conventions.md``,
section "Experimental geometry".

1. **Experimental pixels** (row r, column c) of the recorded image: origin at the
   top-left pixel centre, rows run down, columns run right.
2. **Display pixels** (row, column) ("theoretical sampling"): the experiment
   mirrored (optionally) and rotated counter-clockwise by ``rotation`` degrees about
   the image centre, so that the chosen reciprocal vector g_x points along +x
   (to the right). Regions of interest are drawn here.
3. **Simulation** k_t = (k_x, k_y) in Å⁻¹ in the zone frame of
   :class:`qcbed.bloch.geometry.ZoneFrame` (x̂ along g_x, ŷ = ẑ × x̂).

With Cartesian helpers xy = J·(rc − centre) (x = column − c₀ to the right,
y = −(row − r₀) up), mirror M = diag(−1, 1) (or 1) and the rotation R(θ), every
map is affine and is inverted in closed form:

    display:  xy_d = R(θ)·M·xy_e
    k_t:      k_t = tilt0 + p·(xy_d − xy_ref),      p = |g_x⊥| / gl  (Å⁻¹ per pixel)

where xy_ref is the reference display pixel at which k_t = tilt0. Display +x is x̂
and display +y (up) is ŷ. In a CBED pattern the disc of reflection g is displaced
by g_t/p pixels (g_t = (g·x̂, g·ŷ) from the reciprocal metric through
:meth:`ZoneFrame.g_frame`, so non-cubic cells are exact), i.e. by
(Δcol, Δrow) = gl·(g·x̂, −g·ŷ)/|g_x⊥|. In LACBED/LARBED data every reflection has its
own image and no displacement. A global shift and per-disc shifts, in experimental
pixels (Δrow, Δcol), are added last; they move the experimental sampling positions,
never the simulation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .._core.parameters import Parameter
from ..bloch.geometry import ZoneFrame
from ..bloch.grids import TiltGrid
from ..errors import InputError

__all__ = ["ExperimentGeometry", "rotation_from_gx_angle"]

#: xy = J·(rc − centre): x = column offset (right), y = −row offset (up).
_J = np.array([[0.0, 1.0], [-1.0, 0.0]])
_DISC_RE = re.compile(r"^disc_shift\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)"
                      r"\.(row|col)$")
_MODES = {"cbed": "cbed", "lacbed": "lacbed", "larbed": "lacbed", "d-lacbed": "lacbed",
          "dlacbed": "lacbed"}


def _rotation_matrix(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s], [s, c]])


def rotation_from_gx_angle(angle: float, mirror: bool = False) -> float:
    """The ``rotation`` (degrees) that brings g_x to +x in the display.

    Parameters
    ----------
    angle : float
        Direction of g_x in the *experimental* image, degrees counter-clockwise from
        the +column direction as seen on screen (row 0 at the top).
    mirror : bool
        Whether the geometry mirrors the experiment first (column axis reversed),
        which turns that direction into 180° − angle.
    """
    a = 180.0 - angle if mirror else angle
    return float(((-a + 180.0) % 360.0) - 180.0)


def _disc_key(hkl: ArrayLike) -> tuple[int, int, int]:
    a = np.asarray(hkl, dtype=float).reshape(-1)
    if a.shape != (3,) or np.any(np.abs(a - np.round(a)) > 1e-9):
        raise InputError("a reflection must be three integers", tag="hkl", found=hkl)
    return tuple(int(round(v)) for v in a)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class ExperimentGeometry:
    """Pixel ↔ display ↔ incident-k_t mapping of a CBED pattern or LACBED stack.

    Parameters
    ----------
    frame : ZoneFrame
        Zone-axis frame (lattice, zone axis, x axis g_x).
    image_shape : (H, W)
        Shape of the experimental image(s).
    rotation : float
        θ in degrees: the display is the (mirrored) experiment rotated
        counter-clockwise by θ as seen on screen, about the image centre.
    gl : float
        Scale: pixels (CBED) or rocking steps (LARBED) per |g_x⊥| (length of g_x
        perpendicular to the zone axis), > 0.
    tilt0 : (k_x, k_y)
        Incident k_t (Å⁻¹, zone frame) at the reference display pixel.
    reference : (row, col), optional
        Reference display pixel of ``tilt0``; default: the display centre.
    mirror : bool
        Mirror the experiment (reverse its column axis) before rotating; needed when
        the recorded image has the opposite handedness (e.g. Felix images).
    shift : (Δrow, Δcol)
        Global shift of the experimental sampling positions, pixels.
    disc_shifts : mapping hkl → (Δrow, Δcol)
        Extra shift per reflection (lens distortion), pixels.
    mode : {'cbed', 'lacbed'}
        ``'cbed'``: one image, disc g displaced by g_t/p; ``'lacbed'`` (alias
        ``'larbed'``): one image per reflection, no displacement.
    display_shape : (H_d, W_d), optional
        Display canvas (default: the image shape); its centre is the image of the
        experimental centre.
    """

    frame: ZoneFrame
    image_shape: tuple[int, int]
    rotation: float = 0.0
    gl: float = 1.0
    tilt0: tuple[float, float] = (0.0, 0.0)
    reference: tuple[float, float] | None = None
    mirror: bool = False
    shift: tuple[float, float] = (0.0, 0.0)
    disc_shifts: Mapping[tuple[int, int, int], tuple[float, float]] = field(
        default_factory=dict)
    mode: str = "lacbed"
    display_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        src = "ExperimentGeometry"
        shape = tuple(int(v) for v in np.asarray(self.image_shape).reshape(-1))
        if len(shape) != 2 or min(shape) < 1:
            raise InputError("image shape must be (H, W) ≥ 1", source=src, tag="image_shape",
                             found=self.image_shape)
        object.__setattr__(self, "image_shape", shape)
        dshape = shape if self.display_shape is None else tuple(
            int(v) for v in np.asarray(self.display_shape).reshape(-1))
        if len(dshape) != 2 or min(dshape) < 1:
            raise InputError("display shape must be (H, W) ≥ 1", source=src,
                             tag="display_shape", found=self.display_shape)
        object.__setattr__(self, "display_shape", dshape)
        for name in ("rotation", "gl"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or (name == "gl" and v <= 0):
                raise InputError(f"{name} must be finite" + (" and > 0" if name == "gl" else ""),
                                 source=src, tag=name, found=getattr(self, name))
            object.__setattr__(self, name, v)
        for name in ("tilt0", "shift"):
            object.__setattr__(self, name, self._pair(getattr(self, name), name))
        if self.reference is None:
            object.__setattr__(self, "reference", ((dshape[0] - 1) / 2.0,
                                                   (dshape[1] - 1) / 2.0))
        else:
            object.__setattr__(self, "reference", self._pair(self.reference, "reference"))
        object.__setattr__(self, "mirror", bool(self.mirror))
        mode = _MODES.get(str(self.mode).lower())
        if mode is None:
            raise InputError("unknown geometry mode", source=src, tag="mode",
                             expected=sorted(set(_MODES)), found=self.mode)
        object.__setattr__(self, "mode", mode)
        shifts = {_disc_key(k): self._pair(v, f"disc_shifts[{k}]")
                  for k, v in dict(self.disc_shifts).items()}
        object.__setattr__(self, "disc_shifts", shifts)
        if self.g_x_length <= 0:
            raise InputError("g_x has no component perpendicular to the zone axis",
                             source=src, tag="frame", found=self.frame.x_axis)

    @staticmethod
    def _pair(v: ArrayLike, name: str) -> tuple[float, float]:
        a = np.asarray(v, dtype=float).reshape(-1)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise InputError("expected two finite numbers", source="ExperimentGeometry",
                             tag=name, found=v)
        return (float(a[0]), float(a[1]))

    # ------------------------------------------------------------ constructors
    @classmethod
    def felix(cls, frame: ZoneFrame, convergence: float, image_radius: int
              ) -> ExperimentGeometry:
        """The Felix D-LACBED image geometry (2R × 2R, Δ = convergence/R Å⁻¹ per pixel).

        Pixel (row r, column c) ↔ k_x = (R − r + ½)Δ, k_y = −(c − R + ½)Δ, exactly
        :meth:`qcbed.bloch.grids.TiltGrid.felix` (``frame`` must be qcbed's: zone =
        −``incident_beam_direction``, :attr:`qcbed.io.FelixInput.zone`): rows run
        along −x̂, columns along −ŷ, the display convention rotated by −90°.
        """
        r = int(image_radius)
        if r < 1 or not convergence > 0:
            raise InputError("Felix geometry needs image_radius ≥ 1 and convergence > 0",
                             source="ExperimentGeometry.felix",
                             found=(image_radius, convergence))
        delta = float(convergence) / r
        g = cls(frame, (2 * r, 2 * r), rotation=-90.0, mirror=False, mode="lacbed")
        return replace(g, gl=g.g_x_length / delta, tilt0=(delta, 0.0))

    def replace(self, **changes) -> ExperimentGeometry:
        """A copy with some fields changed."""
        return replace(self, **changes)

    # ------------------------------------------------------------ basic quantities
    @cached_property
    def g_x_length(self) -> float:
        """|g_x⊥|, the length of g_x perpendicular to the zone axis (Å⁻¹)."""
        return float(self.frame.g_frame(self.frame.x_axis)[0])

    @property
    def pixel_size(self) -> float:
        """p = |g_x⊥|/gl, Å⁻¹ of k_t per (display) pixel."""
        return self.g_x_length / self.gl

    @property
    def image_centre(self) -> np.ndarray:
        """Centre of the experimental image, (row, col) = ((H−1)/2, (W−1)/2)."""
        return (np.asarray(self.image_shape, dtype=float) - 1.0) / 2.0

    @property
    def display_centre(self) -> np.ndarray:
        """Centre of the display canvas (row, col)."""
        return (np.asarray(self.display_shape, dtype=float) - 1.0) / 2.0

    @property
    def linear(self) -> np.ndarray:
        """2×2 matrix L: display (row, col) offsets = L · experimental offsets."""
        m = np.diag([-1.0, 1.0]) if self.mirror else np.eye(2)
        return _J.T @ _rotation_matrix(self.rotation) @ m @ _J

    def g_transverse(self, hkl: ArrayLike) -> np.ndarray:
        """(g·x̂, g·ŷ) in Å⁻¹ (reciprocal metric, via :meth:`ZoneFrame.g_frame`)."""
        return self.frame.g_frame(np.asarray(hkl, dtype=float))[..., :2]

    def disc_offset(self, hkl: ArrayLike | None) -> np.ndarray:
        """Display-pixel offset (Δrow, Δcol) of the disc of ``hkl`` (zero in LACBED mode)."""
        if hkl is None or self.mode != "cbed":
            return np.zeros(2)
        return _J.T @ self.g_transverse(hkl) / self.pixel_size

    def pixel_shift(self, hkl: ArrayLike | None) -> np.ndarray:
        """Global shift plus the disc shift of ``hkl`` (experimental pixels, Δrow, Δcol)."""
        s = np.asarray(self.shift, dtype=float)
        if hkl is not None:
            s = s + np.asarray(self.disc_shifts.get(_disc_key(hkl), (0.0, 0.0)))
        return s

    # ------------------------------------------------------------ experiment ↔ display
    def experiment_to_display(self, rc: ArrayLike) -> np.ndarray:
        """Display pixels (..., 2) of experimental pixels (row, col) (..., 2); no shifts."""
        d = np.asarray(rc, dtype=float) - self.image_centre
        return d @ self.linear.T + self.display_centre

    def display_to_experiment(self, rc: ArrayLike) -> np.ndarray:
        """Experimental pixels of display pixels (..., 2) (exact inverse; no shifts)."""
        d = np.asarray(rc, dtype=float) - self.display_centre
        return d @ self.linear + self.image_centre  # L orthogonal: L⁻¹ = Lᵀ

    # ------------------------------------------------------------ display ↔ k_t
    def display_to_kt(self, rc: ArrayLike) -> np.ndarray:
        """Incident k_t (Å⁻¹, (..., 2)) of display pixels of the 000 disc / LACBED image."""
        d = np.asarray(rc, dtype=float) - np.asarray(self.reference)
        return np.asarray(self.tilt0) + self.pixel_size * (d @ _J.T)

    def kt_to_display(self, kt: ArrayLike) -> np.ndarray:
        """Display pixels of incident k_t (exact inverse of :meth:`display_to_kt`)."""
        d = (np.asarray(kt, dtype=float) - np.asarray(self.tilt0)) / self.pixel_size
        return d @ _J + np.asarray(self.reference)

    # ------------------------------------------------------------ pixel ↔ k_t
    def affine(self, hkl: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(A, v) with experimental pixel = A·k_t + v for reflection ``hkl``.

        ``hkl`` None (or 000) is the direct beam (CBED) or any image (LACBED without
        disc shifts).
        """
        lin = self.linear
        a = lin.T @ _J.T / self.pixel_size
        ref = np.asarray(self.reference) + self.disc_offset(hkl)
        v = (self.image_centre + lin.T @ (ref - self.display_centre)
             - a @ np.asarray(self.tilt0) + self.pixel_shift(hkl))
        return a, v

    def kt_to_pixel(self, kt: ArrayLike, hkl: ArrayLike | None = None) -> np.ndarray:
        """Experimental pixel (row, col) (..., 2) where reflection ``hkl`` at incident k_t lies.

        Parameters
        ----------
        kt : array_like (..., 2)
            Incident tangential wave vectors, Å⁻¹ (zone frame).
        hkl : array_like of 3, optional
            The reflection (CBED: its disc; LACBED: its image, for its disc shift).
        """
        a, v = self.affine(hkl)
        return np.asarray(kt, dtype=float) @ a.T + v

    def pixel_to_kt(self, rc: ArrayLike, hkl: ArrayLike | None = None) -> np.ndarray:
        """Incident k_t (Å⁻¹, (..., 2)) of experimental pixels (row, col) of reflection ``hkl``."""
        a, v = self.affine(hkl)
        return (np.asarray(rc, dtype=float) - v) @ np.linalg.inv(a).T

    def set_tilt0(self, kt: ArrayLike, pixel: ArrayLike, hkl: ArrayLike | None = None
                  ) -> ExperimentGeometry:
        """A copy in which experimental ``pixel`` (row, col) of ``hkl`` has incident ``kt``.

        Pins a known incident direction (e.g. a HOLZ-line crossing, or the zone axis,
        kt = (0, 0)) to a pixel; the reference display pixel is kept, ``tilt0`` changes.
        """
        k = np.asarray(self._pair(kt, "kt"))
        here = self.pixel_to_kt(np.asarray(self._pair(pixel, "pixel")), hkl)
        t0 = np.asarray(self.tilt0) + k - here
        return replace(self, tilt0=(float(t0[0]), float(t0[1])))

    def tilt_grid(self, hkl: ArrayLike | None = None) -> TiltGrid:
        """k_t of every experimental pixel of ``hkl``'s image/disc as a :class:`TiltGrid`."""
        h, w = self.image_shape
        rr, cc = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float),
                             indexing="ij")
        kt = self.pixel_to_kt(np.stack([rr, cc], axis=-1), hkl)
        return TiltGrid(kt, np.ones((h, w), bool),
                        f"experiment rotation={self.rotation:g} gl={self.gl:g} "
                        f"mirror={self.mirror}")

    # ------------------------------------------------------------ images
    def rotated_shape(self) -> tuple[int, int]:
        """Display canvas that holds the whole rotated image (as ``resize=True``)."""
        h, w = self.image_shape
        corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], float)
        d = (corners - self.image_centre) @ self.linear.T
        ext = d.max(axis=0) - d.min(axis=0)
        return (int(np.ceil(ext[0] - 1e-9)) + 1, int(np.ceil(ext[1] - 1e-9)) + 1)

    def display_image(self, image: ArrayLike, order: int = 3, cval: float = np.nan
                      ) -> np.ndarray:
        """The experimental image resampled on the display canvas (spline of ``order``).

        Display pixels that fall outside the experimental image get ``cval``.
        """
        img = np.asarray(image, dtype=float)
        if img.shape != self.image_shape:
            raise InputError("image shape differs from the geometry", expected=self.image_shape,
                             found=img.shape)
        hd, wd = self.display_shape
        rr, cc = np.meshgrid(np.arange(hd, dtype=float), np.arange(wd, dtype=float),
                             indexing="ij")
        pos = self.display_to_experiment(np.stack([rr, cc], axis=-1))
        out = ndimage.map_coordinates(img, [pos[..., 0], pos[..., 1]], order=order,
                                      mode="nearest")
        h, w = self.image_shape
        tol = 1e-9
        outside = ((pos[..., 0] < -tol) | (pos[..., 0] > h - 1 + tol) | (pos[..., 1] < -tol)
                   | (pos[..., 1] > w - 1 + tol))
        out[outside] = cval
        return out

    # ------------------------------------------------------------ parameters
    def value(self, name: str) -> float:
        """Current value of a named sampling parameter (see :meth:`with_values`)."""
        if name == "rotation":
            return self.rotation
        if name == "gl":
            return self.gl
        if name in ("shift.row", "shift.col"):
            return self.shift[0 if name.endswith("row") else 1]
        if name in ("tilt0.x", "tilt0.y"):
            return self.tilt0[0 if name.endswith("x") else 1]
        m = _DISC_RE.match(name)
        if m:
            key = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            return self.disc_shifts.get(key, (0.0, 0.0))[0 if m.group(4) == "row" else 1]
        raise InputError("unknown geometry parameter", tag=name,
                         expected="rotation, gl, shift.row, shift.col, tilt0.x, tilt0.y or "
                                  "disc_shift(h,k,l).row/.col")

    def with_values(self, values: Mapping[str, float] | None) -> ExperimentGeometry:
        """A copy with named parameters set; unknown names are ignored.

        Names: ``rotation`` (deg), ``gl``, ``shift.row``, ``shift.col`` (px),
        ``tilt0.x``, ``tilt0.y`` (Å⁻¹), ``disc_shift(h,k,l).row``/``.col`` (px).
        """
        if not values:
            return self
        ch: dict = {}
        shift = list(self.shift)
        tilt0 = list(self.tilt0)
        discs = dict(self.disc_shifts)
        for name, v in values.items():
            if name in ("rotation", "gl"):
                ch[name] = float(v)
            elif name in ("shift.row", "shift.col"):
                shift[0 if name.endswith("row") else 1] = float(v)
                ch["shift"] = tuple(shift)
            elif name in ("tilt0.x", "tilt0.y"):
                tilt0[0 if name.endswith("x") else 1] = float(v)
                ch["tilt0"] = tuple(tilt0)
            else:
                m = _DISC_RE.match(name)
                if m:
                    key = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
                    cur = list(discs.get(key, (0.0, 0.0)))
                    cur[0 if m.group(4) == "row" else 1] = float(v)
                    discs[key] = tuple(cur)
                    ch["disc_shifts"] = discs
        return replace(self, **ch) if ch else self

    def sampling_parameters(self, refine: Iterable[str] = ("rotation", "gl", "shift.row",
                                                            "shift.col"),
                            disc_shifts: Iterable[ArrayLike] = ()) -> list[Parameter]:
        """Refinable sampling parameters (kind ``'sampling'``) at their current values.

        Parameters
        ----------
        refine : iterable of str
            Which of rotation, gl, shift.row, shift.col are refined (the others are
            returned fixed).
        disc_shifts : iterable of hkl
            Reflections that get their own (refined) disc shift.
        """
        refine = set(refine)
        unknown = refine - {"rotation", "gl", "shift.row", "shift.col"}
        if unknown:
            raise InputError("unknown sampling parameter", tag="refine",
                             expected=["rotation", "gl", "shift.row", "shift.col"],
                             found=sorted(unknown))
        out = [
            Parameter("rotation", self.rotation, "sampling", 0.1, -360.0, 360.0, "deg",
                      "rotation" in refine, ("geometry", "rotation")),
            Parameter("gl", self.gl, "sampling", 1e-3 * self.gl, 0.0, np.inf, "px/|g_x|",
                      "gl" in refine, ("geometry", "gl")),
            Parameter("shift.row", self.shift[0], "sampling", 0.1, -np.inf, np.inf, "px",
                      "shift.row" in refine, ("geometry", "shift.row")),
            Parameter("shift.col", self.shift[1], "sampling", 0.1, -np.inf, np.inf, "px",
                      "shift.col" in refine, ("geometry", "shift.col")),
        ]
        for h in disc_shifts:
            key = _disc_key(h)
            cur = self.disc_shifts.get(key, (0.0, 0.0))
            for i, ax in enumerate(("row", "col")):
                name = f"disc_shift({key[0]},{key[1]},{key[2]}).{ax}"
                out.append(Parameter(name, cur[i], "sampling", 0.1, -np.inf, np.inf, "px",
                                     True, ("geometry", name)))
        return out
