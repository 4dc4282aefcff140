"""Reproducibility across regions (issue 12 item 4): tiling and the spread of refinements
on disjoint regions of synthetic data, compared with the esds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from qcbed.bloch.grids import TiltGrid
from qcbed.errors import InputError
from qcbed.experiment.roi import Region
from qcbed.refine import DirectData, Refinement
from qcbed.refine.reproducibility import RegionSpread, region_spread, tile_region, tile_slices
from test_accuracy_noise_budget import OUT, T_TRUE, U111, U222, UA111, A, si_sim


def test_tiles_are_disjoint_and_cover_the_grid():
    for shape, n in (((29, 29), 5), ((60, 8), 6), ((10, 40), 4), ((7, 7), 9)):
        tiles = tile_slices(shape, n)
        assert len(tiles) >= n
        cover = np.zeros(shape, int)
        for rs, cs in tiles:
            cover[rs, cs] += 1
        assert np.all(cover == 1)
    with pytest.raises(InputError):
        tile_slices((3, 3), 5)
    reg = Region.rectangle((10.0, 20.0), (56.0, 84.0), (29, 43))
    subs = tile_region(reg, 5)
    pts = np.concatenate([s.points().reshape(-1, 2) for s in subs])
    full = reg.points().reshape(-1, 2)
    assert len(pts) == len(full)
    # every tile sample is a sample of the region, none twice
    key = {tuple(np.round(p, 6)) for p in full}
    assert {tuple(np.round(p, 6)) for p in pts} == key


def test_spread_over_regions_is_consistent_with_the_esds():
    sim, kt0 = si_sim()
    g = np.sqrt(3) / A
    ny, nx = 36, 30
    grid = TiltGrid.regular(kt0 + np.array([0.0, 0.0]), (0.9 * g / (nx - 1), 0.0),
                            (0.0, -0.06 / (ny - 1)), (ny, nx))
    truth = sim.with_changes()
    truth.set_structure_factors({(1, -1, -1): (U111, UA111), (2, -2, -2): (U222, 0.0)})
    inten = truth.solve(grid.points).intensities([T_TRUE])[0].T
    rng = np.random.default_rng(5)
    obs = rng.poisson(2.0e4 * inten + 40.0).astype(float)
    idx = np.arange(ny * nx).reshape(ny, nx)
    tiles = tile_slices((ny, nx), 6)

    def spread_of(u222):
        fits = []
        for rs, cs in tiles:
            sel = idx[rs, cs].ravel()
            data = DirectData(OUT, grid.points[sel], obs[:, sel], np.maximum(obs[:, sel], 1.0))
            ref = Refinement(sim, data, background="per_disc")
            ref.add_thickness(T_TRUE * 1.01)
            ref.add_structure_factor((1, -1, -1), value=U111 * 1.01, refine_uabs=False,
                                     value_abs=UA111)
            ref.add_structure_factor((2, -2, -2), refine_u=False, refine_uabs=False,
                                     value=u222, value_abs=0.0)
            fits.append(ref.fit("lm", max_iter=20))
        return region_spread(fits)

    spread = spread_of(U222)
    st = spread.stats()
    print(spread.table())
    n = spread.n
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)
    for name in ("U(1,-1,-1)", "thickness"):
        s = st[name]
        assert lo < s["chi2_nu"] < hi
        assert 0.3 < s["std_over_esd"] < 2.5
    # the mean is unbiased within its standard error
    s = st["U(1,-1,-1)"]
    assert abs(s["weighted_mean"] - U111) < 4 * s["sem"]
    # a model error (U(2,-2,-2) 20 % off, fixed) shows as a spread far beyond the esds
    wrong = spread_of(1.2 * U222).stats()["U(1,-1,-1)"]
    print(f"U222 20 % off: chi2_nu of the regions {wrong['chi2_nu']:.1f}")
    assert wrong["chi2_nu"] > hi
    assert spread.as_dict()["n_regions"] == n


def test_excess_uncertainty_is_the_scatter_the_esds_do_not_explain():
    vals = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0], [4.0, 5.0]])  # std 1.29, 0
    esds = np.array([[0.5, 0.1]] * 4)
    sp = RegionSpread(["a", "b"], vals, esds)
    u = sp.excess_uncertainty()
    s2 = np.var(vals[:, 0], ddof=1)
    assert u["a"] == pytest.approx(np.sqrt((s2 - 0.25) / 4))
    assert u["b"] == 0.0  # no scatter
    # regions that agree within their esds add nothing
    assert RegionSpread(["a"], vals[:, :1], 2.0 * np.ones((4, 1))).excess_uncertainty() == {
        "a": 0.0}
    assert sp.as_dict()["excess_uncertainty"] == u
