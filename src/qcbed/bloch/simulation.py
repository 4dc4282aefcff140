"""The simulation set-up object: crystal + geometry + beams + potential → intensities.

Typical use::

    sim = Simulation(crystal, voltage_kv=200, zone=[1, -1, 0], x_axis=[0, 0, -1],
                     gmax=3.0, smax=0.05)
    sol = sim.solve(kt)                     # eigen-solutions, kt in Å⁻¹ (..., 2)
    I = sol.intensities([1000, 1500])       # (n_t, ..., n_out), no re-diagonalisation

or ``Simulation.from_dat(path)`` / ``Simulation.from_felix(folder)``.

This module holds the :class:`Simulation` object — its inputs, its state (pool,
potential table, selection, engine arrays, caches) and the engine calls through an
executor. The jobs around it live beside it: :mod:`~qcbed.bloch.setup` (potential
source, beam pool, set-up checks), :mod:`~qcbed.bloch.sf_updates` (structure-factor
updates, a mix-in), :mod:`~qcbed.bloch.frontends` (patterns and rocking curves, a
mix-in) and :mod:`~qcbed.bloch.solution` (:class:`Solution`); their public names are
re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import (
    MAX_GMAX,
    MAX_VOLTAGE_KV,
    check_hkl,
    check_integer,
    check_number,
    check_numbers,
)
from ..constants import wavenumber
from ..crystal import Crystal
from ..errors import InputError
from ..io.felix import FelixInput
from ..parallel import SerialExecutor, default_executor, make_executor
from ..scattering.structure_factors import PotentialModel, TabulatedPotential, b_equivalent
from .beams import BeamPool, BeamSelection
from .builders import SetupDefaults, SimulationRecipe, dat_recipe, felix_recipe
from .chunks import UNPHYSICAL_GROWTH_WARN
from .convergence import (
    DEFAULT_ACCURACY,
    DEFAULT_CHECK_THICKNESS,
    MAX_CHECK_POOL_SIZE,
    MAX_POOL_SIZE,
    TAIL_SMAX,
    TAIL_SMAX_FACTOR,
    Convergence,
    TailPlan,
    choose,
    estimate,
    sample_directions,
    selection_directions,
)
from .frontends import PatternFrontEnds, outputs_index
from .geometry import ZoneFrame, incident_kz
from .potential import PotentialTable
from .setup import (
    automatic_pool,
    compute_u,
    initial_pool,
    mean_inner_u,
    tail_source,
    warn_outside_pool,
    warn_unphysical_absorption,
)
from .sf_updates import StructureFactorUpdates
from .solution import Solution, check_thickness
from .solver import EigenChunk, EngineArrays, PatternChunk, pattern_chunk, solve_chunk
from .tail import TailCorrection, TailSource

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_AUTO_CHUNK_SIZE",
    "UNPHYSICAL_GROWTH_WARN",
    "Simulation",
    "Solution",
    "check_thickness",
    "outputs_index",
]

#: Incident directions per engine task when the job is split for several workers, and the
#: smallest automatic chunk (``Simulation(chunk_size=None)``, the default).
DEFAULT_CHUNK_SIZE = 128

#: Largest automatic chunk. The solver batches the directions of a chunk that share a
#: strong-beam count (:func:`qcbed.bloch.solver.solve_chunk`), so 128-direction chunks
#: give batches of ~5 directions on the Si D-LACBED image; 512-direction chunks with
#: :data:`~qcbed.bloch.solver.BATCH_ELEMENTS` 2¹⁹ made its directions 0.86–0.88× as costly
#: (benchmarks/RESULTS.md, session 11).
MAX_AUTO_CHUNK_SIZE = 512


def _warn_no_absorption(crystal: Crystal, potential: PotentialModel | TabulatedPotential,
                        table: PotentialTable, u_abs0: float | None) -> None:
    """Warn when an absorption model other than ``'none'`` gives U′ ≡ 0: the thermal
    models (Bird & King 1990; Weickenmeier & Kohl 1991's phonon part) vanish with every
    Debye–Waller factor zero (a CIF with B_iso = 0 throughout), and the intensities then
    do not decay with thickness."""
    model = getattr(potential, "absorption", "none")     # (a table has no model)
    if model == "none" or u_abs0 is not None or np.any(table.u_abs != 0):
        return
    why = (" because every atom has B = 0 Å² (thermal diffuse scattering needs the "
           "Debye–Waller factors; set B_iso in the CIF)"
           if not np.any(b_equivalent(crystal)) else "")
    warnings.warn(f"the absorption model '{model}' gives no absorption "
                  f"(U'_g = 0 for every g){why}: the simulated intensities do not decay "
                  "with thickness", UserWarning, stacklevel=3)


class Simulation(StructureFactorUpdates, PatternFrontEnds):
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
    tail : bool
        With an automatic pool chosen by the engine (``accuracy`` set, no ``pool``
        or ``smax``): eliminate the beams beyond the pool to second order, on the
        strong and the weak rows (:mod:`qcbed.bloch.tail`), and check the pool's
        convergence with them. On by default: on the Si D-LACBED the pattern comes
        ~2 × 10⁻³ from the (s_max 0.8, g_max 3–4) pool diagonalised instead of
        1.1 × 10⁻² and the reported pool error falls from 2.9 × 10⁻² to 2.5 × 10⁻³
        (still above 10⁻³), for ~9 s more CPU at set-up and +12–15 % per direction
        at the same selection (docs/validation.md, "The tail by default"). A cell
        whose starting tail is too large
        (:func:`~qcbed.bloch.convergence.tail_too_large`) or whose check and fit
        would exceed :data:`~qcbed.bloch.convergence.MAX_TAIL_WALK_WORK` goes
        without (the walk says so). The tail is computed from the set-up potential and geometry
        and held fixed by :meth:`set_structure_factors` and :meth:`with_changes`
        (a 1 % change of U(111) moves the pattern by 2 × 10⁻⁵ through it).
    min_strong : int
        Floor on the number of strong beams when the engine chooses the
        selection (Felix's ``min_strong_beams``).
    chunk_size : int, optional
        Incident directions per engine task (one call of the solver; it batches the
        directions of a task that share a matrix size). Default (None): automatic —
        a quarter of the job per worker, at least :data:`DEFAULT_CHUNK_SIZE` and at most
        :data:`MAX_AUTO_CHUNK_SIZE` (a serial 5 852-direction image: 512; a
        961-direction region on 2 workers: 128). An integer is used as given (results
        then agree across executors to round-off).
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
        chunk_size: int | None = None,
        executor=None,
        accuracy: float | None = DEFAULT_ACCURACY,
        check_thickness: ArrayLike | None = None,
        min_strong: int = 0,
        tail: bool = True,
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
        if chunk_size is not None:
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
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        if isinstance(executor, (str, int)):
            executor = make_executor(executor)
        self.executor = executor
        self.frame = ZoneFrame(crystal.lattice, tuple(np.asarray(zone, float)),
                               tuple(np.asarray(x_axis, float)),
                               None if normal is None else tuple(np.asarray(normal, float)))
        self._internal, self.origin_shift = crystal.centred()
        self._u_abs0_override = u_abs0
        self.k0 = float(wavenumber(self.voltage_kv))
        u0 = mean_inner_u(self._internal, self.voltage_kv, self.potential, v0)
        self.k_in = float(np.sqrt(self.k0**2 + u0))
        self._explicit_pool = pool is not None
        self.pool_settings = dict(gmax=gmax, smax=smax, holz=holz, kt_center=kt_center,
                                  kt_radius=kt_radius, min_pool=min_pool)
        if auto_pool:
            # the engine's check solves the pool with every beam strong (N³ per
            # direction): large cells start from the MAX_POOL_SIZE beams nearest Bragg
            self.pool_settings["max_pool"] = MAX_POOL_SIZE
        if outputs is not None:
            warn_outside_pool(crystal, outputs, pool, gmax)
        self.pool = initial_pool(crystal, self._internal, self.frame, self.k_in, pool, outputs,
                                 aperture, self.pool_settings)
        self.table = PotentialTable.build(self.pool.hkl, self._compute_u)
        _warn_no_absorption(crystal, self.potential, self.table, u_abs0)
        self._overrides: dict[tuple[int, int, int], tuple[complex, complex]] = {}
        self._arrays: EngineArrays | None = None
        #: (pool, |U_g| of its beams from the set-up potential): the Ω criterion's
        #: coupling, kept through structure-factor updates and with_changes
        self._coupling: tuple[BeamPool | None, np.ndarray | None] = (None, None)
        self._version = 0
        self._symmetry_cache: dict = {}
        self._ops_cache: tuple[int, list] = (-1, [])
        if structure_factors:
            self.set_structure_factors(structure_factors)
        # what with_changes hands on; kt_center/kt_radius place the accuracy check's
        # directions (without them a variant checked the default disc, not the data's)
        self._rebuild = dict(normal=normal, v0=v0, u_abs0=u_abs0, chunk_size=chunk_size,
                             accuracy=self.accuracy, check_thickness=check_thickness,
                             kt_center=kt_center, kt_radius=kt_radius)
        #: What the input file said about the pattern (grid, thicknesses, kind), or None.
        self.defaults: SetupDefaults | None = None
        #: The parsed ``felix.inp`` of :meth:`from_felix`, or None.
        self.felix: FelixInput | None = None
        self.check_thickness = tuple(float(t) for t in np.atleast_1d(
            DEFAULT_CHECK_THICKNESS if check_thickness is None else check_thickness))
        self._check_kt = sample_directions(kt_center, kt_radius)
        self._select_kt = selection_directions(kt_center, kt_radius)
        self._convergence: tuple[int, Convergence] | None = None
        self._use_tail = bool(tail)
        #: The pool's tail (:mod:`qcbed.bloch.tail`), or None.
        self.tail: TailCorrection | None = None
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
        if np.array_equal(new.pool.hkl, self.pool.hkl):
            # the same strong/weak selection rule: refinements of the crystal or the
            # voltage do not move beams between strong and Bethe-weak
            new._coupling = (new.pool, self.selection_coupling)
            new.tail = self.tail
            # the same pool: built from the same limits (or given) as this set-up's
            new._explicit_pool = self._explicit_pool
            new.pool_settings = dict(self.pool_settings)
            new._arrays = None
            if self._convergence is not None:
                # the set-up's record (pool check, whether the engine chose) holds for
                # the same pool; the selection error is re-estimated on first access
                prev = self._convergence[1]
                new._convergence = (-1, replace(prev, chosen=prev.chosen and selection is None))
        new.defaults = self.defaults
        new.felix = self.felix
        return new

    def with_grown_pool(self, smax_factor: float = 4.0, gmax_step: float = 0.0
                        ) -> Simulation:
        """This set-up on a larger automatic pool: s_max × ``smax_factor``, g_max +
        ``gmax_step`` (Å⁻¹), the same strong-beam selection rule, outputs, tilt disc
        and structure-factor overrides; no accuracy walk (the pool is the point).

        For the pool entry of the error budget (:mod:`qcbed.refine.budget`): the
        pool error of :attr:`convergence` is an intensity change; this variant lets a
        refinement measure what the growth does to its parameters. The limits start
        from :attr:`automatic_pool_limits` (InputError when the pool was given). A
        set-up with a tail (:mod:`qcbed.bloch.tail`) keeps its pool and grows the
        tail's s_max × 2 instead (the growth that limits its accuracy; the
        arguments do not apply).
        """
        smax_factor = check_number(smax_factor, "smax_factor", low=1.0)
        gmax_step = check_number(gmax_step, "gmax_step", low=0.0, unit="Å⁻¹")
        if self.tail is not None:
            return self._with_grown_tail()
        limits = self.automatic_pool_limits
        if limits is None:
            raise InputError("the beam pool was given (a file or the caller fixed it): "
                             "there is no automatic pool to grow", tag="pool",
                             expected="a set-up whose pool the engine built from s_max, "
                             "g_max", found=len(self.pool))
        smax, gmax = limits
        kw = dict(self._rebuild, accuracy=None)
        kw.update(kt_center=self.pool_settings["kt_center"],
                  kt_radius=self.pool_settings["kt_radius"])
        new = Simulation(
            self.crystal, self.voltage_kv, self.frame.zone, self.frame.x_axis,
            outputs=self.pool.outputs, potential=self.potential, selection=self.selection,
            mode=self.mode, executor=self.executor, smax=smax * smax_factor,
            gmax=min(gmax + gmax_step, MAX_GMAX), holz=self.pool_settings["holz"], **kw)
        if self._overrides:
            new.set_structure_factors(self._overrides)
        new.defaults = self.defaults
        new.felix = self.felix
        return new

    def _with_grown_tail(self) -> Simulation:
        """This set-up with its pool's tail reaching TAIL_SMAX_FACTOR × further in s_max
        (the same pool, selection, fit terms and tiles): the growth that limits the
        accuracy of a pool with a tail (docs/validation.md), for the error budget."""
        info = self.convergence.tail or {}
        smax = TAIL_SMAX_FACTOR * float(info.get("smax", TAIL_SMAX))
        gmax = float(info.get("gmax", self.pool_settings["gmax"]))
        settings = self.pool_settings
        src = tail_source(self._internal, self.frame, self.k_in, settings, self.pool,
                          self._compute_u, smax=smax, gmax=gmax, near=info.get("near"))
        assert self.tail is not None
        fitted = src.fits(settings["kt_center"], settings["kt_radius"],
                          terms=(int(self.tail.coef.shape[2]),),
                          tiles=int(info.get("tiles", 1)))[0]
        new = self.with_changes()
        new.tail = fitted
        new._arrays = None
        return new

    @property
    def automatic_pool_limits(self) -> tuple[float, float] | None:
        """(s_max, g_max) in Å⁻¹ of the automatic pool this set-up (or the set-up it
        is a variant of) was built with, or None for a pool given by a file or the
        caller."""
        rec = self._convergence[1] if self._convergence is not None else None
        if rec is not None and rec.smax is not None:  # chosen by the engine, or inherited
            return float(rec.smax), float(rec.gmax)
        if self._explicit_pool:
            return None
        return float(self.pool_settings["smax"]), float(self.pool_settings["gmax"])

    def with_selection_of(self, other: Simulation) -> Simulation:
        """This set-up with ``other``'s strong-beam selection and its convergence record.

        For a selection the engine chose on a variant of this set-up (e.g.
        :meth:`converged_variant` at refined structure factors): the record keeps
        whether the engine chose it and how; the selection error is re-estimated
        for this set-up's structure factors on first access.
        """
        new = self.with_changes(selection=other.selection)
        if other._convergence is not None and np.array_equal(new.pool.hkl, other.pool.hkl):
            new._convergence = (-1, other._convergence[1])
        return new

    def converged_variant(self, factors: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 4.0)
                          ) -> Simulation:
        """This set-up, or one with a tighter strong-beam threshold that meets ``accuracy``
        at the current structure factors.

        The engine chooses its selection at set-up for the start structure (e.g. the
        IAM); refined structure factors can raise the selection error (on the Si
        D-LACBED ``import-felix`` plan from 6.7 × 10⁻⁴ at set-up to 1.8 × 10⁻³ at the
        refined U_g, sgmin 2.5). Only selections the engine chose are tightened
        (``sgmin`` × ``factors`` in turn, same pool); a selection fixed by a user or a
        file is returned unchanged (its error is reported, not changed).

        Returns
        -------
        Simulation
            ``self`` when converged or not engine-chosen; otherwise a new set-up
            whose convergence record lists the extra steps (a warning when even
            the last factor does not reach the target).
        """
        conv = self.convergence
        if not conv.chosen or conv.accuracy is None or conv.error <= conv.accuracy:
            return self
        steps = list(conv.steps) + [f"refined structure: sgmin {conv.sgmin:g} -> "
                                    f"{conv.error:.1e}"]
        new = self
        for f in factors:
            new = self.with_changes(selection=replace(self.selection,
                                                      sgmin=float(conv.sgmin) * f))
            c = new.convergence
            steps.append(f"refined structure: sgmin {c.sgmin:g} -> {c.error:.1e} "
                         f"({c.strong_mean:.0f} strong)")
            new._convergence = (new._version, replace(c, chosen=True, steps=tuple(steps)))
            if c.error <= conv.accuracy:
                return new
        warnings.warn(f"the engine could not reach the accuracy {conv.accuracy:g} at the "
                      f"current structure factors: {new.convergence.error:.1e} at sgmin "
                      f"{new.convergence.sgmin:g}", UserWarning, stacklevel=2)
        return new

    # ------------------------------------------------------------ convergence
    def _choose_settings(self, auto_pool: bool, selection: BeamSelection | None,
                         min_strong: int) -> None:
        """Let the engine choose the pool and/or the selection for ``self.accuracy``."""
        settings = self.pool_settings

        def make_pool(smax: float, gmax: float) -> tuple[BeamPool, PotentialTable | None]:
            pool = automatic_pool(self._internal, self.frame, self.k_in, settings,
                                  self.pool.outputs, gmax=gmax, smax=smax)
            if len(pool) > MAX_CHECK_POOL_SIZE:
                # never solved (choose checks the size first); its N² table alone took
                # 7 GiB for Eu4Cd25's grown pools of 7 541 beams
                return pool, None
            table = PotentialTable.build(pool.hkl, self._compute_u)
            if self._overrides:
                table.set_values(self._overrides, self.crystal, self.origin_shift)
            return pool, table

        def make_tail(pool: BeamPool, smax: float, gmax: float, near: float) -> TailSource:
            return tail_source(self._internal, self.frame, self.k_in, settings, pool,
                               self._compute_u, smax=smax, gmax=gmax, near=near)

        plan = (TailPlan(make_tail, settings["kt_center"], settings["kt_radius"])
                if auto_pool and self._use_tail else None)
        pool, table, sel, conv, tail = choose(
            k_in=self.k_in, normal=self.frame.normal_frame, pool=self.pool, table=self.table,
            make_pool=make_pool if auto_pool else None,
            smax=float(self.pool.meta.get("smax", settings["smax"])) if auto_pool else None,
            gmax=float(self.pool.meta.get("gmax", settings["gmax"])) if auto_pool else None,
            selection=selection,
            accuracy=float(self.accuracy), min_strong=min_strong, kt=self._check_kt,
            thickness=self.check_thickness, tail=plan, kt_select=self._select_kt)
        self.pool, self.table, self.selection, self.tail = pool, table, sel, tail
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
            limits = (prev.smax, prev.gmax) if prev is not None else (
                (None, None) if self._explicit_pool else
                (self.pool_settings["smax"], self.pool_settings["gmax"]))
            est = estimate(self.arrays, len(self.pool), self._select_kt, self.check_thickness,
                           accuracy=self.accuracy, smax=limits[0], gmax=limits[1])
            if prev is not None:
                est = replace(est, pool_error=prev.pool_error, chosen=prev.chosen,
                              accuracy=prev.accuracy, steps=prev.steps, tail=prev.tail)
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
    def _compute_u(self, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(U, U′) of the potential table's rows ``hkl`` (internal origin)."""
        return compute_u(hkl, self._internal, self.origin_shift, self.voltage_kv,
                         self.potential, self._u_abs0_override)

    # ------------------------------------------------------------ engine
    @property
    def selection_coupling(self) -> np.ndarray:
        """|U_g| (Å⁻²) of every pool beam from the set-up potential (crystal and
        potential model, before :meth:`set_structure_factors`): the coupling the Ω
        criterion of the strong-beam selection uses.

        It does not follow structure-factor updates and is handed on by
        :meth:`with_changes` (same pool), so a pattern does not depend on whether it
        was solved before or after an update, and a refinement never moves a beam
        between strong and Bethe-weak (that made intensities jump by 7.5e-3 for an
        occupancy step of 1e-4 and stalled structural fits).
        """
        pool, coupling = self._coupling
        if pool is not self.pool or coupling is None:
            coupling = np.abs(self._compute_u(self.pool.hkl)[0])
            self._coupling = (self.pool, coupling)
        return coupling

    @property
    def arrays(self) -> EngineArrays:
        """The compact engine state sent to workers."""
        if self._arrays is None:
            self._arrays = EngineArrays(
                g=self.pool.g, index=self.table.index, u=self.table.u.copy(),
                u_abs=self.table.u_abs.copy(), n_out=self.pool.n_out, k_in=self.k_in,
                normal=self.frame.normal_frame, rules=self.selection, mode=self.mode,
                version=self._version, selection_coupling=self.selection_coupling,
                tail=self.tail)
            warn_unphysical_absorption(self._arrays)
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

    def _chunks(self, pts: np.ndarray) -> tuple[Any, list[np.ndarray]]:
        """The executor and the chunks of directions ``pts`` (see ``chunk_size``)."""
        if not len(pts):
            raise InputError("no incident directions to solve", found=0)
        n = len(pts)
        size = self.chunk_size or DEFAULT_CHUNK_SIZE
        executor = self._executor_for(-(-n // size))
        if self.chunk_size is None:
            per_worker = -(-n // (4 * max(int(executor.n_workers), 1)))
            size = min(max(per_worker, DEFAULT_CHUNK_SIZE), MAX_AUTO_CHUNK_SIZE)
        return executor, [pts[i:i + size] for i in range(0, n, size)]

    def solve_eigen(self, kt: ArrayLike, derivatives: tuple[np.ndarray, np.ndarray] | None =
                    None, *, progress: bool = False) -> EigenChunk:
        """Eigen-solutions for k_t (n, 2) in Å⁻¹, through the executor.

        ``derivatives`` = (∂U/∂p, ∂U′/∂p) over the U-table rows (see
        :meth:`sf_coefficients`) stores what analytic gradients need (either mode).
        """
        pts = check_numbers(kt, "kt", unit="Å⁻¹").reshape(-1, 2)
        incident_kz(pts, self.k_in)  # |k_t| < K: checked here, not in the workers
        executor, chunks = self._chunks(pts)
        args = () if derivatives is None else (derivatives,)
        results = executor.map_chunks(
            solve_chunk, self.arrays, chunks, args=args, progress=progress)
        return EigenChunk.concatenate(results)

    def _pattern_points(self, pts: np.ndarray, thickness: np.ndarray,
                        progress: bool) -> PatternChunk:
        """Intensities (n_t, n, n_out) computed chunk by chunk (no eigen-systems kept)."""
        incident_kz(pts, self.k_in)  # |k_t| < K: checked here, not in the workers
        executor, chunks = self._chunks(pts)
        results = executor.map_chunks(
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
