"""Labelled pattern results: intensities with their reflections, thicknesses and k_t.

:meth:`qcbed.bloch.simulation.Simulation.labelled_pattern` returns a :class:`Pattern`;
``Pattern.values`` is the bare array that :meth:`~Simulation.pattern` returns.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._core.hkl import hkl_label
from ..errors import InputError


@dataclass(frozen=True)
class Pattern:
    """Intensities I_g(t, k_t) on a tilt grid, labelled.

    Attributes
    ----------
    values : ndarray (n_t, n_out, ny, nx)
        Flux-normalised intensities, NaN outside the grid mask.
    hkl : ndarray (n_out, 3) int
        The reflection of each image (000 first when present).
    thickness : ndarray (n_t,)
        Thicknesses (Å).
    kt : ndarray (ny, nx, 2)
        Incident tangential wave vector (Å⁻¹, zone frame) of every pixel, NaN outside
        the mask.
    """

    values: np.ndarray
    hkl: np.ndarray
    thickness: np.ndarray
    kt: np.ndarray

    def __post_init__(self) -> None:
        v = np.asarray(self.values, float)
        h = np.asarray(self.hkl, int).reshape(-1, 3)
        t = np.atleast_1d(np.asarray(self.thickness, float))
        kt = np.asarray(self.kt, float)
        if v.ndim != 4 or v.shape[:2] != (len(t), len(h)) or kt.shape != v.shape[2:] + (2,):
            raise InputError("inconsistent pattern arrays", source="Pattern",
                             expected="values (n_t, n_out, ny, nx), hkl (n_out, 3), "
                                      "thickness (n_t,), kt (ny, nx, 2)",
                             found=(v.shape, h.shape, t.shape, kt.shape))
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "hkl", h)
        object.__setattr__(self, "thickness", t)
        object.__setattr__(self, "kt", kt)

    # ------------------------------------------------------------ access
    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def reflection_index(self, hkl: ArrayLike) -> int:
        """Position of reflection ``hkl`` in :attr:`hkl`."""
        h = np.asarray(hkl, int).reshape(3)
        hit = np.nonzero(np.all(self.hkl == h, axis=1))[0]
        if not len(hit):
            raise InputError("reflection not in the pattern", source="Pattern", tag="hkl",
                             expected=[hkl_label(x) for x in self.hkl], found=hkl_label(h))
        return int(hit[0])

    def thickness_index(self, thickness: float) -> int:
        """Position of ``thickness`` (Å; within 1e-6 Å) in :attr:`thickness`."""
        hit = np.nonzero(np.abs(self.thickness - float(thickness)) <= 1e-6)[0]
        if not len(hit):
            raise InputError("thickness not in the pattern", source="Pattern",
                             tag="thickness", expected=self.thickness.tolist(),
                             found=thickness)
        return int(hit[0])

    def sel(self, hkl: ArrayLike | Sequence[ArrayLike] | None = None,
            thickness: float | Sequence[float] | None = None) -> Pattern:
        """A pattern with some reflections and/or thicknesses only.

        Parameters
        ----------
        hkl : (3,) or (n, 3), optional
            Reflections to keep, in this order.
        thickness : float or sequence, optional
            Thicknesses (Å) to keep, in this order.
        """
        ih = np.arange(len(self.hkl))
        it = np.arange(len(self.thickness))
        if hkl is not None:
            ih = np.array([self.reflection_index(h)
                           for h in np.asarray(hkl, int).reshape(-1, 3)], int)
        if thickness is not None:
            it = np.array([self.thickness_index(t) for t in np.atleast_1d(thickness)], int)
        return Pattern(self.values[np.ix_(it, ih)], self.hkl[ih], self.thickness[it], self.kt)

    def image(self, hkl: ArrayLike, thickness: float | None = None) -> np.ndarray:
        """The (ny, nx) image of one reflection (at ``thickness``; default: the first)."""
        it = 0 if thickness is None else self.thickness_index(thickness)
        return self.values[it, self.reflection_index(hkl)]

    # ------------------------------------------------------------ display
    def plot(self, hkl: Sequence[ArrayLike] | None = None, thickness: float | None = None,
             *, ncols: int = 4, cmap: str = "gray"):
        """Images of the reflections at one thickness (matplotlib ``Figure``)."""
        import matplotlib.pyplot as plt

        p = self.sel(hkl=hkl) if hkl is not None else self
        it = 0 if thickness is None else p.thickness_index(thickness)
        n = len(p.hkl)
        nc = max(1, min(ncols, n))
        nr = -(-n // nc)
        fig, axes = plt.subplots(nr, nc, figsize=(2.6 * nc, 2.6 * nr), squeeze=False)
        for k, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if k < n:
                ax.imshow(p.values[it, k], cmap=cmap)
                ax.set_title(f"({hkl_label(p.hkl[k])})", fontsize=9)
        fig.suptitle(f"t = {p.thickness[it]:g} Å")
        return fig

    def _repr_html_(self) -> str:
        ny, nx = self.values.shape[2:]
        rows = "".join(
            f"<tr><td>({html.escape(hkl_label(h))})</td>"
            + "".join(f"<td>{np.nanmean(self.values[i, k]):.4g}</td>"
                      for i in range(len(self.thickness))) + "</tr>"
            for k, h in enumerate(self.hkl))
        head = "".join(f"<th>t = {t:g} Å</th>" for t in self.thickness)
        return (f"<b>Pattern</b>: {len(self.hkl)} reflections × {len(self.thickness)} "
                f"thicknesses on {ny} × {nx} k_t points (mean intensity)"
                f"<table><tr><th>hkl</th>{head}</tr>{rows}</table>")

    def __repr__(self) -> str:
        return (f"Pattern({len(self.thickness)} thicknesses × {len(self.hkl)} reflections × "
                f"{self.values.shape[2]} × {self.values.shape[3]})")
