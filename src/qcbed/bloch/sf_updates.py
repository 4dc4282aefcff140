"""Structure-factor updates of a simulation: set U_g/U′_g, read them, their derivatives.

:class:`StructureFactorUpdates` is a mix-in of
:class:`~qcbed.bloch.simulation.Simulation`: it edits the potential table (values in the
user's origin, linked to symmetry equivalents and Friedel mates), bumps the table
version that keys every derived cache, updates the shipped engine state by delta, and
gives the coefficients ∂(U table)/∂a that analytic gradients need.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import check_hkl, check_number
from ..crystal import Crystal
from ..errors import InputError
from ..scattering.structure_factors import PotentialModel, TabulatedPotential, structure_factors
from .beams import BeamPool
from .potential import PotentialTable
from .solver import EngineArrays

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



class StructureFactorUpdates:
    """Set and read the U_g, U′_g of a simulation (mix-in of ``Simulation``)."""

    crystal: Crystal
    voltage_kv: float
    potential: PotentialModel | TabulatedPotential
    origin_shift: np.ndarray
    pool: BeamPool
    table: PotentialTable
    _overrides: dict[tuple[int, int, int], tuple[complex, complex]]
    _version: int
    _arrays: EngineArrays | None

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
