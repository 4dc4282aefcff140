"""Setting a simulation up: the potential source, the beam pool, and checks of both.

Pure functions used by :class:`~qcbed.bloch.simulation.Simulation` while it is built:
the mean inner potential and the U/U′ values of the potential table (from the
independent-atom model or a tabulated potential, in the internal origin), the
automatic or explicit beam pool with its output beams, a warning for output
reflections outside the pool and one for an unphysical absorptive potential.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ..constants import potential_to_u
from ..crystal import Crystal
from ..scattering.structure_factors import PotentialModel, TabulatedPotential, structure_factors
from .beams import BeamPool, min_excitation
from .geometry import ZoneFrame
from .solver import EngineArrays
from .tail import TailSource


# ------------------------------------------------------------------ potential
def mean_inner_u(internal: Crystal, voltage_kv: float,
                 potential: PotentialModel | TabulatedPotential, v0: float | None) -> float:
    """U₀ (Å⁻²): from ``v0`` (volts) when given, else from the potential (no absorption)."""
    if v0 is not None:
        return float(potential_to_u(v0, voltage_kv))
    if isinstance(potential, TabulatedPotential):
        return float(potential.lookup(np.zeros((1, 3), int))[0][0].real)
    sf = structure_factors(internal, np.zeros((1, 3), int), voltage_kv,
                           replace(potential, absorption="none"))
    return float(sf.u[0].real)


def compute_u(hkl: np.ndarray, internal: Crystal, origin_shift: np.ndarray, voltage_kv: float,
              potential: PotentialModel | TabulatedPotential,
              u_abs0: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(U, U′) in Å⁻² of reflections ``hkl`` (M, 3) in the internal origin.

    A tabulated potential is given in the user's origin and shifted by
    exp(2πi g·s); ``u_abs0`` replaces U′₀ (the ``.dat`` ``abs`` line).
    """
    if isinstance(potential, TabulatedPotential):
        u, ua = potential.lookup(hkl)
        shift = np.exp(2j * np.pi * (hkl @ origin_shift))
        u, ua = u * shift, ua * shift
    else:
        sf = structure_factors(internal, hkl, voltage_kv, potential)
        u, ua = sf.u.copy(), sf.u_abs.copy()
    if u_abs0 is not None:
        ua[np.all(hkl == 0, axis=1)] = u_abs0
    return u, ua


# ------------------------------------------------------------------ beam pool
def automatic_pool(internal: Crystal, frame: ZoneFrame, k_in: float, settings: dict,
                   outputs: np.ndarray | None, *, gmax: float, smax: float) -> BeamPool:
    """An automatic pool for |g| ≤ gmax, |S_g| ≤ smax (Å⁻¹) over the tilt range of
    ``settings`` (``kt_center``, ``kt_radius``, ``holz``, ``min_pool``)."""
    return BeamPool.automatic(internal, frame, k_in, gmax=gmax, smax=smax,
                              kt_center=settings["kt_center"],
                              kt_radius=settings["kt_radius"], outputs=outputs,
                              holz=settings["holz"], min_size=settings["min_pool"])


def initial_pool(crystal: Crystal, internal: Crystal, frame: ZoneFrame, k_in: float,
                 pool: np.ndarray | None, outputs: np.ndarray | None, aperture: float,
                 settings: dict) -> BeamPool:
    """The pool a simulation starts from, with its output beams.

    An explicit ``pool`` keeps its order; without ``outputs`` its beams with
    |g| ≤ ``aperture`` (Å⁻¹) are output. Otherwise an automatic pool from
    ``settings`` (``gmax``, ``smax``, …; ``max_pool``: at most that many beams, those
    nearest the Bragg condition, with a warning); without ``outputs`` its
    zero-order-Laue-zone beams within the aperture are output.
    """
    if pool is not None:
        ph = np.asarray(pool, int).reshape(-1, 3)
        if outputs is None:
            outputs = ph[crystal.lattice.g_length(ph) <= aperture + 1e-12]
        return BeamPool.from_hkl(frame, pool, outputs)
    max_size = settings.get("max_pool")
    made = BeamPool.automatic(internal, frame, k_in, gmax=settings["gmax"],
                              smax=settings["smax"], kt_center=settings["kt_center"],
                              kt_radius=settings["kt_radius"], outputs=outputs,
                              holz=settings["holz"], min_size=settings["min_pool"],
                              max_size=max_size)
    if "capped_from" in made.meta:
        warnings.warn(f"the automatic beam pool (|g| ≤ {settings['gmax']:g} Å⁻¹, |S_g| ≤ "
                      f"{settings['smax']:g} Å⁻¹ over the tilt disc) has "
                      f"{made.meta['capped_from']} beams (a large cell or tilt range); the "
                      f"{len(made)} nearest the Bragg condition or shortest are used (|S_g| ≤ "
                      f"{made.meta['smax']:.3g} Å⁻¹, |g| ≤ {made.meta['gmax']:.3g} Å⁻¹) so "
                      "that the engine's accuracy check stays affordable; the pool error "
                      "says what growth changes",
                      UserWarning, stacklevel=4)
    if outputs is None:
        h = made.hkl
        keep = (crystal.lattice.g_length(h) <= aperture + 1e-12) & (
            np.abs(h @ np.asarray(frame.zone)) < 1e-9)
        meta = made.meta
        made = BeamPool.from_hkl(frame, h, h[keep])
        made.meta.update(meta)
    return made


def tail_source(internal: Crystal, frame: ZoneFrame, k_in: float, settings: dict,
                pool: BeamPool, compute, *, smax: float, gmax: float,
                near: float | None = None) -> TailSource:
    """The pool's tail (:mod:`qcbed.bloch.tail`) up to (``smax``, ``gmax``) (Å⁻¹).

    The beams of the automatic pool of that extent over the tilt range of
    ``settings`` that are not in ``pool`` and stay far from the Bragg condition:
    min |2K S_g| over the disc above 2K ``near`` (Å⁻¹; None: the pool's own s_max).
    Beams beyond the pool's g_max that come near the Bragg condition are left out;
    the convergence walk measures them by growing g_max.
    """
    ext = BeamPool.automatic(internal, frame, k_in, gmax=gmax, smax=smax,
                             kt_center=settings["kt_center"], kt_radius=settings["kt_radius"],
                             holz=settings["holz"], table=False)
    have = {tuple(h) for h in pool.hkl.tolist()}
    outside = np.array([tuple(h) not in have for h in ext.hkl.tolist()], bool)
    bound = 2 * k_in * float(pool.meta.get("smax", settings["smax"]) if near is None
                             else near)
    far = min_excitation(ext.g, k_in, settings["kt_center"], settings["kt_radius"]) > bound
    keep = outside & far
    return TailSource(pool.hkl, ext.hkl[keep], ext.g[keep], compute, k_in=k_in,
                      normal=frame.normal_frame)


def warn_outside_pool(crystal: Crystal, outputs: np.ndarray, pool: np.ndarray | None,
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


# ------------------------------------------------------------------ absorption
def warn_unphysical_absorption(arrays: EngineArrays) -> None:
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
    if arrays.unphysical_absorption():
        warnings.warn(
            f"the absorptive potential is unphysical: its matrix U'(g-h) has the negative "
            f"eigenvalue {floor:.3e} A^-2 while U'0 = {arrays.u_abs0:.3e} A^-2 (U'0 is too "
            f"small for the U'_g). Bloch waves can grow with thickness (up to "
            f"exp(2*pi*{arrays.max_growth:.2e}*t), t in A) and the summed intensity can "
            "exceed 1; give a mean absorption U'0 (.dat 'abs') of at least "
            f"{arrays.u_abs0 - floor:.3e} A^-2 for a physical model. The classic Bethe "
            "potentials are used for it (the Loewdin terms need a physical model).",
            UserWarning, stacklevel=3)
