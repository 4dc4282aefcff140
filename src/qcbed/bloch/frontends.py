"""Pattern front-ends of a simulation: tilt grids in, labelled intensities out.

:class:`PatternFrontEnds` is a mix-in of :class:`~qcbed.bloch.simulation.Simulation`:
LACBED/CBED patterns on a :class:`~qcbed.bloch.grids.TiltGrid` (solving only the
symmetry-irreducible directions, see :mod:`qcbed.bloch.symmetry`), the labelled
:class:`~qcbed.bloch.pattern.Pattern`, the CBED net of a ``.dat`` file and rocking
curves. The engine calls (``solve``, ``_pattern_points``) belong to the simulation.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .._core.guard import check_memory
from ..crystal import Crystal
from ..errors import InputError
from .beams import BeamPool
from .geometry import ZoneFrame
from .grids import TiltGrid
from .pattern import Pattern
from .potential import PotentialTable
from .solution import Solution, check_thickness
from .solver import PatternChunk
from .symmetry import pattern_operations, reduce_grid

#: :meth:`PatternFrontEnds.pattern` warns when a thickness lies outside the range of
#: those the engine's accuracy was checked at, widened by this factor on both sides. The
#: selection error depends on the thickness, not monotonically: the Si D-LACBED defaults
#: checked at 1 480 Å, on 24 other directions, 3.9 × 10⁻⁴ at 1 480 Å, 4.5 × 10⁻⁴ at 740,
#: 4.3 × 10⁻⁴ at 1 628, 9.3 × 10⁻⁴ at 2 220 and 5.4 × 10⁻⁴ at 2 960 Å (estimate 3.05 ×
#: 10⁻⁴; docs/validation.md). 10 % leaves room for a refined thickness.
CHECKED_THICKNESS_MARGIN = 1.1


class PatternFrontEnds:
    """Patterns, labelled patterns and rocking curves (mix-in of ``Simulation``)."""

    crystal: Crystal
    frame: ZoneFrame
    pool: BeamPool
    table: PotentialTable
    outputs: np.ndarray
    _internal: Crystal
    _version: int
    _symmetry_cache: dict
    _ops_cache: tuple[int, list]
    #: The engine (:class:`~qcbed.bloch.simulation.Simulation`): intensities of k_t points
    #: chunk by chunk, and eigen-solutions.
    _pattern_points: Callable[[np.ndarray, np.ndarray, bool], PatternChunk]
    solve: Callable[..., Solution]
    #: The accuracy target (None: legacy thresholds, no claim) and the thicknesses (Å)
    #: it was checked at (:mod:`qcbed.bloch.convergence`).
    accuracy: float | None
    check_thickness: tuple[float, ...]

    def _warn_unchecked_thickness(self, t: np.ndarray) -> None:
        """Warn when a thickness (Å) lies outside the checked range
        (:data:`CHECKED_THICKNESS_MARGIN`): the engine's accuracy says nothing there."""
        if self.accuracy is None or not len(t) or not self.check_thickness:
            return
        lo, hi = min(self.check_thickness), max(self.check_thickness)
        out = t[(t < lo / CHECKED_THICKNESS_MARGIN) | (t > hi * CHECKED_THICKNESS_MARGIN)]
        if len(out):
            checked = f"{lo:g} Å" if lo == hi else f"{lo:g}–{hi:g} Å"
            warnings.warn(
                f"the engine's accuracy ({self.accuracy:g}) was checked at {checked}; this "
                f"pattern includes {float(out[0]):g} Å, outside that range, where the "
                "selection error can be several times larger (it varies with thickness). "
                "Pass check_thickness=[...] to Simulation (qcbed simulate: -t) to check it "
                "there", UserWarning, stacklevel=3)

    def _pattern_operations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Usable pattern symmetries of the current potential (cached per table version)."""
        key = self._version
        if self._ops_cache[0] != key:
            ops = pattern_operations(self._internal, self.frame, self.pool.hkl, self.pool.n_out,
                                     (self.table.hkl, self.table.u, self.table.u_abs))
            self._ops_cache = (key, ops)
        return self._ops_cache[1]

    def pattern_symmetry(self, tables: Sequence[np.ndarray] = ()
                         ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Usable pattern operations [(R, S)] (identity first, see :mod:`.symmetry`).

        ``tables``: further arrays over the rows of the U table that must be invariant
        too, e.g. the coefficient tables ∂U/∂p, ∂U′/∂p of refined structure factors
        (:meth:`sf_coefficients`): only then do the derivatives of the intensities map
        between symmetry-equivalent directions like the intensities themselves.
        """
        ops = self._pattern_operations()
        if not tables or len(ops) < 2:
            return ops
        keep = pattern_operations(self._internal, self.frame, self.pool.hkl,
                                  self.pool.n_out, (self.table.hkl, *tables))
        kept = [r.tobytes() for r, _ in keep]
        return [o for o in ops if np.asarray(o[0]).tobytes() in kept]

    def symmetry_reduction(self, grid: TiltGrid):
        """Orbits of the grid's illuminated points under the usable pattern symmetry.

        The usable operations depend on the grid *and* the current structure
        factors (see :mod:`qcbed.bloch.symmetry`); the cache is keyed on both.
        """
        pts = np.ascontiguousarray(grid.points, dtype=float)
        ops = self._pattern_operations()
        key = (pts.shape, hashlib.blake2b(pts.view(np.uint8).reshape(-1).data,
                                          digest_size=16).hexdigest(),
               tuple(np.asarray(r).tobytes() for r, _ in ops))
        if key not in self._symmetry_cache:
            step = np.median(np.linalg.norm(np.diff(pts, axis=0), axis=1)) if len(pts) > 1 \
                else 1.0
            self._symmetry_cache = {key: reduce_grid(pts, ops, self.outputs, 1e-6 * step)}
        return self._symmetry_cache[key]

    def pattern(self, grid: TiltGrid, thickness: float | ArrayLike, *,
                use_symmetry: bool = True, progress: bool = False,
                return_stats: bool = False):
        """Intensities of every output beam on a tilt grid.

        Parameters
        ----------
        grid : TiltGrid
        thickness : float or array (n_t,)
            Thickness(es) in Å.
        use_symmetry : bool
            Solve only symmetry-irreducible directions (exact; see
            :mod:`qcbed.bloch.symmetry`).
        return_stats : bool
            Also return the solver counts of the solved directions (dict with
            ``directions``, ``exact_fallback``, ``rejected``, ``clustered``; see
            :meth:`Solution.beam_counts`).

        Returns
        -------
        ndarray (n_t, n_out, ny, nx)
            Flux-normalised intensities, NaN outside the grid mask and for
            directions rejected by the physical guard.
        stats : dict
            Only with ``return_stats``.

        Warns
        -----
        UserWarning
            When a thickness lies more than 10 % outside the range of those the
            engine's accuracy was checked at (``check_thickness``).
        """
        t = check_thickness(thickness)
        self._warn_unchecked_thickness(t)
        ny, nx = grid.shape
        check_memory(3.0 * 8 * len(t) * self.pool.n_out * ny * nx,
                     f"{len(t)} thickness(es) × {self.pool.n_out} output beams × {ny} × {nx} "
                     "pixels of intensity", tag="thickness/outputs/grid",
                     hint="use fewer thicknesses, output beams or pixels")
        pts = grid.points
        red = self.symmetry_reduction(grid) if use_symmetry else None
        if red is not None and red.n_ops > 1:
            res = self._pattern_points(pts[red.representatives], t, progress)
            vals = red.expand(res.intensities)
        else:
            res = self._pattern_points(pts, t, progress)
            vals = res.intensities
        images = grid.to_image(np.moveaxis(vals, -1, 1))
        return (images, res.counts()) if return_stats else images

    def labelled_pattern(self, grid: TiltGrid, thickness: float | ArrayLike, *,
                         use_symmetry: bool = True, progress: bool = False) -> Pattern:
        """As :meth:`pattern`, labelled: a :class:`~qcbed.bloch.pattern.Pattern` with the
        output hkl, the thicknesses (Å) and the k_t (Å⁻¹) of every pixel; ``.values`` is
        the array :meth:`pattern` returns."""
        vals = self.pattern(grid, thickness, use_symmetry=use_symmetry, progress=progress)
        kt = np.moveaxis(grid.to_image(grid.points.T), 0, -1)
        return Pattern(vals, self.outputs.copy(), np.atleast_1d(np.asarray(thickness, float)),
                       kt)

    def lacbed(self, grid: TiltGrid, thickness: float | ArrayLike, **kw) -> np.ndarray:
        """LACBED images of every output reflection on ``grid``: (n_t, n_out, ny, nx)."""
        return self.pattern(grid, thickness, **kw)

    def cbed_grid(self, conv: float, samp: int, center: ArrayLike = (0.0, 0.0)) -> TiltGrid:
        """The CBED tilt net: disc of radius conv·|x-axis| (``.dat`` ``conv``), (2·samp+1)² px."""
        gx = float(self.crystal.lattice.g_length(self.frame.x_axis))
        return TiltGrid.disc(center, conv * gx, samp)

    def rocking_curve(self, start: ArrayLike, stop: ArrayLike, n: int,
                      thickness: float | ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Intensities along a line of k_t from ``start`` to ``stop`` (Å⁻¹).

        Returns (kt (n, 2), I (n_t, n, n_out)).
        """
        grid = TiltGrid.line(start, stop, n)
        sol = self.solve(grid.points)
        return grid.points, sol.intensities(thickness)



def outputs_index(sim: PatternFrontEnds, hkl: Sequence[Sequence[int]]) -> np.ndarray:
    """Indices of reflections in ``sim.outputs`` (InputError when one is not an output)."""
    out = sim.outputs
    idx = []
    for h in hkl:
        hit = np.nonzero(np.all(out == np.asarray(h, int), axis=1))[0]
        if not len(hit):
            raise InputError("reflection is not an output beam", found=tuple(h),
                             expected="one of the output reflections")
        idx.append(int(hit[0]))
    return np.array(idx, dtype=int)
