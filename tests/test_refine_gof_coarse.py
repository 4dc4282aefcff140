"""Goodness-of-fit functions, the Voigt probe and coarse (template-matching) refinement."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.refine import (
    GOF,
    Chi2,
    Correlation,
    RFactor,
    convolve_probe,
    linear_fit,
    voigt_kernel,
)
from qcbed.refine.coarse import CoarseRefinement
from qcbed.refine.gof import GOFValue
from qcbed.scattering.structure_factors import PotentialModel


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    sim = rng.uniform(0.1, 1.0, size=(3, 50))
    disc = np.broadcast_to(np.arange(3)[:, None], sim.shape)
    exp = 1000 * sim + np.array([10.0, 20.0, 30.0])[:, None]
    exp = rng.poisson(exp).astype(float)
    return sim, exp, np.maximum(exp, 1), np.ones_like(sim, bool), disc


@pytest.mark.parametrize("background", ["none", "single", "per_disc"])
def test_linear_fit_matches_weighted_least_squares(background):
    sim, exp, var, mask, disc = _toy()
    fit = linear_fit(sim, exp, var, mask, disc, background)
    w = 1 / np.sqrt(var.ravel())
    cols = [sim.ravel() * w]
    if background == "single":
        cols.append(w)
    elif background == "per_disc":
        cols += [np.where(disc.ravel() == k, w, 0) for k in range(3)]
    x = np.stack(cols, 1)
    beta = np.linalg.lstsq(x, exp.ravel() * w, rcond=None)[0]
    assert fit.scale == pytest.approx(beta[0], rel=1e-12)
    assert np.allclose(fit.background, beta[1:], rtol=1e-10)
    assert fit.chi2_sum == pytest.approx(np.sum((x @ beta - exp.ravel() * w) ** 2), rel=1e-12)


def test_chi2_counts_only_used_samples_and_all_fitted_parameters():
    sim, exp, var, mask, disc = _toy()
    mask = mask.copy()
    mask[0, :10] = False  # 10 samples excluded
    val = Chi2("per_disc")(sim, exp, var, mask, disc, n_params=3)
    assert val.n_used == 140
    assert val.dof == 140 - 3 - 4  # 3 refined + scale + 3 backgrounds
    assert val.value == pytest.approx(val.fit.chi2_sum / val.dof)
    assert 0.6 < val.value < 1.5  # Poisson data and the right model


def test_r_factor_and_correlation():
    sim, exp, var, mask, disc = _toy()
    r = RFactor("single")(sim, exp, var, mask, disc)
    fit = linear_fit(sim, exp, var, mask, disc, "single")
    model = fit.scale * sim + fit.background[0]
    assert r.value == pytest.approx(np.abs(model - exp).sum() / exp.sum(), rel=1e-10)
    c = Correlation()(sim, exp, var, mask, disc)
    assert c.value == pytest.approx(1 - np.corrcoef(sim.ravel(), exp.ravel())[0, 1], rel=1e-10)


def test_custom_gof_subclass():
    class MaxAbs(GOF):
        name = "max_abs"

        def evaluate(self, sim, exp, var, mask, disc, n_params):
            fit = linear_fit(sim, exp, var, mask, disc, self.background)
            return GOFValue(float(np.abs(fit.residuals).max()), fit, int(mask.sum()),
                            int(mask.sum()) - n_params - fit.n_linear)

    sim, exp, var, mask, disc = _toy()
    assert MaxAbs()(sim, exp, var, mask, disc).value > 0
    # written before copied images were counted once: it gets the weights in var
    copies = np.full(len(sim), 2)
    assert MaxAbs()(sim, exp, var, mask, disc, copies=copies).value == pytest.approx(
        MaxAbs()(sim, exp, 2 * var, mask, disc).value)


def test_gof_rejects_bad_variances():
    sim, exp, var, mask, disc = _toy()
    var = var.copy()
    var[0, 0] = 0.0
    with pytest.raises(InputError, match="variances"):
        Chi2()(sim, exp, var, mask, disc)


def test_voigt_probe_is_normalised_and_differentiable():
    k = voigt_kernel(1.3, 0.4, size=101)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(k > 0)
    assert np.allclose(k, k[::-1, ::-1]) and np.allclose(k, k.T)
    img = np.random.default_rng(0).uniform(size=(2, 32, 40))
    out, ds, dg = convolve_probe(img, 1.3, 0.4, derivatives=True)
    assert out.sum() == pytest.approx(img.sum())  # flux conserved
    h = 1e-6
    fd_s = (convolve_probe(img, 1.3 + h, 0.4) - convolve_probe(img, 1.3 - h, 0.4)) / (2 * h)
    fd_g = (convolve_probe(img, 1.3, 0.4 + h) - convolve_probe(img, 1.3, 0.4 - h)) / (2 * h)
    assert np.allclose(ds, fd_s, atol=1e-7) and np.allclose(dg, fd_g, atol=1e-7)
    # a pure Gaussian has variance σ² per axis
    g = voigt_kernel(2.0, 0.0, size=101)
    x = np.arange(101) - 50
    assert np.sum(g.sum(0) * x**2) == pytest.approx(4.0, rel=1e-6)


@pytest.fixture(scope="module")
def zone_axis_sim():
    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    return Simulation(cr, 200, [1, -1, 0], [0, 0, -1], gmax=1.7, smax=0.03, kt_radius=0.4,
                      holz=False, outputs=[[0, 0, 2], [1, 1, 1], [2, 2, 0]],
                      potential=PotentialModel("kirkland", "bird_king"))


def test_coarse_orientation_and_thickness(zone_axis_sim):
    sim = zone_axis_sim
    p = 0.006
    kt_true = np.array([0.151, 0.087])  # template centre
    t_true = 1480.0
    grid = TiltGrid.regular(kt_true, (p, 0), (0, -p), (24, 24))
    rng = np.random.default_rng(0)
    tpl = rng.poisson(2e4 * sim.pattern(grid, [t_true])[0] + 30).astype(float)
    start = np.array([0.1, 0.05])  # 8.5 and 6.2 pixels off
    co = CoarseRefinement(sim, tpl, sim.outputs, p, start, 1420.0, margin=14)
    res = co.refine_orientation_thickness((1380.0, 1580.0))
    print(f"coarse: t = {res.thickness:.1f} A, k_t = {res.tilt0}, NCC = {res.correlation:.4f}")
    assert np.all(np.abs(res.tilt0 - kt_true) < 0.25 * p)
    assert abs(res.thickness - t_true) < 0.01 * t_true
    assert res.correlation > 0.95
    # the shared result interface (RefinementOutcome)
    assert res.names[:4] == ["tilt0.x", "tilt0.y", "thickness", "pixel_size"]
    np.testing.assert_array_equal(res.x[:3], [*res.tilt0, res.thickness])
    assert res.success and res.nfev == len(res.history) > 0
    assert res.experiment.shape == tpl.shape and res.model.shape[0] == len(tpl)
    assert res["x"] is not None and set(res.as_dict()) == set(res.keys())
    fig = co.plot(res)
    assert len(fig.axes) >= 4


def test_coarse_pixel_size(zone_axis_sim):
    sim = zone_axis_sim
    p_true = 0.006
    kt0 = np.array([0.12, 0.06])
    grid = TiltGrid.regular(kt0, (p_true, 0), (0, -p_true), (22, 22))
    tpl = sim.pattern(grid, [1300.0])[0]
    co = CoarseRefinement(sim, tpl, sim.outputs, p_true * 1.02, kt0, 1300.0, margin=6)
    res = co.refine_pixel_size(rel_range=0.05)
    assert res.pixel_size == pytest.approx(p_true, rel=4e-3)


def test_coarse_result_apply_to_geometry():
    """apply_to: the template centre gets the matched k_t, gl follows the pixel size."""
    from qcbed.bloch.geometry import ZoneFrame
    from qcbed.experiment import ExperimentGeometry
    from qcbed.refine import CoarseResult

    frame = ZoneFrame(Lattice(5.431, 5.431, 5.431), (1, -1, 0), (0, 0, -1))
    geom = ExperimentGeometry(frame, (101, 101), rotation=12.0, gl=40.0, tilt0=(0.01, -0.02))
    centre, step = (40.0, 61.0), 2.0
    same = CoarseResult(tilt0=np.array([0.05, 0.03]), thickness=1000.0,
                        pixel_size=geom.pixel_size * step, correlation=0.9,
                        shift_px=np.zeros(2))
    g1 = same.apply_to(geom, centre, step)
    assert g1.gl == geom.gl and g1.rotation == geom.rotation
    np.testing.assert_allclose(g1.display_to_kt(centre), same.tilt0, atol=1e-14)
    finer = CoarseResult(tilt0=np.array([0.05, 0.03]), thickness=1000.0,
                         pixel_size=0.97 * geom.pixel_size * step, correlation=0.9,
                         shift_px=np.zeros(2))
    g2 = finer.apply_to(geom, centre, step)
    assert g2.pixel_size == pytest.approx(0.97 * geom.pixel_size, rel=1e-12)
    assert g2.gl == pytest.approx(geom.gl / 0.97, rel=1e-12)
    np.testing.assert_allclose(g2.display_to_kt(centre), finer.tilt0, atol=1e-14)


def test_coarse_preprocessing_hook_is_applied(zone_axis_sim):
    seen = []

    def hook(img, is_sim):
        seen.append(is_sim)
        return np.gradient(img)[0]

    sim = zone_axis_sim
    grid = TiltGrid.regular((0.1, 0.05), (0.006, 0), (0, -0.006), (12, 12))
    tpl = sim.pattern(grid, [1000.0])[0]
    co = CoarseRefinement(sim, tpl, sim.outputs, 0.006, (0.1, 0.05), 1000.0, margin=3,
                          preprocess=hook)
    shift, best, _ = co.match(co.simulated_field())
    assert True in seen and False in seen
    assert np.all(np.abs(shift) < 0.3) and best > 0.99


def test_joint_ncc_equals_scikit_image_match_template():
    from skimage.feature import match_template

    from qcbed.refine.coarse import joint_ncc

    rng = np.random.default_rng(4)
    field = rng.uniform(size=(3, 40, 50))
    tpl = field[:, 11:31, 7:29] + 0.1 * rng.normal(size=(3, 20, 22))
    ours = joint_ncc(field, tpl)
    ref = match_template(field, tpl)[0]
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 1e-9
    assert np.unravel_index(np.argmax(ours), ours.shape) == (11, 7)


def test_probe_widths_are_pixels_whatever_the_sampling():
    """σ and γ are detector pixels: an image sampled every 2 (rows) and 3 (columns)
    pixels and convolved with spacing=(2, 3) equals the full-resolution convolution
    sampled there (it was in samples: a 2-px blur became 4–6 px)."""
    y, x = np.mgrid[0:240, 0:240].astype(float)
    img = np.exp(-((y - 120) ** 2 + (x - 120) ** 2) / (2 * 25.0**2))
    sigma, gamma = 3.0, 0.5
    full = convolve_probe(img, sigma, gamma)[::2, ::3]
    sub = convolve_probe(img[::2, ::3], sigma, gamma, spacing=(2.0, 3.0))
    np.testing.assert_allclose(sub, full, atol=2e-4 * img.max())
    as_samples = convolve_probe(img[::2, ::3], sigma, gamma)   # the old behaviour
    assert np.abs(as_samples - full).max() > 1e-2 * img.max()
    _, ds, _ = convolve_probe(img[::2, ::3], sigma, gamma, derivatives=True, spacing=(2, 3))
    h = 1e-5
    num = (convolve_probe(img[::2, ::3], sigma + h, gamma, spacing=(2, 3))
           - convolve_probe(img[::2, ::3], sigma - h, gamma, spacing=(2, 3))) / (2 * h)
    np.testing.assert_allclose(ds, num, atol=1e-7)
