"""Second-order correction from the beams outside the pool (the pool's *tail*).

Beams w outside the pool are far from the Bragg condition in every direction of
the tilt disc (|2K S_w| ≫ |U|). Eliminating them to second order shifts the
pool's structure matrix by the Bethe terms (Bethe 1928; Spence & Zuo 1992,
§3.4 and eqs. 3.31–3.32; Zuo & Weickenmeier 1995), with the energy dependence
of Löwdin (1951) to first order in λ/(2K S_w) (m² = 1 + g_n/K_n):

    A_eff(λ) = A − W − λ S,   W_gh = Σ_w Z_{g−w} Z_{w−h} / (2K S_w),
                              S_gh = Σ_w Z_{g−w} m_w² Z_{w−h} / (2K S_w)²,

Z = U + iU′ (absorption included). −W is added to the strong-beam matrix (its
Hermitian part to the elastic block, its anti-Hermitian part /i to the
absorptive one) and S to the Löwdin overlap of :mod:`qcbed.bloch.lowdin`, which
solves A′ φ = λ (1 + S′) φ exactly as for the pool's own weak beams. (Van
Vleck's symmetric form with λ_g ≈ 2K S_g fails here: the pool's edge beams have
2K S_g as large as the nearest tail beams' 2K S_w, and the Bloch waves that carry
the intensity have λ near 0; measured in docs/validation.md.) W and S vary
slowly and smoothly over the small tilt range of a pattern (2K S_w of a far beam
changes by 2 g_t·δk_t), so they are computed exactly at a few directions and
fitted by a cubic polynomial in k_t; per direction only the fitted N × N
matrices are evaluated. On a wide tilt range (the Si D-LACBED's 0.94 Å⁻¹) 1/(2K S_w)
of the near tail beams changes by a large factor across the disc and one
polynomial does not follow it: the disc is then cut into hexagonal *tiles*, each
with its own fit (a direction uses the tile whose centre is nearest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..parallel.executors import available_cores, one_blas_thread
from .geometry import excitation_errors, normal_components

__all__ = ["CouplingStore", "TailCorrection", "TailSource", "build_tail", "fit_points",
           "tile_centers"]

#: Exponents (i, j) of the fit polynomial x^i y^j in the reduced tilt (k_t − c)/r.
_POWERS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))


def _basis(kt: np.ndarray, center: np.ndarray, radius: float, n_terms: int) -> np.ndarray:
    x = (np.atleast_2d(kt) - center[None, :]) / radius
    return np.stack([x[:, 0] ** i * x[:, 1] ** j for i, j in _POWERS[:n_terms]], axis=1)


def fit_points(center: ArrayLike, radius: float) -> np.ndarray:
    """Directions (k_t, Å⁻¹) at which the tail is computed exactly: the centre,
    6 at half the radius and 12 on the rim (19 points)."""
    c = np.asarray(center, float).reshape(2)
    pts = [c]
    for frac, n in ((0.5, 6), (1.0, 12)):
        ang = 2 * np.pi * (np.arange(n) + 0.25) / n
        pts.extend(c + frac * radius * np.stack([np.cos(ang), np.sin(ang)], 1))
    return np.asarray(pts)


def tile_centers(center: ArrayLike, radius: float, tiles: int) -> tuple[np.ndarray, float]:
    """Centres (n, 2) and radius ρ (Å⁻¹) of hexagonal tiles that cover the tilt disc.

    ``tiles`` tiles per disc radius: ρ = radius / tiles, centres on the hexagonal
    lattice of spacing √3 ρ (whose covering radius is ρ), those closer than
    radius + ρ to the centre. Every direction of the disc is then within ρ of
    its nearest centre. 1 tile: the disc itself; 2: 7 tiles; 3: 19 tiles.
    """
    c = np.asarray(center, float).reshape(2)
    if tiles <= 1:
        return c[None, :], float(radius)
    rho = float(radius) / tiles
    a = np.sqrt(3.0) * rho
    n = tiles + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    pts = a * np.stack([i + 0.5 * j, (np.sqrt(3.0) / 2) * j], -1).reshape(-1, 2)
    d = np.linalg.norm(pts, axis=1)
    keep = d < (radius + rho) * (1 - 1e-9)
    order = np.lexsort((np.arctan2(pts[keep, 1], pts[keep, 0]), np.round(d[keep], 9)))
    return c[None, :] + pts[keep][order], rho


@dataclass(frozen=True, repr=False)
class TailCorrection:
    """Fitted second-order terms of the beams outside the pool.

    Attributes
    ----------
    center : ndarray (n_tiles, 2)
        Centres of the tiles of the tilt disc (Å⁻¹).
    radius : float
        Radius of a tile (Å⁻¹) used to reduce k_t.
    coef : ndarray (n_tiles, 4, n_terms, N, N), float32 or complex64
        Polynomial coefficients, per tile, of the solver's four blocks: the
        Hermitian and anti-Hermitian/i parts of ΔA = −W (Å⁻²),
        W = Σ_w Z_{g−w} Z_{w−h}/(2K S_w), and of the Löwdin overlap
        S = Σ_w Z_{g−w} m_w² Z_{w−h}/(2K S_w)² (dimensionless). Real when the
        potential is (centrosymmetric crystal, internal origin). Single precision:
        the tail terms are ≲ 10⁻² of the matrix, and the per-direction gather is
        bound by memory traffic.
    n_beams : int
        Number of tail beams eliminated.
    fit_error : float
        Largest |W| misfit of the polynomials at check directions between the
        fit points of every tile, relative to max |W|.
    size : float
        max |W| over the fit points (Å⁻²).
    """

    center: np.ndarray
    radius: float
    coef: np.ndarray
    n_beams: int
    fit_error: float
    size: float

    def __repr__(self) -> str:
        # the executors fingerprint the engine state by repr: it must cover every value
        h = hashlib.blake2b(digest_size=16)
        for a in (self.center, np.float64(self.radius), self.coef):
            h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
        return f"TailCorrection(n_beams={self.n_beams}, digest={h.hexdigest()})"

    @property
    def n_tiles(self) -> int:
        """Number of tiles of the tilt disc."""
        return len(self.center)

    @property
    def nbytes(self) -> int:
        """Memory held by the coefficients (bytes)."""
        return int(self.coef.nbytes)

    def tile_of(self, kt: np.ndarray) -> np.ndarray:
        """Index of the tile (nearest centre) of each direction ``kt`` (n_dir, 2)."""
        kt = np.atleast_2d(kt)
        if self.n_tiles == 1:
            return np.zeros(len(kt), int)
        d = ((kt[:, None, :] - self.center[None, :, :]) ** 2).sum(-1)
        return np.argmin(d, axis=1)

    def basis(self, kt: np.ndarray, tile: int) -> np.ndarray:
        """The fit polynomials of tile ``tile`` at directions ``kt`` (n_dir, 2):
        (n_dir, n_terms), float32 like the coefficients they multiply."""
        return _basis(np.atleast_2d(kt), self.center[tile], self.radius,
                      self.coef.shape[2]).astype(np.float32)

    def terms(self, kt: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The four blocks (4, n_dir, n, n) at directions ``kt`` on the pool rows
        ``idx`` (n_dir, n): ΔA's Hermitian and anti-Hermitian/i parts, S's."""
        kt = np.atleast_2d(kt)
        tile = self.tile_of(kt)
        n_dir, n = idx.shape
        out = np.empty((4, n_dir, n, n), self.coef.dtype)
        for k in np.unique(tile):
            d = np.nonzero(tile == k)[0]
            out[:, d] = fit_on_rows(self.basis(kt[d], int(k)), self.coef[k], idx[d],
                                    square=True)
        return out

    def blocks(self, kt: np.ndarray, idx: np.ndarray, *, exact: bool, real: bool
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """The solver's additions on the strong rows ``idx`` (n_dir, n) at ``kt``.

        Returns (ΔA, ΔA_abs, S, S_abs) in double precision: ΔA = −W as elastic and
        absorptive blocks (:func:`split`; in ``exact`` mode the full −W and None),
        and the Löwdin overlap S, S_abs (Hermitian and anti-Hermitian/i parts, not
        scaled by M). ``real``: the solver's matrices are real (their imaginary
        parts are dropped).
        """
        a_el, a_abs, s_el, s_abs = self.terms(kt, idx)
        if exact:
            return a_el + 1j * a_abs.astype(complex), None, *_parts(s_el, s_abs, real)
        return (*_parts(a_el, a_abs, real), *_parts(s_el, s_abs, real))


#: The union of a batch's strong rows above which :func:`fit_on_rows` sums the terms per
#: direction instead (in units of one direction's n): the union's GEMM writes n_dir·m²
#: elements against the per-term path's ≈ 3·n_terms·n_dir·n² (gathers, products, sums).
UNION_LIMIT = 2.0


def fit_on_rows(b: np.ndarray, c: np.ndarray, idx: np.ndarray, *, square: bool
                ) -> np.ndarray:
    """The fit Σ_j b_j C_j on each direction's pool rows ``idx``.

    Parameters
    ----------
    b : ndarray (n_dir, n_terms)
        The tile's basis at the directions (:meth:`TailCorrection.basis`).
    c : ndarray (n_parts, n_terms, N, n_c)
        Coefficients of the parts (for ``square``, n_c = N).
    idx : ndarray (n_dir, n)
        Each direction's rows (its strong beams).
    square : bool
        Take the columns ``idx`` too: (n_parts, n_dir, n, n); else every column,
        (n_parts, n_dir, n, n_c).

    Notes
    -----
    Neighbouring directions share most strong beams (the union of a batch's is
    ≈ 1.5 n on the Si D-LACBED), so the terms are summed by one GEMM of the basis
    against the coefficients on the union's rows (and columns), and each direction's
    block is gathered from it once: with :func:`qcbed.bloch.lowdin.tail_rows`'
    strong–strong and strong–weak blocks done this way the Si D-LACBED image took
    0.94× the time of a gather, product and sum per term (alternating, 3 rounds,
    medians). Where the union exceeds :data:`UNION_LIMIT` × n (directions far apart)
    the terms are summed per direction as before.
    """
    n_dir, n = idx.shape
    n_parts, n_terms = c.shape[:2]
    ru, pos = np.unique(idx, return_inverse=True)
    pos = pos.reshape(idx.shape)
    m = len(ru)
    shape = (n_parts, n_dir, n, n if square else c.shape[-1])
    if m > UNION_LIMIT * n:
        if square:
            flat = (idx[:, :, None] * c.shape[-1] + idx[:, None, :]).reshape(n_dir, -1)

            def gather(cj):
                return np.take(cj.reshape(n_parts, -1), flat, axis=1)
        else:
            def gather(cj):
                return np.take(cj, idx, axis=1).reshape(n_parts, n_dir, -1)
        out = b[None, :, 0, None] * gather(c[:, 0])
        for j in range(1, n_terms):
            out += b[None, :, j, None] * gather(c[:, j])
        return out.reshape(shape)
    dirs = np.arange(n_dir)[:, None]
    # each direction's rows in the (n_dir·m) rows of the union's sums
    rows = (dirs * m + pos).ravel()
    if square:
        cu = c[:, :, ru[:, None], ru].reshape(n_parts, n_terms, m * m)
        full = (b @ cu).reshape(n_parts, n_dir * m * m)
        flat = (rows.reshape(n_dir, n, 1) * m + pos[:, None, :]).ravel()
        return np.take(full, flat, axis=1).reshape(shape)
    cu = np.take(c, ru, axis=2).reshape(n_parts, n_terms, -1)
    full = (b @ cu).reshape(n_parts, n_dir * m, c.shape[-1])
    return np.take(full, rows, axis=1).reshape(shape)


def _parts(el: np.ndarray, ab: np.ndarray, real: bool) -> tuple[np.ndarray, np.ndarray]:
    dt = float if real else complex
    if real and np.iscomplexobj(el):
        el, ab = el.real, ab.real
    return el.astype(dt), ab.astype(dt)


def _exact_terms(z_sw: np.ndarray, z_ws: np.ndarray, o_ww: np.ndarray, g_tail: np.ndarray,
                 kt: np.ndarray, k_in: float, normal: np.ndarray, symmetric: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """W and S at one direction, with the tail's own coupling O to first order:
    (X + O)⁻¹ ≈ X⁻¹ − X⁻¹ O X⁻¹ (Spence & Zuo 1992, §3.4; the pool's weak beams,
    :func:`qcbed.bloch.lowdin.bethe_terms`, take the next order too, the tail's beams
    lie farther from the Bragg condition, where O/X is smaller). With L = Z_sw X⁻¹ and
    R = X⁻¹ Z_ws: W = L Z_ws − L O R, S = (L − L O X⁻¹) M² (R − X⁻¹ O R).

    O is needed among *all* tail beams: keeping it only among those with
    min |2K S_w| < 64 Å⁻² changed a Si pattern by 5 × 10⁻³ (docs/validation.md).

    ``symmetric``: Z_ws = Z_swᵀ and O = Oᵀ (Z_{−g} = Z_g: U and U′ real, a
    centrosymmetric crystal with the origin on a centre). Then R = Lᵀ and
    O R = (L O)ᵀ, so W = (L X − L O) Lᵀ and S = P M² Pᵀ with P = L − L O X⁻¹: one
    N × M × M product instead of two.
    """
    x = excitation_errors(g_tail, kt[None, :], k_in)[0]
    k_n, g_n = normal_components(g_tail, kt[None, :], k_in, normal)
    m2 = (1.0 + g_n / k_n[0]).astype(np.float32)
    x = x.astype(np.float32)
    left = z_sw / x[None, :]                       # Z_sw X⁻¹
    lo = left @ o_ww
    if symmetric:
        w = (z_sw - lo) @ left.T
        p = left - lo / x[None, :]
        return w, (p * m2[None, :]) @ p.T
    right = z_ws / x[:, None]                      # X⁻¹ Z_ws
    w = left @ z_ws - lo @ right
    s = ((left - lo / x[None, :]) * m2[None, :]) @ (right - (o_ww @ right) / x[:, None])
    return w, s


def set_up_threads() -> int:
    """Threads for the set-up's per-direction work (:func:`on_set_up_threads`): the CPUs
    this process may use (:func:`qcbed.parallel.executors.available_cores`), at most 8."""
    return max(1, min(8, available_cores()))


def on_set_up_threads(fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
    """``[fn(x) for x in items]`` on :func:`set_up_threads` threads, in order.

    For independent per-direction work that releases the GIL (BLAS products, LAPACK
    eigen-solutions): the tail's exact terms and the convergence checks' solves. While
    the threads run, BLAS is held to one thread each
    (:func:`qcbed.parallel.executors.one_blas_thread`): n Python
    threads each with the BLAS library's own threads oversubscribe the cores (the Si
    D-LACBED set-up took 158–165 s wall with two OpenBLAS threads per Python thread on
    the 2-core VM, 108–111 s with one; benchmarks/RESULTS.md, session 15).
    """
    items = list(items)
    n = min(set_up_threads(), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with one_blas_thread(), ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, items))


#: Half-range of the Miller indices of :class:`CouplingStore`'s keys.
_KEY_HALF = 1 << 15


def _hkl_key(hkl: np.ndarray) -> np.ndarray:
    """One int64 per hkl (components within ±2¹⁵), order-preserving for lookups."""
    h = np.asarray(hkl, np.int64) + _KEY_HALF
    base = 2 * _KEY_HALF
    return (h[..., 0] * base + h[..., 1]) * base + h[..., 2]


class CouplingStore:
    """Z = U + iU′ (Å⁻²) of hkl differences, each computed once.

    The tail sources of one convergence walk (the base tail and its grown trials,
    :func:`qcbed.bloch.convergence._converge_tail`) share one store: the grown
    tails' blocks contain the base tail's, and the structure factors are most of
    the cost of building them. A store belongs to one ``compute`` (one set-up's
    potential): :meth:`TailSource.share_couplings` refuses a source of another.

    Parameters
    ----------
    compute : callable
        ``compute(hkl) -> (U, U′)`` in Å⁻².
    """

    def __init__(self, compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.compute = compute
        self._keys = np.zeros(0, np.int64)
        self._z = np.zeros(0, complex)

    def __len__(self) -> int:
        return len(self._keys)

    def values(self, hkl: np.ndarray) -> np.ndarray:
        """Z of the reflections ``hkl`` (K, 3), computing those not yet held."""
        hkl = np.asarray(hkl, np.int64).reshape(-1, 3)
        key = _hkl_key(hkl)
        pos = np.searchsorted(self._keys, key)
        held = pos < len(self._keys)
        held[held] = self._keys[pos[held]] == key[held]
        if not held.all():
            new = np.unique(key[~held], return_index=True)[1]
            fresh = hkl[~held][new]
            u, ua = self.compute(fresh)
            keys = np.concatenate([self._keys, key[~held][new]])
            z = np.concatenate([self._z, np.asarray(u, complex) + 1j * np.asarray(ua, complex)])
            order = np.argsort(keys, kind="stable")
            self._keys, self._z = keys[order], z[order]
            pos = np.searchsorted(self._keys, key)
        return self._z[pos]


#: Parts of Z below this fraction of max |Z| are set to zero (:func:`_flush`).
_FLUSH = 1e-10


def _flush(z: np.ndarray) -> np.ndarray:
    """Z with real and imaginary parts below :data:`_FLUSH` × max |Z| set to zero.

    Those are the round-off of structure factors that vanish by symmetry (≈ 10⁻²²
    Å⁻² for Si's forbidden 200-type differences): in single precision their
    products underflow to denormal numbers, which the processor handles many
    times slower (the N × M × M product of the Si D-LACBED's tail took 50 instead
    of 32 ms), while parts 10⁻¹⁰ of the largest change the sums 10³ below single
    precision.
    """
    cut = _FLUSH * float(np.abs(z).max(initial=0.0))
    re = np.where(np.abs(z.real) < cut, 0.0, z.real)
    im = np.where(np.abs(z.imag) < cut, 0.0, z.imag)
    return re + 1j * im


#: Largest flag table of :func:`_z_blocks` (entries; ×5 bytes with its index table).
#: Pools with larger Miller indices (|h| ≳ 60: large cells) sort the differences.
_MAX_FLAGS = 1 << 24


def _z_blocks(store: CouplingStore, pool_hkl: np.ndarray, tail_hkl: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Z_sw (N, M), Z_ws (M, N) and O (M, M, zero diagonal) in single precision,
    and whether Z_{−g} = Z_g on all of them to single precision (:func:`_exact_terms`;
    then made exactly so).

    Each difference g_i − g_j is one integer (a balanced base-``base`` code), so
    the distinct differences of the blocks (10⁷ pairs) are marked in a table of
    base³ flags (sorted only when that table would exceed :data:`_MAX_FLAGS`),
    and Z is computed (or looked up in ``store``) once per distinct difference.
    """
    span = int(max(np.abs(pool_hkl).max(initial=0), np.abs(tail_hkl).max(initial=0))) * 2 + 1
    base = 2 * span + 1
    off = span * (base * base + base + 1)        # the largest |code| of a difference
    itype = np.int32 if 2 * off + 1 < 2**31 else np.int64

    def key(h: np.ndarray) -> np.ndarray:
        return (((h[:, 0] * base) + h[:, 1]) * base + h[:, 2]).astype(itype)

    kp, kw = key(pool_hkl), key(tail_hkl)
    # codes shifted to 0 … 2 off: each digit then lies in 0 … 2 span
    d_sw = kp[:, None] - kw[None, :] + itype(off)
    d_ws = np.ascontiguousarray(2 * itype(off) - d_sw.T)     # g_w − g_s
    d_ww = kw[:, None] - kw[None, :] + itype(off)
    if 2 * off + 1 <= _MAX_FLAGS:
        mark = np.zeros(2 * off + 1, bool)
        for d in (d_sw, d_ws, d_ww):
            mark[d] = True
        codes = np.flatnonzero(mark)
        lut = np.zeros(2 * off + 1, itype)
        lut[codes] = np.arange(len(codes), dtype=itype)

        def index(d: np.ndarray) -> np.ndarray:
            return lut[d]
    else:
        codes = np.unique(np.concatenate([d.reshape(-1) for d in (d_sw, d_ws, d_ww)]))

        def index(d: np.ndarray) -> np.ndarray:
            return np.searchsorted(codes, d)
    h = np.stack([codes // (base * base), codes // base % base, codes % base], 1) - span
    z = store.values(h)
    # Z_{−g} = Z_g to single precision (round-off of the phases aside): made exact
    z_neg = z[index(2 * off - codes)]
    symmetric = bool(np.abs(z_neg - z).max(initial=0.0) <= 1e-7 * np.abs(z).max(initial=0.0))
    if symmetric:
        z = 0.5 * (z + z_neg)
    z = _flush(z).astype(np.complex64)
    o_ww = z[index(d_ww)]
    np.fill_diagonal(o_ww, 0.0)
    return z[index(d_sw)], z[index(d_ws)], o_ww, symmetric


class TailSource:
    """The coupling of a pool to its tail beams, from which the tail terms follow.

    Holds Z = U + iU′ of the pool–tail and tail–tail blocks (computed on first
    use, so that ``n_beams`` is known without the M × M block) in single precision
    (the tail terms are second order, ≲ 10⁻² of the matrix; single precision
    halves the cost of the M × M products that dominate).

    Parameters
    ----------
    pool_hkl : ndarray (N, 3) int
    tail_hkl : ndarray (M, 3) int
        Beams outside the pool (none of them in it), each far from the Bragg
        condition over the tilt range.
    g_tail : ndarray (M, 3)
        Their frame components (Å⁻¹).
    compute : callable
        ``compute(hkl) -> (U, U′)`` in Å⁻² (the engine's internal origin).
    k_in : float
        K (Å⁻¹).
    normal : ndarray (3,)
        Unit surface normal (frame components).
    """

    def __init__(self, pool_hkl: np.ndarray, tail_hkl: np.ndarray, g_tail: np.ndarray,
                 compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *,
                 k_in: float, normal: np.ndarray) -> None:
        self._pool_hkl = np.asarray(pool_hkl, np.int64)
        self._tail_hkl = np.asarray(tail_hkl, np.int64).reshape(-1, 3)
        self._store = CouplingStore(compute)
        self.n_beams = len(self._tail_hkl)
        self.g_tail = np.asarray(g_tail, float).reshape(-1, 3)
        self.k_in, self.normal = float(k_in), np.asarray(normal, float)

    def share_couplings(self, other: TailSource) -> None:
        """Take Z values from ``other``'s :class:`CouplingStore` (and add to it).

        Only for a source of the same set-up (the same ``compute``), before this
        source's blocks are built; a source of another set-up (e.g. a variant with
        other structure factors) is refused, so no stale Z is used.
        """
        if other._store.compute != self._store.compute:
            raise ValueError("tail sources of different potentials cannot share couplings")
        if "_blocks" in self.__dict__:
            raise ValueError("the blocks of this tail source are already built")
        self._store = other._store

    def release(self) -> None:
        """Drop the blocks (the M × M coupling: 8·M² bytes); they are rebuilt from the
        :class:`CouplingStore` on next use."""
        self.__dict__.pop("_blocks", None)

    @cached_property
    def _blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Z_sw, Z_ws, O (tail–tail, zero diagonal) and whether Z_{−g} = Z_g,
        computed on first use."""
        return _z_blocks(self._store, self._pool_hkl, self._tail_hkl)

    @property
    def symmetric(self) -> bool:
        """Whether Z_{−g} = Z_g on the blocks (centrosymmetric, origin on a centre): the
        exact terms then take one N × M × M product instead of two (builds the blocks)."""
        return self._blocks[3]

    def exact(self, kt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """W (Å⁻²) and S (N, N) at one direction ``kt`` (Å⁻¹)."""
        *blocks, symmetric = self._blocks
        w, s = _exact_terms(*blocks, self.g_tail, np.asarray(kt, float).reshape(2),
                            self.k_in, self.normal, symmetric)
        return w.astype(complex), s.astype(complex)

    def exact_many(self, kts: ArrayLike) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`exact` at each direction of ``kts`` (n, 2) (Å⁻¹), in order.

        The directions are independent N·M² products that release the GIL, so they
        run on :func:`on_set_up_threads` (the set-up's cost is almost all of this,
        docs/engine.md); the blocks are built once before.
        """
        pts = np.asarray(kts, float).reshape(-1, 2)
        self._blocks                                  # noqa: B018 (built before the threads)
        return on_set_up_threads(self.exact, pts)

    def at(self, kt: ArrayLike) -> TailCorrection:
        """The tail terms computed exactly at one direction ``kt`` (2,) or at each of
        several (n, 2) (Å⁻¹): a constant per direction, each its own tile (a
        direction elsewhere takes the nearest one's), so that the directions are
        solved in one batch."""
        c = np.asarray(kt, float).reshape(-1, 2)
        w, s = map(np.asarray, zip(*self.exact_many(c)))
        return _pack(c, 1e-3, w[:, None], s[:, None], self.n_beams, 0.0,
                     float(np.abs(w).max()))

    def fit(self, center: ArrayLike, radius: float, *, n_terms: int = 10,
            tiles: int = 1) -> TailCorrection:
        """The tail terms fitted over the tilt disc.

        Parameters
        ----------
        center, radius
            The tilt disc (Å⁻¹); radius 0 is treated as 10⁻³ Å⁻¹.
        n_terms : int
            Polynomial terms: 1 (constant), 3 (linear), 6 (quadratic) or 10 (cubic).
        tiles : int
            Tiles per disc radius (:func:`tile_centers`): 1 fits one polynomial
            over the disc; 2 fits 7 tiles of half the radius, 3 fits 19 (19 exact
            directions and 3 checks each).
        """
        return self.fits(center, radius, terms=(n_terms,), tiles=tiles)[0]

    def fits(self, center: ArrayLike, radius: float, *, terms: tuple[int, ...],
             tiles: int = 1) -> list[TailCorrection]:
        """Fits with each number of polynomial ``terms`` from the same exact
        directions (:meth:`fit`; the exact terms cost N·M² each, the fits nothing)."""
        c = np.asarray(center, float).reshape(2)
        r = max(float(radius), 1e-3)
        centers, rho = tile_centers(c, r, tiles)
        coef = {n: ([], []) for n in terms}
        misfit = dict.fromkeys(terms, 0.0)
        size = 0.0
        for ct in centers:
            pts = fit_points(ct, rho)
            ws, ss = map(np.asarray, zip(*self.exact_many(pts)))
            size = max(size, float(np.abs(ws).max()))
            # misfit at directions between the fit points (W only: S is ≲ 10 % of it)
            chk = fit_points(ct, 0.75 * rho)[1:7:2]
            w_chk = [w for w, _ in self.exact_many(chk)]
            for n in terms:
                pinv = np.linalg.pinv(_basis(pts, ct, rho, n))
                w_c = np.einsum("kp,pij->kij", pinv, ws)
                coef[n][0].append(w_c)
                coef[n][1].append(np.einsum("kp,pij->kij", pinv, ss))
                for bp, w_ex in zip(_basis(chk, ct, rho, n), w_chk):
                    fit = np.einsum("k,kij->ij", bp, w_c)
                    misfit[n] = max(misfit[n], float(np.abs(fit - w_ex).max()))
        return [_pack(centers, rho, np.asarray(coef[n][0]), np.asarray(coef[n][1]),
                      self.n_beams, misfit[n] / max(size, 1e-30), size) for n in terms]


#: Coefficients whose imaginary parts are within this share of their largest real part
#: (float32 round-off: 2 × 10⁻⁷ measured on the Si D-LACBED) are stored real.
TAIL_REAL_TOLERANCE = 1e-5


def _pack(centers: np.ndarray, radius: float, w: np.ndarray, s: np.ndarray, n_beams: int,
          misfit: float, size: float) -> TailCorrection:
    """TailCorrection from W and S coefficients (n_tiles, n_terms, N, N)."""
    coef = np.stack([*split(-w, False, False), *split(s, False, False)], axis=1)
    # real up to the single-precision round-off of the exact terms (the couplings are
    # float32, :meth:`TailSource.exact`): a real centrosymmetric potential's coefficients
    # keep imaginary parts ~10⁻⁷ of their size, which a complex64 store would carry into
    # twice the per-direction work of the solver (issue 12 item 8)
    if np.abs(coef.imag).max() <= TAIL_REAL_TOLERANCE * max(np.abs(coef.real).max(), 1e-300):
        coef = coef.real.astype(np.float32)
    else:
        coef = coef.astype(np.complex64)
    return TailCorrection(np.asarray(centers, float), float(radius),
                          np.ascontiguousarray(coef), n_beams, misfit, size)


def build_tail(pool_hkl: np.ndarray, tail_hkl: np.ndarray, g_tail: np.ndarray,
               compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *,
               k_in: float, normal: np.ndarray, center: ArrayLike, radius: float,
               n_terms: int = 10, tiles: int = 1) -> TailCorrection:
    """The tail terms of ``tail_hkl`` for the pool ``pool_hkl`` fitted over the tilt
    disc: ``TailSource(...).fit(center, radius, n_terms=..., tiles=...)``
    (:class:`TailSource`)."""
    return TailSource(pool_hkl, tail_hkl, g_tail, compute, k_in=k_in,
                      normal=normal).fit(center, radius, n_terms=n_terms, tiles=tiles)


def split(delta: np.ndarray, exact: bool, real: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """ΔA as the solver's blocks: (elastic, absorptive), or (ΔA, None) in ``exact`` mode.

    The elastic block takes the Hermitian part (Δ + Δ†)/2 (its real part when the
    elastic matrix is real), the absorptive block (Δ − Δ†)/2i.
    """
    if exact:
        return delta, None
    adj = np.conj(np.swapaxes(delta, -1, -2))
    el, ab = 0.5 * (delta + adj), -0.5j * (delta - adj)
    if real:
        return el.real, ab.real
    return el, ab
