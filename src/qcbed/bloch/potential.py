"""The U_{g−h} table of a beam pool, built once and updated in place.

The structure matrix only ever needs U and U′ at the differences g_i − g_j of
pool beams. They are computed once for the *unique* differences (vectorised
over reflections) and looked up through an (N, N) index matrix. Refined values
are written into the unique list, linked across symmetry equivalents with
their phases (and Friedel mates by complex conjugation), so an update touches
a handful of numbers and no matrix is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..crystal import Crystal
from ..errors import InputError


def _row_keys(h: np.ndarray, span: int) -> np.ndarray:
    base = 2 * span + 1
    return ((h[:, 0] + span) * base + (h[:, 1] + span)) * base + (h[:, 2] + span)


@dataclass
class PotentialTable:
    """U and U′ at the unique differences of a pool.

    Attributes
    ----------
    hkl : ndarray (M, 3) int
        Unique differences g_i − g_j (000 included).
    index : ndarray (N, N) int32
        ``index[i, j]`` is the row of ``hkl`` holding g_i − g_j.
    u, u_abs : ndarray (M,) complex
        Elastic U and absorptive U′ (Å⁻²) in the engine's internal origin.
    """

    hkl: np.ndarray
    index: np.ndarray
    u: np.ndarray
    u_abs: np.ndarray

    @classmethod
    def build(cls, pool_hkl: ArrayLike,
              compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
              ) -> PotentialTable:
        """Build the table; ``compute(hkl) -> (U, U′)`` is called once on the unique list."""
        h = np.asarray(pool_hkl, dtype=np.int64)
        diff = (h[:, None, :] - h[None, :, :]).reshape(-1, 3)
        span = int(np.abs(diff).max()) + 1
        keys = _row_keys(diff, span)
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        uh = diff[first].astype(int)
        u, ua = compute(uh)
        return cls(hkl=uh, index=inv.reshape(len(h), len(h)).astype(np.int32),
                   u=np.asarray(u, dtype=complex).copy(), u_abs=np.asarray(ua, complex).copy())

    def lookup(self, hkl: ArrayLike) -> np.ndarray:
        """Rows of ``self.hkl`` for reflections (-1 where absent)."""
        h = np.atleast_2d(np.asarray(hkl, dtype=np.int64))
        span = int(max(np.abs(self.hkl).max(), np.abs(h).max())) + 1
        keys = _row_keys(self.hkl.astype(np.int64), span)
        order = np.argsort(keys)
        q = _row_keys(h, span)
        pos = np.searchsorted(keys[order], q)
        pos = np.clip(pos, 0, len(keys) - 1)
        found = keys[order][pos] == q
        return np.where(found, order[pos], -1)

    @property
    def is_real(self) -> bool:
        """True when every U and U′ is real (centrosymmetric crystal, origin at a centre)."""
        scale = max(np.abs(self.u).max(), 1e-30)
        return bool(np.all(np.abs(self.u.imag) <= 1e-12 * scale)
                    and np.all(np.abs(self.u_abs.imag) <= 1e-12 * scale))

    def coupling_to_000(self) -> np.ndarray:
        """|U_g| of each pool beam g (coupling to the incident beam), shape (N,)."""
        return np.abs(self.u[self.index[:, 0]])

    def set_values(self, values: Mapping[tuple[int, int, int], tuple[complex, complex]],
                   crystal: Crystal | None = None, origin_shift: ArrayLike | None = None
                   ) -> list[int]:
        """Overwrite U and U′ of reflections and (with ``crystal``) of their equivalents.

        Parameters
        ----------
        values : mapping hkl -> (U, U′)
            New values in Å⁻², in the *user's* origin.
        crystal : Crystal, optional
            When given, every symmetry equivalent g′ = gR gets U(g′) = exp(2πi g·t) U(g)
            and every Friedel mate −g′ gets the complex conjugate.
        origin_shift : array of 3, optional
            Internal origin shift s (values are multiplied by exp(2πi g·s)).

        Returns
        -------
        list of int
            Rows of the table that changed.
        """
        s = np.zeros(3) if origin_shift is None else np.asarray(origin_shift, dtype=float)
        changed: list[int] = []
        for hkl, (u_val, ua_val) in values.items():
            g = np.asarray(hkl, dtype=int)
            if crystal is not None:
                eq = crystal.equivalent_reflections(g, friedel=True)
                targets, phases, conj = eq.hkl, eq.phase, eq.conjugate
            else:
                targets = np.array([g, -g])
                phases = np.array([1.0, 1.0])
                conj = np.array([False, True])
                if not np.any(g):
                    targets, phases, conj = targets[:1], phases[:1], conj[:1]
            rows = self.lookup(targets)
            for row, tgt, ph, cj in zip(rows, targets, phases, conj):
                if row < 0:
                    continue
                uu = np.conj(u_val) if cj else u_val
                aa = np.conj(ua_val) if cj else ua_val
                shift = np.exp(2j * np.pi * float(np.dot(tgt, s)))
                self.u[row] = ph * uu * shift
                self.u_abs[row] = ph * aa * shift
                changed.append(int(row))
            if crystal is None and np.all(rows < 0):
                raise InputError("reflection does not occur in the structure matrix",
                                 found=tuple(g))
        return changed
