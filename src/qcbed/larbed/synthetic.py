"""Synthetic LARBED datasets: known LACBED intensities → 4-D detector data.

Used by the tests, the benchmark and the documentation. Each frame (one tilt)
is a diffuse background plus one probe-shaped spot per reflection,

    E[x(y, x)] = b₀ + b₁ exp(−|p − p₀₀₀|² / 2w²) + Σ_g dose · I_g · P(p − p_g),

with P a pixel-integrated 2-D Gaussian of width σ normalised to 1 (so a disc
integral recovers dose · I_g up to the encircled fraction), and Poisson noise.
Writers stream frames to ``.npy`` or EMPAD ``.raw`` + ``.xml`` files row by row
(no memory map, so the resident memory stays small for any file size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from scipy.special import erf

from ..errors import InputError
from .readers import EMPAD_FRAME, EMPAD_RAW_ROWS


def _pixel_gaussian_1d(r: np.ndarray, sigma: float) -> np.ndarray:
    """∫ over a unit pixel centred at offset r of a unit-area Gaussian (1-D)."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf((r + 0.5) / s) - erf((r - 0.5) / s))


@dataclass(frozen=True)
class SpotRenderer:
    """Renders frames of probe-shaped spots on a diffuse background.

    Parameters
    ----------
    detector_shape : (dy, dx)
    probe_sigma : float
        Gaussian probe width σ (px).
    dose : float
        Counts of a spot of intensity 1 (all its pixels).
    background : float
        Constant diffuse background b₀ (counts per pixel).
    halo : float
        Peak b₁ (counts per pixel) of the diffuse halo around the direct beam.
    halo_width : float
        w (px).
    """

    detector_shape: tuple[int, int]
    probe_sigma: float = 1.0
    dose: float = 2.0e4
    background: float = 5.0
    halo: float = 10.0
    halo_width: float = 40.0

    def expected(self, positions: np.ndarray, intensities: np.ndarray, beam: np.ndarray
                 ) -> np.ndarray:
        """Noise-free frames (n, dy, dx).

        Parameters
        ----------
        positions : (n_refl, n, 2)
            Spot (y, x) per reflection and frame.
        intensities : (n_refl, n)
            Intensities I_g (dimensionless, × dose counts).
        beam : (n, 2)
            Direct-beam position (centre of the halo).
        """
        dy, dx = self.detector_shape
        n = beam.shape[0]
        yy = np.arange(dy, dtype=float)
        xx = np.arange(dx, dtype=float)
        gy = np.exp(-((yy[None] - beam[:, :1]) ** 2) / (2 * self.halo_width**2))
        gx = np.exp(-((xx[None] - beam[:, 1:]) ** 2) / (2 * self.halo_width**2))
        out = self.background + self.halo * gy[:, :, None] * gx[:, None, :]
        half = int(np.ceil(6 * self.probe_sigma)) + 1
        off = np.arange(-half, half + 1)
        idx = np.arange(n)[:, None, None]
        for pos, inten in zip(np.asarray(positions, float), np.asarray(intensities, float)):
            iy = np.rint(pos[:, 0]).astype(int)[:, None] + off
            ix = np.rint(pos[:, 1]).astype(int)[:, None] + off
            py = _pixel_gaussian_1d(iy - pos[:, :1], self.probe_sigma)
            px = _pixel_gaussian_1d(ix - pos[:, 1:], self.probe_sigma)
            val = self.dose * np.nan_to_num(inten)[:, None, None] * py[:, :, None] * \
                px[:, None, :]
            inside = ((iy >= 0) & (iy < dy))[:, :, None] & ((ix >= 0) & (ix < dx))[:, None, :]
            yi = np.broadcast_to(np.clip(iy, 0, dy - 1)[:, :, None], val.shape)
            xi = np.broadcast_to(np.clip(ix, 0, dx - 1)[:, None, :], val.shape)
            ti = np.broadcast_to(idx, val.shape)
            # one window per frame: no repeated index once off-detector pixels are dropped
            out[ti[inside], yi[inside], xi[inside]] += val[inside]
        return out

    def frames(self, positions: np.ndarray, intensities: np.ndarray, beam: np.ndarray,
               rng: np.random.Generator | None = None, dtype: type = np.float32
               ) -> np.ndarray:
        """Poisson-noisy frames (n, dy, dx) (noise-free when ``rng`` is None)."""
        lam = self.expected(positions, intensities, beam)
        if rng is None:
            return lam.astype(dtype)
        return rng.poisson(lam).astype(dtype)


def synthetic_larbed(intensities: np.ndarray, positions: np.ndarray, beam: np.ndarray,
                     renderer: SpotRenderer, rng: np.random.Generator | None = None,
                     dtype: type = np.float32) -> np.ndarray:
    """A whole synthetic dataset in memory (tilt_y, tilt_x, det_y, det_x).

    Parameters
    ----------
    intensities : (n_refl, ny, nx)
        LACBED intensities I_g of each tilt.
    positions : (n_refl, ny, nx, 2)
        Spot positions (y, x).
    beam : (ny, nx, 2)
        Direct-beam positions (halo centre).
    renderer : SpotRenderer
    rng : numpy Generator, optional
        Poisson noise source (None: noise-free expectation).
    """
    n_refl, ny, nx = np.shape(intensities)
    f = renderer.frames(np.asarray(positions).reshape(n_refl, ny * nx, 2),
                        np.asarray(intensities).reshape(n_refl, ny * nx),
                        np.asarray(beam).reshape(ny * nx, 2), rng, dtype)
    return f.reshape((ny, nx) + tuple(renderer.detector_shape))


def iter_synthetic_rows(intensities: Callable[[int], np.ndarray],
                        positions: Callable[[int], np.ndarray],
                        beam: Callable[[int], np.ndarray], n_rows: int,
                        renderer: SpotRenderer, rng: np.random.Generator | None = None,
                        dtype: type = np.float32) -> Iterable[np.ndarray]:
    """Frames row by row: callables give (n_refl, nx), (n_refl, nx, 2), (nx, 2) for row r."""
    for r in range(n_rows):
        yield renderer.frames(positions(r), intensities(r), beam(r), rng, dtype)


# ============================================================ writers
def write_npy_stream(path: str | PathLike[str], shape: tuple[int, ...], dtype: np.dtype,
                     rows: Iterable[np.ndarray]) -> Path:
    """Write a ``.npy`` file from consecutive C-order pieces along axis 0 (no memory map)."""
    p = Path(path)
    dt = np.dtype(dtype)
    expected = int(np.prod(shape)) * dt.itemsize
    written = 0
    with open(p, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                 "shape": tuple(int(s) for s in shape)})
        for piece in rows:
            b = np.ascontiguousarray(piece, dtype=dt)
            fh.write(b.tobytes())
            written += b.nbytes
    if written != expected:
        raise InputError("streamed pieces do not fill the declared shape", source=p,
                         expected=f"{expected} bytes", found=f"{written} bytes")
    return p


def write_empad(xml_path: str | PathLike[str], scan_shape: tuple[int, int],
                rows: Iterable[np.ndarray]) -> Path:
    """Write an EMPAD dataset: ``scan_x{nx}_y{ny}.raw`` + an XML naming it.

    Frames are 128 × 128 float32 with the two footer rows of the EMPAD layout
    (zero here); the XML carries the elements rosettasciio reads (raw file name,
    scan resolution, time stamp).
    """
    ny, nx = (int(s) for s in scan_shape)
    xml = Path(xml_path)
    raw = xml.with_name(f"scan_x{nx}_y{ny}.raw")
    h, w = EMPAD_FRAME
    footer = np.zeros((EMPAD_RAW_ROWS - h, w), "<f4")
    n = 0
    with open(raw, "wb") as fh:
        for piece in rows:
            fr = np.asarray(piece, "<f4").reshape(-1, h, w)
            buf = np.empty((len(fr), EMPAD_RAW_ROWS, w), "<f4")
            buf[:, :h] = fr
            buf[:, h:] = footer
            fh.write(buf.tobytes())
            n += len(fr)
    if n != ny * nx:
        raise InputError("frames written differ from the scan shape", source=raw,
                         expected=ny * nx, found=n)
    xml.write_text(
        f'<root name="{xml.stem}">'
        '<timestamp timestamp="0" isoformat="2024-01-01T00:00:00.000000"/>'
        '<software_version>1.2.2  (2021-08-20)</software_version>'
        f'<raw_file filename="{raw.name}"/>'
        '<scan_parameters mode="acquire"><scan_size>1.0</scan_size>'
        f"<scan_resolution_y>{ny}</scan_resolution_y>"
        f"<scan_resolution_x>{nx}</scan_resolution_x></scan_parameters>"
        "</root>")
    return xml
