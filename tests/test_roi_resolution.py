"""ROI sample step from the correlation length of the pixel noise (roi_step = 'auto')."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from qcbed.errors import InputError
from qcbed.experiment.resolution import correlation_area, noise_correlation


def _images(blur: float, n: int = 6, seed: int = 0, lines: bool = False) -> np.ndarray:
    """Smooth two-beam-like fringes plus unit-variance noise blurred by a Gaussian (px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128].astype(float)
    out = []
    for k in range(n):
        sig = 500 + 300 * np.sin(xx / (7.0 + k)) * np.cos(yy / 11.0)
        if lines and k % 2 == 0:  # a few sharp HOLZ-like lines in every other image
            for c in (30, 64, 97):
                sig = sig + 400 * np.exp(-0.5 * ((xx - c - 0.2 * yy) / 0.7) ** 2)
        w = rng.normal(size=sig.shape)
        if blur:
            w = ndimage.gaussian_filter(w, blur, mode="wrap")
            w /= w.std()
        out.append(sig + 10 * w)
    return np.array(out)


def test_correlation_area_analytic_limits():
    assert correlation_area(0.0, 0.0) == pytest.approx(1.0)
    # Gaussian blur σ: ρ(d) = exp(-d²/4σ²), Σρ² → ∫ exp(-d²/2σ²) = 2πσ² for σ ≫ 1 px
    for s in (2.0, 3.0):
        assert correlation_area(s, s) == pytest.approx(2 * np.pi * s * s, rel=1e-3)


@pytest.mark.parametrize("blur, step", [(0.0, 1), (1.0, 3), (1.5, 4), (2.0, 5)])
def test_known_blur_is_recovered(blur, step):
    nc = noise_correlation(_images(blur))
    assert nc.sigma[0] == pytest.approx(blur, abs=0.06 if blur else 0.35)
    assert nc.sigma[1] == pytest.approx(blur, abs=0.06 if blur else 0.35)
    assert nc.step == step
    assert np.max(np.abs(nc.measured - nc.model)) < 0.05


def test_sharp_lines_in_some_images_do_not_decide_the_step():
    clean = noise_correlation(_images(1.0))
    mixed = noise_correlation(_images(1.0, n=7, lines=True))
    assert mixed.step == clean.step
    assert abs(mixed.sigma[0] - 1.0) < 0.1 and abs(mixed.sigma[1] - 1.0) < 0.1


def test_noise_correlation_bad_input():
    with pytest.raises(InputError):
        noise_correlation(np.zeros((5, 5)))
    with pytest.raises(InputError):
        noise_correlation(np.full((3, 40, 40), np.nan))


@pytest.mark.shared_data
def test_import_felix_auto_step_is_written_with_its_reason(si_dlacbed_dir):
    from qcbed.project.felix import felix_project

    proj, comments, _ = felix_project(si_dlacbed_dir, output="unused")
    from qcbed.experiment import read_felix_images

    nc = noise_correlation(read_felix_images(si_dlacbed_dir, allow_negative=True).images)
    reg = proj["roi"]["regions"][0]
    c = np.asarray(reg["corners"])
    span = c[2, 0] - c[0, 0]
    assert span / (reg["samples"][1] - 1) == nc.step
    assert "roi_step = 'auto'" in comments["roi"] and f"every {nc.step} px" in comments["roi"]
    assert proj["roi"]["symmetric"] is True and "symmetry" in comments["roi.symmetric"]
    fixed, comments3, _ = felix_project(si_dlacbed_dir, output="unused", roi_step=3)
    c3 = np.asarray(fixed["roi"]["regions"][0]["corners"])
    assert (c3[2, 0] - c3[0, 0]) / (fixed["roi"]["regions"][0]["samples"][1] - 1) == 3
    assert "auto" not in comments3["roi"]
    with pytest.raises(InputError, match="roi_step"):
        felix_project(si_dlacbed_dir, output="unused", roi_step=0)
