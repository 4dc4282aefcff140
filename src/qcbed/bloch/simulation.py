"""The simulation set-up object: crystal + geometry + beams + potential → intensities.

Typical use::

    sim = Simulation(crystal, voltage_kv=200, zone=[1, -1, 0], x_axis=[0, 0, -1],
                     gmax=3.0, smax=0.05)
    sol = sim.solve(kt)                     # eigen-solutions, kt in Å⁻¹ (..., 2)
    I = sol.intensities([1000, 1500])       # (n_t, ..., n_out), no re-diagonalisation

or ``Simulation.from_dat(path)`` / ``Simulation.from_felix(folder)``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import (
    MAX_GMAX,
    MAX_THICKNESS,
    MAX_VOLTAGE_KV,
    check_hkl,
    check_integer,
    check_number,
    check_numbers,
)
from .._core.guard import check_memory
from ..constants import potential_to_u, wavenumber
from ..crystal import Crystal
from ..errors import InputError
from ..io.felix import FelixInput
from ..parallel import SerialExecutor, default_executor, make_executor
from ..scattering.structure_factors import PotentialModel, TabulatedPotential, structure_factors
from .beams import BeamPool, BeamSelection
from .builders import SetupDefaults, SimulationRecipe, dat_recipe, felix_recipe
from .convergence import (
    DEFAULT_ACCURACY,
    DEFAULT_CHECK_THICKNESS,
    Convergence,
    choose,
    estimate,
    sample_directions,
)
from .geometry import ZoneFrame, incident_kz
from .grids import TiltGrid
from .pattern import Pattern
from .potential import PotentialTable
from .solver import EigenChunk, EngineArrays, PatternChunk, pattern_chunk, solve_chunk
from .symmetry import pattern_operations, reduce_grid

#: Incident directions per engine task (``Simulation(chunk_size=…)``, project files).
DEFAULT_CHUNK_SIZE = 128


#: |U| (Å⁻²) below which a structure factor counts as zero (numerical noise of the IAM
#: at forbidden reflections is ~1e-18; real U_g are ≳ 1e-6).
_ZERO_U = 1e-12


def _finite_complex(value: object, name: str) -> complex:
    """``value`` as a complex number with finite real and imaginary parts."""
    try:
        c = complex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number", tag=name, expected="a complex number "
                         "in Å⁻²", found=value) from None
    check_number(c.real, name, unit="Å⁻²")
    check_number(c.imag, name, unit="Å⁻²")
    return c


def _warn_outside_pool(crystal: Crystal, outputs: np.ndarray, pool: np.ndarray | None,
                       gmax: float) -> None:
    """Warn about output reflections outside the beam pool (they are added to it alone,
    without the beams that couple them: their intensity is not converged)."""
    if pool is not None:
        have = {tuple(h) for h in np.asarray(pool, int).reshape(-1, 3)}
        out = [tuple(int(x) for x in h) for h in outputs if tuple(h) not in have and any(h)]
        why = "not in the explicit pool"
    else:
        far = crystal.lattice.g_length(outputs) > gmax + 1e-12
        out = [tuple(int(x) for x in h) for h in outputs[far]]
        why = f"beyond gmax = {gmax:g} Å⁻¹"
    if out:
        warnings.warn(f"output reflection(s) {', '.join(map(str, out[:5]))}"
                      f"{' …' if len(out) > 5 else ''} {why}: added to the pool without the "
                      "beams that couple them, so their intensities are not converged",
                      UserWarning, stacklevel=3)


def check_thickness(thickness: float | ArrayLike, name: str = "thickness") -> np.ndarray:
    """Thicknesses in Å as a 1-D array: finite, 0 ≤ t ≤ :data:`MAX_THICKNESS`."""
    return np.atleast_1d(check_numbers(thickness, name, low=0.0, high=MAX_THICKNESS,
                                       unit="Å")).reshape(-1)


@dataclass
class Solution:
    """Eigen-solutions for a set of incident directions, ready for any thickness.

    Attributes
    ----------
    kt : ndarray (..., 2)
        Tangential wave vectors (Å⁻¹) in the shape they were given.
    hkl : ndarray (n_out, 3)
        Output reflections (000 first).
    eigen : EigenChunk
        Stored eigenvalues, output rows × excitations, beam counts.
    phase : ndarray (n_out,) complex
        exp(−2πi g·s): converts internal-origin amplitudes to the user's origin.
    """

    kt: np.ndarray
    hkl: np.ndarray
    eigen: EigenChunk
    phase: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.kt.shape[:-1]

    def intensities(self, thickness: float | ArrayLike) -> np.ndarray:
        """Flux-normalised intensities I_g(t) → (n_t, ..., n_out); t in Å."""
        t = check_thickness(thickness)
        i = self.eigen.intensities(t)
        return i.reshape((len(t),) + self.shape + (len(self.hkl),))

    def amplitudes(self, thickness: float | ArrayLike) -> np.ndarray:
        """Exit-surface amplitudes φ_g(t) (user's origin) → (n_t, ..., n_out) complex."""
        t = check_thickness(thickness)
        psi = self.eigen.amplitudes(t) / self.eigen.m_out[None] * self.phase
        return psi.reshape((len(t),) + self.shape + (len(self.hkl),))

    @property
    def n_strong(self) -> np.ndarray:
        """Beams in the eigen-problem of each direction (shape of ``kt[..., 0]``)."""
        return self.eigen.n_strong.reshape(self.shape)

    def beam_counts(self) -> dict[str, float]:
        """Beam counts and what the solver had to do, over the directions.

        ``strong_min``/``strong_mean``/``strong_max`` and ``weak_mean``: beams in the
        eigen-problem and beams included by Bethe potentials; ``exact_fallback``:
        directions re-solved with the general complex solver (strong absorptive
        mixing or a failed physical guard); ``rejected``: directions returned as
        NaN because every solver failed the physical guard; ``clustered``:
        directions where the ``fast`` solver diagonalised near-degenerate
        Bloch-wave clusters exactly.
        """
        ns, nw = self.eigen.n_strong, self.eigen.n_weak
        return {"strong_min": int(ns.min()), "strong_mean": float(ns.mean()),
                "strong_max": int(ns.max()), "weak_mean": float(nw.mean()),
                "exact_fallback": int(self.eigen.n_fallback),
                "rejected": int(self.eigen.n_rejected),
                "clustered": int(self.eigen.n_clustered)}


class Simulation:
    """A Bloch-wave simulation set-up (Spence & Zuo 1992).

    Parameters
    ----------
    crystal : Crystal
    voltage_kv : float
        Accelerating voltage (kV).
    zone : array_like of 3
        Zone axis [uvw] towards the source.
    x_axis : array_like of 3
        Reciprocal vector along +x̂ of the zone frame.
    normal : array_like of 3, optional
        Surface normal [uvw] towards the source (default: the zone axis).
    pool : array_like (N, 3), optional
        Explicit beam pool. Without it an automatic pool is built from ``gmax``,
        ``smax`` and the tilt range ``kt_center`` ± ``kt_radius``.
    outputs : array_like (n, 3), optional
        Output reflections. Default: the pool beams with |g| ≤ ``aperture``. 000 is
        always output 0.
    aperture : float
        Output beams within |g| ≤ aperture (Å⁻¹), as the ``.dat`` ``aper`` line, when
        ``outputs`` is not given; only zero-order-Laue-zone beams of an automatic
        pool are taken. Default 1.0 Å⁻¹.
    potential : PotentialModel or TabulatedPotential
        Elastic scattering factors and absorption model, or a table of U_g, U′_g.
    selection : BeamSelection, optional
        Strong/weak beam rules. Default: chosen by the engine for ``accuracy``
        (see :mod:`qcbed.bloch.convergence`); with ``accuracy=None`` the legacy
        rules sgmin 0.3 Å⁻², Ω 30 (not converged).
    mode : {'fast', 'exact'}
        Eigen-solver: real-symmetric/Hermitian with perturbative absorption
        (default) or the general complex problem.
    gmax, smax : float, optional
        Automatic pool: |g| ≤ gmax (Å⁻¹), |S_g| ≤ smax (Å⁻¹). Without ``smax`` (and
        with ``accuracy``) the engine grows the pool from smax 0.05 Å⁻¹,
        gmax 3.0 Å⁻¹ until it is converged; with ``accuracy=None`` (or an
        explicit ``smax``) the pool is fixed (default gmax 3.0, smax 0.05).
    holz : bool
        Include higher-order Laue zones in an automatic pool.
    kt_center, kt_radius : optional
        Tilt range (Å⁻¹) over which an automatic pool must be complete.
    min_pool : int
        Grow smax until the automatic pool has this many beams.
    v0 : float, optional
        Mean inner potential in volts (default: from the scattering factors).
    u_abs0 : float, optional
        Mean absorptive potential U′₀ (Å⁻²) overriding the model (``.dat`` ``abs``).
    structure_factors : mapping hkl -> (U, U′), optional
        Values (Å⁻², user's origin) replacing the independent-atom model; linked
        to symmetry equivalents.
    accuracy : float or None
        Target ε = max |ΔI| / I_max of the beam settings against the converged
        reference (every pool beam strong, and a grown pool). Default 10⁻³. The
        engine chooses what the user did not fix (pool, selection) on a sample of
        directions of the tilt range; what was fixed is honoured, its error
        estimated (:attr:`convergence`) and a warning given above the target.
        None: legacy defaults, no checks.
    check_thickness : array_like, optional
        Thicknesses (Å) of the accuracy check (default 500, 1500, 3000 Å).
    min_strong : int
        Floor on the number of strong beams when the engine chooses the
        selection (Felix's ``min_strong_beams``).
    chunk_size : int
        Directions per batch.
    executor : optional
        A :mod:`qcbed.parallel` executor (or spec, see ``make_executor``). Default: the
        process-wide default executor (local processes on all cores) for jobs of at
        least two chunks per worker, in-process otherwise.
    """

    def __init__(
        self,
        crystal: Crystal,
        voltage_kv: float,
        zone: ArrayLike,
        x_axis: ArrayLike,
        *,
        normal: ArrayLike | None = None,
        pool: ArrayLike | None = None,
        outputs: ArrayLike | None = None,
        aperture: float = 1.0,
        potential: PotentialModel | TabulatedPotential | None = None,
        selection: BeamSelection | None = None,
        mode: str = "fast",
        gmax: float | None = None,
        smax: float | None = None,
        holz: bool = True,
        kt_center: ArrayLike = (0.0, 0.0),
        kt_radius: float = 0.0,
        min_pool: int = 0,
        v0: float | None = None,
        u_abs0: float | None = None,
        structure_factors: Mapping[tuple[int, int, int], complex | tuple[complex, complex]]
        | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        executor=None,
        accuracy: float | None = DEFAULT_ACCURACY,
        check_thickness: ArrayLike | None = None,
        min_strong: int = 0,
    ) -> None:
        voltage_kv = check_number(voltage_kv, "voltage_kv", low=0.0, low_open=True,
                                  high=MAX_VOLTAGE_KV, unit="kV")
        if gmax is not None:  # None: the engine's choice
            gmax = check_number(gmax, "gmax", low=0.0, low_open=True, high=MAX_GMAX,
                                unit="Å⁻¹")
        if smax is not None:
            smax = check_number(smax, "smax", low=0.0, low_open=True, unit="Å⁻¹")
        aperture = check_number(aperture, "aperture", low=0.0, unit="Å⁻¹")
        kt_radius = check_number(kt_radius, "kt_radius", low=0.0, unit="Å⁻¹")
        kc = check_numbers(kt_center, "kt_center", unit="Å⁻¹")
        if kc.shape != (2,):
            raise InputError("kt_center must be two numbers (k_x, k_y in Å⁻¹)",
                             tag="kt_center", expected="shape (2,)", found=kc.shape)
        kt_center = (float(kc[0]), float(kc[1]))
        min_pool = check_integer(min_pool, "min_pool", low=0)
        chunk_size = check_integer(chunk_size, "chunk_size", low=1)
        if v0 is not None:
            v0 = check_number(v0, "v0", unit="V")
        if u_abs0 is not None:
            u_abs0 = check_number(u_abs0, "u_abs0", low=0.0, unit="Å⁻²")
        for name, vec in (("zone", zone), ("x_axis", x_axis), ("normal", normal)):
            if vec is not None:
                check_numbers(vec, name)
        if pool is not None:
            pool = check_hkl(pool, "pool")
        if outputs is not None:
            outputs = check_hkl(outputs, "outputs")
        if mode not in ("fast", "exact"):
            raise InputError("mode must be 'fast' or 'exact'", tag="mode", found=mode)
        self.crystal = crystal
        self.voltage_kv = float(voltage_kv)
        if accuracy is not None and not (np.isfinite(accuracy) and 0 < accuracy < 1):
            raise InputError("accuracy must be a number in (0, 1)", tag="accuracy",
                             expected="e.g. 1e-3 (max |dI| / I_max)", found=accuracy)
        self.potential = potential or PotentialModel()
        self.accuracy = None if accuracy is None else float(accuracy)
        auto_selection = selection is None and self.accuracy is not None
        auto_pool = pool is None and smax is None and self.accuracy is not None
        if gmax is None:
            gmax = 3.0
        if smax is None:
            smax = 0.05
        self.selection = selection or BeamSelection(min_strong=int(min_strong))
        self.mode = mode
        self.chunk_size = int(chunk_size)
        if isinstance(executor, (str, int)):
            executor = make_executor(executor)
        self.executor = executor
        self.frame = ZoneFrame(crystal.lattice, tuple(np.asarray(zone, float)),
                               tuple(np.asarray(x_axis, float)),
                               None if normal is None else tuple(np.asarray(normal, float)))
        self._internal, self.origin_shift = crystal.centred()
        self._v0_override = v0
        self._u_abs0_override = u_abs0
        self.k0 = float(wavenumber(self.voltage_kv))
        u0 = self._mean_inner_u()
        self.k_in = float(np.sqrt(self.k0**2 + u0))
        self.pool_settings = dict(gmax=gmax, smax=smax, holz=holz, kt_center=kt_center,
                                  kt_radius=kt_radius, min_pool=min_pool)
        if outputs is None and pool is not None:
            ph = np.asarray(pool, int).reshape(-1, 3)
            outputs = ph[crystal.lattice.g_length(ph) <= aperture + 1e-12]
        elif outputs is not None:
            _warn_outside_pool(crystal, outputs, pool, gmax)
        if pool is not None:
            self.pool = BeamPool.from_hkl(self.frame, pool, outputs)
        else:
            self.pool = BeamPool.automatic(
                self._internal, self.frame, self.k_in, gmax=gmax, smax=smax,
                kt_center=kt_center, kt_radius=kt_radius, outputs=outputs, holz=holz,
                min_size=min_pool)
            if outputs is None:
                h = self.pool.hkl
                keep = (crystal.lattice.g_length(h) <= aperture + 1e-12) & (
                    np.abs(h @ np.asarray(self.frame.zone)) < 1e-9)
                self.pool = BeamPool.from_hkl(self.frame, h, h[keep])
        self.table = PotentialTable.build(self.pool.hkl, self._compute_u)
        self._overrides: dict[tuple[int, int, int], tuple[complex, complex]] = {}
        if structure_factors:
            self.set_structure_factors(structure_factors)
        self._arrays: EngineArrays | None = None
        self._version = 0
        self._symmetry_cache: dict = {}
        self._ops_cache: tuple[int, list] = (-1, [])
        self._rebuild = dict(normal=normal, v0=v0, u_abs0=u_abs0, chunk_size=chunk_size,
                             accuracy=self.accuracy, check_thickness=check_thickness)
        #: What the input file said about the pattern (grid, thicknesses, kind), or None.
        self.defaults: SetupDefaults | None = None
        #: The parsed ``felix.inp`` of :meth:`from_felix`, or None.
        self.felix: FelixInput | None = None
        self.check_thickness = tuple(float(t) for t in np.atleast_1d(
            DEFAULT_CHECK_THICKNESS if check_thickness is None else check_thickness))
        self._check_kt = sample_directions(kt_center, kt_radius)
        self._convergence: tuple[int, Convergence] | None = None
        if auto_selection or auto_pool:
            self._choose_settings(auto_pool, None if auto_selection else self.selection,
                                  int(min_strong))

    def with_changes(self, *, crystal: Crystal | None = None, voltage_kv: float | None = None,
                     potential: PotentialModel | None = None,
                     selection: BeamSelection | None = None, mode: str | None = None,
                     keep_structure_factors: bool = True) -> Simulation:
        """A new set-up with some inputs changed, the same beam pool and outputs.

        Keeping the pool fixed makes refinements of cell, Debye–Waller factors or
        voltage continuous (no beams appearing or vanishing). Structure factors
        set with :meth:`set_structure_factors` are re-applied unless
        ``keep_structure_factors=False``.
        """
        new = Simulation(
            crystal or self.crystal, self.voltage_kv if voltage_kv is None else voltage_kv,
            self.frame.zone, self.frame.x_axis, pool=self.pool.hkl, outputs=self.pool.outputs,
            potential=potential or self.potential, selection=selection or self.selection,
            mode=mode or self.mode, executor=self.executor, **self._rebuild)
        if keep_structure_factors and self._overrides:
            new.set_structure_factors(self._overrides)
        new.defaults = self.defaults
        new.felix = self.felix
        return new

    # ------------------------------------------------------------ convergence
    def _choose_settings(self, auto_pool: bool, selection: BeamSelection | None,
                         min_strong: int) -> None:
        """Let the engine choose the pool and/or the selection for ``self.accuracy``."""
        settings = self.pool_settings

        def make_pool(smax: float, gmax: float) -> tuple[BeamPool, PotentialTable]:
            pool = BeamPool.automatic(
                self._internal, self.frame, self.k_in, gmax=gmax, smax=smax,
                kt_center=settings["kt_center"], kt_radius=settings["kt_radius"],
                outputs=self.pool.outputs, holz=settings["holz"],
                min_size=settings["min_pool"])
            table = PotentialTable.build(pool.hkl, self._compute_u)
            if self._overrides:
                table.set_values(self._overrides, self.crystal, self.origin_shift)
            return pool, table

        pool, table, sel, conv = choose(
            k_in=self.k_in, normal=self.frame.normal_frame, pool=self.pool, table=self.table,
            make_pool=make_pool if auto_pool else None,
            smax=float(self.pool.meta.get("smax", settings["smax"])) if auto_pool else None,
            gmax=float(settings["gmax"]) if auto_pool else None, selection=selection,
            accuracy=float(self.accuracy), min_strong=min_strong, kt=self._check_kt,
            thickness=self.check_thickness)
        self.pool, self.table, self.selection = pool, table, sel
        if auto_pool:
            self.pool_settings = dict(settings, smax=conv.smax, gmax=conv.gmax)
        self._arrays = None
        self._convergence = (self._version, conv)

    @property
    def convergence(self) -> Convergence:
        """How converged the beam settings are (:class:`~qcbed.bloch.convergence.Convergence`).

        Chosen by the engine at set-up, or — for settings fixed by the user or a
        file — estimated on first access against every pool beam strong (a
        warning is given above the target). Re-estimated after structure-factor
        changes.
        """
        if self._convergence is None or self._convergence[0] != self._version:
            prev = self._convergence[1] if self._convergence is not None else None
            est = estimate(self.arrays, len(self.pool), self._check_kt, self.check_thickness,
                           accuracy=self.accuracy,
                           smax=None if prev is None else prev.smax,
                           gmax=None if prev is None else prev.gmax)
            if prev is not None:
                est = replace(est, pool_error=prev.pool_error, chosen=prev.chosen,
                              accuracy=prev.accuracy, steps=prev.steps)
            self._convergence = (self._version, est)
        return self._convergence[1]

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_recipe(cls, recipe: SimulationRecipe) -> Simulation:
        """Set-up from a :class:`~qcbed.bloch.builders.SimulationRecipe`."""
        where = recipe.location
        if where is None:
            sim = cls(*recipe.args, **recipe.kwargs)
            if recipe.structure_factors:
                sim.set_structure_factors(recipe.structure_factors)
        else:  # errors and warnings name the input file, the line and its key
            with where.errors(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sim = cls(*recipe.args, **recipe.kwargs)
                if recipe.structure_factors:
                    sim.set_structure_factors(recipe.structure_factors)
                sim.arrays  # noqa: B018 - builds the engine state: its absorption check warns
            where.warn(caught)
        sim.defaults = recipe.defaults
        sim.felix = recipe.felix
        return sim

    @classmethod
    def from_dat(cls, path, **kw) -> Simulation:
        """Set-up from a PyExtal/EMAPS ``.dat`` file (see :func:`qcbed.bloch.builders.dat_recipe`;
        the CBED net of ``conv``/``samp`` is ``sim.defaults.grid``)."""
        return cls.from_recipe(dat_recipe(path, **kw))

    @classmethod
    def from_felix(cls, folder, **kw) -> Simulation:
        """Set-up from a Felix input folder (see :func:`qcbed.bloch.builders.felix_recipe`;
        the parsed ``felix.inp`` is ``sim.felix``)."""
        return cls.from_recipe(felix_recipe(folder, **kw))

    # ------------------------------------------------------------ potential
    def _mean_inner_u(self) -> float:
        if self._v0_override is not None:
            return float(potential_to_u(self._v0_override, self.voltage_kv))
        if isinstance(self.potential, TabulatedPotential):
            return float(self.potential.lookup(np.zeros((1, 3), int))[0][0].real)
        sf = structure_factors(self._internal, np.zeros((1, 3), int), self.voltage_kv,
                               replace(self.potential, absorption="none"))
        return float(sf.u[0].real)

    def _compute_u(self, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.potential, TabulatedPotential):
            u, ua = self.potential.lookup(hkl)
            shift = np.exp(2j * np.pi * (hkl @ self.origin_shift))
            u, ua = u * shift, ua * shift
        else:
            sf = structure_factors(self._internal, hkl, self.voltage_kv, self.potential)
            u, ua = sf.u.copy(), sf.u_abs.copy()
        if self._u_abs0_override is not None:
            ua[np.all(hkl == 0, axis=1)] = self._u_abs0_override
        return u, ua

    def set_structure_factors(
        self, values: Mapping[tuple[int, int, int], complex | tuple[complex, complex]],
        *, symmetric: bool = True,
    ) -> None:
        """Replace U_g (and U′_g) of reflections, linking symmetry equivalents.

        Parameters
        ----------
        values : mapping hkl -> U or (U, U′)
            Å⁻², in the user's origin (the crystal as given). A bare U keeps the
            current U′.
        symmetric : bool
            Also set every symmetry-equivalent reflection (with its phase
            exp(2πi g·t)) and every Friedel mate (complex conjugate).
        """
        vals: dict[tuple[int, int, int], tuple[complex, complex]] = {}
        unknown = []
        for k, v in values.items():
            key = tuple(int(x) for x in check_hkl(k, "structure_factors")[0])
            tag = "U({},{},{})".format(*key)
            pair = v if isinstance(v, tuple) else (v, None)
            if len(pair) != 2:
                raise InputError("expected U or a pair (U, U′)", tag=tag,
                                 expected="a complex number or (U, U′) in Å⁻²", found=v)
            u_new = _finite_complex(pair[0], tag)
            ua_new = (self.structure_factor(key)[1] if pair[1] is None
                      else _finite_complex(pair[1], f"Uabs{tag[1:]}"))
            vals[key] = (u_new, ua_new)
            given = [u_new] if pair[1] is None else [u_new, ua_new]
            if max(abs(x) for x in given) > _ZERO_U and \
                    self.crystal.is_systematically_absent(key):
                raise InputError(f"{tag} is forbidden by the space group "
                                 f"{self.crystal.space_group_symbol} (systematic absence)",
                                 tag=tag, expected="U = U′ = 0 for a forbidden reflection",
                                 found=given[0] if len(given) == 1 else tuple(given))
            if self.table.lookup(np.array([key]))[0] < 0:
                unknown.append(tag)
            if symmetric and self.crystal.is_centrosymmetric:
                # a centre of symmetry at s fixes the phase of U_g to −2π g·s (mod π)
                allowed = -2 * np.pi * float(np.dot(key, self.origin_shift))
                for val, name in zip(vals[key], ("U", "U′")):
                    if abs(val) > 0:
                        dev = (np.angle(val) - allowed) % np.pi
                        if min(dev, np.pi - dev) > 1e-6:
                            raise InputError(
                                f"{name}{key} breaks the centre of symmetry of "
                                f"{self.crystal.space_group_symbol}",
                                expected=f"phase {np.degrees(allowed) % 360:.1f}° or "
                                         f"{(np.degrees(allowed) + 180) % 360:.1f}°",
                                found=f"{np.degrees(np.angle(val)) % 360:.3f}°")
        if unknown:
            warnings.warn(f"{', '.join(unknown)}: not a difference of two beams of the pool "
                          f"({len(self.pool)} beams); the value(s) have no effect",
                          UserWarning, stacklevel=2)
        changed = self.table.set_values(vals, self.crystal if symmetric else None,
                                        self.origin_shift)
        self._overrides.update(vals)
        self._version += 1
        if self._arrays is not None:
            rows = np.unique(np.asarray(changed, dtype=int))
            self._arrays.update_values(rows, self.table.u[rows], self.table.u_abs[rows],
                                       self._version)

    def default_phase(self, hkl: ArrayLike) -> float:
        """Reference phase φ (rad) of U_g = a·exp(iφ) when its signed amplitude a is refined.

        Centrosymmetric crystals: the axis allowed by the centre of symmetry s,
        φ = −2π g·s folded into (−π/2, π/2], so that a is the signed U_g when the
        origin is at a centre (U_111 < 0 for Si at origin choice 2). Otherwise the
        current phase of U_g (0 when it vanishes).
        """
        g = np.asarray(hkl, int).reshape(3)
        if self.crystal.is_centrosymmetric:
            phi = float(-2 * np.pi * np.dot(g, self.origin_shift))
            return float((phi + np.pi / 2) % np.pi - np.pi / 2) if \
                not np.isclose((phi + np.pi / 2) % np.pi, 0.0) else np.pi / 2
        u0 = self.structure_factor(g)[0]
        scale = max(float(np.abs(self.table.u).max()), 1e-30)
        return float(np.angle(u0)) if abs(u0) > 1e-10 * scale else 0.0

    def sf_coefficients(self, hkl: ArrayLike, phase: float | None = None,
                        symmetric: bool = True) -> np.ndarray:
        """∂(U table)/∂a for the real amplitude a of U_g = a·exp(iφ) (user's origin).

        Parameters
        ----------
        hkl : array of 3 ints
        phase : float, optional
            φ in radians; default the current phase of U_g (0 or π for a
            centrosymmetric crystal with the origin at a centre).
        symmetric : bool
            Include symmetry equivalents and Friedel mates (as
            :meth:`set_structure_factors`).

        Returns
        -------
        ndarray (M,) complex
            Coefficients over the rows of the U table (internal origin); the same
            vector serves U′_g.
        """
        g = np.asarray(hkl, int).reshape(3)
        if phase is None:
            phase = self.default_phase(g)
        base = np.exp(1j * phase)
        if symmetric:
            eq = self.crystal.equivalent_reflections(g, friedel=True)
            targets, phases, conj = eq.hkl, eq.phase, eq.conjugate
        else:
            targets = np.array([g, -g]) if np.any(g) else g[None]
            phases = np.ones(len(targets), complex)
            conj = np.array([False, True])[: len(targets)]
        coef = np.zeros(len(self.table.hkl), dtype=complex)
        rows = self.table.lookup(targets)
        for row, tgt, ph, cj in zip(rows, targets, phases, conj):
            if row < 0:
                continue
            c = ph * (np.conj(base) if cj else base)
            coef[row] = c * np.exp(2j * np.pi * float(np.dot(tgt, self.origin_shift)))
        return coef

    def structure_factor(self, hkl: ArrayLike) -> tuple[complex, complex]:
        """Current (U, U′) of one reflection in Å⁻², user's origin."""
        h = np.asarray(hkl, int).reshape(3)
        row = self.table.lookup(h[None])[0]
        if row >= 0:
            ph = np.exp(-2j * np.pi * float(np.dot(h, self.origin_shift)))
            return complex(self.table.u[row] * ph), complex(self.table.u_abs[row] * ph)
        if isinstance(self.potential, TabulatedPotential):
            u, ua = self.potential.lookup(h[None])
            return complex(u[0]), complex(ua[0])
        sf = structure_factors(self.crystal, h[None], self.voltage_kv, self.potential)
        return complex(sf.u[0]), complex(sf.u_abs[0])

    # ------------------------------------------------------------ engine
    @property
    def arrays(self) -> EngineArrays:
        """The compact engine state sent to workers."""
        if self._arrays is None:
            self._arrays = EngineArrays(
                g=self.pool.g, index=self.table.index, u=self.table.u.copy(),
                u_abs=self.table.u_abs.copy(), n_out=self.pool.n_out, k_in=self.k_in,
                normal=self.frame.normal_frame, rules=self.selection, mode=self.mode,
                version=self._version)
            _warn_unphysical_absorption(self._arrays)
        return self._arrays

    @property
    def outputs(self) -> np.ndarray:
        """Output reflections (n_out, 3), 000 first."""
        return self.pool.outputs

    def kt_from_reciprocal(self, kt_hkl: ArrayLike) -> np.ndarray:
        """k_t (Å⁻¹, zone frame) from reciprocal-lattice components (``.dat`` ``kt``)."""
        return self.frame.kt_from_reciprocal(kt_hkl)

    def _executor_for(self, n_chunks: int):
        if self.executor is not None:
            return self.executor
        ex = default_executor()
        return ex if n_chunks >= 2 * ex.n_workers else SerialExecutor()

    def _chunks(self, pts: np.ndarray) -> list[np.ndarray]:
        if not len(pts):
            raise InputError("no incident directions to solve", found=0)
        return [pts[i:i + self.chunk_size] for i in range(0, len(pts), self.chunk_size)]

    def solve_eigen(self, kt: ArrayLike, derivatives: tuple[np.ndarray, np.ndarray] | None =
                    None, *, progress: bool = False) -> EigenChunk:
        """Eigen-solutions for k_t (n, 2) in Å⁻¹, through the executor.

        ``derivatives`` = (∂U/∂p, ∂U′/∂p) over the U-table rows (see
        :meth:`sf_coefficients`) stores what analytic gradients need (``exact`` mode).
        """
        pts = check_numbers(kt, "kt", unit="Å⁻¹").reshape(-1, 2)
        incident_kz(pts, self.k_in)  # |k_t| < K: checked here, not in the workers
        chunks = self._chunks(pts)
        args = () if derivatives is None else (derivatives,)
        results = self._executor_for(len(chunks)).map_chunks(
            solve_chunk, self.arrays, chunks, args=args, progress=progress)
        return EigenChunk.concatenate(results)

    def _pattern_points(self, pts: np.ndarray, thickness: np.ndarray,
                        progress: bool) -> PatternChunk:
        """Intensities (n_t, n, n_out) computed chunk by chunk (no eigen-systems kept)."""
        incident_kz(pts, self.k_in)  # |k_t| < K: checked here, not in the workers
        chunks = self._chunks(pts)
        results = self._executor_for(len(chunks)).map_chunks(
            pattern_chunk, self.arrays, chunks, args=(thickness,), progress=progress)
        return PatternChunk.concatenate(results)

    def solve(self, kt: ArrayLike, *, progress: bool = False) -> Solution:
        """Diagonalise for tangential wave vectors ``kt`` (..., 2) in Å⁻¹.

        Returns a :class:`Solution` that gives intensities and amplitudes at any
        thickness without re-diagonalising.
        """
        k = np.asarray(kt, dtype=float)
        if k.shape[-1] != 2:
            raise InputError("kt must have a last axis of length 2 (k_x, k_y in Å⁻¹)",
                             found=k.shape)
        eig = self.solve_eigen(k.reshape(-1, 2), progress=progress)
        return Solution(kt=k, hkl=self.outputs.copy(), eigen=eig, phase=self._output_phase())

    def _output_phase(self) -> np.ndarray:
        return np.exp(-2j * np.pi * (self.outputs @ self.origin_shift))

    # ------------------------------------------------------------ patterns
    def _pattern_operations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Usable pattern symmetries of the current potential (cached per table version)."""
        key = self._version
        if self._ops_cache[0] != key:
            ops = pattern_operations(self._internal, self.frame, self.pool.hkl, self.pool.n_out,
                                     (self.table.hkl, self.table.u, self.table.u_abs))
            self._ops_cache = (key, ops)
        return self._ops_cache[1]

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
        """
        t = check_thickness(thickness)
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

    def describe(self) -> dict:
        """Settings summary (for results files)."""
        return {
            "voltage_kv": self.voltage_kv,
            "zone": list(self.frame.zone),
            "x_axis": list(self.frame.x_axis),
            "normal": list(self.frame.normal),
            "pool_size": len(self.pool),
            "n_out": self.pool.n_out,
            "potential": self.potential.describe(),
            "selection": {k: getattr(self.selection, k) for k in
                          ("sgmin", "omega", "sgmax", "bethe", "min_strong", "pad_multiple")},
            "mode": self.mode,
            "k0": self.k0,
            "k_in": self.k_in,
            "origin_shift": list(map(float, self.origin_shift)),
            "convergence": self.convergence.as_dict(),
        }


#: Warn about an absorption model whose matrix is not positive semi-definite when it
#: lets the summed intensity grow by more than this fraction per 1000 Å.
UNPHYSICAL_GROWTH_WARN = 0.10


def _warn_unphysical_absorption(arrays: EngineArrays) -> None:
    """Warn when the absorptive potential matrix U′_{g−h} is not positive semi-definite.

    A non-negative absorptive potential V′(r) has a positive semi-definite matrix;
    a negative eigenvalue (typically U′₀ too small for the U′_g, e.g. ``abs 0.0``
    in a ``.dat`` file) lets Bloch waves grow with thickness, so the summed
    intensity can exceed 1.

    The independent-atom absorptive potential is non-negative but nearly zero
    between the atoms, so its matrix has an eigenvalue near 0 and refining any
    single U′_g makes it slightly indefinite (λ_min ≈ −0.4 × 10⁻³ Å⁻², growth ≈ 8 % per
    1000 Å, for Si U′(111)
    20 % above Bird–King). The warning is given when the growth the model allows
    exceeds :data:`UNPHYSICAL_GROWTH_WARN` of the intensity per 1000 Å.
    """
    floor = arrays.absorption_floor
    if floor < 0 and np.expm1(4 * np.pi * arrays.max_growth * 1000.0) > UNPHYSICAL_GROWTH_WARN:
        warnings.warn(
            f"the absorptive potential is unphysical: its matrix U'(g-h) has the negative "
            f"eigenvalue {floor:.3e} A^-2 while U'0 = {arrays.u_abs0:.3e} A^-2 (U'0 is too "
            f"small for the U'_g). Bloch waves can grow with thickness (up to "
            f"exp(2*pi*{arrays.max_growth:.2e}*t), t in A) and the summed intensity can "
            "exceed 1; give a mean absorption U'0 (.dat 'abs') of at least "
            f"{arrays.u_abs0 - floor:.3e} A^-2 for a physical model.",
            UserWarning, stacklevel=3)


def outputs_index(sim: Simulation, hkl: Sequence[Sequence[int]]) -> np.ndarray:
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
