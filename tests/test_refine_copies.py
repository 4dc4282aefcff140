"""Copied images (symmetrised data) count once in χ² and the esds (docs/refinement.md)."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.experiment import Region, copy_groups, copy_multiplicity, copy_operations
from qcbed.refine import DirectData, Refinement
from qcbed.refine.gof import count_copies_once
from qcbed.refine.reproducibility import independent_tiles, tile_region
from test_refine_synthetic import TRUE, line_directions, set_truth, systematic_sim


def test_copy_groups_finds_every_operation_of_the_square_and_nothing_else():
    rng = np.random.default_rng(3)
    a = rng.random((9, 9))
    b = rng.random((9, 9))
    stack = [a, a[:, ::-1], a[::-1], a[::-1, ::-1], a.T, np.rot90(a), b,
             a + 1e-3 * rng.standard_normal(a.shape), b[::-1].T]
    g = copy_groups(stack)
    assert g.tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 1]
    assert copy_multiplicity(g).tolist() == [6, 6, 6, 6, 6, 6, 2, 1, 2]
    # a non-square image only has the four operations of the rectangle
    r = rng.random((4, 6))
    assert copy_groups([r, r[:, ::-1], r[::-1, ::-1]]).tolist() == [0, 0, 0]
    with pytest.raises(InputError):
        copy_groups(a)
    with pytest.raises(InputError):
        count_copies_once(np.ones((2, 3)), np.ones((2, 3), bool), np.array([1, 0]))


def test_copy_operations_name_the_relations_between_copies():
    rng = np.random.default_rng(4)
    a, b, c = rng.random((3, 8, 8))
    assert copy_operations([a, a[:, ::-1], b, b[::-1, ::-1], c]) == ["mirror_lr", "rotate_180"]
    sym = a + a[::-1]  # an image that is its own up-down copy
    assert copy_operations([sym, b]) == ["mirror_ud"]
    assert copy_operations([a, b, c]) == []


def _copies_overlap(tiles, ops, shape):
    """Pairs (i, j) of tiles whose sample points overlap under an image operation
    (i == j: a tile partly its own copy)."""
    from qcbed.refine.reproducibility import _point_map

    boxes = [(t.corners.min(0) - 0.5, t.corners.max(0) + 0.5) for t in tiles]
    out = set()
    for i, t in enumerate(tiles):
        pts = [t.corners[0] + a * (t.corners[1] - t.corners[0]) / (t.n12 - 1)
               + b * (t.corners[2] - t.corners[0]) / (t.n13 - 1)
               for a in range(t.n12) for b in range(t.n13)]
        for op in ops:
            f = _point_map(op, shape)
            q = np.array([f(p) for p in pts])
            for j, (lo, hi) in enumerate(boxes):
                if np.any(np.all((q >= lo) & (q <= hi), axis=1)):
                    out.add((i, j))
    return out


@pytest.mark.parametrize("ops", [["mirror_lr", "mirror_ud", "rotate_180"], ["mirror_lr"],
                                 ["transpose"]])
def test_independent_tiles_are_not_copies_of_each_other(ops):
    shape = (152, 152)
    reg = Region([[15.5, 15.5], [15.5, 135.5], [135.5, 15.5]], 61, 61)
    tiles = independent_tiles(reg, 5, ops, shape)
    assert len(tiles) == 5 and min(t.n12 * t.n13 for t in tiles) >= 9
    assert _copies_overlap(tiles, ops, shape) == set()
    # the plain tiling (the spread before) has mirror pairs: the check can fail
    assert _copies_overlap(tile_region(reg, 5), ops, shape)
    # disjoint and inside the region, on its sample grid
    pts = {tuple(np.round(t.corners[0], 6)) for t in tiles}
    assert len(pts) == 5
    # without copy relations: the plain tiling
    plain = independent_tiles(reg, 5, [], shape)
    assert [p.corners.tolist() for p in plain] == [p.corners.tolist()
                                                   for p in tile_region(reg, 5)]
    with pytest.raises(InputError, match="copies of each other"):
        independent_tiles(Region([[60, 60], [60, 90], [90, 60]], 6, 6), 5, ops, shape)


def test_si_dlacbed_images_hold_17_independent_images(si_dlacbed_dir):
    from qcbed.experiment import read_felix_images

    st = read_felix_images(si_dlacbed_dir, allow_negative=True)
    g = copy_groups(st.images)
    assert len(st.hkl) == 45 and g.max() + 1 == 17
    key = {tuple(int(v) for v in h): int(k) for h, k in zip(st.hkl, g)}
    assert key[(1, 1, 1)] == key[(-1, -1, 1)] == key[(1, 1, -1)] == key[(-1, -1, -1)]
    assert key[(0, 0, 2)] != key[(0, 0, -2)]
    # the copies are left-right and up-down mirrors about the image centre
    assert copy_operations(st.images) == ["mirror_lr", "mirror_ud", "rotate_180"]


@pytest.fixture(scope="module")
def copies_case():
    sim, kt0 = systematic_sim()
    kt = line_directions(kt0, n=16)
    truth = sim.with_changes()
    set_truth(truth)
    inten = truth.solve(kt).intensities([TRUE["thickness"]])[0].T
    rng = np.random.default_rng(11)
    obs = rng.poisson(2.0e4 * inten + 40.0).astype(float)
    return sim, kt, obs


def _fit(sim, data):
    ref = Refinement(sim, data, background="single", model_step=1)
    ref.add_thickness(TRUE["thickness"] * 1.02)
    ref.add_structure_factor((1, -1, -1), value=TRUE["U111"] * 1.02,
                             value_abs=TRUE["Uabs111"])
    return ref.fit(max_iter=30)


def test_copies_counted_once_equal_the_fit_without_them(copies_case):
    sim, kt, obs = copies_case
    out = np.asarray(sim.outputs)
    unique = DirectData(out, kt, obs, np.maximum(obs, 1.0))
    # reflections 0 and 2 appear three times (identical copies), the others once
    assert len(out) == 4
    rows = [0, 1, 2, 3, 0, 2, 0, 2]
    mult = [3, 1, 3, 1, 3, 3, 3, 3]
    dup = DirectData(out[rows], kt, obs[rows], np.maximum(obs[rows], 1.0),
                     multiplicity=np.array(mult))
    naive = DirectData(out[rows], kt, obs[rows], np.maximum(obs[rows], 1.0))
    r_u, r_d, r_n = _fit(sim, unique), _fit(sim, dup), _fit(sim, naive)
    assert r_d.dof == r_u.dof and r_n.dof > r_u.dof
    assert r_d.chi2 == pytest.approx(r_u.chi2, rel=1e-8)
    for name in r_u.free_names:
        pu, pd, pn = r_u.parameters[name], r_d.parameters[name], r_n.parameters[name]
        assert pd.value == pytest.approx(pu.value, rel=1e-8, abs=1e-12)
        assert pd.esd == pytest.approx(pu.esd, rel=1e-6)
        # counted as independent, the copies make the esds too small
        assert pn.esd < 0.8 * pu.esd


def test_multiplicity_is_checked(copies_case):
    sim, kt, obs = copies_case
    out = np.asarray(sim.outputs)
    with pytest.raises(InputError, match="multiplicity"):
        DirectData(out, kt, obs, np.maximum(obs, 1.0), multiplicity=np.array([1, 0, 1, 1]))


def test_serial_correlation_of_residual_fields():
    """Bérar & Lelann's factor: ~1 for white residuals, (1+ρ)/(1−ρ) per axis for a
    first-order autoregressive field, never below 1."""
    from qcbed.refine import RegionGrid
    from qcbed.refine.fine_covariance import serial_correlation

    rng = np.random.default_rng(2)
    n, rho = 80, 0.6
    reg = [RegionGrid(0, (n, n))]
    white = rng.standard_normal((3, n * n))
    s = serial_correlation(white, reg)
    assert abs(s["rho_rows"]) < 0.03 and abs(s["rho_cols"]) < 0.03
    assert 1.0 <= s["factor"] < 1.15
    # AR(1) along both axes: x[i, j] = rho x[i-1, j] + e, then the same along j
    f = rng.standard_normal((3, n, n))
    for i in range(1, n):
        f[:, i] += rho * f[:, i - 1]
    for j in range(1, n):
        f[:, :, j] += rho * f[:, :, j - 1]
    s = serial_correlation(f.reshape(3, -1), reg)
    assert s["rho_rows"] == pytest.approx(rho, abs=0.06)
    assert s["rho_cols"] == pytest.approx(rho, abs=0.06)
    assert s["factor"] == pytest.approx(((1 + rho) / (1 - rho)) ** 2, rel=0.35)
    # anti-correlated residuals do not shrink the esds; NaN samples are skipped
    ii, jj = np.indices((n, n))
    alt = ((-1.0) ** (ii + jj)).reshape(1, -1)           # a checkerboard
    alt[0, :5] = np.nan
    assert serial_correlation(alt, reg)["factor"] == 1.0
    assert serial_correlation(white, [])["factor"] == 1.0
