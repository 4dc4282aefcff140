"""Reproducibility across regions: the same refinement on disjoint parts of the data.

The statistical esd assumes the variance model and the model are right; the
scatter of results from disjoint regions of the same pattern tests that
directly (PyExtal's paper, Table 3: within-dataset std of U(111) below 0.3 %).
For n regions with values x_i and esds e_i this module reports

* the mean x̄ and the standard deviation s (ddof = 1), the standard error
  s/√n, the relative spread s/|x̄|;
* the mean esd ē and the ratio s/ē (≈ 1 when the esds describe the scatter);
* the part of the scatter the esds do not explain, as a standard uncertainty of
  the full-region result, u_regions = sqrt(max(0, s² − ⟨e²⟩))/√n
  (:meth:`RegionSpread.excess_uncertainty`), which a project run adds to the
  error budget's combined uncertainty (entry ``region scatter``);
* the consistency statistic χ²_ν = Σ (x_i − x̄_w)²/e_i² / (n − 1), with x̄_w
  the inverse-variance weighted mean (Bevington & Robinson 2003, §4.1), which
  follows χ²_{n−1}/(n − 1) when the esds are right.

Regions are tiles of a sample grid: :func:`tile_slices` splits the rows and
columns of a (rows, cols) grid into a near-square arrangement of at least n
disjoint tiles (whole samples, no sample in two tiles); :func:`tile_region`
applies it to a :class:`~qcbed.experiment.Region` (a parallelogram of display
pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

__all__ = ["RegionSpread", "independent_tiles", "region_spread", "run_regions", "tile_grid_shape",
           "tile_region", "tile_slices"]


def tile_grid_shape(n: int, shape: tuple[int, int]) -> tuple[int, int]:
    """(tile rows, tile cols) with rows·cols ≥ n, as square as the grid allows."""
    if n < 1:
        raise InputError("need at least one region", found=n)
    rows, cols = shape
    best = None
    for tr in range(1, n + 1):
        tc = int(np.ceil(n / tr))
        if tr > rows or tc > cols:
            continue
        # prefer tiles of square-ish sample counts, then fewest extra tiles
        aspect = abs(np.log((rows / tr) / (cols / tc)))
        key = (tr * tc - n, aspect)
        if best is None or key < best[0]:
            best = (key, (tr, tc))
    if best is None:
        raise InputError("the grid is too small for that many regions", found=(n, shape))
    return best[1]


def tile_slices(shape: tuple[int, int], n: int, *, min_side: int = 2
                ) -> list[tuple[slice, slice]]:
    """At least ``n`` disjoint tiles (row slice, col slice) of a (rows, cols) sample grid."""
    tr, tc = tile_grid_shape(n, shape)
    rows, cols = shape
    re = np.linspace(0, rows, tr + 1).round().astype(int)
    ce = np.linspace(0, cols, tc + 1).round().astype(int)
    out = [(slice(re[i], re[i + 1]), slice(ce[j], ce[j + 1]))
           for i in range(tr) for j in range(tc)]
    if min(min(s.stop - s.start for s in t) for t in out) < min_side:
        raise InputError("regions would have fewer than "
                         f"{min_side} samples per side", expected=f"a grid of at least "
                         f"{tr * min_side} x {tc * min_side} samples", found=shape)
    return out


def _tile(region, rs: slice, cs: slice):
    """The sub-region of ``region`` on the sample rows ``rs`` and columns ``cs``."""
    from ..experiment.roi import Region

    c = np.asarray(region.corners, float)
    e12 = (c[1] - c[0]) / (region.n12 - 1)  # one sample along 1→2 (columns)
    e13 = (c[2] - c[0]) / (region.n13 - 1)  # one sample along 1→3 (rows)
    p0 = c[0] + rs.start * e13 + cs.start * e12
    n12 = cs.stop - cs.start
    n13 = rs.stop - rs.start
    return Region(np.array([p0, p0 + (n12 - 1) * e12, p0 + (n13 - 1) * e13]),
                  n12, n13, region.pad)


def tile_region(region, n: int) -> list:
    """At least ``n`` disjoint sub-regions of a Region (sample grid kept).

    Every tile's samples are samples of ``region`` (same spacing); tiles share no
    sample. The padding of ``region`` is kept for each tile (probe convolution).
    """
    return [_tile(region, rs, cs) for rs, cs in tile_slices((region.n13, region.n12), n)]


def _point_map(op: str, shape: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Display (row, col) ↦ the position that an image operation of
    :data:`qcbed.experiment.copies.SQUARE_OPERATIONS` relates it to (about the image
    centre; an image and its copy hold the same value at the two positions)."""
    h1, w1 = shape[0] - 1.0, shape[1] - 1.0
    maps = {
        "identity": lambda r, c: (r, c),
        "mirror_lr": lambda r, c: (r, w1 - c),
        "mirror_ud": lambda r, c: (h1 - r, c),
        "rotate_180": lambda r, c: (h1 - r, w1 - c),
        "transpose": lambda r, c: (c, r),
        "anti_transpose": lambda r, c: (h1 - c, w1 - r),
        "rotate_90": lambda r, c: (c, w1 - r),
        "rotate_270": lambda r, c: (h1 - c, r),
    }
    if op not in maps:
        raise InputError("unknown image operation", tag="ops", expected=sorted(maps), found=op)
    f = maps[op]
    return lambda p: np.array(f(*p), float)


def _orbits(centres: np.ndarray, maps: list, tol: float
            ) -> tuple[dict[int, list[int]], np.ndarray]:
    """Orbits of points under the group generated by ``maps`` (a point's image matches
    the nearest point within ``tol``; none: no partner), keyed by their smallest
    member, and which points a map sends onto themselves."""
    parent = list(range(len(centres)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    selfmapped = np.zeros(len(centres), bool)
    for i, ctr in enumerate(centres):
        for f in maps:
            d = np.hypot(*(centres - f(ctr)).T)
            j = int(np.argmin(d))
            if d[j] > tol:
                continue  # mapped outside the region: no partner here
            if j == i:
                selfmapped[i] = True
            else:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(centres)):
        groups.setdefault(find(i), []).append(i)
    return {min(v): v for v in groups.values()}, selfmapped


def _spread(tiles: list, candidates: list[int], n: int) -> list:
    """``n`` of the candidate tiles, evenly spread over their order."""
    pick = np.linspace(0, len(candidates) - 1, n).round().astype(int)
    return [tiles[candidates[k]] for k in pick]


def independent_tiles(region, n: int, ops: Sequence[str], image_shape: tuple[int, int],
                      max_side: int = 12) -> list:
    """``n`` disjoint sub-regions of a Region of which none is an image of another
    under the image operations ``ops`` (the copy relations of symmetrised data).

    When the images of a stack are mirrored or rotated copies of each other
    (:func:`qcbed.experiment.copy_operations`), a tile T and its image F(T) hold the
    same data for every copied reflection: a spread over such tiles counts one
    measurement twice. The region is cut into m × m tiles (m = ⌈√n⌉, ⌈√n⌉ + 1, …
    up to ``max_side``) until at least ``n`` orbits of tiles under the group that
    ``ops`` generate are found that hold no tile mapped onto itself (partly its own
    copy; such orbits are used only when no tiling avoids them); one tile per orbit
    is returned, the orbits spread evenly over the tiling. A tile's mapped centre
    matches the nearest tile centre within half a tile side (regions moved by less
    than one sample, e.g. made symmetric about the zone axis, still match).

    Parameters
    ----------
    region : Region
        In display pixels.
    n : int
        Regions wanted (≥ 2).
    ops : sequence of str
        Names of :data:`qcbed.experiment.copies.SQUARE_OPERATIONS`; empty → the
        tiles of :func:`tile_region`.
    image_shape : (int, int)
        Display image (rows, cols): the operations act about its centre.
    max_side : int
        Finest tiling tried (tiles per side).

    Returns
    -------
    list of Region

    Raises
    ------
    InputError
        When no tiling up to ``max_side`` gives ``n`` independent tiles of at least
        3 × 3 samples.

    Examples
    --------
    >>> from qcbed.experiment import Region
    >>> reg = Region([[10, 10], [10, 130], [130, 10]], 61, 61)
    >>> tiles = independent_tiles(reg, 5, ["mirror_lr", "mirror_ud"], (141, 141))
    >>> len(tiles), tiles[0].n12
    (5, 10)
    """
    ops = [o for o in ops if o != "identity"]
    if not ops:
        return tile_region(region, n)
    maps = [_point_map(o, image_shape) for o in ops]
    shape = (region.n13, region.n12)
    fallback = None
    for m in range(max(2, int(np.ceil(np.sqrt(n)))), max_side + 1):
        try:
            slices = tile_slices(shape, m * m, min_side=3)
        except InputError:
            break
        tiles = [_tile(region, rs, cs) for rs, cs in slices]
        centres = np.array([t.corners[0] + 0.5 * ((t.corners[1] - t.corners[0])
                                                  + (t.corners[2] - t.corners[0]))
                            for t in tiles])
        size = min(min(np.hypot(*(t.corners[1] - t.corners[0])),
                       np.hypot(*(t.corners[2] - t.corners[0]))) for t in tiles)
        orbits, selfmapped = _orbits(centres, maps, 0.5 * size)
        reps = sorted(orbits)
        free = [i for i in reps if not any(selfmapped[j] for j in orbits[i])]
        if len(free) >= n:
            return _spread(tiles, free, n)
        if fallback is None and len(reps) >= n:
            fallback = _spread(tiles, reps, n)
    if fallback is not None:
        return fallback
    raise InputError(f"the region cannot hold {n} regions that are not copies of each "
                     f"other under {', '.join(ops)}", tag="regions",
                     expected=f"fewer regions or a larger region (tiles of ≥ 3 × 3 samples, "
                     f"≤ {max_side} per side)", found=(region.n13, region.n12))


@dataclass
class RegionSpread:
    """Per-region values and their spread (module docstring).

    Attributes
    ----------
    names : list of str
    values, esds : ndarray (n_regions, n_params)
    labels : list of str
        One per region.
    """

    names: list[str]
    values: np.ndarray
    esds: np.ndarray
    labels: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    def stats(self) -> dict[str, dict[str, float]]:
        """Mean, std, standard error, relative spread, mean esd, ratio, χ²_ν per parameter."""
        out = {}
        for k, name in enumerate(self.names):
            x = self.values[:, k]
            e = self.esds[:, k]
            mean = float(np.mean(x))
            std = float(np.std(x, ddof=1)) if self.n > 1 else float("nan")
            ok = e > 0
            if ok.sum() >= 2:
                w = 1.0 / e[ok] ** 2
                xw = float(np.sum(w * x[ok]) / np.sum(w))
                chi2 = float(np.sum(w * (x[ok] - xw) ** 2) / (ok.sum() - 1))
            else:
                xw, chi2 = mean, float("nan")
            mean_esd = float(np.mean(e))
            out[name] = {"mean": mean, "std": std, "sem": std / np.sqrt(self.n),
                         "rel_std": std / abs(mean) if mean else float("nan"),
                         "weighted_mean": xw, "mean_esd": mean_esd,
                         "std_over_esd": std / mean_esd if mean_esd > 0 else float("nan"),
                         "chi2_nu": chi2}
        return out

    def excess_uncertainty(self) -> dict[str, float]:
        """Standard uncertainty of the full-region result from the scatter between
        regions that the esds do not explain (module docstring), per parameter:

            u_regions = sqrt(max(0, s² − ⟨e²⟩)) / √n,

        s the standard deviation of the n region values and ⟨e²⟩ the mean squared
        esd: the between-region (model-misfit) variance, a Type A evaluation of the
        mean over n regions (JCGM 100:2008 §4.2.3), with the statistical part that
        the full fit's own esd already carries removed. Zero when the regions agree
        within their esds.
        """
        out = {}
        for k, name in enumerate(self.names):
            s2 = float(np.var(self.values[:, k], ddof=1)) if self.n > 1 else 0.0
            e2 = float(np.mean(self.esds[:, k] ** 2))
            out[name] = float(np.sqrt(max(0.0, s2 - e2) / self.n))
        return out

    def as_dict(self) -> dict:
        """JSON-ready (undefined statistics, e.g. χ²_ν without esds, are None)."""
        def clean(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {"n_regions": self.n, "labels": list(self.labels),
                "values": {n: self.values[:, k].tolist() for k, n in enumerate(self.names)},
                "esds": {n: self.esds[:, k].tolist() for k, n in enumerate(self.names)},
                "stats": {n: {k: clean(v) for k, v in st.items()}
                          for n, st in self.stats().items()},
                "excess_uncertainty": self.excess_uncertainty()}

    def table(self) -> str:
        st = self.stats()
        w = max(12, *(len(n) + 2 for n in self.names))
        lines = [f"{'parameter':<{w}}{'mean':>13}{'std':>11}{'rel std':>9}{'mean esd':>11}"
                 f"{'std/esd':>9}{'chi2_nu':>9}   ({self.n} regions)"]
        for n in self.names:
            s = st[n]
            lines.append(f"{n:<{w}}{s['mean']:>13.6g}{s['std']:>11.3g}"
                         f"{100 * s['rel_std']:>8.3f}%{s['mean_esd']:>11.3g}"
                         f"{s['std_over_esd']:>9.2f}{s['chi2_nu']:>9.2f}")
        return "\n".join(lines)


def region_spread(fits: Sequence, names: Sequence[str] | None = None,
                  labels: Sequence[str] | None = None) -> RegionSpread:
    """Collect the results of refinements of the same model on different regions.

    Parameters
    ----------
    fits : sequence of RefinementResult
    names : parameter names (default: the free parameters of the first fit)
    labels : one label per fit
    """
    if len(fits) < 2:
        raise InputError("a spread needs at least two regions", found=len(fits))
    names = list(names or fits[0].free_names)
    vals = np.array([[f.value(n) for n in names] for f in fits], float)
    esds = np.array([[f.esd(n) or 0.0 for n in names] for f in fits], float)
    return RegionSpread(names, vals, esds, list(labels or [f"region {i + 1}"
                                                          for i in range(len(fits))]))


def run_regions(fit_one: Callable[[int], object], n: int, *, names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> RegionSpread:
    """Run ``fit_one(i)`` for i = 0…n−1 (each returning a RefinementResult) and collect."""
    return region_spread([fit_one(i) for i in range(n)], names, labels)
