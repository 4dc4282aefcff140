"""Regions of interest: sample grids, padding, exclusion bookkeeping, variances, geometry fits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from qcbed.bloch.geometry import ZoneFrame
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.experiment import ROI, CBEDPattern, ExperimentGeometry, LACBEDStack, Region

FRAME = ZoneFrame(Lattice(5.431, 5.431, 5.431), (1, -1, 0), (0, 0, -1))
HKL = np.array([[0, 0, 0], [0, 0, 2], [1, 1, 1]])


def _stack(shape=(40, 50), geometry=None, **kw):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(10, 1000, (len(HKL),) + shape)
    geom = geometry or ExperimentGeometry(FRAME, shape, gl=20.0)
    return LACBEDStack(imgs, HKL, geometry=geom, **kw)


# ---------------------------------------------------------------- regions
def test_region_points_padding_and_crop():
    reg = Region([[10.0, 5.0], [12.0, 25.0], [30.0, 3.0]], n12=11, n13=6, pad=2)
    assert reg.shape == (10, 15) and reg.interior_shape == (6, 11) and reg.size == 150
    pts = reg.points()
    inner = reg.crop(pts.transpose(2, 0, 1)).transpose(1, 2, 0)
    assert np.allclose(inner[0, 0], [10, 5]) and np.allclose(inner[0, -1], [12, 25])
    assert np.allclose(inner[-1, 0], [30, 3])
    assert np.allclose(inner[-1, -1], [32, 23])
    # padding round trip: the padded grid cropped is the unpadded grid
    plain = Region(reg.corners, 11, 6, pad=0)
    assert np.allclose(inner, plain.points(), atol=1e-12)
    # the padding continues the grid with the same steps
    s12, s13 = reg.steps
    assert np.allclose(pts[0, 0], [10, 5] - 2 * s12 - 2 * s13)
    assert reg.interior().sum() == 66
    # flat per-point arrays are accepted
    assert reg.crop(np.arange(150.0)).shape == (6, 11)
    r2 = Region.from_pyextal([[10, 5], [12, 25], [30, 3], [11, 6]], pad=2)
    assert np.allclose(r2.points(), pts)
    r3 = Region.rectangle((4, 6), (10, 20), (6, 11))
    assert np.allclose(r3.points()[-1, -1], [14, 26])
    for bad in (dict(corners=[[0, 0], [1, 1], [2, 2]], n12=3, n13=3),
                dict(corners=[[0, 0], [0, 5], [5, 0]], n12=1, n13=3),
                dict(corners=[[0, 0], [0, 5], [5, 0]], n12=3, n13=3, pad=-1),
                dict(corners=[[0, 0], [0, 5]], n12=3, n13=3)):
        with pytest.raises(InputError):
            Region(**bad)


# ---------------------------------------------------------------- sampling
def test_identity_sampling_hits_pixels_exactly():
    stack = _stack()
    roi = ROI(stack, Region.rectangle((3, 4), (20, 30), (21, 31)))
    exp, var, valid = roi.sample()
    assert valid.all() and roi.last.n_outside.sum() == 0
    img = roi.split(exp)[0]
    assert np.allclose(img, stack.images[:, 3:24, 4:35], rtol=1e-10)
    assert np.allclose(roi.split(var)[0], stack.variance[:, 3:24, 4:35], rtol=1e-10)
    # k_t of the sample points is what the geometry says
    assert np.allclose(roi.kt.reshape(21, 31, 2)[0, 0],
                       stack.geometry.display_to_kt([3, 4]))
    assert roi.disc_index.shape == (3, roi.n_points)


def test_points_outside_are_excluded_and_counted():
    stack = _stack((40, 50))
    # rows −5 … 14 (5 rows outside), columns 40 … 59 (10 columns outside), 1 px steps
    roi = ROI(stack, Region.rectangle((-5, 40), (19, 19), (20, 20)))
    s = roi.sample_details()
    inside_rows = np.arange(-5, 15) >= 0
    inside_cols = np.arange(40, 60) <= 49
    n_inside = inside_rows.sum() * inside_cols.sum()
    assert np.all(s.n_outside == 400 - n_inside)
    assert np.all(s.n_valid == n_inside)
    assert np.all(np.isnan(s.intensity[~s.valid])) and np.all(np.isnan(s.variance[~s.valid]))
    assert np.all(np.isfinite(s.intensity[s.valid]))
    # a shift moves the sampling, not the k_t
    kt = roi.kt.copy()
    s2 = roi.sample_details({"shift.row": 5.0, "shift.col": -10.0})
    assert np.all(s2.n_outside == 0) and np.array_equal(roi.kt, kt)


def test_masked_pixels_and_disc_masks():
    stack = _stack()
    mask = np.ones(stack.shape, bool)
    mask[10, 10] = False
    stack = LACBEDStack(stack.images, stack.hkl, mask=mask, geometry=stack.geometry)
    regs = [Region.rectangle((5.5, 5.5), (10, 10), (11, 11)), Region.rectangle((20, 20),
                                                                                (5, 5), (6, 6))]
    roi = ROI(stack, regs, masks=[[True, True, True], [True, False, True]])
    s = roi.sample_details()
    # the 4 sample points (9.5/10.5, 9.5/10.5) touching pixel (10, 10) are excluded
    assert np.all(s.n_masked == 4)
    assert not s.valid[1, 121:].any() and s.valid[0, 121:].all()
    assert s.n_valid[1] == 121 - 4


def test_interpolated_variances_stay_positive():
    # a variance map with very sharp contrast: a cubic spline of σ² itself undershoots
    shape = (30, 30)
    var = np.full((1,) + shape, 1e4)
    var[0, ::3, :] = 1e-3
    img = np.sqrt(var)
    stack = LACBEDStack(img, [[0, 0, 0]], variance=var,
                        geometry=ExperimentGeometry(FRAME, shape, gl=20.0, rotation=7.0))
    roi = ROI(stack, Region.rectangle((2, 2), (25, 25), (61, 61)))
    _, v, valid = roi.sample()
    assert valid.any() and np.all(v[valid] > 0)
    # (why: interpolating σ² directly gives negative values here)
    pos = roi.positions()[0][valid[0]]
    direct = ndimage.map_coordinates(var[0], pos.T, order=3, mode="mirror")
    assert direct.min() < 0


def test_cbed_roi_uses_disc_offsets():
    shape = (80, 80)
    geom = ExperimentGeometry(FRAME, shape, gl=15.0, rotation=30.0, mode="cbed")
    pattern = CBEDPattern(np.random.default_rng(1).uniform(1, 100, shape), hkl=HKL,
                          geometry=geom)
    roi = ROI(pattern, Region.rectangle((35, 35), (8, 8), (5, 5)))
    pos = roi.positions()
    for k, h in enumerate(HKL):
        off = geom.kt_to_pixel(roi.kt, h) - geom.kt_to_pixel(roi.kt)
        assert np.allclose(pos[k] - pos[0], off)
    # 002 = −2 g_x (x axis 0 0 −1): 2 gl = 30 px to the left in the display, which is
    # the experiment rotated by +30°; in the experiment it points at 180° − 30° = 150°
    # (counter-clockwise from +column on screen): (Δrow, Δcol) = (−30 sin 150°, 30 cos 150°)
    d = pos[1, 0] - pos[0, 0]
    a = np.radians(150.0)
    assert np.allclose(d, [-30 * np.sin(a), 30 * np.cos(a)], atol=1e-9)
    with pytest.raises(InputError, match="mode"):
        ROI(pattern, Region.rectangle((35, 35), (8, 8), (5, 5)),
            geometry=geom.replace(mode="lacbed"))


def test_roi_bad_inputs():
    stack = _stack()
    reg = Region.rectangle((3, 4), (20, 30), (5, 5))
    with pytest.raises(InputError, match="no image"):
        ROI(stack, reg, hkl=[[2, 2, 0]])
    with pytest.raises(InputError, match="masks"):
        ROI(stack, reg, masks=[[True, False]])
    with pytest.raises(InputError, match="geometry"):
        ROI(LACBEDStack(stack.images, stack.hkl), reg)
    with pytest.raises(InputError, match="hkl"):
        ROI(CBEDPattern(stack.images[0], geometry=stack.geometry.replace(mode="cbed")), reg)
    with pytest.raises(InputError, match="one entry per sample"):
        ROI(stack, reg).split(np.zeros(3))


# ---------------------------------------------------------------- geometry recovery
@pytest.fixture(scope="module")
def si_sim():
    from qcbed.bloch.simulation import Simulation

    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.6)],
                 space_group_from_number(227, 1))
    hkl = [[0, 0, 0], [0, 0, 2], [0, 0, -2], [1, 1, 1], [-1, -1, 1], [1, 1, -1],
           [-1, -1, -1], [2, 2, 0], [-2, -2, 0]]
    return Simulation(cr, 200, [1, -1, 0], [0, 0, -1], gmax=1.6, smax=0.03, kt_radius=0.45,
                      holz=False, outputs=hkl)


def test_lacbed_geometry_recovered_from_engine_pattern(si_sim):
    """Engine LACBED images rotated/scaled/shifted by known amounts; the fit finds them."""
    n = 64
    base = ExperimentGeometry(si_sim.frame, (n, n), tilt0=(0.01, -0.02))
    gl_true = base.g_x_length / 0.008
    true = base.replace(rotation=23.4, gl=gl_true, shift=(1.3, -0.8))
    inten = si_sim.solve(true.tilt_grid().kt).intensities(1200.0)[0]        # (n, n, n_out)
    rng = np.random.default_rng(0)
    stack = LACBEDStack(rng.poisson(np.moveaxis(inten, -1, 0) * 2e4).astype(float),
                        si_sim.outputs, geometry=true)
    start = true.replace(rotation=22.0, gl=gl_true * 1.015, shift=(0.0, 0.0))
    roi = ROI(stack, Region.rectangle((10, 10), (44, 44), (45, 45)), geometry=start)
    sim = si_sim.solve(roi.kt).intensities(1200.0)[0].T
    fit = roi.fit_geometry(sim)
    v = fit.values
    assert abs(v["rotation"] - 23.4) < 0.05
    assert abs(v["gl"] / gl_true - 1) < 1e-3
    assert abs(v["shift.row"] - 1.3) < 0.05 and abs(v["shift.col"] + 0.8) < 0.05
    assert fit.chi2 < 2.0
    # the ROI is a refinement dataset (qcbed.refine.data protocol)
    from qcbed.refine.fine import Refinement

    ref = Refinement(si_sim, roi, background="per_disc")
    ref.add_thickness(1200.0, refine=False)
    assert {"rotation", "gl", "shift.row", "shift.col"} <= {p.name for p in ref.params}
    worse = ref.evaluate().value
    for name, value in v.items():
        ref.params[name].value = value
    assert ref.evaluate().value == pytest.approx(fit.chi2, rel=0.02) and worse > 10 * fit.chi2


def test_cbed_geometry_recovered_from_engine_pattern(si_sim):
    """An engine CBED pattern (9 discs) rotated/scaled/shifted; the fit recovers it."""
    n, radius, p = 112, 0.13, 0.0075
    hkl = si_sim.outputs
    base = ExperimentGeometry(si_sim.frame, (n, n), mode="cbed")
    true = base.replace(rotation=-31.7, gl=base.g_x_length / p, shift=(0.9, -1.6))
    rr, cc = np.mgrid[:n, :n].astype(float)
    pix = np.stack([rr, cc], -1).reshape(-1, 2)
    kts, where = [], []
    for k, h in enumerate(hkl):
        kt = true.pixel_to_kt(pix, h)
        inside = np.flatnonzero(np.hypot(*kt.T) < radius)
        kts.append(kt[inside])
        where.append((k, inside))
    inten = si_sim.solve(np.concatenate(kts)).intensities(1500.0)[0]
    img, off = np.zeros(n * n), 0
    for k, inside in where:
        img[inside] += inten[off:off + len(inside), k]
        off += len(inside)
    rng = np.random.default_rng(1)
    pattern = CBEDPattern(rng.poisson(img.reshape(n, n) * 5e4 + 30).astype(float), hkl=hkl)
    start = true.replace(rotation=-30.5, gl=true.gl * 0.99, shift=(0.0, 0.0))
    half = 0.8 * radius / p / np.sqrt(2)
    c = start.display_centre
    roi = ROI(pattern, Region.rectangle(c - half, (2 * half, 2 * half), (21, 21)),
              geometry=start)
    sim = si_sim.solve(roi.kt).intensities(1500.0)[0].T
    fit = roi.fit_geometry(sim)
    v = fit.values
    assert abs(v["rotation"] + 31.7) < 0.05
    assert abs(v["gl"] / true.gl - 1) < 1e-3
    assert abs(v["shift.row"] - 0.9) < 0.05 and abs(v["shift.col"] + 1.6) < 0.05
    # discs partly outside the pattern are counted, not filled
    assert roi.last.n_outside.sum() > 0 and roi.last.n_outside[0] == 0


def test_region_grids_record_their_pixel_spacing():
    """The probe convolution needs the detector pixels between samples (rows, cols)."""
    stack = _stack()
    roi = ROI(stack, Region.rectangle((3, 4), (20, 30), (11, 16)))
    assert roi.regions[0].spacing == pytest.approx((2.0, 2.0))
    roi = ROI(stack, Region.rectangle((3, 4), (20, 30), (21, 11)))
    assert roi.regions[0].spacing == pytest.approx((1.0, 3.0))
