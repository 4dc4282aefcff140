"""Detector model (DQE variances), LARBED variances and Lucy–Richardson deconvolution."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.experiment import (
    CBEDPattern,
    DetectorModel,
    larbed_variance,
    lucy_richardson,
    poisson_variance,
    transfer_function,
)
from qcbed.experiment.detector import blur

CCD = DetectorModel.from_pyextal_dtpar([3.15, 4e-5, 1.2, 2.2, 0.111])  # PyExtal CBED example


def test_dtpar_mapping_and_dqe_formula():
    assert (CCD.read_variance, CCD.gain_ref_error, CCD.excess_noise, CCD.gain,
            CCD.mixing) == (3.15, 4e-5, 1.2, 2.2, 0.111)
    assert CCD.to_pyextal_dtpar() == [3.15, 4e-5, 1.2, 2.2, 0.111]
    i = np.array([1.0, 10.0, 250.0, 4.0e4])
    dqe = 1.0 / (1.2 + 4e-5 * i + 3.15 / i)
    assert np.allclose(CCD.dqe(i), dqe, rtol=1e-14)
    assert np.allclose(CCD.variance(i), 0.111 * 2.2 * i / dqe, rtol=1e-13)
    # finite at zero and for negative (background-subtracted) values: the read-out floor
    assert np.allclose(CCD.variance([0.0, -5.0]), CCD.read_floor)
    assert CCD.read_floor == pytest.approx(0.111 * 2.2 * 3.15)
    assert CCD.dqe(0.0) == 0.0
    assert np.allclose(DetectorModel().variance(i), i)
    assert np.allclose(poisson_variance([-3.0, 0.5, 7.0], floor=1.0), [1.0, 1.0, 7.0])
    with pytest.raises(InputError, match="five numbers"):
        DetectorModel.from_pyextal_dtpar([1, 2, 3])
    with pytest.raises(InputError, match="gain"):
        DetectorModel(gain=-1.0)


def test_pattern_variance_uses_detector_model():
    img = np.array([[0.0, 10.0], [100.0, 1000.0]])
    p = CBEDPattern(img, CCD)
    assert np.allclose(p.variance(floor=0.0), CCD.variance(img))
    # default floor: the variance of one count (Poisson: max(I, 1))
    assert np.allclose(p.variance(), np.maximum(CCD.variance(img), CCD.variance(1.0)))
    assert np.allclose(CBEDPattern(img).variance(), np.maximum(img, 1.0))


def test_larbed_variance_formula():
    det = DetectorModel(gain=1.0, mixing=0.8, excess_noise=1 / 0.94)  # EMPAD-like DQE 0.94
    i = np.array([1000.0, 50.0, -20.0])
    v = larbed_variance(i, 21, 200, 12.0, 3.5, det)
    expected = 0.8 * np.maximum(i, 0) / 0.94 + 21 * 3.5**2 * (1 + 21 / 200)
    assert np.allclose(v, expected, rtol=1e-13)
    assert np.all(v > 0)
    # without a measured σ_b the detector variance at the mean background is used
    v2 = larbed_variance(i, 21, 200, 12.0, None, det)
    assert np.allclose(v2, 0.8 * np.maximum(i, 0) / 0.94 + 21 * (0.8 * 12 / 0.94) * (1 + 0.105))
    # broadcasting over tilts
    assert larbed_variance(np.ones((3, 4)), 9, np.full(4, 50), 1.0, 1.0, det).shape == (3, 4)
    with pytest.raises(InputError, match="n_background"):
        larbed_variance(i, 21, 0, 12.0, 3.5, det)
    with pytest.raises(InputError, match="background_std"):
        larbed_variance(i, 21, 10, 12.0, -1.0, det)


def _synthetic(n=128):
    yy, xx = np.mgrid[:n, :n]
    truth = np.full((n, n), 50.0)
    for cy, cx, r, a in [(40, 40, 18, 3000), (40, 90, 15, 1500), (90, 64, 20, 2200)]:
        d = np.hypot(yy - cy, xx - cx)
        truth += (d < r) * a * (1 + 0.5 * np.cos(d / 2.0))
    return truth


def _gauss_psf(sigma):
    return lambda dy, dx: np.exp(-(dy**2 + dx**2) / (2 * sigma**2))


@pytest.mark.parametrize("detector", [DetectorModel(), CCD], ids=["poisson", "ccd"])
def test_lucy_richardson_restores_to_chi2_one(detector):
    rng = np.random.default_rng(5)
    truth = _synthetic()
    bg = 20.0
    otf = transfer_function(truth.shape, _gauss_psf(1.5))
    blurred = blur(truth, otf) + bg
    if detector == DetectorModel():
        data = rng.poisson(blurred).astype(float)
    else:
        data = blurred + rng.normal(size=blurred.shape) * np.sqrt(detector.variance(blurred))
    res = lucy_richardson(data, _gauss_psf(1.5), detector, background=bg, max_iter=500)
    assert res.reason == "target"
    assert 0.8 <= res.final_chi2 <= 1.3
    assert res.chi2[-2] > 1.0 >= res.chi2[-1]          # stopped at the first χ² ≤ 1
    assert 3 < res.n_iter < 200
    err_blurred = np.sqrt(np.mean((blurred - bg - truth) ** 2))
    err_restored = np.sqrt(np.mean((res.image - truth) ** 2))
    assert err_restored < 0.8 * err_blurred
    assert np.all(res.image >= 0)
    assert abs(res.image.sum() - (data - bg).sum()) < 1e-3 * data.sum()   # flux kept


def test_lucy_richardson_mtf_array_equals_psf_callable_and_stalls():
    rng = np.random.default_rng(2)
    truth = _synthetic(64)
    otf = transfer_function(truth.shape, _gauss_psf(1.2))
    data = rng.poisson(blur(truth, otf)).astype(float)
    a = lucy_richardson(data, otf.real, max_iter=30, target=1e-9, rtol=0.0)
    b = lucy_richardson(data, _gauss_psf(1.2), max_iter=30, target=1e-9, rtol=0.0)
    assert np.allclose(a.image, b.image)
    assert a.reason in ("max_iter", "stalled")
    # an unreachable target ends by the "stops improving" rule
    c = lucy_richardson(data, otf.real, target=0.05, rtol=1e-3, max_iter=5000)
    assert c.reason == "stalled" and c.n_iter < 5000
    assert np.all(np.diff(c.chi2) <= 0)


def test_cbed_pattern_deconvolve_and_errors():
    truth = _synthetic(64)
    otf = transfer_function(truth.shape, _gauss_psf(1.0))
    pat = CBEDPattern(np.random.default_rng(0).poisson(blur(truth, otf) + 5.0).astype(float),
                      background=5.0, mtf=otf.real)
    out, res = pat.deconvolve()
    assert out.mtf is None and out.metadata["lucy_richardson"]["n_iter"] == res.n_iter
    with pytest.raises(InputError, match="needs an MTF"):
        CBEDPattern(truth).deconvolve()
    with pytest.raises(InputError, match="MTF"):
        lucy_richardson(truth, np.ones((3, 3)))
    bad = truth.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match=r"1 non-finite pixels.*\(3, 4\)"):
        lucy_richardson(bad, otf.real)
