"""Converged beam settings by default: the engine chooses its pool and selection.

A Bloch-wave calculation with a finite beam pool and Bethe potentials for the
weak beams (Bethe 1928; Zuo & Weickenmeier 1995; with weak–weak coupling and
energy dependence, :mod:`qcbed.bloch.lowdin`) is only an approximation of the
calculation with every pool beam strong, which in turn approximates the
infinite pool. The pool error is physics (far zero-layer beams and HOLZ layers
shift the Bloch-wave eigenvalues; every-beam-strong pools of 291 and 1005 beams
differ by 1.4 × 10⁻² on the Si [1-10] D-LACBED at 1480 Å) and converges slowly
with s_max: it is measured and reported, not hidden (docs/validation.md).
qcbed states its accuracy as one number:

    ε = max |I_g(k_t, t) − I_g^ref(k_t, t)| / max I^ref,

the largest intensity error over the output beams, a sample of incident
directions of the tilt range and the thicknesses of interest, relative to the
largest intensity. Two references are used:

* **selection error** — against every pool beam strong (no Bethe potentials) on
  the same pool: the ``convergence_error`` that results and ``qcbed simulate``
  record;
* **pool error** — the largest change when the automatic pool grows along one
  limit at a time (s_max × 2, or g_max + 0.5 Å⁻¹; HOLZ kept), with the chosen
  selection, and along the further growth s_max × 4, × 8, … and g_max + 1 Å⁻¹
  (up to :data:`MAX_CHECK_POOL_SIZE` beams; measured, never adopted): the change is
  not monotone in s_max (the far zero-layer beams and the first HOLZ layer shift the
  Bloch-wave eigenvalues in opposite directions), and one step alone has passed
  pools that are 10⁻² from every larger one. Growing both limits at once can change
  more (measured on the Si [1-10] D-LACBED: 2.4 × 10⁻³ for s_max × 2 and g_max + 1
  together, against ≤ 6 × 10⁻⁴ for each alone); docs/validation.md records it.

With ``accuracy`` given (default :data:`DEFAULT_ACCURACY` = 10⁻³) and no
explicit pool or selection, :func:`choose` grows the pool until the pool error
is below half the target and walks up the ladder of strong-beam thresholds
:data:`SGMIN_LADDER` until the selection error on the sample is below
:data:`SAFETY` × the target (the sample estimates the maximum over the full
grid from below; the margin covers the difference, and ``--all-strong`` in
``qcbed simulate`` checks it on the full grid). Settings fixed by a user or a
file are honoured: their error is estimated the same way and reported (and a
warning is given above the target).

The checks use the ``fast`` solver (which agrees with ``exact`` to ~10⁻⁴ of the
maximum, see docs/engine.md) whatever the mode of the simulation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from .._core.guard import format_bytes, memory_limit
from ..errors import InputError
from .beams import BeamPool, BeamSelection
from .potential import PotentialTable
from .solver import EngineArrays, KernelTables, eigen_chunk
from .tail import TailCorrection, TailSource, on_set_up_threads, tile_centers
from .xp import NUMPY

__all__ = ["DEFAULT_ACCURACY", "DEFAULT_CHECK_THICKNESS", "SGMIN_LADDER", "Convergence",
           "TailPlan", "choose", "estimate", "further_growth", "sample_directions",
           "selection_directions"]

#: Default accuracy target: max |ΔI| / I_max against the converged reference.
DEFAULT_ACCURACY = 1e-3

#: Thicknesses (Å) at which the accuracy is checked when no thickness is known.
DEFAULT_CHECK_THICKNESS = (500.0, 1500.0, 3000.0)

#: Strong-beam thresholds |2K S_g| < sgmin (Å⁻²) tried in turn (Ω = 30 throughout).
SGMIN_LADDER = (0.3, 0.5, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 11.0, 16.0,
                24.0, 40.0)

#: The selection error on the sample must be below this fraction of the target. The 13
#: sample directions estimate the maximum over a full image from below: on the Si
#: D-LACBED (23 104 directions, `qcbed simulate --all-strong`) the full-grid maximum was
#: 1.5× the sample's without the tail (4.8e-4 vs 3.1e-4, sgmin 3) and 1.64× with it
#: (1.08e-3 vs 6.6e-4, sgmin 2.5, which the former 0.7 let through); 0.5 covers 2×.
SAFETY = 0.5

#: Growth checks of the pool at most: the pool is grown (once) when the first check
#: fails, and the second check measures the growth from the pool in use, so
#: ``pool_error`` is always measured from the pool that is used.
MAX_POOL_ROUNDS = 2

#: The pool does not grow beyond this many beams (the check's all-strong
#: reference costs N³ per direction); a warning says when the target was not met.
MAX_POOL_SIZE = 800

#: Growth of the automatic pool per round: s_max × POOL_SMAX_FACTOR,
#: g_max + POOL_GMAX_STEP (Å⁻¹).
POOL_SMAX_FACTOR = 2.0
POOL_GMAX_STEP = 0.5

#: Further growth the pool error also measures from the pool in use (never adopted):
#: s_max × 4, × 8, … and g_max + 1 Å⁻¹, each up to MAX_CHECK_POOL_SIZE beams. The change
#: is not monotone in s_max: on the central 80 % of the Si [1-10] D-LACBED disc s_max
#: 0.05 → 0.1 Å⁻¹ changes the pattern by 3.1 × 10⁻⁴ and 0.1 → 0.2 by 1.4 × 10⁻² (the far
#: zero-layer beams without the first HOLZ layer, which enters at 0.4), so one step
#: alone passed a pool that is 10⁻² from every larger one (docs/validation.md).
FURTHER_SMAX_FACTORS = (4.0, 8.0, 16.0, 32.0)
FURTHER_GMAX_STEPS = (1.0,)

#: Grown pools above this many beams are not solved by the further checks (they use the
#: chosen selection, whose cost grows with the weak beams: 1005 beams, 13 directions ≈ 1 s).
MAX_CHECK_POOL_SIZE = 1200

#: Default extent of the pool's tail (:mod:`qcbed.bloch.tail`): the beams with
#: |S_g| ≤ TAIL_SMAX (Å⁻¹) somewhere in the tilt disc and |g| ≤ the pool's g_max
#: that are not in the pool are eliminated to second order.
TAIL_SMAX = 0.8

#: Growth of the tail per check: s_max × TAIL_SMAX_FACTOR, g_max + TAIL_GMAX_STEP (Å⁻¹).
TAIL_SMAX_FACTOR = 2.0
TAIL_GMAX_STEP = 1.0

#: Share of the accuracy target allowed to the tail's polynomial fit (measured
#: against the tail computed exactly at the sample directions); above it the
#: disc is cut into more tiles, up to TAIL_MAX_TILES per radius.
TAIL_FIT_SHARE = 0.25
TAIL_MAX_TILES = 3

#: Polynomial terms tried for one fit over the disc, cheapest first (linear,
#: quadratic, cubic in k_t): the per-direction gather is ∝ the terms.
TAIL_TERMS = (3, 6, 10)

#: Rounds of growth checks of the pool with its tail. While the largest change is
#: above half the target, every growth that changes more than that is adopted at once
#: (a round's checks of one limit alone cannot see the others: on the Si D-LACBED at
#: 1480 Å the tail's s_max × 2, its g_max + 1 and the pool's g_max + 0.5 each changed
#: the pattern by 1.6–2.2 × 10⁻³ from pool (0.05, 3) + tail (0.8, 3), and by ≤ 3.9 × 10⁻⁴
#: from pool (0.05, 3.5) + tail (1.6, 4), adopted together in the first round).
TAIL_ROUNDS = 2

#: Tails (the starting one, growth checks and adopted growths) above this many beams are
#: not built (:func:`tail_too_large`). Peak memory of a tail's blocks is ≈ 16·M² bytes (the
#: M × M coupling in single precision with its int32 difference codes): 1.5 GiB at the
#: 9 667 beams of the Si D-LACBED's s_max × 2 check, 2.1 GiB at this limit.
MAX_GROWN_TAIL_SIZE = 12000

#: Nor those whose exact terms cost more than this N·M² (pool beams × tail beams²) per
#: direction: measured 0.74 s for 485 × 5 764² = 1.6 × 10¹⁰ and 2.5 s for 485 × 9 667² =
#: 4.5 × 10¹⁰ (one BLAS thread, 2-core VM), so ≈ 3.5 s per direction and ≈ 45 s per
#: check of 13 directions at the limit.
MAX_TAIL_WORK = 6e10

#: Bytes per tail-beam pair of a tail's blocks at their peak (see MAX_GROWN_TAIL_SIZE).
TAIL_BYTES_PER_PAIR = 16

#: The whole tail walk's exact terms (the starting tail, its growth checks, adopted
#: growths and the fit over the disc) cost at most this much: Σ N·M² over every
#: direction computed, counted twice for a potential without a centre of symmetry (two
#: N × M × M products per direction, :func:`qcbed.bloch.tail._exact_terms`), plus the
#: pool's eigenproblem (:data:`EIG_WORK_PER_CUBE` · N³). A starting
#: tail whose check and one-tile fit alone exceed it is not used (the pool grows
#: instead); checks beyond it are not made (``unchecked``: not converged) and more
#: tiles not fitted. Measured on the 2-core VM (one BLAS thread, set-up threads 2): the
#: Si D-LACBED's walk (367 + 5 764 beams adopted, centrosymmetric) spends 2.2 × 10¹² in
#: 124 s CPU; LiNbO₃'s (623 pool beams, tails of 4 363–8 245 beams, no centre, all four
#: checks made) 5.5 × 10¹² in 321 s CPU (docs/validation.md): at most ≈ 6 min CPU,
#: ≈ 4 min on an unloaded 2-core machine.
MAX_TAIL_WALK_WORK = 6e12

#: Work (in the units of MAX_TAIL_WALK_WORK) of one pool beam cubed: each checked
#: direction also solves the pool every beam strong (a Hermitian eigenproblem, ∝ N³).
#: Measured on the 2-core VM (load 5, one BLAS thread): eigh of 840 complex beams 2.4 s,
#: the tail's products ≈ 10¹⁰ units per s, so N³ ≈ 40 units (a 1200-beam pool check of
#: 13 directions ≈ 9 × 10¹¹ before its tail).
EIG_WORK_PER_CUBE = 40.0

#: Exact directions of the tail's fit per tile: 19 fit points and 3 checks
#: (:meth:`qcbed.bloch.tail.TailSource.fits`).
FIT_DIRECTIONS_PER_TILE = 22

#: Bytes per pool-beam pair, term and tile of the fitted tail at the fit's peak (W and S
#: coefficients in double-precision complex while fitted, then packed).
FIT_BYTES_PER_PAIR_TERM = 64


def tail_too_large(n_pool: int, n_tail: int, limit: int | None = None) -> str | None:
    """Why a tail of ``n_tail`` beams for a pool of ``n_pool`` is not built, or None.

    Deterministic limits on the beams (``limit``; None: :data:`MAX_GROWN_TAIL_SIZE`)
    and the work N·M² per direction
    (:data:`MAX_TAIL_WORK`), then the memory limit of :mod:`qcbed._core.guard` on the
    blocks' ≈ 16·M² bytes (a machine with less memory skips the check and says so).
    """
    limit = MAX_GROWN_TAIL_SIZE if limit is None else limit
    if n_tail > limit:
        return f"above {limit} beams"
    if n_pool * float(n_tail) ** 2 > MAX_TAIL_WORK:
        return f"N·M² = {n_pool * float(n_tail) ** 2:.1e} above {MAX_TAIL_WORK:.0e}"
    need = TAIL_BYTES_PER_PAIR * float(n_tail) ** 2
    if need > memory_limit():
        return f"its blocks need {format_bytes(need)}, above the memory limit"
    return None


@dataclass
class _TailWork:
    """The exact-term work of one tail walk against :data:`MAX_TAIL_WALK_WORK`.

    ``weight``: 1 for a centrosymmetric potential (one N × M × M product per
    direction), 2 otherwise; ``spent``: Σ weight · N·M² + EIG_WORK_PER_CUBE · N³ of the
    directions computed.
    """

    weight: float
    spent: float = 0.0

    def cost(self, n_pool: int, n_tail: int, n_directions: int) -> float:
        """Work of ``n_directions`` exact directions of a tail of ``n_tail`` beams."""
        n = float(n_pool)
        return (self.weight * n * float(n_tail) ** 2 + EIG_WORK_PER_CUBE * n ** 3) * n_directions

    def refuse(self, cost: float, reserve: float = 0.0) -> str | None:
        """Why ``cost`` (with ``reserve`` kept for later) cannot be spent, or None."""
        total = self.spent + cost + reserve
        if total > MAX_TAIL_WALK_WORK:
            return (f"the walk's tail work would reach {total:.1e} (Σ N·M² + "
                    f"{EIG_WORK_PER_CUBE:g}·N³ per direction) "
                    f"above {MAX_TAIL_WALK_WORK:.0e}")
        return None


@dataclass(frozen=True)
class Convergence:
    """How close a simulation set-up is to the converged calculation.

    Attributes
    ----------
    accuracy : float or None
        The target ε (None: none was asked).
    error : float
        Estimated selection error: max |ΔI| / I_max against every pool beam strong
        on the same pool, over the sample directions and thicknesses.
    pool_error : float or None
        Largest change of the intensities when the pool grows, one step or
        further (:func:`further_growth`; None: not checked, e.g. for a pool fixed
        by a file), on the sample directions (:func:`sample_directions`): a lower
        bound of the change over a whole image. The next g_max shell shifts the lines
        of the pool beams it couples to, narrow changes the sample can miss: on the Si
        D-LACBED the image's largest change was 1.05× the figure; on a diamond folder
        2.2× on random image directions and 4× on those lines
        (``benchmarks/check_pool_independent.py``, docs/validation.md).
    chosen : bool
        True when the engine chose the pool and selection from ``accuracy``;
        False when a user or a file fixed them.
    sgmin, omega : float
        The strong-beam thresholds in use (Å⁻², dimensionless).
    pool_size : int
        Beams in the pool.
    smax, gmax : float or None
        Automatic-pool limits (Å⁻¹), None for an explicit pool.
    strong_mean : float
        Mean number of strong beams over the sample.
    thickness : tuple of float
        Thicknesses (Å) of the check.
    n_directions : int
        Sample directions of the selection check (:func:`selection_directions`).
    steps : tuple of str
        What the engine tried, in order.
    tail : dict or None
        The pool's tail (:mod:`qcbed.bloch.tail`): ``beams``, ``smax``, ``gmax``,
        ``tiles`` and ``fit_error`` (max |ΔI|/I_max of the fitted against the
        exactly computed tail at the sample directions); None without a tail.
    """

    accuracy: float | None
    error: float
    pool_error: float | None
    chosen: bool
    sgmin: float
    omega: float | None
    pool_size: int
    smax: float | None
    gmax: float | None
    strong_mean: float
    thickness: tuple[float, ...]
    n_directions: int
    steps: tuple[str, ...] = field(default_factory=tuple)
    tail: dict | None = None

    @property
    def converged(self) -> bool:
        """True when both errors are within the target (or 10⁻³ when none was set) and
        every growth check of an engine-chosen pool (or tail) could be made — on the
        sample directions, so a verdict about them (``pool_error``), not a bound
        over every direction of an image."""
        target = self.accuracy if self.accuracy is not None else DEFAULT_ACCURACY
        if self.chosen and self.smax is not None and self.pool_error is None:
            return False         # an automatic pool that no growth check could measure
        if self.tail is not None and self.tail.get("unchecked"):
            return False         # a growth of the tail or pool that was too large to check
        return self.error <= target and (self.pool_error is None or self.pool_error <= target)

    def as_dict(self) -> dict:
        """Plain values for results files (JSON-safe)."""
        return {"accuracy": self.accuracy, "convergence_error": float(self.error),
                "pool_error": None if self.pool_error is None else float(self.pool_error),
                "converged": self.converged, "chosen_by_engine": self.chosen,
                "sgmin": float(self.sgmin), "omega": self.omega, "pool_size": self.pool_size,
                "smax": self.smax, "gmax": self.gmax, "strong_mean": float(self.strong_mean),
                "thickness": [float(t) for t in self.thickness],
                "n_directions": self.n_directions, "steps": list(self.steps),
                "tail": None if self.tail is None else dict(self.tail)}

    def summary(self) -> str:
        """One line for the CLI and validate."""
        pool = "" if self.pool_error is None else f", pool growth {self.pool_error:.1e}"
        if self.tail is not None and self.pool_error is None:
            pool = ", pool growth unknown"
        if self.tail is not None:
            pool += f" with a tail of {self.tail['beams']} beams"
            if self.tail.get("unchecked"):
                pool += (f" ({self.tail['unchecked']} growth check(s) too large to make: "
                         "the pool error covers only those made)")
        how = "chosen for" if self.chosen else "fixed; target"
        target = self.accuracy if self.accuracy is not None else DEFAULT_ACCURACY
        return (f"convergence error {self.error:.1e} of the maximum intensity vs all pool beams "
                f"strong{pool} ({how} {target:g}; sgmin {self.sgmin:g}, "
                f"{self.strong_mean:.0f} strong of {self.pool_size} pool beams)")


def sample_directions(kt_center: ArrayLike, kt_radius: float) -> np.ndarray:
    """The check directions: the centre, 4 at half the radius and 8 at 0.85 of it (Å⁻¹).

    The rings are turned off the mirror lines of common zone axes. A radius of 0
    (a single direction) uses a ring of 0.02 Å⁻¹.
    """
    c = np.asarray(kt_center, float).reshape(2)
    r = float(kt_radius) if kt_radius and kt_radius > 0 else 0.02
    a4 = np.linspace(0, 2 * np.pi, 4, endpoint=False) + 0.31
    a8 = np.linspace(0, 2 * np.pi, 8, endpoint=False) + 0.13
    return np.vstack([c[None], c + 0.5 * r * np.c_[np.cos(a4), np.sin(a4)],
                      c + 0.85 * r * np.c_[np.cos(a8), np.sin(a8)]])


def selection_directions(kt_center: ArrayLike, kt_radius: float) -> np.ndarray:
    """The selection's check directions: :func:`sample_directions` and 6 more at a
    quarter of the radius (Å⁻¹), appended.

    The 13 of :func:`sample_directions` leave the disc's inner half sampled by its
    centre only, where the zone-axis Bloch waves are most strongly excited: on the Si
    [1-10] D-LACBED with the second-order elimination (sgmin 1.6) the error against
    every pool beam strong peaked at 0.15–0.35 of the radius (9.9 × 10⁻⁴ of I_max)
    while the 13 directions read 4.7 × 10⁻⁴ (docs/validation.md). The pool's walk keeps
    the 13 (its work bound counts them); the strong-beam ladder and the estimate of
    fixed settings use these.
    """
    c = np.asarray(kt_center, float).reshape(2)
    r = float(kt_radius) if kt_radius and kt_radius > 0 else 0.02
    a6 = np.linspace(0, 2 * np.pi, 6, endpoint=False) + 0.47
    return np.vstack([sample_directions(c, r), c + 0.25 * r * np.c_[np.cos(a6), np.sin(a6)]])


def _intensities(arrays: EngineArrays, kt: np.ndarray, thickness: np.ndarray
                 ) -> tuple[np.ndarray, float]:
    """Intensities (n_t, n_dir, n_out) of the check directions ``kt`` (Å⁻¹) at
    ``thickness`` (Å), and the mean number of strong beams.

    Each direction is solved alone (its own batch), the directions on the set-up's
    threads (:func:`qcbed.bloch.tail.on_set_up_threads`): the eigen-solutions release the
    GIL, so the checks of a set-up use the CPUs the tail's exact terms use (before, one
    thread solved them: 147 of LiNbO₃'s 364 s of set-up on the 2-core VM, while the
    other core idled). One direction per batch makes the result independent of the
    number of threads, up to the round-off of BLAS run on one thread or on several.
    """
    kt = np.asarray(kt, float).reshape(-1, 2)
    tables = KernelTables.build(NUMPY, arrays)

    def one(k: np.ndarray):
        return eigen_chunk(tables, arrays, k[None])

    eigs = on_set_up_threads(one, kt)
    inten = np.concatenate([e.intensities(thickness) for e in eigs], axis=-2)
    return inten, float(np.mean([e.n_strong.mean() for e in eigs]))


def _error(inten: np.ndarray, ref: np.ndarray) -> float:
    """max|ΔI|/max I; infinite when a direction the reference solves is NaN (rejected)."""
    if np.any(np.isnan(inten) & ~np.isnan(ref)):
        return float("inf")
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(np.abs(inten - ref)) / np.nanmax(ref))


def _arrays(frame: tuple[float, np.ndarray], pool: BeamPool, table: PotentialTable,
            rules: BeamSelection, tail: TailCorrection | None = None) -> EngineArrays:
    k_in, normal = frame
    return EngineArrays(g=pool.g, index=table.index, u=table.u.copy(),
                        u_abs=table.u_abs.copy(), n_out=pool.n_out, k_in=k_in,
                        normal=normal, rules=rules, mode="fast", tail=tail)


@dataclass(frozen=True)
class TailPlan:
    """How a set-up builds the pool's tail (:mod:`qcbed.bloch.tail`).

    Attributes
    ----------
    make : callable (pool, smax, gmax, near) -> TailSource
        The coupling of ``pool`` to the beams with |S_g| ≤ smax (Å⁻¹) somewhere in
        the tilt disc and |g| ≤ gmax (Å⁻¹) that are not in the pool and are far
        from the Bragg condition (min |S_g| over the disc above ``near``, Å⁻¹: the
        walk's starting pool s_max, so that a grown pool's tail holds every beam of
        the smaller pool's tail that the grown pool does not).
    center, radius
        The tilt disc (Å⁻¹) over which the tail is fitted.
    smax : float
        Starting extent s_max of the tail (Å⁻¹); its g_max starts at the pool's.
    """

    make: Callable[[BeamPool, float, float, float], TailSource]
    center: tuple[float, float]
    radius: float
    smax: float = TAIL_SMAX


def _exact_tail_intensities(frame: tuple[float, np.ndarray], pool: BeamPool,
                            table: PotentialTable, rules: BeamSelection, src: TailSource,
                            kt: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Intensities at ``kt`` with the tail computed exactly at each direction (one
    batch: each direction its own constant tile, :meth:`TailSource.at`)."""
    return _intensities(_arrays(frame, pool, table, rules, src.at(kt)), kt, thickness)[0]


def _fit_tail(frame: tuple[float, np.ndarray], pool: BeamPool, table: PotentialTable,
              src: TailSource, plan: TailPlan, exact: np.ndarray, kt: np.ndarray,
              thickness: np.ndarray, accuracy: float, steps: list[str],
              work: _TailWork | None = None) -> tuple[TailCorrection, float, int]:
    """The cheapest fit of the tail over the disc whose error (every pool beam
    strong, against the exact tail ``exact`` at ``kt``) is within TAIL_FIT_SHARE ×
    ``accuracy``: one polynomial of TAIL_TERMS terms in turn (the per-direction
    cost grows with the terms), then cubic fits on more tiles while their exact
    directions stay within the walk's ``work`` (:data:`MAX_TAIL_WALK_WORK`) and their
    coefficients within the memory limit (otherwise the last fit made is kept, its
    error reported)."""
    rules = BeamSelection.all_strong()
    work = _TailWork(1.0) if work is None else work

    def error(fitted: TailCorrection) -> float:
        err = _error(_intensities(_arrays(frame, pool, table, rules, fitted), kt,
                                  thickness)[0], exact)
        steps.append(f"tail {src.n_beams} beams, {fitted.coef.shape[2]} terms, "
                     f"{fitted.n_tiles} tile(s): fit error {err:.1e} "
                     f"(W misfit {fitted.fit_error:.1e})")
        return err

    n_pool = len(pool)
    work.spent += work.cost(n_pool, src.n_beams, FIT_DIRECTIONS_PER_TILE)
    for fitted in src.fits(plan.center, plan.radius, terms=TAIL_TERMS):
        err = error(fitted)
        if err <= TAIL_FIT_SHARE * accuracy:
            return fitted, err, 1
    made = 1
    for tiles in range(2, TAIL_MAX_TILES + 1):
        n_tiles = len(tile_centers(plan.center, max(plan.radius, 1e-3), tiles)[0])
        cost = work.cost(n_pool, src.n_beams, n_tiles * FIT_DIRECTIONS_PER_TILE)
        why = work.refuse(cost)
        need = FIT_BYTES_PER_PAIR_TERM * n_tiles * max(TAIL_TERMS) * float(n_pool) ** 2
        if why is None and need > memory_limit():
            why = f"its coefficients need {format_bytes(need)}, above the memory limit"
        if why is not None:
            steps.append(f"tail {src.n_beams} beams, fit on {n_tiles} tiles: {why}, not made")
            break
        work.spent += cost
        fitted = src.fit(plan.center, plan.radius, tiles=tiles)
        made = tiles
        err = error(fitted)
        if err <= TAIL_FIT_SHARE * accuracy:
            break
    return fitted, err, made


def _ladder_selection(sgmin: float, omega: float | None, min_strong: int,
                      base: BeamSelection | None) -> BeamSelection:
    sgmax = base.sgmax if base is not None else None
    return BeamSelection(sgmin=sgmin, omega=omega, sgmax=sgmax, min_strong=min_strong)


def estimate(arrays: EngineArrays, pool_size: int, kt: np.ndarray, thickness: ArrayLike, *,
             accuracy: float | None, smax: float | None, gmax: float | None) -> Convergence:
    """The selection error of fixed settings against every pool beam strong.

    Parameters
    ----------
    arrays : EngineArrays
        The engine state (its selection rules are the ones assessed).
    pool_size : int
    kt : ndarray (n, 2)
        Sample directions (Å⁻¹).
    thickness : array_like
        Thicknesses (Å).
    accuracy : float or None
        Target to compare with (a warning is given above it, or above 10⁻³).
    smax, gmax : float or None
        Pool limits, recorded.
    """
    t = np.atleast_1d(np.asarray(thickness, float))
    fast = EngineArrays(g=arrays.g, index=arrays.index, u=arrays.u.copy(),
                        u_abs=arrays.u_abs.copy(), n_out=arrays.n_out, k_in=arrays.k_in,
                        normal=arrays.normal, rules=arrays.rules, mode="fast",
                        selection_coupling=arrays.selection_coupling, tail=arrays.tail)
    inten, strong = _intensities(fast, kt, t)
    ref_arrays = EngineArrays(g=arrays.g, index=arrays.index, u=arrays.u.copy(),
                              u_abs=arrays.u_abs.copy(), n_out=arrays.n_out,
                              k_in=arrays.k_in, normal=arrays.normal,
                              rules=BeamSelection.all_strong(), mode="fast", tail=arrays.tail)
    ref, _ = _intensities(ref_arrays, kt, t)
    err = _error(inten, ref)
    conv = Convergence(accuracy, err, None, False, arrays.rules.sgmin, arrays.rules.omega,
                       pool_size, smax, gmax, strong, tuple(map(float, t)), len(kt))
    target = accuracy if accuracy is not None else DEFAULT_ACCURACY
    if err > target:
        warnings.warn(f"the beam settings are not converged: estimated error {err:.1e} of the "
                      f"maximum intensity against all pool beams strong (target {target:g}); "
                      "leave the selection to the engine (accuracy) or raise sgmin/omega",
                      UserWarning, stacklevel=3)
    return conv


def choose(*, k_in: float, normal: np.ndarray, pool: BeamPool, table: PotentialTable,
           make_pool: Callable[[float, float], tuple[BeamPool, PotentialTable]] | None,
           smax: float | None, gmax: float | None, selection: BeamSelection | None,
           accuracy: float, min_strong: int, kt: np.ndarray, thickness: ArrayLike,
           tail: TailPlan | None = None, kt_select: np.ndarray | None = None
           ) -> tuple[BeamPool, PotentialTable, BeamSelection, Convergence, TailCorrection | None]:
    """Choose the pool (when ``make_pool`` is given) and the selection for ``accuracy``.

    Parameters
    ----------
    k_in : float
        K = √(k₀² + U₀) (Å⁻¹).
    normal : ndarray (3,)
        Unit surface normal in frame components.
    pool, table : BeamPool, PotentialTable
        The starting pool and its U table.
    make_pool : callable (smax, gmax) -> (pool, table), optional
        Builds a larger automatic pool; None keeps the pool fixed.
    smax, gmax : float or None
        Limits of the starting pool (Å⁻¹).
    selection : BeamSelection or None
        A fixed selection (only the pool is chosen), or None to choose it.
    accuracy : float
        Target ε.
    min_strong : int
        Floor on the number of strong beams (Felix's ``min_strong_beams``).
    kt : ndarray (n, 2)
        Sample directions (Å⁻¹).
    thickness : array_like
        Thicknesses (Å).
    tail : TailPlan, optional
        With an automatic pool: eliminate the beams beyond it to second order
        (:func:`_converge_tail`) instead of growing the pool.
    kt_select : ndarray (m, 2), optional
        Directions of the strong-beam ladder and its error (:func:`selection_directions`);
        default ``kt``.

    Returns
    -------
    pool, table, selection, Convergence, TailCorrection or None
    """
    t = np.atleast_1d(np.asarray(thickness, float))
    template = (float(k_in), np.asarray(normal, float))
    omega = 30.0
    steps: list[str] = []
    level = 0
    fitted: TailCorrection | None = None
    tail_info: dict | None = None

    ks = kt if kt_select is None else kt_select

    def pick(pool: BeamPool, table: PotentialTable, level: int
             ) -> tuple[BeamSelection, float, float, int]:
        ref, _ = _intensities(_arrays(template, pool, table, BeamSelection.all_strong(),
                                      fitted), ks, t)
        if selection is not None:
            inten, strong = _intensities(_arrays(template, pool, table, selection, fitted),
                                         ks, t)
            return selection, _error(inten, ref), strong, level
        # the error falls as sgmin grows (up to noise)
        cache: dict[int, tuple[BeamSelection, float, float]] = {}

        def trial(k: int) -> tuple[BeamSelection, float, float]:
            if k not in cache:
                sel = _ladder_selection(SGMIN_LADDER[k], omega, min_strong, selection)
                inten, strong = _intensities(_arrays(template, pool, table, sel, fitted), ks, t)
                cache[k] = (sel, _error(inten, ref), strong)
                steps.append(f"pool {len(pool)}: sgmin {SGMIN_LADDER[k]:g} -> "
                             f"{cache[k][1]:.1e} ({strong:.0f} strong)")
            return cache[k]

        # walk up from the cheap end in steps of two (a trial costs ∝ strong beams³),
        # then try the rung below the first that passes
        lo = len(SGMIN_LADDER)
        for k in range(level, len(SGMIN_LADDER), 2):
            if trial(k)[1] <= SAFETY * accuracy:
                lo = k - 1 if k - 1 >= level and trial(k - 1)[1] <= SAFETY * accuracy else k
                break
        else:
            last = len(SGMIN_LADDER) - 1
            if (last - level) % 2 and trial(last)[1] <= SAFETY * accuracy:
                lo = last
        if lo < len(SGMIN_LADDER):
            sel, err, strong = trial(lo)
            return sel, err, strong, lo
        sel = BeamSelection(sgmin=np.inf, omega=None, sgmax=None, bethe=False,
                            min_strong=min_strong)
        steps.append(f"pool {len(pool)}: all strong")
        return sel, 0.0, float(len(pool)), len(SGMIN_LADDER)

    pool_err: float | None = None
    if tail is not None and make_pool is not None and smax is not None and gmax is not None:
        res = _converge_tail(template, pool, table, make_pool, smax, gmax, tail, accuracy,
                             kt, t, steps)
        if res is None:
            tail = None          # too many tail beams: the pool grows instead
        else:
            pool, table, smax, gmax, fitted, pool_err, tail_info = res
    sel, err, strong, level = pick(pool, table, level)
    if tail is None and make_pool is not None and smax is not None and gmax is not None:
        measured = 0
        for rnd in range(MAX_POOL_ROUNDS):
            # grow along each limit in turn; adopt the growth that changes most
            worst: tuple[float, BeamPool, PotentialTable, float, float] | None = None
            pool_err = 0.0
            cur, _ = _intensities(_arrays(template, pool, table, sel), kt, t)
            for s_new, g_new in ((POOL_SMAX_FACTOR * smax, gmax),
                                 (smax, gmax + POOL_GMAX_STEP)):
                big_pool, big_table = make_pool(s_new, g_new)
                if len(big_pool) == len(pool):
                    continue
                label = (f"pool {len(pool)} -> {len(big_pool)} (smax {s_new:.3g}, "
                         f"gmax {g_new:.3g})")
                if len(big_pool) > MAX_CHECK_POOL_SIZE:
                    steps.append(f"{label}: above {MAX_CHECK_POOL_SIZE} beams, not checked")
                    continue
                # pools above MAX_POOL_SIZE are measured (chosen selection, cheap) but not
                # adopted (adopting needs the all-strong reference, N³ per direction)
                new, _ = _intensities(_arrays(template, big_pool, big_table, sel), kt, t)
                e = _error(cur, new)
                measured += 1
                big = len(big_pool) > MAX_POOL_SIZE
                steps.append(f"{label}: {e:.1e}"
                             + (f" (above {MAX_POOL_SIZE} beams: measured, not adopted)"
                                if big else ""))
                pool_err = max(pool_err, e)
                if not big and (worst is None or e > worst[0]):
                    worst = (e, big_pool, big_table, s_new, g_new)
            if worst is None or pool_err <= 0.5 * accuracy or rnd == MAX_POOL_ROUNDS - 1:
                break
            _, pool, table, smax, gmax = worst
            sel, err, strong, level = pick(pool, table, level)
        further, n_further = _further_growth(template, pool, make_pool, smax, gmax, sel,
                                             cur, kt, t, steps)
        measured += n_further
        pool_err = max(pool_err, further) if measured else None
        if not measured:
            warnings.warn(f"the pool of {len(pool)} beams could not be checked for growth (every "
                          f"grown pool has more than {MAX_CHECK_POOL_SIZE} beams): its "
                          "convergence is unknown (pool_error = None)", UserWarning,
                          stacklevel=3)
    conv = Convergence(accuracy, err, pool_err, True, sel.sgmin, sel.omega, len(pool), smax,
                       gmax, strong, tuple(map(float, t)), len(ks), tuple(steps), tail_info)
    if not conv.converged:
        warnings.warn(f"the engine could not reach the accuracy {accuracy:g}: {conv.summary()}",
                      UserWarning, stacklevel=3)
    return pool, table, sel, conv, fitted


def further_growth(smax: float, gmax: float) -> list[list[tuple[float, float]]]:
    """The further growth of a pool (s_max, g_max) (Å⁻¹) that the pool error measures
    besides one step: series of (s_max, g_max) along each limit, smallest first."""
    return [[(f * smax, gmax) for f in FURTHER_SMAX_FACTORS],
            [(smax, gmax + d) for d in FURTHER_GMAX_STEPS]]


def _further_growth(frame: tuple[float, np.ndarray], pool: BeamPool,
                    make_pool: Callable[[float, float], tuple[BeamPool, PotentialTable]],
                    smax: float, gmax: float, sel: BeamSelection, cur: np.ndarray,
                    kt: np.ndarray, t: np.ndarray, steps: list[str]) -> tuple[float, int]:
    """Largest change of the intensities ``cur`` of ``pool`` (selection ``sel``) over the
    :func:`further_growth` of the pool, and how many grown pools were measured; each
    series stops at the first pool above MAX_CHECK_POOL_SIZE beams (not solved)."""
    worst, measured = 0.0, 0
    for series in further_growth(smax, gmax):
        for s_new, g_new in series:
            big_pool, big_table = make_pool(s_new, g_new)
            label = (f"pool {len(pool)} -> {len(big_pool)} (smax {s_new:.3g}, "
                     f"gmax {g_new:.3g}), further growth")
            if len(big_pool) > MAX_CHECK_POOL_SIZE:
                steps.append(f"{label}: above {MAX_CHECK_POOL_SIZE} beams, not checked")
                break
            if len(big_pool) == len(pool):
                continue
            new, _ = _intensities(_arrays(frame, big_pool, big_table, sel), kt, t)
            e = _error(cur, new)
            steps.append(f"{label}: {e:.1e}")
            worst = max(worst, e)
            measured += 1
    return worst, measured


def _converge_tail(frame: tuple[float, np.ndarray], pool: BeamPool, table: PotentialTable,
                   make_pool: Callable[[float, float], tuple[BeamPool, PotentialTable]],
                   smax: float, gmax: float, plan: TailPlan, accuracy: float,
                   kt: np.ndarray, t: np.ndarray, steps: list[str]) -> tuple | None:
    """The pool with its tail, converged: the pool error *with* the tail.

    Every pool beam strong (the selection is chosen afterwards, with the tail), the
    tail computed exactly at the sample directions. The pool error is the largest
    change when the tail grows (s_max × TAIL_SMAX_FACTOR, g_max + TAIL_GMAX_STEP) or
    the pool grows under the same tail (s_max × POOL_SMAX_FACTOR: the second-order
    elimination of the nearest tail beams checked against diagonalising them; g_max +
    POOL_GMAX_STEP: the beams beyond g_max near the Bragg condition, which the tail
    leaves out), plus the error of the tail's fit over the disc. While it is above
    half the target, every growth that changes more than half the target is adopted
    together (when they cannot be built together: the tail's growths together, then
    each alone, largest change first) and the checks are repeated from there (up to
    TAIL_ROUNDS rounds), so the reported error is measured from the pool and tail in
    use. Growths whose tail is too large (:func:`tail_too_large`), whose grown pool
    has more than MAX_CHECK_POOL_SIZE beams, or which would take the walk's work
    beyond :data:`MAX_TAIL_WALK_WORK` are not checked: counted as ``unchecked`` (the
    record is then not converged) and never adopted. Grown pools above
    MAX_POOL_SIZE beams are checked but not adopted.

    Returns
    -------
    pool, table, smax, gmax, fitted tail, pool error (None when no growth could be
    checked), tail summary (dict); None when the starting tail is too large
    (:func:`tail_too_large`) or its check and one-tile fit exceed
    :data:`MAX_TAIL_WALK_WORK` (the pool grows instead).
    """
    strong = BeamSelection.all_strong()
    ts, tg = max(plan.smax, 2 * smax), gmax
    near = smax                      # the tail's bound: fixed for the whole walk
    src = plan.make(pool, ts, tg, near)
    why = tail_too_large(len(pool), src.n_beams)
    work = _TailWork(1.0 if why is not None or src.symmetric else 2.0)
    if why is None:
        why = work.refuse(work.cost(len(pool), src.n_beams,
                                    len(kt) + FIT_DIRECTIONS_PER_TILE))
    if why is not None:
        # the M × M tail–tail block and N·M² per direction: cells too large go without
        steps.append(f"pool {len(pool)}: tail of {src.n_beams} beams (smax {ts:.3g}, gmax "
                     f"{tg:.3g}): {why}: not used, the pool grows instead")
        src.release()
        return None

    def fit_reserve() -> float:      # the one-tile fit of the tail in use, kept for last
        return work.cost(len(pool), src.n_beams, FIT_DIRECTIONS_PER_TILE)

    work.spent += work.cost(len(pool), src.n_beams, len(kt))
    exact = _exact_tail_intensities(frame, pool, table, strong, src, kt, t)
    bare = _intensities(_arrays(frame, pool, table, strong), kt, t)[0]
    steps.append(f"pool {len(pool)} + tail {src.n_beams} (smax {ts:.3g}, gmax {tg:.3g}): "
                 f"changes the pattern by {_error(bare, exact):.1e}")
    pool_err, unchecked, measured = 0.0, 0, 0
    trials: dict[str, float] = {}
    axes: list[str] = []                 # the growths adopted last
    for rnd in range(TAIL_ROUNDS):
        before, trials = trials, {}
        news: dict[str, np.ndarray] = {}
        unchecked = 0
        for axis, (s_new, g_new) in (("tail smax", (TAIL_SMAX_FACTOR * ts, tg)),
                                     ("tail gmax", (ts, tg + TAIL_GMAX_STEP)),
                                     ("pool smax", (POOL_SMAX_FACTOR * smax, gmax)),
                                     ("pool gmax", (smax, gmax + POOL_GMAX_STEP))):
            grown = _grown(pool, table, src, make_pool, plan, near, smax, gmax, ts, tg,
                           axis, s_new, g_new, steps)
            if grown is not None:
                p2, tb2, src2, label = grown
                cost = work.cost(len(p2), src2.n_beams, len(kt))
                why = work.refuse(cost, fit_reserve())
                if why is not None:
                    steps.append(f"{label}: {why}, not checked")
                    grown = None
            if grown is None:
                unchecked += 1
                continue
            work.spent += cost
            new = _exact_tail_intensities(frame, p2, tb2, strong, src2, kt, t)
            src2.release()                   # its M × M block: rebuilt if adopted
            news[axis] = new
            measured += 1
            trials[axis] = e = _error(exact, new)
            steps.append(f"{label}: {e:.1e}")
        # a growth measured before, not adopted and not checkable from the adopted pool
        # and tail keeps the change it made (a measured estimate; not converged:
        # unchecked > 0), so that a larger change measured before is never dropped; when
        # nothing else stands, the change the adoption made does
        carried = {a: e for a, e in before.items() if a not in trials and a not in axes}
        if not trials and not carried:
            carried = {a: e for a, e in before.items() if a in axes}
        if carried:
            steps.append("not checked from the adopted pool and tail, the previous change "
                         "counts: " + ", ".join(f"{a} {e:.1e}" for a, e in carried.items()))
        pool_err = max([*trials.values(), *carried.values()], default=0.0)
        if pool_err <= 0.5 * accuracy or rnd == TAIL_ROUNDS - 1 or not trials:
            break
        fail = sorted((a for a, e in trials.items() if e > 0.5 * accuracy),
                      key=lambda a: -trials[a])
        # every growth above half the target together; when that cannot be built, the
        # tail's together (a pool above MAX_POOL_SIZE), then the one that changes most
        # of those that can
        tails = [a for a in fail if a.startswith("tail")]
        options = [fail, tails] + [[a] for a in fail]
        options = [o for i, o in enumerate(options) if o and o not in options[:i]]
        for axes in options:
            grown_all = _adopt(pool, table, src, make_pool, plan, near, smax, gmax, ts, tg,
                               set(axes), work, len(kt), steps)
            if grown_all is not None:
                break
        else:
            break
        p2, tb2, src2, n_smax, n_gmax, n_ts, n_tg = grown_all
        src2.share_couplings(src)
        src.release()
        pool, table, src = p2, tb2, src2
        smax, gmax, ts, tg = n_smax, n_gmax, n_ts, n_tg
        # one growth adopted: its check's intensities are the new pattern's
        if len(axes) == 1:
            exact = news[axes[0]]
        else:
            work.spent += work.cost(len(pool), src.n_beams, len(kt))
            exact = _exact_tail_intensities(frame, pool, table, strong, src, kt, t)
    fitted, fit_err, tiles = _fit_tail(frame, pool, table, src, plan, exact, kt, t, accuracy,
                                       steps, work)
    steps.append(f"tail walk: work {work.spent:.2e} (Σ {work.weight:g}·N·M² + "
                 f"{EIG_WORK_PER_CUBE:g}·N³ per direction) of {MAX_TAIL_WALK_WORK:.0e}")
    if not measured:
        # no growth could be checked at all: the pool's convergence is unknown
        steps.append("no growth of the pool or its tail could be checked: pool error unknown")
    info = {"beams": src.n_beams, "smax": float(ts), "gmax": float(tg), "near": float(near),
            "tiles": tiles,
            "n_tiles": fitted.n_tiles, "fit_error": float(fit_err),
            "growth_error": float(pool_err) if measured else None, "unchecked": unchecked,
            "work": float(work.spent)}
    src.release()
    return (pool, table, smax, gmax, fitted, pool_err + fit_err if measured else None,
            info)


def _adopt(pool: BeamPool, table: PotentialTable, src: TailSource,
           make_pool: Callable[[float, float], tuple[BeamPool, PotentialTable]],
           plan: TailPlan, near: float, smax: float, gmax: float, ts: float, tg: float,
           axes: set[str], work: _TailWork, n_kt: int, steps: list[str]) -> tuple | None:
    """The pool and tail with the growths ``axes`` of :func:`_converge_tail` together:
    (pool, table, tail source, smax, gmax, tail smax, tail gmax), or None (with a step
    saying why) when the grown pool has more beams than MAX_POOL_SIZE and the pool in
    use, the tail is too large (:func:`tail_too_large`) or its check (when more than
    one growth is adopted) and one-tile fit exceed the walk's work."""
    n_ts = TAIL_SMAX_FACTOR * ts if "tail smax" in axes else ts
    n_smax = POOL_SMAX_FACTOR * smax if "pool smax" in axes else smax
    n_gmax = gmax + POOL_GMAX_STEP if "pool gmax" in axes else gmax
    n_tg = max(tg + TAIL_GMAX_STEP if "tail gmax" in axes else tg, n_gmax)
    label = (f"adopted {', '.join(sorted(axes))}: pool (smax {n_smax:.3g}, gmax "
             f"{n_gmax:.3g}) + tail (smax {n_ts:.3g}, gmax {n_tg:.3g})")
    try:
        p2, tb2 = (make_pool(n_smax, n_gmax) if (n_smax, n_gmax) != (smax, gmax)
                   else (pool, table))
        if len(p2) > max(MAX_POOL_SIZE, len(pool)):
            # (a pool that starts above the limit, Felix's min_reflection_pool = 800,
            # keeps its tail's growths)
            steps.append(f"{label}: pool {len(p2)} above {MAX_POOL_SIZE} beams, not adopted")
            return None
        src2 = plan.make(p2, n_ts, n_tg, near)
    except InputError as exc:        # the memory guard of the beam lists
        steps.append(f"{label}: not built ({exc}), not adopted")
        return None
    label += f": {len(p2)} + {src2.n_beams} beams"
    why = tail_too_large(len(p2), src2.n_beams)
    if why is None:
        n_dir = FIT_DIRECTIONS_PER_TILE + (n_kt if len(axes) > 1 else 0)
        why = work.refuse(work.cost(len(p2), src2.n_beams, n_dir))
    if why is not None:
        steps.append(f"{label}: {why}, not adopted")
        return None
    steps.append(label)
    return p2, tb2, src2, n_smax, n_gmax, n_ts, n_tg


def _grown(pool: BeamPool, table: PotentialTable, src: TailSource,
           make_pool: Callable[[float, float], tuple[BeamPool, PotentialTable]],
           plan: TailPlan, near: float, smax: float, gmax: float, ts: float, tg: float,
           axis: str,
           s_new: float, g_new: float, steps: list[str]
           ) -> tuple[BeamPool, PotentialTable, TailSource, str] | None:
    """The pool and tail of one growth check of :func:`_converge_tail` (its couplings
    shared with ``src``), or None (with a step saying why) when it is too large."""
    label = f"{axis.split()[0]} grown to (smax {s_new:.3g}, gmax {g_new:.3g})"
    try:
        if axis.startswith("tail"):
            src2 = plan.make(pool, s_new, g_new, near)
            label = f"tail {src.n_beams} -> {src2.n_beams} (smax {s_new:.3g}, gmax {g_new:.3g})"
            why = tail_too_large(len(pool), src2.n_beams)
            p2, tb2 = pool, table
        else:
            p2, tb2 = make_pool(s_new, g_new)
            label = f"pool {len(pool)} -> {len(p2)} (smax {s_new:.3g}, gmax {g_new:.3g})"
            if len(p2) > MAX_CHECK_POOL_SIZE:
                # (pools above MAX_POOL_SIZE are checked, every beam strong, not adopted)
                steps.append(f"{label}: above {MAX_CHECK_POOL_SIZE} beams, not checked")
                return None
            src2 = plan.make(p2, ts, max(tg, g_new), near)
            label += f" under the tail ({src2.n_beams} beams)"
            why = tail_too_large(len(p2), src2.n_beams)
    except InputError as exc:            # the memory guard of the beam lists
        steps.append(f"{label}: not built ({exc}), not checked")
        return None
    if why is not None:
        steps.append(f"{label}: {why}, not checked")
        return None
    src2.share_couplings(src)            # the same potential: Z computed once
    return p2, tb2, src2, label
