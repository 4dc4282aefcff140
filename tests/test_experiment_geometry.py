"""Experimental geometry: pixel ↔ display ↔ k_t transforms, Felix grid, CBED disc offsets."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.geometry import ZoneFrame
from qcbed.bloch.grids import TiltGrid
from qcbed.crystal import Lattice
from qcbed.errors import InputError
from qcbed.experiment import ExperimentGeometry, rotation_from_gx_angle

CUBIC = ZoneFrame(Lattice(5.431, 5.431, 5.431), (1, -1, 0), (0, 0, -1))
# monoclinic (unique axis b), zone [0 1 0]; x axis 1 0 1 (not along a*)
MONO = ZoneFrame(Lattice(5.1, 6.3, 7.7, 90, 103.5, 90), (0, 1, 0), (1, 0, 1))
# triclinic, zone [1 1 1], x axis 1 -1 0; normal tilted from the zone
TRI = ZoneFrame(Lattice(4.2, 5.3, 6.1, 81.0, 97.0, 108.0), (1, 1, 1), (1, -1, 0),
                normal=(1, 1, 2))


def _random_geometry(frame, rng, mode):
    shape = tuple(int(v) for v in rng.integers(40, 300, 2))
    return ExperimentGeometry(
        frame, shape, rotation=rng.uniform(-180, 180), gl=rng.uniform(5, 80),
        tilt0=tuple(rng.normal(0, 0.05, 2)), reference=tuple(rng.uniform(0, 200, 2)),
        mirror=bool(rng.integers(2)), shift=tuple(rng.normal(0, 3, 2)),
        disc_shifts={(1, 0, 1): tuple(rng.normal(0, 1, 2)),
                     (1, -1, 0): tuple(rng.normal(0, 1, 2))},
        mode=mode, display_shape=tuple(int(v) for v in rng.integers(40, 400, 2)))


@pytest.mark.parametrize("frame", [CUBIC, MONO, TRI], ids=["cubic", "monoclinic", "triclinic"])
@pytest.mark.parametrize("mode", ["cbed", "lacbed"])
def test_round_trips(frame, mode):
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(20):
        g = _random_geometry(frame, rng, mode)
        rc = rng.uniform(-50, 350, (200, 2))
        for hkl in (None, (0, 0, 0), (1, 0, 1), (1, -1, 0), (2, 3, -1)):
            kt = g.pixel_to_kt(rc, hkl)
            worst = max(worst, np.abs(g.kt_to_pixel(kt, hkl) - rc).max())
            kt2 = rng.normal(0, 0.3, (50, 2))
            worst = max(worst, np.abs(g.pixel_to_kt(g.kt_to_pixel(kt2, hkl), hkl) - kt2).max()
                        / g.pixel_size)
        d = g.experiment_to_display(rc)
        worst = max(worst, np.abs(g.display_to_experiment(d) - rc).max())
        worst = max(worst, np.abs(g.kt_to_display(g.display_to_kt(d)) - d).max())
    assert worst < 1e-9


def test_affine_matches_transforms():
    rng = np.random.default_rng(3)
    g = _random_geometry(MONO, rng, "cbed")
    a, v = g.affine((1, 0, 1))
    kt = rng.normal(0, 0.2, (10, 2))
    assert np.allclose(kt @ a.T + v, g.kt_to_pixel(kt, (1, 0, 1)), atol=1e-12)
    # the linear part is a similarity of scale 1/p (rotation, possibly mirrored)
    s = a * g.pixel_size
    assert np.allclose(s @ s.T, np.eye(2), atol=1e-12)
    assert np.isclose(np.linalg.det(s), -1.0 if g.mirror else 1.0)


def test_display_orientation_and_rotation_sense():
    g = ExperimentGeometry(CUBIC, (101, 101), rotation=90.0, gl=20.0)
    c = 50.0
    # a point right of the centre in the experiment is above it after a +90° rotation
    assert np.allclose(g.experiment_to_display([c, c + 10]), [c - 10, c], atol=1e-12)
    # display right is +x̂, display up is +ŷ
    k0 = g.display_to_kt([c, c])
    assert np.allclose(g.display_to_kt([c, c + 1]) - k0, [g.pixel_size, 0], atol=1e-15)
    assert np.allclose(g.display_to_kt([c - 1, c]) - k0, [0, g.pixel_size], atol=1e-15)
    # same sense as skimage.transform.rotate
    skt = pytest.importorskip("skimage.transform")
    img = np.zeros((101, 101))
    img[50, 70] = 1.0
    img[20, 50] = 2.0
    ours = g.display_image(img, order=1)
    ref = skt.rotate(img, 90.0, order=1, preserve_range=True)
    assert np.allclose(np.nan_to_num(ours), ref, atol=1e-9)
    assert rotation_from_gx_angle(30.0) == -30.0
    assert rotation_from_gx_angle(30.0, mirror=True) == -150.0


def test_felix_geometry_equals_tiltgrid():
    g = ExperimentGeometry.felix(CUBIC, 0.661, 76)
    t = TiltGrid.felix(0.661, 76)
    assert g.image_shape == (152, 152)
    assert np.abs(g.tilt_grid().kt - t.kt).max() < 1e-14
    # README: row r ↔ k_x = (R − r + ½)Δ, column c ↔ Felix's k_y = (c − R + ½)Δ, which is
    # −k_y in qcbed's frame (zone = −incident_beam_direction, docs/conventions.md)
    d = 0.661 / 76
    assert np.allclose(g.pixel_to_kt([10, 100]), [(76 - 10 + 0.5) * d, -(100 - 76 + 0.5) * d])
    assert not g.mirror and g.rotation == -90.0


def test_cbed_disc_offsets_use_reciprocal_metric():
    g = ExperimentGeometry(MONO, (256, 256), rotation=17.0, gl=40.0, mode="cbed")
    p = g.pixel_size
    kt = np.array([0.01, -0.02])
    for hkl in [(1, 0, 1), (2, 0, -1), (0, 0, 3), (-1, 0, 2)]:
        gf = MONO.g_frame(hkl)
        d = g.kt_to_display(kt + gf[:2]) - g.kt_to_display(kt)
        # (Δcol, Δrow) = gl (g·x̂, −g·ŷ)/|g_x⊥|
        assert np.allclose([d[1], d[0]], g.gl * np.array([gf[0], -gf[1]]) / g.g_x_length)
        pix = g.kt_to_pixel(kt, hkl)
        pix0 = g.kt_to_pixel(kt)
        # displacement length in pixels = |g_t|/p (metric length, not Euclidean hkl)
        assert np.isclose(np.linalg.norm(pix - pix0), np.hypot(*gf[:2]) / p)
    # g_x itself is displaced along display +x by exactly gl pixels
    dd = g.experiment_to_display(g.kt_to_pixel(kt, (1, 0, 1))) - g.experiment_to_display(
        g.kt_to_pixel(kt))
    assert np.allclose(dd, [0.0, g.gl])
    # a Euclidean dot product on hkl (PyExtal's kt2pixel) would be wrong here
    wrong = np.dot([2, 0, -1], [1, 0, 1]) / np.dot([1, 0, 1], [1, 0, 1])
    assert not np.isclose(wrong, MONO.g_frame((2, 0, -1))[0] / MONO.g_frame((1, 0, 1))[0])


def test_set_tilt0_and_parameters():
    rng = np.random.default_rng(11)
    g = _random_geometry(TRI, rng, "cbed")
    g2 = g.set_tilt0((0.0, 0.0), (30.5, 41.25), (1, -1, 0))
    assert np.allclose(g2.pixel_to_kt([30.5, 41.25], (1, -1, 0)), 0.0, atol=1e-14)
    g3 = g.with_values({"rotation": 12.0, "gl": 33.0, "shift.row": 1.5, "shift.col": -2.0,
                        "disc_shift(1,-1,0).col": 0.25, "tilt0.y": 0.01, "unrelated": 5.0})
    assert (g3.rotation, g3.gl, g3.shift) == (12.0, 33.0, (1.5, -2.0))
    assert g3.disc_shifts[(1, -1, 0)][1] == 0.25 and g3.tilt0[1] == 0.01
    assert g3.value("disc_shift(1,-1,0).col") == 0.25
    # a disc shift moves exactly that disc
    d = g3.kt_to_pixel([0.0, 0.0], (1, -1, 0)) - g3.replace(
        disc_shifts={}).kt_to_pixel([0.0, 0.0], (1, -1, 0))
    assert np.allclose(d, g3.disc_shifts[(1, -1, 0)])
    ps = g.sampling_parameters(refine=("rotation", "gl"), disc_shifts=[(1, 0, 1)])
    names = [p.name for p in ps]
    assert names[:4] == ["rotation", "gl", "shift.row", "shift.col"]
    assert "disc_shift(1,0,1).row" in names
    assert all(p.kind == "sampling" for p in ps)
    assert [p.refine for p in ps[:4]] == [True, True, False, False]


def test_rotated_shape_and_display_image():
    g = ExperimentGeometry(CUBIC, (60, 80), rotation=90.0, gl=10.0)
    assert g.rotated_shape() == (80, 60)
    g = g.replace(display_shape=g.rotated_shape())
    img = np.arange(60 * 80, dtype=float).reshape(60, 80)
    # a +90° (counter-clockwise) rotation of an array is np.rot90
    assert np.allclose(g.display_image(img, order=1), np.rot90(img), atol=1e-9)


def test_bad_geometry_inputs():
    with pytest.raises(InputError, match="gl"):
        ExperimentGeometry(CUBIC, (10, 10), gl=0.0)
    with pytest.raises(InputError, match="mode"):
        ExperimentGeometry(CUBIC, (10, 10), mode="stem")
    with pytest.raises(InputError):
        ExperimentGeometry(CUBIC, (10,))
    with pytest.raises(InputError, match="tilt0"):
        ExperimentGeometry(CUBIC, (10, 10), tilt0=(np.nan, 0))
    with pytest.raises(InputError, match="unknown geometry parameter"):
        ExperimentGeometry(CUBIC, (10, 10)).value("scale")
    with pytest.raises(InputError, match="unknown sampling parameter"):
        ExperimentGeometry(CUBIC, (10, 10)).sampling_parameters(refine=("zoom",))
