"""Beam pools and per-direction strong/weak beam selection.

A *pool* is the list of reflections that may take part in a calculation
(explicit ``hkl`` list, or automatic: |g| ≤ g_max and small excitation error
over the tilt range; Zuo & Weickenmeier 1995). For every incident direction the
pool is split into

* **strong** beams, diagonalised exactly: |2K S_g| < ``sgmin`` or
  |2K S_g| < ``omega``·|U_g| (i.e. the inverse perturbation strength
  Ω_g = |2K S_g|/|U_g| below ``omega``; Zuo & Weickenmeier 1995); output beams
  are always strong;
* **weak** beams (the rest with |2K S_g| ≤ ``sgmax``), folded into the strong
  block by Bethe potentials (Bethe 1928; Spence & Zuo 1992, §3.4);
* beams beyond ``sgmax``, neglected.

The pool is ordered with the output beams first and 000 at index 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from .._core.checks import check_integer, check_number
from .._core.guard import check_memory
from ..crystal import Crystal
from ..errors import InputError
from .geometry import ZoneFrame, excitation_errors
from .symmetry import close_under_rotations, zone_rotations

#: Bytes per candidate reflection while an automatic pool is built (hkl, |g|, g in the
#: zone frame, centring phases).
_BYTES_PER_CANDIDATE = 160
#: Bytes per pair of pool beams (the N × N index of g − h and its temporaries).
_BYTES_PER_PAIR = 64


@dataclass(frozen=True)
class BeamSelection:
    """Per-direction beam-selection rules.

    Parameters
    ----------
    sgmin : float
        Strong if |2K S_g| < sgmin (Å⁻²). PyExtal examples: 0.3.
    omega : float or None
        Strong if |2K S_g| < omega·|U_g| (dimensionless). PyExtal examples: 30.
        None disables the criterion.
    sgmax : float or None
        Weak beams with |2K S_g| > sgmax (Å⁻²) are neglected. None keeps all.
    bethe : bool
        Include weak beams by Bethe potentials; False drops them.
    lowdin : bool
        Energy-dependent Bethe potentials to second order in λ/(2K S_w) and in the
        weak–weak coupling (:mod:`qcbed.bloch.lowdin`; Löwdin 1951, Birkeland et al.
        1996). False: the classic λ = 0 form.
    min_strong : int
        At least this many strong beams (the lowest |2K S_g|/max(sgmin, omega|U_g|)
        first), as Felix's ``min_strong_beams``.
    pad_multiple : int
        Round the number of strong beams up to a multiple of this (extra beams
        are the next most strongly excited), so that many directions share a
        matrix size and batch well. 1 = exact criterion.
    """

    sgmin: float = 0.3
    omega: float | None = 30.0
    sgmax: float | None = None
    bethe: bool = True
    min_strong: int = 0
    pad_multiple: int = 1
    lowdin: bool = True

    def __post_init__(self) -> None:
        if self.sgmin != np.inf:  # inf: every beam strong (all_strong)
            check_number(self.sgmin, "sgmin", low=0.0, unit="Å⁻²")
        if self.omega is not None:
            check_number(self.omega, "omega", low=0.0, tag="omeg")
        if self.sgmax is not None:
            check_number(self.sgmax, "sgmax", low=0.0, low_open=True, unit="Å⁻²")
        check_integer(self.pad_multiple, "pad_multiple", low=1)
        check_integer(self.min_strong, "min_strong", low=0)

    @classmethod
    def all_strong(cls) -> BeamSelection:
        """Every pool beam strong (no Bethe potentials): the converged reference."""
        return cls(sgmin=np.inf, omega=None, sgmax=None, bethe=False)


@dataclass
class BeamPool:
    """An ordered list of reflections: outputs first, 000 at index 0.

    Attributes
    ----------
    hkl : ndarray (N, 3) int
    g : ndarray (N, 3)
        Frame components (Å⁻¹).
    n_out : int
        The first ``n_out`` beams are output (always strong) beams.
    """

    hkl: np.ndarray
    g: np.ndarray
    n_out: int
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hkl)

    @property
    def outputs(self) -> np.ndarray:
        """Output reflections (n_out, 3)."""
        return self.hkl[: self.n_out]

    def index(self, hkl: ArrayLike) -> int:
        """Pool index of one reflection (InputError if absent)."""
        h = np.asarray(hkl, dtype=int).reshape(3)
        hit = np.nonzero(np.all(self.hkl == h, axis=1))[0]
        if not len(hit):
            raise InputError("reflection not in the beam pool", found=tuple(h))
        return int(hit[0])

    @classmethod
    def from_hkl(cls, frame: ZoneFrame, hkl: ArrayLike, outputs: ArrayLike | None = None
                 ) -> BeamPool:
        """Pool from an explicit list (``.dat`` ``hkl``), outputs moved to the front.

        Duplicates are removed; 000 is added when missing. ``outputs`` default to
        every pool beam.
        """
        h = np.asarray(hkl, dtype=int).reshape(-1, 3)
        _, first = np.unique(h, axis=0, return_index=True)
        h = h[np.sort(first)]
        if not np.any(np.all(h == 0, axis=1)):
            h = np.vstack([np.zeros((1, 3), int), h])
        if outputs is None:
            out = h
        else:
            out = np.asarray(outputs, dtype=int).reshape(-1, 3)
            _, first = np.unique(out, axis=0, return_index=True)
            out = out[np.sort(first)]
            missing = [tuple(o) for o in out if not np.any(np.all(h == o, axis=1))]
            if missing:
                h = np.vstack([h, np.array(missing, dtype=int)])
        # order: 000, remaining outputs, then the rest
        out = out[~np.all(out == 0, axis=1)]
        out = np.vstack([np.zeros((1, 3), int), out])
        is_out = np.zeros(len(h), bool)
        order_out = []
        for o in out:
            i = int(np.nonzero(np.all(h == o, axis=1))[0][0])
            order_out.append(i)
            is_out[i] = True
        order = order_out + [i for i in range(len(h)) if not is_out[i]]
        hh = h[order]
        return cls(hkl=hh, g=frame.g_frame(hh), n_out=len(order_out))

    @classmethod
    def automatic(cls, crystal: Crystal, frame: ZoneFrame, k_in: float, *, gmax: float,
                  smax: float, kt_center: ArrayLike = (0.0, 0.0), kt_radius: float = 0.0,
                  outputs: ArrayLike | None = None, holz: bool = True,
                  min_size: int = 0, max_size: int | None = None,
                  table: bool = True) -> BeamPool:
        """Automatic pool: |g| ≤ gmax (Å⁻¹) and |S_g| ≤ smax (Å⁻¹) somewhere in the tilt disc.

        The excitation error is bounded over the disc of tangential wave vectors
        of radius ``kt_radius`` around ``kt_center`` (Zuo & Weickenmeier 1995).
        Reflections absent by lattice centring never couple and are left out;
        space-group-forbidden reflections stay (they are excited dynamically).
        ``holz=False`` keeps only the zero-order Laue zone. With ``min_size``,
        smax grows until the pool holds at least that many beams (Felix's
        ``min_reflection_pool``). With ``max_size``, a larger pool keeps only its
        max(``max_size``, ``min_size``) beams nearest the Bragg condition (smallest
        min |S_g| over the disc; ``meta['smax']`` becomes their bound and
        ``meta['capped_from']`` the size before): large cells (C9H11NO3 at gmax 3,
        smax 0.05: 6 101 beams). ``table=False``: the beams are a list, not a pool
        with an N² coupling table (the pool's tail, whose own memory
        :func:`qcbed.bloch.convergence.tail_too_large` bounds): no N² memory check.
        """
        lat = crystal.lattice
        hmax = np.ceil(gmax * np.array([lat.a, lat.b, lat.c])).astype(int)
        n_grid = float(np.prod(2.0 * hmax + 1))
        check_memory(n_grid * _BYTES_PER_CANDIDATE,
                     f"the candidate reflections of gmax = {gmax:g} Å⁻¹ ({n_grid:.3g} hkl)",
                     tag="gmax", hint="lower gmax")
        rng = [np.arange(-m, m + 1) for m in hmax]
        hkl = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
        hkl = hkl[lat.g_length(hkl) <= gmax + 1e-12]
        # lattice-centring absences
        rot, tran = crystal.operations
        cen = tran[np.all(rot == np.eye(3, dtype=int), axis=(1, 2))]
        ph = np.exp(2j * np.pi * hkl @ cen.T)
        hkl = hkl[np.all(np.abs(ph - 1) < 1e-6, axis=1)]
        if not holz:
            hkl = hkl[np.abs(hkl @ np.asarray(frame.zone)) < 1e-9]
        g = frame.g_frame(hkl)
        s_min = min_excitation(g, k_in, kt_center, kt_radius) / (2 * k_in)
        s_cap = smax
        while True:
            keep = s_min <= s_cap
            if keep.sum() >= min_size or keep.all():
                break
            s_cap *= 1.25
        capped_from = None
        limit = max(int(max_size), int(min_size)) if max_size is not None else None
        if limit is not None and keep.sum() > 1.1 * limit:   # (min_size's steps overshoot)
            capped_from = int(keep.sum())
            s_new = float(np.partition(s_min, limit - 1)[limit - 1])
            if s_new > 0 and (s_min <= s_new).sum() <= 1.1 * limit:
                s_cap = s_new
                keep = s_min <= s_cap
            else:
                # most beams reach the Bragg condition somewhere in a wide tilt disc
                # (min |S_g| = 0 for all of them): lower gmax instead
                glen = np.linalg.norm(g, axis=1)
                gmax = float(np.partition(glen[keep], limit - 1)[limit - 1])
                keep &= glen <= gmax + 1e-9
        # closed under the zone's point-group rotations whose image of the tilt disc
        # overlaps the disc (only those can map directions of the disc onto each
        # other): a disc a little off the zone axis otherwise keeps a beam without its
        # mirror image, and the pattern symmetry (bloch.symmetry) could not be used;
        # this only adds beams
        kc = np.asarray(kt_center, dtype=float).reshape(2)
        rots = [r for r, s in zone_rotations(crystal, frame)
                if np.linalg.norm(kc @ s - kc) <= 2 * kt_radius + 1e-12]
        keep = close_under_rotations(hkl, keep, rots)
        n_pool = float(keep.sum())
        if table:
            check_memory(n_pool * n_pool * _BYTES_PER_PAIR,
                         f"a beam pool of {int(n_pool)} beams (gmax = {gmax:g} Å⁻¹, smax = "
                         f"{s_cap:g} Å⁻¹; its coupling table has N² entries)",
                         tag="gmax/smax", hint="lower gmax or smax")
        order = np.argsort(s_min[keep] + 1e-9 * np.linalg.norm(g[keep], axis=1), kind="stable")
        pool = cls.from_hkl(frame, hkl[keep][order], outputs)
        pool.meta.update(gmax=gmax, smax=s_cap, kt_radius=kt_radius, holz=holz)
        if capped_from is not None:
            pool.meta["capped_from"] = capped_from
        return pool


def min_excitation(g: np.ndarray, k_in: float, kt_center: ArrayLike, kt_radius: float
                   ) -> np.ndarray:
    """Lower bound of |2K S_g| (Å⁻²) over the tilt disc, for beams ``g`` (M, 3) in the
    frame: |2K S_g(k_c)| − 2 r |g_t| (2K S_g changes by −2 g_t·δk_t across the
    disc; Zuo & Weickenmeier 1995), floored at 0."""
    kc = np.asarray(kt_center, dtype=float).reshape(1, 2)
    two_k_sg = np.abs(excitation_errors(g, kc, k_in)[0])
    return np.maximum(two_k_sg - 2 * kt_radius * np.linalg.norm(g[:, :2], axis=1), 0.0)


def selection_scores(two_k_sg: np.ndarray, coupling: np.ndarray, rules: BeamSelection
                     ) -> np.ndarray:
    """Score per (direction, beam): strong when < 1. Output beams are not special here."""
    thr = np.full_like(coupling, rules.sgmin, dtype=float)
    if rules.omega is not None:
        thr = np.maximum(thr, rules.omega * coupling)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.abs(two_k_sg) / thr[None, :]
    score[~np.isfinite(score)] = np.inf
    if np.isinf(rules.sgmin):
        score[:] = 0.0
    return score


def select_strong(two_k_sg: np.ndarray, coupling: np.ndarray, n_out: int, rules: BeamSelection
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Strong and weak masks (n_dir, N) for one chunk of directions.

    Output beams (the first ``n_out``) are always strong; ``min_strong`` and
    ``pad_multiple`` add the next best-scored beams.
    """
    n = two_k_sg.shape[1]
    score = selection_scores(two_k_sg, coupling, rules)
    score[:, :n_out] = -1.0
    strong = score < 1.0
    n_s = strong.sum(axis=1)
    target = np.maximum(n_s, min(rules.min_strong, n))
    if rules.pad_multiple > 1:
        target = np.minimum(-(-target // rules.pad_multiple) * rules.pad_multiple, n)
    need = target > n_s
    if np.any(need):
        # take the next best-scored beams; beams tied with the last one taken are
        # included too, so that symmetry-equivalent beams are always treated alike
        rows = np.nonzero(need)[0]
        srt = np.sort(score[rows], axis=1)
        thr = srt[np.arange(len(rows)), target[rows] - 1]
        tol = 1e-9 * np.maximum(np.abs(thr), 1e-300)
        strong[rows] |= score[rows] <= (thr + tol)[:, None]
    weak = ~strong
    if not rules.bethe:
        weak[:] = False
    elif rules.sgmax is not None:
        weak &= np.abs(two_k_sg) <= rules.sgmax
    return strong, weak
