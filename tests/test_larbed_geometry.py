"""Tilt calibration, indexing, drift fitting and the spot-variance formula."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.geometry import ZoneFrame
from qcbed.crystal import Lattice
from qcbed.errors import InputError
from qcbed.experiment import DetectorModel, larbed_variance
from qcbed.larbed import (
    DriftModel,
    FourDData,
    SpotMap,
    SpotPredictor,
    TiltCalibration,
    beam_positions,
    detector_from_dqe,
    fit_drift,
    fit_tilt_calibration,
    measure_spots,
    select_reflections,
    spot_variance,
    zolz_reflections,
)
from qcbed.larbed._windows import gather
from qcbed.larbed.calibration import locate_spot
from qcbed.larbed.extraction import ExtractionSettings, integrate_windows
from qcbed.larbed.synthetic import SpotRenderer, synthetic_larbed


# ------------------------------------------------------------ tilt calibration
def test_calibration_parameters_roundtrip():
    ident = TiltCalibration.from_parameters(0.0, 1.0)
    assert np.allclose(ident.matrix, np.eye(2))
    assert not ident.flip
    for rot, flip in [(23.0, False), (-140.0, True), (90.0, True)]:
        cal = TiltCalibration.from_parameters(rot, 1.7, flip=flip, step_row=1.6,
                                              origin=(10, 20), reference=(3, 4))
        p = cal.parameters
        assert p["rotation_deg"] == pytest.approx(rot)
        assert p["flip"] is flip
        assert cal.steps == pytest.approx((1.6, 1.7))
        assert p["shear_deg"] == pytest.approx(0.0, abs=1e-9)
        assert np.allclose(cal.scan_to_detector([3, 4]), [10, 20])
        yx = cal.scan_to_detector([[7.0, -2.0], [0.5, 9.0]])
        assert np.allclose(cal.detector_to_scan(yx), [[7.0, -2.0], [0.5, 9.0]])
        back = TiltCalibration.from_dict(cal.to_dict())
        assert np.allclose(back.matrix, cal.matrix) and np.allclose(back.origin, cal.origin)
    # scan column direction at +30° from detector +x towards +y
    cal = TiltCalibration.from_parameters(30.0, 2.0)
    assert np.allclose(cal.matrix[:, 1], 2 * np.array([np.sin(np.radians(30)),
                                                       np.cos(np.radians(30))]))
    with pytest.raises(InputError):
        TiltCalibration.static((5, 5)).detector_to_scan([1, 1])


def test_robust_calibration_fit_rejects_wrong_spots():
    cal = TiltCalibration.from_parameters(-12.0, 1.3, flip=True, origin=(60, 70),
                                          reference=(7.5, 9.5))
    pos = cal.beam_positions((16, 20))
    rng = np.random.default_rng(0)
    pos = pos + rng.normal(0, 0.05, pos.shape)
    bad = rng.random(pos.shape[:2]) < 0.1            # 10 % of tilts: a Bragg spot was brighter
    pos[bad] += rng.uniform(10, 30, (bad.sum(), 2))
    pos[0, 0] = np.nan
    fit = fit_tilt_calibration(pos)
    assert fit.n_used == pytest.approx((~bad).sum() - (not bad[0, 0]), abs=2)
    assert np.allclose(fit.matrix, cal.matrix, atol=3e-3)
    assert np.allclose(fit.origin, cal.origin, atol=0.03)
    with pytest.raises(InputError):
        fit_tilt_calibration(np.full((2, 2, 2), np.nan))


@pytest.mark.parametrize("method", ["com", "peak"])
def test_beam_positions(method):
    cal = TiltCalibration.from_parameters(40.0, 0.9, origin=(30.3, 33.8), reference=(4, 5))
    beam = cal.beam_positions((8, 10))
    frames = synthetic_larbed(np.ones((1, 8, 10)), beam[None], beam,
                              SpotRenderer((64, 64), probe_sigma=1.2, dose=5e4, background=2,
                                           halo=0), np.random.default_rng(1))
    pos, inten = beam_positions(FourDData.from_array(frames, chunk_mb=0.1), method=method)
    assert np.sqrt(np.mean((pos - beam) ** 2)) < 0.05
    assert np.all(inten > 4e4)
    assert np.allclose(locate_spot(frames[2, 3], beam[2, 3] + 1.5), beam[2, 3], atol=0.05)


# ------------------------------------------------------------ indexing
def test_spot_map_from_reference_without_cell():
    sm = SpotMap.from_reference([1, 1, 1], (50, 50), [2, -2, 0], (50, 70), [0, 2, -2],
                                (67.3, 40))
    d1 = np.array([0, 20.0])
    d2 = np.array([17.3, -10.0])
    assert np.allclose(sm.offsets([[4, -2, -2]]), 2 * d1 + d2)
    assert np.allclose(sm.positions([[0, 0, 0], [-2, 2, 0]]), [[50, 50], [50, 30]])
    with pytest.raises(InputError, match="zero-order Laue zone"):
        sm.offsets([[1, 1, 1]])
    with pytest.raises(InputError, match="collinear"):
        SpotMap.from_reference([0, 0, 1], (0, 0), [1, 0, 0], (0, 5), [2, 0, 0], (0, 10))
    with pytest.raises(InputError, match="zero-order"):
        SpotMap.from_reference([0, 0, 1], (0, 0), [1, 0, 1], (0, 5), [0, 1, 0], (5, 0))


def test_spot_map_with_a_hexagonal_frame():
    lat = Lattice(3.21, 3.21, 5.21, 90, 90, 120)
    frame = ZoneFrame(lat, (0, 0, 1), (1, 0, 0))
    cam = SpotMap.from_frame(frame, (64, 64), pixel_size=0.01, rotation_deg=25.0, flip=True)
    c = cam.camera
    assert c["rotation_deg"] == pytest.approx(25.0) and c["flip"]
    assert c["pixel_size"] == pytest.approx(0.01)
    # |g| in pixels follows the reciprocal metric (non-orthogonal cell)
    for h in ([1, 0, 0], [1, 1, 0], [2, -1, 0]):
        assert np.linalg.norm(cam.offsets([h])[0]) == pytest.approx(
            float(lat.g_length(h)) / 0.01)
    # the same map from a reference pattern and the frame
    p = cam.positions([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    ref = SpotMap.from_reference([0, 0, 1], p[0], [1, 0, 0], p[1], [0, 1, 0], p[2],
                                 frame=frame)
    assert np.allclose(ref.kt_matrix, cam.kt_matrix)
    assert np.allclose(ref.offsets([[1, 0, 1]]), cam.offsets([[1, 0, 1]]))  # HOLZ: projected
    assert len(zolz_reflections([0, 0, 1], 2)) == 25


def test_select_reflections_and_predictor():
    ref = (4.5, 4.5)
    sm = SpotMap.from_reference([0, 0, 1], (64, 64), [1, 0, 0], (64, 84), [0, 1, 0], (84, 64),
                                reference_tilt=ref)
    cal = TiltCalibration.from_parameters(0.0, 1.0, origin=(0, 0), reference=ref)
    hkl = select_reflections(sm, cal, (10, 10), (128, 128), hmax=3, margin=8)
    assert [0, 0, 0] == hkl[0].tolist()
    pos = SpotPredictor(sm, cal).grid_positions(hkl, (10, 10))
    assert pos.min() >= 8 and pos.max() <= 127 - 8
    assert len(hkl) == 25                           # |h|, |k| ≤ 2 fit; 3·20 px does not
    assert SpotPredictor(sm, cal).beam(4.5, 4.5).tolist() == [64.0, 64.0]
    # the net of the reference reflections (F-centred cubic [001]: 200 and 020 shown)
    net = select_reflections(sm, cal, (10, 10), (128, 128), hmax=1, margin=8,
                             net=([1, 1, 0], [-1, 1, 0]))
    assert {tuple(h) for h in net} == {(0, 0, 0), (1, 1, 0), (-1, 1, 0), (1, -1, 0),
                                       (-1, -1, 0), (2, 0, 0), (-2, 0, 0), (0, 2, 0),
                                       (0, -2, 0)}


# ------------------------------------------------------------ drift
def test_fit_drift_recovers_polynomial_and_offsets():
    ny, nx = 12, 14
    hkl = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    rng = np.random.default_rng(2)
    truth = DriftModel(2, rng.normal(0, 0.3, (6, 2)), (ny, nx), hkl[1:],
                       np.array([[0.2, -0.1], [-0.3, 0.05]]))
    rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    pred = rng.uniform(20, 100, (3, ny, nx, 2))
    meas = pred + truth.shift(rr, cc)[None] + truth.offset(hkl)[:, None, None]
    snr = np.full((3, ny, nx), 50.0)
    meas = meas + rng.normal(0, 1 / 50.0, meas.shape)
    meas[1, 3, 4] += 5.0                            # an outlier
    snr[2, 0, :] = 2.0                              # too weak: ignored
    fit = fit_drift(meas, pred, hkl, snr, order=2)
    assert np.allclose(fit.shift(rr, cc), truth.shift(rr, cc), atol=0.02)
    assert np.allclose(fit.offset(hkl), truth.offset(hkl), atol=0.02)
    assert fit.rms < 0.05


@pytest.mark.parametrize("method", ["com", "xcorr"])
def test_measure_spots(method):
    ref = (3.5, 4.5)
    sm = SpotMap.from_reference([0, 0, 1], (32, 32), [1, 0, 0], (32, 46), [0, 1, 0], (46, 32),
                                reference_tilt=ref)
    pred = SpotPredictor(sm, TiltCalibration.from_parameters(5.0, 0.7, reference=ref))
    hkl = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    true = pred.grid_positions(hkl, (8, 10)) + np.array([0.4, -0.3])
    data = synthetic_larbed(np.full((3, 8, 10), 0.5), true, true[0],
                            SpotRenderer((64, 64), probe_sigma=1.0, dose=4e4, background=3,
                                         halo=0), np.random.default_rng(4))
    m = measure_spots(FourDData.from_array(data), pred, hkl, method=method, stride=2)
    ok = np.isfinite(m["snr"])
    assert ok.sum() == 3 * 4 * 5                    # every 2nd row and column
    assert np.sqrt(np.mean((m["positions"][ok] - true[ok]) ** 2)) < 0.08
    assert np.all(m["snr"][ok] > 20)


# ------------------------------------------------------------ variance
def test_spot_variance_formula():
    det = detector_from_dqe(gain=2.0, dqe=0.8, mixing=0.5, read_variance=1.5)
    assert det.excess_noise == pytest.approx(1.25)
    i, n_p, n_b, mb, vb = 1000.0, 29.0, 120.0, 4.0, 9.0
    expected = 0.5 * 2.0 * (1.25 * i + 1.5) + n_p * vb * (1 + n_p / n_b)
    assert spot_variance(i, n_p, n_b, mb, vb, det) == pytest.approx(expected)
    assert spot_variance(i, n_p, n_b, mb, vb, det) == pytest.approx(
        larbed_variance(i, n_p, n_b, mb, np.sqrt(vb), det))
    med = spot_variance(i, n_p, n_b, mb, vb, det, estimator="median")
    assert med == pytest.approx(expected + (np.pi / 2 - 1) * n_p**2 * vb / n_b)
    plane = spot_variance(i, n_p, n_b, mb, vb, det, estimator="plane", leverage=n_p**2 / 100)
    assert plane == pytest.approx(0.5 * 2.0 * (1.25 * i + 1.5) + n_p * vb * (1 + n_p / 100))
    with pytest.raises(InputError):
        spot_variance(i, n_p, n_b, mb, vb, estimator="mode")
    with pytest.raises(InputError):
        detector_from_dqe(dqe=1.5)


@pytest.mark.parametrize("background", ["mean", "plane", "median"])
def test_variance_matches_scatter(background):
    """Monte Carlo: 4000 noisy spots on a sloping background; σ from the formula ≈ scatter."""
    rng = np.random.default_rng(11)
    n = 4000
    centres = np.column_stack([rng.uniform(15.5, 16.5, n), rng.uniform(15.5, 16.5, n)])
    renderer = SpotRenderer((32, 32), probe_sigma=1.0, dose=3000.0, background=0.0, halo=0.0)
    lam = renderer.expected(centres[None], np.ones((1, n)), centres)
    yy = np.arange(32)[None, :, None]
    lam = lam + 30.0 + 0.8 * (yy - 16)              # gradient: 0.8 counts/px
    frames = rng.poisson(lam).astype(np.float32)
    s = ExtractionSettings(4.0, (6.0, 10.0), background, detector=DetectorModel())
    m = integrate_windows(gather(frames, centres, s.half_window), s)
    assert m.valid.all()
    z = (m.intensity - 3000.0 * 0.9997) / np.sqrt(m.variance)
    tol = 0.12 if background == "median" else 0.06
    assert abs(np.std(z) - 1) < tol
    # the median of integer counts is quantised: biased low by ~⅓ count per pixel here
    assert abs(np.mean(z)) < (0.35 if background == "median" else 0.08)
